"""Shared fixtures: the installed `llmops` command, an isolated project folder, the shared data sets, and a
session that removes the images its builds made."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LLMOPS = Path(sys.executable).parent / "llmops"


TEST_IMAGE_TAGS = (
    "localhost/llmops-export-test:latest",
    "localhost/llmops-export-test:torch",  # the torch runtime's image
    "localhost/llmops-rebuild-test:latest",
    "llmops/support-router:v1",  # the quickstart's export stage, in the tests' fresh projects
)  # the tests' builds


def _built_images() -> set[str]:
    """The ids of the images the tests' builds made (every stage carries the build label, valued with its tag).

    Only the tests' own tags: builds of the same machine's other sessions and benchmarks carry the label too, and a
    session that removed every labelled image made while it ran removed theirs from under them."""
    from llmops_kit.export.context import BUILD_LABEL

    ids = set()
    for tag in TEST_IMAGE_TAGS:
        done = subprocess.run(
            ["podman", "images", "--all", "--quiet", "--no-trunc", "--filter", f"label={BUILD_LABEL}={tag}"],
            capture_output=True,
            text=True,
        )
        ids |= set(done.stdout.split()) if done.returncode == 0 else set()
    return ids


@pytest.fixture(scope="session", autouse=True)
def remove_built_images():
    """Leave the machine's image store as the session found it: the tests' builds are about 1 GB each."""
    if shutil.which("podman") is None:
        yield
        return
    before = _built_images()
    yield
    made = sorted(_built_images() - before)
    if made:
        subprocess.run(["podman", "rmi", "--force", *made], capture_output=True)


def shared_data_dir() -> Path:
    """The folder of the shared labelled data sets (`$LLMOPS_SHARED_DATA`, default `../shared/data`)."""
    return Path(os.environ.get("LLMOPS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder; the test is skipped, saying why, where it is absent."""
    path = shared_data_dir()
    if not (path / "banking77" / "train.csv").is_file():
        pytest.skip(
            f"shared data sets not found at {path} (set LLMOPS_SHARED_DATA to the folder holding banking77/)"
        )
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project folder whose settings.ini keeps all state inside it."""
    (tmp_path / "settings.ini").write_text("[project]\nstate_dir = .llmops\n")
    return tmp_path


def run_llmops(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | bytes | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run the installed `llmops` command in a subprocess and capture its output as text."""
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_") or k == "LLMOPS_SHARED_DATA"
    }
    full_env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **(env or {}))
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [str(LLMOPS), *args], cwd=cwd, env=full_env, input=data, capture_output=True, timeout=timeout
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )
