"""Worker killed: `kill -9` a worker mid-job; the other worker reclaims its jobs and answers each exactly once.

Two `llmops worker` processes (two jobs at once each) share a real redis-server with one `llmops serve`. Four slow
jobs (the benchmark model's `/sleep` directive) fill every slot; the worker holding the first job is killed with
SIGKILL while its jobs sleep. The survivor finishes its own jobs, reclaims the dead worker's jobs once they have
been idle for `claim_idle_ms`, and runs them again. Afterwards: every job succeeded (none lost), each stored its
answer once (`answers` = 1 in its hash; the store script counts), each has exactly one audit record (the killed
worker wrote none: it died mid-job), and the reclaimed jobs ran twice (attempt 2, by the survivor).
"""

from __future__ import annotations

import json
import time

import pytest
from jobs_support import job_hash, job_records, jobs_ini, start_worker, wait_job
from redis_server import RedisServer
from test_serving_app_support import start_server

SLEEP_S = 6  # long enough that the kill lands mid-job even on a busy machine


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


def test_killed_worker_jobs_are_redelivered_and_answered_once(tmp_path, redis_server):
    srv = start_server(
        tmp_path / "kill", extra_ini=jobs_ini(redis_server.url, claim_idle_ms=1000, concurrency=2)
    )
    workers = [start_worker(srv, f"worker{i}") for i in range(2)]
    try:
        for w in workers:
            w.wait_consuming()
        auth = srv.headers()
        with srv.client() as c:
            ids, submitted_at = [], time.monotonic()
            for i in range(4):
                body = {"input": f"/sleep {SLEEP_S} ticket {i}"}
                r = c.post("/v1/jobs", headers=auth, json={"endpoint": "/v1/route", "body": body})
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            for job_id in ids:  # every slot busy: each job is running somewhere
                wait_job(c, job_id, auth, timeout=30, until=("running",))
            holders = {job_id: job_hash(redis_server.url, job_id)["worker"] for job_id in ids}
            victim = next(w for w in workers if w.consumer == holders[ids[0]])
            survivor = next(w for w in workers if w is not victim)
            killed_jobs = [j for j, holder in holders.items() if holder == victim.consumer]
            assert killed_jobs
            assert time.monotonic() - submitted_at < SLEEP_S, (
                "the kill would not land mid-job: the machine is too slow"
            )
            victim.kill9()
            late = c.post(
                "/v1/jobs", headers=auth, json={"endpoint": "/v1/route", "body": {"input": "after the kill"}}
            )
            ids.append(late.json()["id"])
            done = {j: wait_job(c, j, auth, timeout=120) for j in ids}
        assert survivor.proc.poll() is None, survivor.output()[-2000:]
    finally:
        for w in workers:
            w.stop()
        srv.stop()

    assert survivor.proc.returncode == 0, survivor.output()[-2000:]  # SIGTERM: a clean stop
    assert {d["status"] for d in done.values()} == {"succeeded"}, done  # no job lost
    hashes = {j: job_hash(redis_server.url, j) for j in ids}
    assert {j: h["answers"] for j, h in hashes.items()} == dict.fromkeys(ids, "1")  # none answered twice
    records = job_records(srv)
    assert {j: len(records.get(j, [])) for j in ids} == dict.fromkeys(ids, 1), records
    for j in killed_jobs:
        assert done[j]["attempts"] == 2 and hashes[j]["worker"] == survivor.consumer
        assert records[j][0]["prediction"]["job"] == {"id": j, "attempt": 2, "worker": survivor.consumer}
        assert done[j]["response"]["request_id"] == records[j][0]["request_id"] == f"{j}.2"
    for j in set(ids) - set(killed_jobs):
        assert done[j]["attempts"] == 1
    assert all(r[0]["status"] == 200 and r[0]["tenant"] == "acme" for r in records.values())
    events = [json.loads(line) for line in survivor.output().splitlines() if line.startswith("{")]
    redone = {e["job"]: (e["attempt"], e["stored"]) for e in events if e.get("event") == "job_done"}
    assert {j: redone.get(j) for j in killed_jobs} == dict.fromkeys(killed_jobs, (2, 1))
