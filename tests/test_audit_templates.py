"""The packaged audit report templates run with their defaults, as `nbdev-test` runs notebooks, on the sample log
beside them; each keeps its `parameters` cell for papermill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

TEMPLATES = REPO / "llmops_kit" / "data" / "audit"
NBDEV_TEST = Path(sys.executable).parent / "nbdev-test"


@pytest.mark.parametrize("name", ["drift", "guardrails", "cost_sla"])
def test_template_has_a_parameters_cell(name: str):
    cells = json.loads((TEMPLATES / f"{name}.ipynb").read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert "log_dir = " in "".join(tagged[0]["source"]) and not any(c.get("outputs") for c in cells)


def test_templates_run_with_their_defaults():
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [str(NBDEV_TEST), str(TEMPLATES), "--n-workers", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success." in proc.stdout
    assert not list(TEMPLATES.glob(".llmops")), "a template run on its own writes nothing beside itself"
