"""Crash safety: `kill -9` the server under load; every request that got a 200 has its audit record, and the
hash chain verifies up to the crash point (and goes on after a restart)."""

from __future__ import annotations

import threading
import time

import httpx
from test_serving_app_support import chat_body, run_audit_verify, start_server


def _load(server, worker: int, stop: threading.Event, results: list) -> None:
    with server.client(timeout=10) as c:
        n = 0
        while not stop.is_set():
            rid = f"crash-{worker}-{n:06d}"
            n += 1
            try:
                r = c.post(
                    "/v1/chat/completions",
                    headers={**server.headers(), "x-request-id": rid},
                    json=chat_body(f"ticket {worker}/{n}: my card payment was declined"),
                )
                results.append((rid, r.status_code, r.headers.get("x-request-id")))
            except httpx.HTTPError:
                results.append((rid, None, None))
                return


def _verify_up_to_crash(server) -> int:
    """`llmops audit verify` passes, or fails only on a last line cut off by the kill; the verified count."""
    proc = run_audit_verify(server)
    if proc.returncode == 0:
        assert proc.stdout.startswith("ok: "), proc.stdout
    else:
        assert "the last line is cut off" in proc.stdout, proc.stdout + proc.stderr
    return int(proc.stdout.split("records")[0].split()[-1])


def test_kill9_under_load_keeps_every_200_audited(tmp_path):
    root = tmp_path / "crash"
    server = start_server(root, args=("--workers", "2"))
    stop, results = threading.Event(), []
    threads = [threading.Thread(target=_load, args=(server, i, stop, results)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(3)
    server.kill9()  # SIGKILL to the whole process group: the supervisor and both workers
    stop.set()
    for t in threads:
        t.join(30)

    ok = [rid for rid, status, echoed in results if status == 200]
    assert len(ok) > 30, f"only {len(ok)} requests succeeded before the kill"
    assert all(echoed == rid for rid, status, echoed in results if status == 200)
    found = server.records_by_id()
    missing = [rid for rid in ok if rid not in found]
    assert not missing, f"{len(missing)} of {len(ok)} answered requests have no audit record: {missing[:5]}"
    assert all(len(found[rid]) == 1 for rid in ok), "a request has two records"
    assert all(found[rid][0]["status"] == 200 and found[rid][0]["outcome"] == "ok" for rid in ok)
    verified = _verify_up_to_crash(server)
    assert verified >= len(ok)

    # a restart on the same folder continues the chain
    server2 = start_server(root, args=("--workers", "2"))
    try:
        with server2.client() as c:
            r = c.post(
                "/v1/chat/completions",
                headers={**server2.headers(), "x-request-id": "after-crash-1"},
                json=chat_body(),
            )
        assert r.status_code == 200
    finally:
        server2.stop()
    assert "after-crash-1" in server2.records_by_id()
    proc = run_audit_verify(server2)
    assert proc.returncode == 0 or "cut off" in proc.stdout, proc.stdout
