"""`llmops quickstart`, the main job: a fresh project end to end, user data with a test set beside it or given
with --eval, and one-line errors for bad input."""

import json
import re

import pandas as pd
import pytest

from conftest import run_llmops
from llmops_kit.sample_tickets import sample_frame, split_frame


def test_fresh_project_end_to_end(project):
    proc = run_llmops("quickstart", cwd=project)
    assert proc.returncode == 0, proc.stderr
    # progress: one line per stage on stderr; the summary on stdout
    assert re.search(r"^\[1/\d+\] data +done", proc.stderr, flags=re.M), proc.stderr
    assert re.search(r"^\[\d+/\d+\] register +done", proc.stderr, flags=re.M), proc.stderr
    out = proc.stdout
    assert out.startswith("llmops quickstart: done")
    assert "models:/support-router@champion -> version 1" in out
    accuracy = float(re.search(r"evaluation +accuracy ([0-9.]+)", out).group(1))
    assert accuracy > 0.85
    for stage in ("serve", "audit", "export"):  # later stages either ran or say why they were skipped
        assert re.search(rf"^    {stage} +(done|skipped: .+)$", out, flags=re.M), out
    # state stays in .llmops/, nothing lands in ./mlruns
    state = project / ".llmops"
    assert (state / "mlflow.db").is_file() and not (project / "mlruns").exists()
    events = [json.loads(line) for line in (state / "lineage" / "events.jsonl").read_text().splitlines()]
    complete = [
        e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == "support-router.train"
    ]
    assert complete and complete[0]["outputs"][0]["name"] == "models/support-router/1"
    assert len(complete[0]["inputs"][0]["facets"]["version"]["datasetVersion"]) == 64
    # a second run makes version 2 and moves the alias
    proc = run_llmops("quickstart", "--skip", "serve", "--skip", "audit", "--skip", "export", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "models:/support-router@champion -> version 2" in proc.stdout
    shown = json.loads(run_llmops("registry", "show", "support-router@champion", cwd=project).stdout)
    assert shown["version"] == "2"


def test_user_data_with_other_column_names_and_eval_file(project):
    train, test = split_frame(sample_frame(), seed=1)
    train.rename(columns={"text": "message", "category": "intent"}).to_csv(
        project / "tickets.csv", index=False
    )
    test.rename(columns={"text": "message", "category": "intent"}).to_csv(
        project / "held_out.csv", index=False
    )
    proc = run_llmops(
        "quickstart",
        "--data",
        "tickets.csv",
        "--text-column",
        "message",
        "--label-column",
        "intent",
        "--eval",
        "held_out.csv",
        "--skip",
        "serve",
        "--skip",
        "audit",
        "--skip",
        "export",
        cwd=project,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        f"evaluation: {project / 'held_out.csv'}" in proc.stdout or "evaluation: held_out.csv" in proc.stdout
    )
    assert re.search(rf"accuracy [0-9.]+, macro-F1 [0-9.]+ on {len(test)} rows", proc.stdout), proc.stdout


def test_banking77_sample_reports_test_accuracy(project, shared_data):
    """A stratified slice of BANKING77 (train.csv with test.csv beside it) in a temporary folder."""
    folder = project / "banking"
    folder.mkdir()
    train = pd.read_csv(shared_data / "banking77" / "train.csv")
    test = pd.read_csv(shared_data / "banking77" / "test.csv")
    train.groupby("category").head(12).to_csv(folder / "train.csv", index=False)
    test.groupby("category").head(4).to_csv(folder / "test.csv", index=False)
    proc = run_llmops(
        "quickstart", "--data", str(folder / "train.csv"), "--skip", "serve", "--skip", "export", cwd=project
    )
    assert proc.returncode == 0, proc.stderr
    assert f"evaluation: {folder / 'test.csv'}" in proc.stdout
    accuracy = float(re.search(r"evaluation +accuracy ([0-9.]+)", proc.stdout).group(1))
    assert accuracy > 0.6, proc.stdout  # 12 examples per intent; the full set is benchmarks/router.py
    assert "on 308 rows" in proc.stdout


BAD_INPUT = [
    ("nocol.csv", "message,category\nhi,a\nhello,a\nbye,b\nciao,b\n", (), "missing column(s) 'text'"),
    ("empty.csv", "", (), "the file is empty"),
    ("header.csv", "text,category\n", (), "has no rows"),
    ("one.csv", "text,category\nhi,a\nhello,a\nbye,b\n", (), "label 'b' has only 1 example"),
    ("blank.csv", "text,category\nhi,a\n,a\nbye,b\nciao,b\n", (), "empty 'text'"),
    (
        "ok.csv",
        "text,category\nhi,a\nhello,a\nbye,b\nciao,b\n",
        ("--label-column", "intent"),
        "missing column(s) 'intent'",
    ),
    (
        "ok.csv",
        "text,category\nhi,a\nhello,a\nbye,b\nciao,b\n",
        ("--eval", "missing.csv"),
        "missing.csv: no such file",
    ),
]


@pytest.mark.parametrize("name, content, extra, message", BAD_INPUT)
def test_bad_data_is_a_one_line_error(project, name, content, extra, message):
    (project / name).write_text(content)
    proc = run_llmops("quickstart", "--data", name, *extra, cwd=project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("[")]  # progress lines aside
    assert len(lines) == 1 and lines[0].startswith("llmops: error: "), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (("quickstart", "--data", "nowhere.csv"), "nowhere.csv: no such file"),
        (("quickstart", "--eval", "x.csv"), "--eval needs --data"),
        (("quickstart", "--skip", "bogus"), "unknown stage 'bogus'"),
        (("registry", "show", "support-router@champion"), "not found"),
    ],
)
def test_bad_arguments_and_unknown_model_are_one_line_errors(project, args, message):
    proc = run_llmops(*args, cwd=project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("llmops: error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
