"""Canary releases against a real MLflow registry and a real server: split weights and stickiness per tenant, the
shadow mode, and `llmops registry canary|promote` moving traffic without a restart."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_serving_app_support import start_server

from conftest import run_llmops
from llmops_kit.core import load_settings
from llmops_kit.serving.canary import CanaryConfig, choose_variant, read_registry

MODEL = "support-router"
TEXT = "my card has not arrived yet"


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    """A project whose registry holds the quickstart's router as version 1 (champion) and again as 2 (challenger)."""
    from llmops_kit.quickstart import quickstart
    from llmops_kit.registry.bundle import promote, register, resolve_version

    root = tmp_path_factory.mktemp("canary")
    (root / "settings.ini").write_text("[project]\nstate_dir = .llmops\n")
    settings = load_settings(root / "settings.ini", environ={})
    _, results = quickstart(settings, skip=["serve", "audit", "export"], progress=sys.stderr)
    assert [r.status for r in results if r.name == "register"] == ["done"]
    champion = resolve_version(f"models:/{MODEL}@champion", settings)
    challenger = register(champion.source, settings=settings)
    promote(MODEL, challenger.version, "challenger", settings)
    assert (str(champion.version), challenger.version) == ("1", "2")
    return root


@pytest.fixture(scope="module")
def server(registry):
    srv = start_server(
        registry,
        backend="mlflow",
        serving={"model_uri": f"models:/{MODEL}@champion", "registry_poll_s": 0.3},
        timeout=180,
    )
    yield srv
    srv.stop()


def llmops(root: Path, *args: str) -> str:
    proc = run_llmops(*args, cwd=root)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def route(srv, client: httpx.Client, tenant: str) -> tuple[str, str]:
    """(served model version, request id) of one `/v1/route` call as `tenant`."""
    r = client.post("/v1/route", headers=srv.headers(tenant, ("chat", "metrics")), json={"input": TEXT})
    assert r.status_code == 200, r.text
    return r.json()["model_version"], r.headers["x-request-id"]


def wait_for(check, timeout: float = 30.0):
    """Poll `check()` until it returns something truthy (the server re-reads the registry every 0.3 s)."""
    deadline = time.monotonic() + timeout
    while True:
        out = check()
        if out or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def expected(tenant: str, share: float) -> str:
    """The version the canary's sticky rule sends `tenant` to."""
    side = choose_variant(CanaryConfig(share), f"{MODEL}/2", tenant, None)
    return "2" if side == "challenger" else "1"


def test_split_weights_are_respected_and_sticky_per_tenant(server):
    root = server.root
    assert llmops(root, "registry", "canary", MODEL, "--off").strip() == f"{MODEL}: no canary to end"
    out = llmops(root, "registry", "canary", MODEL, "--weight", "30%")
    assert '"challenger": 0.3' in out and '"mode": "split"' in out
    tenants = [f"tenant-{i}" for i in range(150)]
    probe = next(t for t in tenants if expected(t, 0.3) == "2")
    with server.client() as client:
        assert wait_for(lambda: route(server, client, probe)[0] == "2"), "the canary never reached the server"
        served, ids = {}, {}
        for t in tenants:
            served[t], ids[t] = route(server, client, t)
        again = {t: route(server, client, t)[0] for t in tenants[:30]}  # the same tenants, again
    assert served == {t: expected(t, 0.3) for t in tenants}  # exactly the sticky rule
    share = sum(v == "2" for v in served.values()) / len(served)
    assert 0.18 <= share <= 0.42, share  # 30% within sampling tolerance for 150 tenants
    assert again == {t: served[t] for t in again}
    records = server.wait_records(ids.values())
    for t, rid in ids.items():
        (rec,) = records[rid]
        assert rec["prediction"]["variant"] == ("challenger" if served[t] == "2" else "champion")
        assert rec["model_version"] == served[t]
    with server.client() as client:
        metrics = client.get("/metrics", headers=server.headers("ops", ("metrics",))).text
    assert 'llmops_canary_requests_total{mode="split",model_version="2",variant="challenger"}' in metrics


