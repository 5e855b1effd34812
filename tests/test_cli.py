"""The installed `llmops` command: version, help, unknown commands, and that every listed command runs."""

import re

from conftest import run_llmops
from llmops_kit import __version__
from llmops_kit.cli import available_commands


def test_version():
    proc = run_llmops("--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, f"llmops-kit {__version__}")


def test_help_lists_exactly_the_available_commands():
    proc = run_llmops("--help")
    assert proc.returncode == 0
    listed = set(re.findall(r"^    (\w+)\s", proc.stdout, flags=re.M))
    assert listed == set(available_commands())


def test_every_listed_command_has_working_help():
    for name in available_commands():
        proc = run_llmops(name, "--help")
        assert proc.returncode == 0, f"llmops {name} --help failed: {proc.stderr}"
        assert f"usage: llmops {name}" in proc.stdout


def test_unknown_command_is_an_error():
    proc = run_llmops("frobnicate")
    assert proc.returncode == 2
    assert "invalid choice: 'frobnicate'" in proc.stderr


def test_embed_command_writes_one_vector_per_line(project):
    proc = run_llmops("embed", cwd=project, stdin="I lost my card\nWhat is the exchange rate?\n")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[") and lines[0].count(",") == 383
