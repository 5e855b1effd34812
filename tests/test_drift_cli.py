"""`llmops drift check` through the installed command: the JSON contract, every exit code, every bad-input error."""

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_llmops

TEST_KEYS = {"name", "kind", "statistic", "p_value", "threshold", "effect_size", "drift"}


def assert_one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("llmops: error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, f"the error is one line: {proc.stderr!r}"
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def banking(tmp_path_factory) -> dict[str, Path]:
    """A project folder with reference, null and drifted samples of BANKING77 in three formats."""
    from conftest import shared_data_dir

    train = shared_data_dir() / "banking77" / "train.csv"
    if not train.is_file():
        pytest.skip(f"shared data sets not found at {train.parent} (set LLMOPS_SHARED_DATA)")
    root = tmp_path_factory.mktemp("drift")
    (root / "settings.ini").write_text("[project]\nstate_dir = .llmops\n[drift]\npermutations = 100\n")
    bank = pd.read_csv(train).sample(frac=1, random_state=7).reset_index(drop=True)
    topup = bank["category"].str.startswith("top_up")
    normal, unseen = bank[~topup], bank[topup]
    paths = {
        "root": root,
        "ref": root / "ref.csv",
        "null": root / "null.jsonl",
        "drifted": root / "drifted.parquet",
    }
    normal.iloc[:200].to_csv(paths["ref"], index=False)
    normal.iloc[200:400].to_json(paths["null"], orient="records", lines=True)
    drifted = pd.concat([normal.iloc[400:500], unseen.iloc[:100]]).sample(frac=1, random_state=0)
    drifted.to_parquet(paths["drifted"], index=False)
    return paths


def check(paths: dict[str, Path], *args: str):
    return run_llmops("drift", "check", *args, cwd=paths["root"])


def test_null_pair_json_contract_and_exit_0(banking):
    proc = check(banking, "--reference", "ref.csv", "--current", "null.jsonl", "--json", "--fail-on-drift")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert set(doc) == {"drift", "alpha", "n_reference", "n_current", "tests"}
    assert doc["drift"] is False
    assert (doc["alpha"], doc["n_reference"], doc["n_current"]) == (0.05, 200, 200)
    assert {t["name"] for t in doc["tests"]} >= {"mmd", "knn"}
    for t in doc["tests"]:
        assert set(t) == TEST_KEYS
        assert isinstance(t["name"], str) and isinstance(t["kind"], str) and isinstance(t["drift"], bool)
        assert isinstance(t["statistic"], float)
        for key in ("p_value", "threshold", "effect_size"):
            assert t[key] is None or isinstance(t[key], float)


def test_drift_exits_1_only_with_fail_on_drift_and_writes_html(banking):
    html = banking["root"] / "report.html"
    args = ["--reference", "ref.csv", "--current", "drifted.parquet", "--json"]
    proc = check(banking, *args, "--fail-on-drift", "--html", str(html))
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["drift"] is True
    assert any(t["drift"] and t["kind"] == "embedding" for t in doc["tests"])
    page = html.read_text()
    assert page.count("data:image/png;base64,") == 2 and html.stat().st_size < 2_000_000
    proc = check(banking, *args)
    assert proc.returncode == 0, "without --fail-on-drift drift is not an error"
    assert json.loads(proc.stdout)["drift"] is True


def test_text_output_and_audit_log_and_profile_folder(banking):
    """A saved profile folder works as REF, an audit log folder as CUR; the text output names the verdict."""
    from llmops_kit.core import InferenceRecord, TextRecord

    log = banking["root"] / "audit"
    log.mkdir()
    cur = pd.read_json(banking["null"], lines=True)
    lines = [
        InferenceRecord(
            request_id=f"r{i}",
            ts=f"2026-01-01T00:00:{i % 60:02d}+00:00",
            route="/v1/chat/completions",
            status=200,
            outcome="ok",
            input=TextRecord.of(t, t),
            prediction={"intent": c},
        ).to_json()
        for i, (t, c) in enumerate(zip(cur["text"], cur["category"], strict=True))
    ]
    (log / "audit-0001.jsonl").write_text("\n".join(lines) + "\n")
    proc = run_llmops("drift", "profile", "--reference", "ref.csv", "--out", "profile", cwd=banking["root"])
    assert proc.returncode == 0, proc.stderr
    assert (banking["root"] / "profile" / "profile.json").is_file()
    proc = check(banking, "--reference", "profile", "--current", "audit")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("drift: no")
    assert "mmd" in proc.stdout


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """Synthetic tables for the bad-input cases (they fail before anything is embedded)."""
    texts = [f"question {i} about my card" for i in range(40)]
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "ok.csv", index=False)
    pd.DataFrame({"prompt": texts}).to_csv(tmp_path / "nocol.csv", index=False)
    pd.DataFrame({"text": texts[:5]}).to_csv(tmp_path / "tiny.csv", index=False)
    (tmp_path / "data.txt").write_text("hello\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "settings.ini").write_text("[project]\nstate_dir = .llmops\n")
    return tmp_path


@pytest.mark.parametrize(
    ("ref", "cur", "extra", "fragments"),
    [
        ("missing.csv", "ok.csv", [], ["missing.csv: no such file or folder"]),
        ("ok.csv", "missing.jsonl", [], ["missing.jsonl: no such file or folder"]),
        ("nocol.csv", "ok.csv", [], ["nocol.csv: missing column 'text'", "'prompt'"]),
        ("ok.csv", "nocol.csv", [], ["nocol.csv: missing column 'text'"]),
        ("ok.csv", "ok.csv", ["--text-column", "body"], ["missing column 'body'"]),
        ("tiny.csv", "ok.csv", [], ["reference has 5 rows; at least 30 are needed"]),
        ("ok.csv", "tiny.csv", [], ["current has 5 rows; at least 30 are needed"]),
        ("ok.csv", "data.txt", [], ["unknown file type '.txt'"]),
        ("empty.csv", "ok.csv", [], ["the file is empty"]),
        ("ok.csv", "ok.csv", ["--embedding-tests", "mmd,foo"], ["--embedding-tests: unknown test(s) foo"]),
    ],
)
def test_bad_input_exits_2_with_one_line(small, ref, cur, extra, fragments):
    proc = run_llmops("drift", "check", "--reference", ref, "--current", cur, *extra, cwd=small)
    assert_one_line_error(proc, *fragments)


def test_bad_audit_log_line_is_named(small):
    log = small / "audit"
    log.mkdir()
    (log / "audit-0001.jsonl").write_text('{"request_id": "r1"}\n')
    proc = run_llmops("drift", "check", "--reference", "ok.csv", "--current", "audit", cwd=small)
    assert_one_line_error(proc, "audit-0001.jsonl:1: inference record lacks required fields")


def test_missing_required_argument_is_a_usage_error(small):
    proc = run_llmops("drift", "check", "--reference", "ok.csv", cwd=small)
    assert proc.returncode == 2
    assert "--current" in proc.stderr


def test_hash_mode_audit_logs_use_the_numeric_and_categorical_tests(tmp_path: Path):
    """Audit logs that keep only prompt hashes have no texts: the check runs on the other columns."""
    from llmops_kit.core import InferenceRecord, TextRecord

    def log(folder: Path, latency: float, intents: list[str]) -> None:
        folder.mkdir()
        lines = [
            InferenceRecord(
                request_id=f"r{i}",
                ts=f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00",
                route="/v1/chat/completions",
                status=200,
                outcome="ok",
                latency_ms=latency + (i * 37 % 11),
                input=TextRecord.of(f"secret prompt {i}", None),
                prediction={"intent": intents[i % len(intents)]},
            ).to_json()
            for i in range(120)
        ]
        (folder / "audit-0001.jsonl").write_text("\n".join(lines) + "\n")

    log(tmp_path / "before", 20.0, ["card_arrival", "exchange_rate"])
    log(tmp_path / "after", 60.0, ["card_arrival", "exchange_rate", "top_up_failed"])
    (tmp_path / "settings.ini").write_text("[project]\nstate_dir = .llmops\n[drift]\npermutations = 100\n")
    proc = run_llmops(
        "drift",
        "check",
        "--reference",
        "before",
        "--current",
        "after",
        "--json",
        "--fail-on-drift",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    tests = {t["name"]: t for t in json.loads(proc.stdout)["tests"]}
    assert "mmd" not in tests
    assert tests["ks:latency_ms"]["drift"] and tests["share:intent"]["drift"]


def test_embedding_tests_option_runs_the_classifier(banking):
    args = ("--reference", "ref.csv", "--current", "drifted.parquet", "--json")
    proc = check(banking, *args, "--embedding-tests", "mmd,classifier")
    assert proc.returncode == 0, proc.stderr
    names = {t["name"] for t in json.loads(proc.stdout)["tests"]}
    assert {"mmd", "classifier"} <= names and "knn" not in names


@pytest.fixture(scope="module")
def router_dir(banking) -> Path:
    """A support router trained on other BANKING77 rows than the samples, saved as `llmops` would."""
    from conftest import shared_data_dir
    from llmops_kit.router.model import SupportRouter

    bank = pd.read_csv(shared_data_dir() / "banking77" / "train.csv").sample(frac=1, random_state=7)
    train = bank.iloc[3000:5000]
    router = SupportRouter.fit(train["text"].tolist(), train["category"].tolist(), C=1.0)
    return router.save(banking["root"] / "router")


def test_model_option_scans_in_the_router_view(banking, router_dir):
    args = ("--model", "router", "--json")
    null = check(banking, "--reference", "ref.csv", "--current", "null.jsonl", *args, "--fail-on-drift")
    assert null.returncode == 0, null.stderr
    tests = {t["name"]: t for t in json.loads(null.stdout)["tests"]}
    assert {"mmd", "knn", "knn:model"} <= set(tests) and not any(t["drift"] for t in tests.values())
    drifted = check(banking, "--reference", "ref.csv", "--current", "drifted.parquet", *args)
    assert drifted.returncode == 0, drifted.stderr
    tests = {t["name"]: t for t in json.loads(drifted.stdout)["tests"]}
    assert tests["knn:model"]["drift"] and tests["knn:model"]["kind"] == "embedding"
    assert set(tests["knn:model"]) == TEST_KEYS


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (("--model", "nowhere"), ("--model nowhere", "neither a saved router folder")),
        (("--embedding-tests", "mmd,model"), ("--embedding-tests model needs --model",)),
        (("--model", "models:/support-router@nobody"), ("not found",)),
    ],
)
def test_bad_model_exits_2_with_one_line(banking, extra, fragments):
    proc = check(banking, "--reference", "ref.csv", "--current", "null.jsonl", *extra)
    assert_one_line_error(proc, *fragments)
