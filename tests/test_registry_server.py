"""The registry against a real `mlflow server` on 127.0.0.1: a remote store is only a settings change."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import run_llmops
from llmops_kit.core import load_settings

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A tracking server with its own sqlite store and proxied artifacts, stopped after the tests."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        + [
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "art"),
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, root
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory, mlflow_server):
    """A project whose settings point at the server and nothing else."""
    url, _ = mlflow_server
    root = tmp_path_factory.mktemp("remote-project")
    (root / "settings.ini").write_text(f"[project]\nstate_dir = .llmops\n\n[mlflow]\ntracking_uri = {url}\n")
    return root


def test_build_register_promote_and_load_through_the_server(mlflow_server, project):
    from llmops_kit.quickstart import build_champion
    from llmops_kit.registry.bundle import load_app, promote

    url, server_root = mlflow_server
    settings = load_settings(project / "settings.ini", environ={})
    first = build_champion(settings, profile=False)
    second = build_champion(settings, profile=False)
    assert (first.version, second.version) == ("1", "2")
    assert second.uri == "models:/support-router@champion"
    # artifacts went through the server, not into the project
    assert any((server_root / "art").rglob("app.json"))
    assert not (project / ".llmops" / "mlartifacts").exists() or not any(
        (project / ".llmops" / "mlartifacts").rglob("*")
    )
    assert not (project / ".llmops" / "mlflow.db").exists()
    app = load_app("models:/support-router@champion", settings)
    assert app.version == "2"
    promote("support-router", "1", "champion", settings)
    app = load_app("models:/support-router@champion", settings)
    assert app.version == "1"
    prediction = app.predict(["my new card never arrived"])[0]
    assert prediction["intent"] == "card_delivery" and prediction["route"] == "card-operations"


def test_cli_talks_to_the_server(mlflow_server, project):
    proc = run_llmops("registry", "list", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("support-router\t")
    shown = json.loads(run_llmops("registry", "show", "support-router", cwd=project).stdout)
    assert [v["version"] for v in shown["versions"]] == ["1", "2"]
    proc = run_llmops("registry", "show", "support-router@nobody", cwd=project)
    assert proc.returncode == 2 and "not found" in proc.stderr
