"""Prometheus metrics summed over real worker processes, live gauges of dead workers, bounded labels."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from llmops_kit.serving.metrics import Metrics

WORKER = textwrap.dedent(
    """
    import sys
    from llmops_kit.serving.metrics import Metrics
    m = Metrics()
    n = int(sys.argv[1])
    m.in_flight.inc()  # one request stays in flight until the parent says stop
    for i in range(n):
        m.request("/v1/chat/completions", "support-router", 200 if i % 10 else 500, "ok" if i % 10 else "server_error", 0.003)
        m.stage("auth", 0.00002)
        m.tokens("prompt", "support-router", 5)
        m.guardrail("pii", "input", "redact")
        m.ttft("support-router", 0.03)
    print("ready", flush=True)
    sys.stdin.readline()
    """
)

RENDER = "from llmops_kit.serving.metrics import Metrics; import sys; sys.stdout.write(Metrics().render()[0].decode())"


def env_for(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
    return {**env, "PROMETHEUS_MULTIPROC_DIR": str(folder)}


def scrape(folder: Path) -> dict:
    text = subprocess.run(
        [sys.executable, "-c", RENDER], env=env_for(folder), capture_output=True, text=True, check=True
    ).stdout
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families: dict, family: str, suffix: str = "", **labels) -> float:
    return sum(
        s.value
        for s in families[family].samples
        if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_two_worker_processes_are_summed_and_dead_workers_leave_the_gauge(tmp_path):
    setup = "from llmops_kit.serving.metrics import setup_multiprocess; import sys; setup_multiprocess(sys.argv[1])"
    (tmp_path / "stale_counter_99999.db").write_bytes(b"\0" * 16)  # left over from a previous run
    subprocess.run([sys.executable, "-c", setup, str(tmp_path)], check=True)
    assert not list(tmp_path.glob("*.db")), "setup_multiprocess starts from an empty folder"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(n)],
            env=env_for(tmp_path),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in (30, 50)
    ]
    try:
        assert [w.stdout.readline().strip() for w in workers] == ["ready", "ready"]
        fams = scrape(tmp_path)
        assert value(fams, "llmops_requests", "_total", route="/v1/chat/completions") == 80
        assert value(fams, "llmops_requests", "_total", status="500", outcome="server_error") == 8
        assert value(fams, "llmops_request_duration_seconds", "_count", model="support-router") == 80
        assert value(fams, "llmops_overhead_seconds", "_bucket", stage="auth", le="2.5e-05") == 80
        assert value(fams, "llmops_tokens", "_total", type="input", model="support-router") == 400
        assert (
            value(fams, "llmops_guardrail_decisions", "_total", guard="pii", stage="input", action="redact")
            == 80
        )
        assert value(fams, "llmops_time_to_first_token_seconds", "_bucket", le="0.04") == 80
        assert value(fams, "llmops_in_flight_requests") == 2
        # the first worker exits without finishing its request; the server marks it dead
        workers[0].communicate("stop\n", timeout=30)
        mark = "from llmops_kit.serving.metrics import mark_process_dead; import sys; mark_process_dead(int(sys.argv[1]))"
        subprocess.run([sys.executable, "-c", mark, str(workers[0].pid)], env=env_for(tmp_path), check=True)
        fams = scrape(tmp_path)
        assert value(fams, "llmops_in_flight_requests") == 1, "a dead worker's in-flight requests are dropped"
        assert value(fams, "llmops_requests", "_total") == 80, "its counts stay in the totals"
    finally:
        for w in workers:
            if w.poll() is None:
                w.communicate("stop\n", timeout=30)


def test_labels_stay_bounded_whatever_clients_send(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    m = Metrics(max_values=5)
    for i in range(200):
        m.request(f"/v1/chat/completions/{i}", f"model-{i}", 200 + i, "whatever", 0.001)
        m.guardrail(f"guard-{i}", "input", f"action-{i}")
        m.tokens(f"kind-{i}", f"model-{i}", 1)
    fams = {f.name: f for f in text_string_to_metric_families(m.render()[0].decode())}
    requests = [s for s in fams["llmops_requests"].samples if s.name == "llmops_requests_total"]
    assert {s.labels["route"] for s in requests} == {"other"}
    assert len({s.labels["model"] for s in requests}) == 6  # five names, then "other"
    assert {s.labels["outcome"] for s in requests} == {"other"}
    assert len({s.labels["status"] for s in requests}) <= 401
    guards = [s for s in fams["llmops_guardrail_decisions"].samples if s.name.endswith("_total")]
    assert len({s.labels["guard"] for s in guards}) == 6 and len({s.labels["action"] for s in guards}) == 6
    assert {s.labels["type"] for s in fams["llmops_tokens"].samples} == {"other"}
    assert sum(s.value for s in requests) == 200


def test_statuses_are_codes_and_the_content_type_is_prometheus_text(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    m = Metrics()
    m.request("/v1/embeddings", "minilm", 422, "client_error", 0.001)
    m.request("/v1/embeddings", "minilm", "weird", "client_error", 0.001)
    body, content_type = m.render()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    statuses = {
        s.labels["status"] for s in fams["llmops_requests"].samples if s.name == "llmops_requests_total"
    }
    assert statuses == {"422", "other"}
    assert "process_cpu_seconds_total" in body.decode(), "single-process mode also reports the process"
