"""`llmops serve` as a process: one audit record per request for every outcome class, headers, limits, timeouts,
client disconnects, metrics (scope, separate port, several workers) and CORS."""

from __future__ import annotations

import re
import socket
import time

import httpx
import pytest
from test_serving_app_support import ECHO, chat_body, free_port, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(
        tmp_path_factory.mktemp("app"),
        serving={"max_body_bytes": 4096, "request_timeout_s": 1.5, "max_in_flight": 4},
    )
    yield srv
    srv.stop()


def _raw_disconnect(server, body: bytes, headers: dict[str, str]) -> None:
    """Send a request and close the connection before the answer (a client that gives up)."""
    host, port = server.base_url.split("//")[1].split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        time.sleep(0.3)


def test_one_audit_record_per_request_for_every_outcome(server):
    auth = server.headers()
    sent: dict[str, tuple[int, str]] = {}  # request id -> (status, expected outcome)
    with server.client() as c:

        def call(expected_status: int, outcome: str, method: str, path: str, rid: str, **kw):
            r = c.request(method, path, headers={**kw.pop("headers", auth), "x-request-id": rid}, **kw)
            assert r.status_code == expected_status, (path, r.text)
            assert r.headers["x-request-id"] == rid
            if r.headers.get("content-type", "").startswith("application/json") and r.status_code >= 400:
                err = r.json()["error"]
                assert err["request_id"] == rid and err["message"] and "Traceback" not in r.text
            sent[rid] = (expected_status, outcome)
            return r

        call(200, "ok", "POST", "/v1/chat/completions", "req-ok-0001", json=chat_body())
        call(200, "ok", "POST", "/v1/route", "req-route-0001", json={"input": ["a", "b"]})
        call(200, "ok", "GET", "/v1/models", "req-models-01")
        r = call(
            400,
            "guardrail_block",
            "POST",
            "/v1/chat/completions",
            "req-block-001",
            json=chat_body("my AWS key is AKIAIOSFODNN7EXAMPLE"),
        )
        assert r.json()["error"]["code"] == "guardrail_blocked"
        call(401, "auth_error", "POST", "/v1/chat/completions", "req-noauth-01", headers={}, json=chat_body())
        call(
            401,
            "auth_error",
            "POST",
            "/v1/chat/completions",
            "req-badtok-01",
            headers={"Authorization": "Bearer abc.def.ghi"},
            json=chat_body(),
        )
        call(403, "forbidden", "GET", "/metrics", "req-forbid-01")
        call(404, "client_error", "GET", "/v1/nothing-here", "req-404-00001")
        call(
            404,
            "client_error",
            "POST",
            "/v1/chat/completions",
            "req-nomodel-1",
            json=chat_body(model="gpt-4o"),
        )
        r = call(405, "client_error", "GET", "/v1/chat/completions", "req-405-00001")
        assert "POST" in r.headers.get("allow", "")
        call(413, "too_large", "POST", "/v1/chat/completions", "req-413-00001", json=chat_body("x" * 5000))
        call(
            422,
            "client_error",
            "POST",
            "/v1/chat/completions",
            "req-422-00001",
            content=b"{not json",
            headers={**auth, "content-type": "application/json"},
        )
        r = call(422, "client_error", "POST", "/v1/chat/completions", "req-422-00002", json={"model": ECHO})
        assert "messages" in r.json()["error"]["message"]
        call(504, "timeout", "POST", "/v1/chat/completions", "req-504-00001", json=chat_body("/sleep 3"))
    _raw_disconnect(
        server,
        b'{"model": "%s", "messages": [{"role": "user", "content": "/sleep 3"}]}' % ECHO.encode(),
        {**auth, "x-request-id": "req-gone-0001"},
    )
    sent["req-gone-0001"] = (499, "disconnect")

    # 429: more requests in flight than [serving] max_in_flight
    import concurrent.futures as cf

    def slow(i):
        with server.client() as c2:
            return c2.post(
                "/v1/chat/completions",
                headers={**auth, "x-request-id": f"req-busy-{i:04d}"},
                json=chat_body("/sleep 0.8"),
            )

    with cf.ThreadPoolExecutor(8) as ex:
        busy = list(ex.map(slow, range(8)))
    statuses = sorted(r.status_code for r in busy)
    assert 429 in statuses and 200 in statuses, statuses
    for r in busy:
        sent[r.headers["x-request-id"]] = (r.status_code, "ok" if r.status_code == 200 else "rate_limited")
        if r.status_code == 429:
            assert r.headers["retry-after"]

    found = server.wait_records(sent)
    for rid, (status, outcome) in sent.items():
        assert len(found.get(rid, [])) == 1, f"{rid}: {len(found.get(rid, []))} records"
        rec = found[rid][0]
        assert (rec["status"], rec["outcome"]) == (status, outcome), rec
        assert "eyJ" not in str(rec), "a token leaked into the audit log"
    assert found["req-ok-0001"][0]["tenant"] == "acme"
    assert found["req-block-001"][0]["guardrails"][0]["action"] == "block"
    assert found["req-noauth-01"][0]["tenant"] is None
    assert found["req-ok-0001"][0]["subject"]  # who called, beside the tenant (the token's sub)
    assert found["req-noauth-01"][0]["subject"] is None