def test_shadow_answers_with_the_champion_and_records_the_challenger(server):
    root = server.root
    llmops(root, "registry", "canary", MODEL, "--weight", "100%", "--shadow")
    with server.client() as client:

        def shadowed() -> str | None:
            version, rid = route(server, client, "tenant-shadow")
            found = server.wait_records([f"{rid}.shadow"], timeout=1)
            return rid if version == "1" and f"{rid}.shadow" in found else None

        rid = wait_for(shadowed)
        assert rid, "no shadow record appeared"
        answers = [route(server, client, f"tenant-s{i}") for i in range(20)]
    assert {v for v, _ in answers} == {"1"}  # every answer is the champion's
    shadow_ids = [f"{i}.shadow" for _, i in answers]
    records = server.wait_records([*shadow_ids, *(i for _, i in answers)])
    for _, i in answers:
        (primary,) = records[i]
        assert (primary["prediction"]["variant"], primary["model_version"]) == ("champion", "1")
        (shadow,) = records[f"{i}.shadow"]
        assert shadow["model_version"] == "2" and shadow["outcome"] == "ok"
        assert shadow["prediction"]["mode"] == "shadow" and shadow["prediction"]["shadow_of"] == i
        assert shadow["prediction"]["intents"] == [
            primary["prediction"]["intents"][0]
        ]  # the same model, twice
        assert shadow["input"]["sha256"] == primary["input"]["sha256"]


def test_promote_moves_traffic_without_restart_and_ends_the_canary(server):
    root, pid = server.root, server.proc.pid
    llmops(root, "registry", "canary", MODEL, "--weight", "10%")
    llmops(root, "registry", "promote", MODEL, "2")
    state = read_registry(MODEL, settings=load_settings(root / "settings.ini", environ={}))
    assert (state.champion, state.canary.active) == ("2", False)
    shown = json.loads(llmops(root, "registry", "canary", MODEL))
    assert shown == {
        "champion": "2",
        "challenger": "2",
        "canary": {"challenger": 0.0, "mode": "split", "sticky": "tenant"},
    }
    with server.client() as client:
        assert wait_for(lambda: all(route(server, client, f"t{i}")[0] == "2" for i in range(5)))
        served = {route(server, client, f"tenant-{i}")[0] for i in range(40)}
        ready = client.get("/readyz").json()
    assert served == {"2"} and server.proc.pid == pid and server.proc.poll() is None
    assert "version 2" in ready["checks"]["model"]["detail"]
    llmops(root, "registry", "promote", MODEL, "1")  # and back
    with server.client() as client:
        assert wait_for(lambda: route(server, client, "tenant-back")[0] == "1")


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(server, tmp_path):
    import mlflow

    from llmops_kit.registry.bundle import configure_mlflow

    settings = load_settings(server.root / "settings.ini", environ={})
    broken = tmp_path / "broken-model"  # registered, but holds no model: loading it fails
    broken.mkdir()
    client = mlflow.MlflowClient(configure_mlflow(settings, create_experiment=False))
    version = client.create_model_version(MODEL, broken.as_uri()).version
    with server.client() as client_http:
        before = route(server, client_http, "tenant-broken")[0]
        llmops(server.root, "registry", "promote", MODEL, str(version))
        failed = wait_for(lambda: f"cannot load models:/{MODEL}/{version}" in server.stderr())
        after = {route(server, client_http, f"tenant-b{i}")[0] for i in range(10)}
    assert failed, "the failed load was not logged"
    assert after == {before}  # still the old champion, answering
    llmops(server.root, "registry", "promote", MODEL, before)
    log = [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]
    assert any(r.get("event") == "registry_watch_failed" and r.get("what") == "champion" for r in log), log[
        -5:
    ]


def test_canary_cli_errors_name_what_is_wrong(server):
    root = server.root
    proc = run_llmops("registry", "canary", MODEL, "--weight", "10", cwd=root)
    assert proc.returncode != 0 and "write a percentage (10%) or a fraction (0.1)" in proc.stderr
    proc = run_llmops("registry", "canary", "no-such-model", "--weight", "10%", cwd=root)
    assert proc.returncode != 0 and "no registered model 'no-such-model'" in proc.stderr
