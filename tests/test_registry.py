"""The registry on the default local store: a champion built in-process loads in a new process with the same
predictions, its guardrail policy and drift profile, and `llmops registry` lists, shows and promotes it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_llmops
from llmops_kit.core import load_settings

TEXTS = ["someone stole my card on the bus", "what rate do you use for dollars", "hello?"]


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A project whose sqlite store holds a champion, and the in-memory router that was registered."""
    from llmops_kit.quickstart import quickstart

    root = tmp_path_factory.mktemp("registry")
    (root / "settings.ini").write_text("[project]\nstate_dir = .llmops\n")
    settings = load_settings(root / "settings.ini", environ={})
    ctx, results = quickstart(settings, skip=["serve", "audit", "export"], progress=sys.stderr)
    assert [r.status for r in results if r.name == "register"] == ["done"]
    return root, ctx


def test_store_is_local_sqlite_with_explicit_artifact_root(champion):
    root, ctx = champion
    assert (root / ".llmops" / "mlflow.db").is_file()
    assert any((root / ".llmops" / "mlartifacts").rglob("app.json"))
    assert not (root / "mlruns").exists() and not (Path.cwd() / "mlruns").exists()


def test_new_process_loads_the_same_model_with_policy_and_profile(champion):
    root, ctx = champion
    code = (
        "import json, sys\n"
        "from llmops_kit.core import load_settings\n"
        "from llmops_kit.registry.bundle import load_app\n"
        "app = load_app('models:/support-router@champion', load_settings('settings.ini', environ={}))\n"
        "print(json.dumps({'name': app.name, 'version': app.version, 'predictions': app.predict(json.loads(sys.argv[1])),\n"
        "  'policy': app.policy_yaml, 'profile': sorted(p.name for p in app.reference_profile_dir.iterdir())\n"
        "     if app.reference_profile_dir else None, 'snapshot': app.settings_snapshot}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(TEXTS)], cwd=root, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (loaded["name"], loaded["version"]) == ("support-router", ctx.champion.version)
    in_memory = ctx.router.predict(TEXTS)
    for a, b in zip(loaded["predictions"], in_memory, strict=True):
        assert (a["intent"], a["route"], a["reply"], a["abstained"]) == (
            b["intent"],
            b["route"],
            b["reply"],
            b["abstained"],
        )
        assert abs(a["confidence"] - b["confidence"]) < 1e-5
        assert [t["intent"] for t in a["top_k"]] == [t["intent"] for t in b["top_k"]]
    from llmops_kit.quickstart import policy_text

    expected_policy = policy_text(load_settings(root / "settings.ini", environ={}))
    assert loaded["policy"] == expected_policy
    if ctx.profile_dir is not None:  # the drift module is installed
        assert "profile.json" in loaded["profile"]
    assert loaded["snapshot"]["mlflow"]["model_name"] == "support-router"


def test_version_carries_lineage_tags(champion):
    root, ctx = champion
    proc = run_llmops("registry", "show", "support-router@champion", cwd=root)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    tags = shown["tags"]
    assert shown["version"] == ctx.champion.version and "champion" in shown["aliases"]
    for key in ("llmops.git_commit", "llmops.package_version", "llmops.notebook", "llmops.data.train.sha256"):
        assert tags.get(key), key
    assert float(tags["llmops.metric.accuracy"]) == pytest.approx(ctx.report.accuracy, abs=1e-5)


def test_cli_list_and_promote(champion):
    root, ctx = champion
    proc = run_llmops("registry", "list", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("support-router\t") and "@champion=" in proc.stdout
    proc = run_llmops(
        "registry", "promote", "support-router", ctx.champion.version, "--alias", "challenger", cwd=root
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"models:/support-router@challenger -> version {ctx.champion.version}"
    assert (
        "challenger"
        in json.loads(run_llmops("registry", "show", "support-router@challenger", cwd=root).stdout)["aliases"]
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (("registry", "show", "support-router@nobody"), "not found"),
        (("registry", "show", "no-such-model"), "no registered model 'no-such-model'"),
        (("registry", "show", "no-such-model@champion"), "not found"),
        (("registry", "promote", "support-router", "99"), "has no version 99"),
        (("registry", "promote", "support-router", "1", "--alias", "latest"), "is not valid"),
    ],
)
def test_cli_bad_references_are_one_line_errors(champion, args, message):
    root, _ = champion
    proc = run_llmops(*args, cwd=root)
    assert proc.returncode == 2
    assert proc.stderr.startswith("llmops: error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_load_app_unknown_uri_is_an_input_error(champion):
    from llmops_kit.errors import InputError
    from llmops_kit.registry.bundle import load_app

    root, _ = champion
    settings = load_settings(root / "settings.ini", environ={})
    for uri in ("models:/no-such-model@champion", "models:/support-router/42", "not-a-uri"):
        with pytest.raises(InputError):
            load_app(uri, settings)


def test_drift_check_scans_in_the_champion_view(champion):
    from llmops_kit.registry.bundle import load_app
    from llmops_kit.router.tickets import sample_frame

    root, _ = champion
    app = load_app("models:/support-router@champion", load_settings(root / "settings.ini", environ={}))
    sample_frame(seed=3).to_csv(root / "traffic.csv", index=False)
    proc = run_llmops(
        "drift",
        "check",
        "--reference",
        str(app.reference_profile_dir),
        "--current",
        "traffic.csv",
        "--model",
        "models:/support-router@champion",
        "--json",
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr
    names = [t["name"] for t in json.loads(proc.stdout)["tests"] if t["kind"] == "embedding"]
    assert names == ["mmd", "knn", "knn:model"]