def test_security_headers_and_no_cors_by_default(server):
    with server.client() as c:
        r = c.get("/healthz", headers={"Origin": "https://evil.example"})
        pre = c.options(
            "/v1/chat/completions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
    assert r.json() == {"status": "ok"}
    for name, value in [
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ]:
        assert r.headers[name] == value
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "access-control-allow-origin" not in r.headers and "access-control-allow-origin" not in pre.headers
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])


def test_metrics_need_scope(server):
    with server.client() as c:
        c.post("/v1/chat/completions", headers=server.headers(), json=chat_body())
        r = c.get("/metrics", headers=server.headers("ops", ("metrics",)))
    assert r.status_code == 200
    assert "llmops_requests_total{" in r.text and 'outcome="ok"' in r.text
    assert "llmops_overhead_seconds" in r.text and "llmops_in_flight_requests" in r.text


def test_metrics_port_cors_and_workers(tmp_path):
    metrics_port = free_port()
    srv = start_server(
        tmp_path,
        serving={"metrics_port": metrics_port, "cors_origins": "https://app.example"},
        args=("--workers", "2"),
    )
    try:
        for _ in range(12):  # a new connection each time, so both workers get some
            with srv.client() as c:
                assert (
                    c.post("/v1/chat/completions", headers=srv.headers(), json=chat_body()).status_code == 200
                )
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text  # no credential needed
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("llmops_requests_total{")
            and 'route="/v1/chat/completions"' in line
            and 'status="200"' in line
        )
        assert total == 12, "both workers' requests are counted"
        with srv.client() as c:
            pre = c.options(
                "/v1/chat/completions",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            assert pre.headers["access-control-allow-origin"] == "https://app.example"
            other = c.get("/healthz", headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in other.headers
            origin = {"Origin": "https://app.example"}  # the fast route's answer and an error carry CORS too
            chat = c.post("/v1/chat/completions", headers={**srv.headers(), **origin}, json=chat_body())
            assert chat.status_code == 200
            assert chat.headers["access-control-allow-origin"] == "https://app.example"
            assert "x-request-id" in chat.headers["access-control-expose-headers"]
            denied = c.post("/v1/chat/completions", headers=origin, json=chat_body())
            assert denied.status_code == 401
            assert denied.headers["access-control-allow-origin"] == "https://app.example"
            routed = c.post(
                "/v1/route", headers={**srv.headers(), **origin}, json={"input": "Where is my card?"}
            )
            assert routed.headers["access-control-allow-origin"] == "https://app.example"
        assert len(srv.records()) >= 13
    finally:
        srv.stop()


def test_model_not_ready_is_503_with_a_record(tmp_path):
    srv = start_server(
        tmp_path, backend="mlflow", serving={"model_uri": "models:/no-such-model@champion"}, ready="/healthz"
    )
    try:
        with srv.client() as c:
            deadline = time.monotonic() + 60
            while True:
                ready = c.get("/readyz")
                if "cannot load" in ready.text or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert ready.status_code == 503 and ready.json()["checks"]["model"]["ok"] is False
            assert "no-such-model" in ready.json()["checks"]["model"]["detail"]
            r = c.post("/v1/chat/completions", headers=srv.headers(), json=chat_body(model="no-such-model"))
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
        rid = r.headers["x-request-id"]
        rec = srv.wait_records([rid])[rid]
        assert len(rec) == 1 and rec[0]["outcome"] == "unavailable"  # not ready is no server error
    finally:
        srv.stop()


def test_bad_configuration_fails_in_one_line(tmp_path):
    from conftest import run_llmops

    (tmp_path / "settings.ini").write_text("[serving]\nbackend = benchmark\n")
    proc = run_llmops("serve", "--config", str(tmp_path / "settings.ini"), cwd=tmp_path, timeout=60)
    assert (
        proc.returncode == 2
        and proc.stderr.startswith("llmops: error:")
        and "LLMOPS_JWT_SECRET" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    proc = run_llmops(
        "serve", "--certfile", "x.pem", cwd=tmp_path, env={"LLMOPS_JWT_SECRET": "s" * 40}, timeout=60
    )
    assert proc.returncode == 2 and "both a certificate and a key" in proc.stderr


def test_probes_leave_no_audit_record_and_not_ready_is_no_server_error(tmp_path):
    srv = start_server(
        tmp_path, backend="mlflow", serving={"model_uri": "models:/no-such-model@champion"}, ready="/healthz"
    )
    try:
        with srv.client() as c:
            for _ in range(5):
                assert c.get("/healthz").status_code == 200
                assert c.get("/readyz").status_code == 503
            r = c.post("/v1/chat/completions", headers=srv.headers(), json=chat_body(model="no-such-model"))
            assert r.status_code == 503
            rid = r.headers["x-request-id"]
            records = srv.wait_records([rid])
            metrics = c.get("/metrics", headers=srv.headers(scopes=("metrics",))).text
        routes = [rec["route"] for recs in records.values() for rec in recs]
        assert "/readyz" not in routes and "/healthz" not in routes
        assert all(rec["route"] not in ("/readyz", "/healthz") for rec in srv.records())
        assert [rec["outcome"] for rec in records[rid]] == ["unavailable"]
        not_ready = [
            line
            for line in metrics.splitlines()
            if line.startswith("llmops_requests_total{") and 'status="503"' in line
        ]
        assert not_ready and all('outcome="unavailable"' in line for line in not_ready)
    finally:
        srv.stop()


def test_chat_models_from_settings_answer_directly_and_stream(tmp_path):
    """A `[model.NAME]` chat model (the deterministic echo) is listed, answers, streams, and is priced and audited."""
    extra = "[model.echo-chat]\nkind = benchmark\nprompt_usd_per_mtok = 1000000\ncompletion_usd_per_mtok = 2000000\n"
    srv = start_server(tmp_path, extra_ini=extra)
    try:
        with srv.client() as c:
            models = [m["id"] for m in c.get("/v1/models", headers=srv.headers()).json()["data"]]
            assert models[:2] == ["llmops-benchmark-echo", "echo-chat"]
            body = {"model": "echo-chat", "messages": [{"role": "user", "content": "where is my card"}]}
            r = c.post("/v1/chat/completions", headers=srv.headers(), json=body)
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["choices"][0]["message"]["content"] == "echo: where is my card"
            assert out["llmops"]["answered_by"] == "echo-chat" and out["llmops"]["intent"] is None
            usage = out["usage"]
            rid = r.headers["x-request-id"]
            rec = srv.wait_records([rid])[rid][0]
            assert rec["model"] == "echo-chat" and rec["prediction"]["answered_by"] == "echo-chat"
            expected = usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0
            assert abs(rec["cost_usd"] - expected) < 1e-6
            streamed = c.post(
                "/v1/chat/completions",
                headers=srv.headers(),
                json={**body, "stream": True, "stream_options": {"include_usage": True}},
            )
            lines = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
            assert lines[-1] == "[DONE]"
            import json

            chunks = [json.loads(line) for line in lines[:-1]]
            text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
            assert text == "echo: where is my card"
            assert chunks[-1]["usage"]["completion_tokens"] == usage["completion_tokens"]
            unknown = c.post("/v1/chat/completions", headers=srv.headers(), json={**body, "model": "gpt-9"})
            assert unknown.status_code == 404 and "'echo-chat'" in unknown.json()["error"]["message"]
            ready = c.get("/readyz").json()["checks"]
            assert ready["model:echo-chat"]["ok"] is True
    finally:
        srv.stop()


def test_unknown_chat_model_in_settings_is_a_one_line_error(tmp_path):
    from conftest import run_llmops

    (tmp_path / "settings.ini").write_text("[serving]\nbackend = benchmark\nchat_model = nowhere\n")
    proc = run_llmops(
        "serve",
        "--config",
        str(tmp_path / "settings.ini"),
        cwd=tmp_path,
        env={"LLMOPS_JWT_SECRET": "s" * 40},
        timeout=60,
    )
    assert proc.returncode == 2 and "[serving] chat_model = 'nowhere'" in proc.stderr
    assert "Traceback" not in proc.stderr
