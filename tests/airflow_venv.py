"""Airflow's own virtual environment for the DAG tests (Airflow cannot share the kit's: it needs fastapi<0.137).

Made on first use and cached between runs on one machine: `$LLMOPS_AIRFLOW_VENV`, default
`~/.cache/llmops-kit/venv-airflow-3.3.2`. (No tests here.)"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

AIRFLOW = ["apache-airflow==3.3.2", "apache-airflow-providers-papermill==3.13.3"]
DEFAULT = Path.home() / ".cache" / "llmops-kit" / "venv-airflow-3.3.2"


def airflow_venv() -> Path:
    """The folder of a venv with Airflow and its papermill provider, made (once, under a lock) if missing."""
    venv = Path(os.environ.get("LLMOPS_AIRFLOW_VENV", DEFAULT))
    stamp = venv / ".llmops-installed"
    if stamp.is_file():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes never build it at once
        if not stamp.is_file():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            subprocess.run([*pip, *AIRFLOW], check=True, timeout=1800)
            stamp.write_text(" ".join(AIRFLOW) + "\n")
    return venv


if __name__ == "__main__":
    print(airflow_venv())
