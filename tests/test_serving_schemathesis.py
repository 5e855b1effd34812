"""Schemathesis against the OpenAPI schema of a running `llmops serve`: whatever it generates, never a 5xx, and
every answer conforms to the schema (status codes, content types, bodies, SSE events; all default checks).

The Schemathesis command line is used (its pytest plugin's lazy fixtures do not run on pytest 9)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_serving_app_support import server_env, start_server

ST = Path(sys.executable).parent / "schemathesis"
ALL_SCOPES = ("chat", "embeddings", "metrics", "admin")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # a short model timeout keeps `/sleep` prompts that the fuzzer may invent from slowing the run
    srv = start_server(tmp_path_factory.mktemp("fuzz"), serving={"request_timeout_s": 0.5})
    yield srv
    srv.stop()


def schemathesis_run(server, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    token = server.token("fuzz", ALL_SCOPES)
    cmd = [
        str(ST), "run", server.base_url + "/openapi.json",
        "-H", f"Authorization: Bearer {token}",
        "--seed", "1", "--request-timeout", "30", "--suppress-health-check", "all", "--no-color",
        *args,
    ]  # fmt: skip
    return subprocess.run(
        cmd, cwd=server.root, env=server_env(), capture_output=True, text=True, timeout=timeout
    )


def test_no_server_errors(server):
    # the fixture's own readiness polls (503 while the guards warm up) are not fuzzing
    before = len(server.records())
    proc = schemathesis_run(
        server,
        "--max-examples",
        "25",
        "--phases",
        "examples,coverage,fuzzing",
        "--exclude-path",
        "/v1/embeddings",
        "--exclude-path",
        "/v1/advisor/simulate",
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    print(proc.stdout[-3000:])
    records = server.records()[before:]
    assert len(records) > 100, "every fuzzed request left an audit record"
    errors = [r for r in records if r["status"] >= 500 and r["status"] != 504]
    assert not errors, [
        {k: r.get(k) for k in ("route", "method", "status", "outcome", "error")} for r in errors[:5]
    ]


def test_embeddings_no_server_errors(server):
    """Fewer examples: each valid one runs the sentence encoder (loaded first, outside the 0.5 s model timeout)."""
    deadline = time.monotonic() + 90
    with server.client() as c:
        while (
            c.post(
                "/v1/embeddings",
                headers=server.headers("fuzz", ALL_SCOPES),
                json={"model": "all-MiniLM-L6-v2", "input": "x"},
            ).status_code
            != 200
        ):
            assert time.monotonic() < deadline, "the sentence encoder did not load"
            time.sleep(0.5)
    proc = schemathesis_run(
        server, "--max-examples", "6", "--phases", "examples,fuzzing", "--include-path", "/v1/embeddings"
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_advisor_simulation_never_answers_5xx(server):
    """The simulation's arguments have rules a schema cannot state (weights that sum to 1, known asset classes), so a
    schema-valid body may get a 400 naming the field; what must never happen is a server error."""
    proc = schemathesis_run(
        server,
        "--max-examples",
        "40",
        "--phases",
        "examples,coverage,fuzzing",
        "--include-path",
        "/v1/advisor/simulate",
        "--checks",
        "not_a_server_error",
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
