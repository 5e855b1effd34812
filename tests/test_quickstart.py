"""`llmops quickstart`, the main job: a fresh project end to end, user data with a test set beside it or given
with --eval, and one-line errors for bad input."""

import importlib.util
import io
import json
import re

import pandas as pd
import pytest

from conftest import run_llmops
from llmops_kit.router.tickets import SAMPLE_TRAFFIC, sample_frame, split_frame


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
    # every stage whose module is installed ran: none is skipped (export, until its module lands, says why)
    for stage in ("serve", "audit"):
        assert re.search(rf"^    {stage} +done: .+$", out, flags=re.M), out
    export_installed = importlib.util.find_spec("llmops_kit.export") is not None
    assert re.search(rf"^    export +{'done' if export_installed else 'skipped'}: .+$", out, flags=re.M), out
    # state stays in .llmops/, nothing lands in ./mlruns
    state = project / ".llmops"
    assert (state / "mlflow.db").is_file() and not (project / "mlruns").exists()
    events = [json.loads(line) for line in (state / "lineage" / "events.jsonl").read_text().splitlines()]
    complete = [
        e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == "support-router.train"
    ]
    assert complete and complete[0]["outputs"][0]["name"] == "models/support-router/1"
    assert len(complete[0]["inputs"][0]["facets"]["version"]["datasetVersion"]) == 64
    # the replay went through the real server
    # a question the router cannot answer gets a real answer (the hand-off in words without a chat model)
    chat = re.search(r"^  chat +'.*' answered by (\S+): '(.+)'$", out, flags=re.M)
    assert chat and chat.group(1) == "router" and "queue" in chat.group(2), out
    replay = re.search(r"serving +replayed (\d+) requests .*\((.*)\)$", out, flags=re.M)
    assert replay and int(replay.group(1)) >= len(SAMPLE_TRAFFIC), out
    assert "pii:" in replay.group(2) and "injection:" in replay.group(2)
    assert any((state / "audit").iterdir())
    assert re.search(r"^    audit +done: \d+ records verified", out, flags=re.M), out
    assert list((state / "reports").glob("quickstart-drift-*.html")), out
    shown = json.loads(run_llmops("registry", "show", "support-router@champion", cwd=project).stdout)
    assert shown["version"] == "1"


def quickstart_in_process(project, **kwargs):
    """Run the job in this process (the encoder loads once for all such tests), without the later stages."""
    from llmops_kit.core import load_settings
    from llmops_kit.quickstart import quickstart, summary

    settings = load_settings(project / "settings.ini", environ={})
    ctx, results = quickstart(settings, skip=["serve", "audit", "export"], progress=io.StringIO(), **kwargs)
    assert all(r.status != "failed" for r in results), results
    return ctx, summary(ctx, results)


def test_user_data_with_other_column_names_and_eval_file(project):
    train, test = split_frame(sample_frame(), seed=1)
    train.rename(columns={"text": "message", "category": "intent"}).to_csv(
        project / "tickets.csv", index=False
    )
    test.rename(columns={"text": "message", "category": "intent"}).to_csv(
        project / "held_out.csv", index=False
    )
    ctx, out = quickstart_in_process(
        project,
        data=project / "tickets.csv",
        text_column="message",
        label_column="intent",
        eval_path=project / "held_out.csv",
    )
    assert f"evaluation: {project / 'held_out.csv'}" in out
    assert re.search(rf"accuracy [0-9.]+, macro-F1 [0-9.]+ on {len(test)} rows", out), out
    assert ctx.champion.version == "1"


def test_banking77_slice_reports_test_accuracy_from_test_csv_beside_it(project, shared_data):
    """A slice of BANKING77 (20 intents; train.csv with test.csv beside it) in a temporary folder."""
    folder = project / "banking"
    folder.mkdir()
    train = pd.read_csv(shared_data / "banking77" / "train.csv")
    test = pd.read_csv(shared_data / "banking77" / "test.csv")
    intents = sorted(train.category.unique())[:20]
    train[train.category.isin(intents)].groupby("category").head(10).to_csv(folder / "train.csv", index=False)
    test[test.category.isin(intents)].groupby("category").head(3).to_csv(folder / "test.csv", index=False)
    ctx, out = quickstart_in_process(project, data=folder / "train.csv")
    assert f"evaluation: {folder / 'test.csv'}" in out
    assert f"on {20 * 3} rows" in out, out
    assert ctx.report.accuracy > 0.6, out  # 10 examples per intent; the full set is benchmarks/router.py
    assert {f.role for f in ctx.data.files} == {"train", "eval"}


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


def test_a_failing_later_stage_is_reported_and_sets_the_exit_code(project):
    """RS256 without a JWKS: the server refuses to start; the model is still registered, the job exits 1."""
    proc = run_llmops(
        "quickstart", "--skip", "audit", cwd=project, env={"LLMOPS_AUTH__JWT_ALGORITHMS": "RS256"}
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("llmops quickstart: 1 stage(s) failed")
    assert re.search(r"^    register +done", proc.stdout, flags=re.M)
    assert re.search(r"^    serve +failed: .*server exited", proc.stdout, flags=re.M), proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_failed_required_stage_ends_its_lineage_runs_with_fail(project):
    """Training ran (its OpenLineage run started); registering failed: the run ends FAIL with the error's message."""
    from llmops_kit.core import load_settings
    from llmops_kit.quickstart import STAGES, QuickstartContext, Stage, run_stages

    def broken_registry(ctx):
        raise RuntimeError("the model registry is unreachable")

    settings = load_settings(project / "settings.ini", environ={})
    (project / "work").mkdir()
    ctx = QuickstartContext(settings, work=project / "work")
    stages = [s for s in STAGES if s.name in ("data", "train", "evaluate")]
    results = run_stages(
        ctx, [*stages, Stage("register", broken_registry, required=True)], progress=io.StringIO()
    )
    assert [r.status for r in results] == ["done", "done", "done", "failed"], results
    events = [
        json.loads(line)
        for line in (project / ".llmops" / "lineage" / "events.jsonl").read_text().splitlines()
    ]
    ends = {e["job"]["name"]: e for e in events if e["eventType"] in ("COMPLETE", "FAIL", "ABORT")}
    train = ends["support-router.train"]
    assert train["eventType"] == "FAIL"
    assert train["run"]["facets"]["errorMessage"][
        "message"
    ] == "RuntimeError: the model registry is unreachable" or (
        "the model registry is unreachable" in train["run"]["facets"]["errorMessage"]["message"]
    )
    assert ends["support-router.evaluate"]["eventType"] in ("COMPLETE", "FAIL")
