"""The job queue end to end: `llmops serve` with `[jobs]`, an `llmops worker` process and a real redis-server."""

from __future__ import annotations

import json
import re
import socket
import time

import httpx
import pytest
from jobs_support import job_hash, job_records, jobs_ini, start_worker, wait_job
from prometheus_client.parser import text_string_to_metric_families
from redis_server import RedisServer
from test_serving_app_support import ECHO, chat_body, free_port, start_server
from test_serving_schemathesis import schemathesis_run

from conftest import run_llmops


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, redis_server):
    srv = start_server(
        tmp_path_factory.mktemp("jobs"), extra_ini=jobs_ini(redis_server.url, claim_idle_ms=1000)
    )
    worker = start_worker(srv, "worker").wait_consuming()
    yield srv
    worker.stop()
    srv.stop()


def _submit(client, headers, endpoint, body):
    return client.post("/v1/jobs", headers=headers, json={"endpoint": endpoint, "body": body})


def test_route_job_is_queued_run_and_answered_once(server, redis_server):
    with server.client() as c:
        r = _submit(c, server.headers(), "/v1/route", {"input": ["Where is my card?", "I lost my card"]})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["id"].startswith("job_") and job["object"] == "job" and job["status"] == "queued"
        assert r.headers["location"] == f"/v1/jobs/{job['id']}"
        done = wait_job(c, job["id"], server.headers())
    assert (
        done["status"] == "succeeded" and done["attempts"] == 1 and done["completed_at"] >= job["created_at"]
    )
    answer = done["response"]
    assert answer["status_code"] == 200 and answer["request_id"] == f"{job['id']}.1"
    assert [d["reply"] for d in answer["body"]["data"]] == ["echo: Where is my card?", "echo: I lost my card"]
    stored = job_hash(redis_server.url, job["id"])
    assert stored["answers"] == "1" and "body" not in stored  # the request is deleted once answered
    records = server.wait_records([r.headers["x-request-id"], answer["request_id"]])
    submitted, ran = records[r.headers["x-request-id"]][0], records[answer["request_id"]]
    assert submitted["route"] == "/v1/jobs" and submitted["status"] == 202
    assert submitted["prediction"]["job"]["id"] == job["id"]
    assert len(ran) == 1 and ran[0]["route"] == "/v1/route" and ran[0]["status"] == 200
    assert ran[0]["tenant"] == "acme" and ran[0]["prediction"]["job"] == {
        "id": job["id"],
        "attempt": 1,
        "worker": stored["worker"],
    }


def test_chat_job_answers_like_the_direct_call(server):
    with server.client() as c:
        direct = c.post("/v1/chat/completions", headers=server.headers(), json=chat_body("Where is my card?"))
        body = chat_body("Where is my card?", max_tokens=5, stream=True)  # a job's answer is stored whole
        r = _submit(c, server.headers(), "/v1/chat/completions", body)
        assert r.status_code == 202, r.text
        done = wait_job(c, r.json()["id"], server.headers())
    body = done["response"]["body"]
    assert done["status"] == "succeeded" and body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == direct.json()["choices"][0]["message"]
    assert body["id"] == f"chatcmpl-{done['response']['request_id']}"


def test_blocked_input_fails_the_job_with_the_direct_calls_error(server):
    with server.client() as c:
        r = _submit(
            c, server.headers(), "/v1/chat/completions", chat_body("my AWS key is AKIAIOSFODNN7EXAMPLE")
        )
        done = wait_job(c, r.json()["id"], server.headers())
    assert done["status"] == "failed" and done["response"]["status_code"] == 400
    assert done["response"]["body"]["error"]["code"] == "guardrail_blocked"
    assert "AKIAIOSFODNN7EXAMPLE" not in str(job_records(server)[done["id"]])


def test_only_the_owning_tenant_sees_a_job(server):
    with server.client() as c:
        job_id = _submit(c, server.headers("acme"), "/v1/route", {"input": "hello"}).json()["id"]
        wait_job(c, job_id, server.headers("acme"))
        foreign = c.get(f"/v1/jobs/{job_id}", headers=server.headers("globex"))
        unknown = c.get(f"/v1/jobs/job_{'0' * 32}", headers=server.headers("acme"))
        anonymous = c.get(f"/v1/jobs/{job_id}")
        scoped = c.get(f"/v1/jobs/{job_id}", headers=server.headers("acme", scopes=("embeddings",)))
    assert foreign.status_code == unknown.status_code == 404
    for r in (foreign, unknown):
        error = r.json()["error"]
        assert error["code"] == "job_not_found" and error["type"] and error["request_id"]
    assert foreign.json()["error"]["message"].replace(job_id, "ID") == unknown.json()["error"][
        "message"
    ].replace(f"job_{'0' * 32}", "ID")  # the same answer: an id cannot be probed
    assert anonymous.status_code == 401 and scoped.status_code == 403


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ({"body": {"input": "x"}}, "endpoint"),
        ({"endpoint": "/v1/embeddings", "body": {"input": "x"}}, "endpoint"),
        ({"endpoint": "/v1/chat/completions", "body": {"model": ECHO}}, "messages"),
        ({"endpoint": "/v1/route", "body": {"input": []}}, "input"),
        ({"endpoint": "/v1/route", "body": {"input": "x"}, "extra": 1}, "extra"),
        ([1, 2], "body"),
    ],
)
def test_bad_bodies_are_400_in_openai_shape(server, payload, fragment):
    with server.client() as c:
        r = c.post("/v1/jobs", headers=server.headers(), json=payload)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_job" and fragment in r.json()["error"]["message"]


def test_unknown_model_and_non_json_are_refused_at_submission(server):
    with server.client() as c:
        model = _submit(c, server.headers(), "/v1/chat/completions", chat_body(model="gpt-9"))
        raw = c.post(
            "/v1/jobs", headers={**server.headers(), "content-type": "application/json"}, content=b"{not json"
        )
    assert model.status_code == 404 and model.json()["error"]["code"] == "model_not_found"
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_job"


def test_without_redis_url_there_are_no_job_routes(tmp_path):
    srv = start_server(tmp_path / "nojobs")
    try:
        with srv.client() as c:
            post = _submit(c, srv.headers(), "/v1/route", {"input": "x"})
            get = c.get(f"/v1/jobs/job_{'0' * 32}", headers=srv.headers())
            paths = c.get("/openapi.json").json()["paths"]
    finally:
        srv.stop()
    for r in (post, get):
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert not [p for p in paths if p.startswith("/v1/jobs")]


def test_fuzzed_job_requests_never_get_a_server_error(server):
    """Schemathesis on the job routes (a queue is configured): 202, 400, 401, 404, never a 5xx, answers as documented."""
    before = len(server.records())
    proc = schemathesis_run(
        server,
        "--max-examples",
        "25",
        "--phases",
        "examples,coverage,fuzzing",
        "--include-path-regex",
        "^/v1/jobs",
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    records = [r for r in server.records()[before:] if r["route"].startswith("/v1/jobs")]
    assert len(records) > 50, "every fuzzed request left an audit record"
    assert not [r for r in records if r["status"] >= 500], [r for r in records if r["status"] >= 500][:3]


def test_worker_processes_start_and_stop_together(server):
    workers = start_worker(server, "pool", "--processes", "2", "--concurrency", "1")
    try:
        deadline = time.monotonic() + 90
        while workers.output().count("consuming") < 2:
            assert workers.proc.poll() is None and time.monotonic() < deadline, workers.output()[-3000:]
            time.sleep(0.2)
        names = re.findall(r"worker (\S+) consuming .* \(1 at once\)", workers.output())
        assert len(set(names)) == 2
    finally:
        workers.stop()
    assert workers.proc.returncode == 0, workers.output()[-3000:]


def test_worker_without_a_queue_says_what_is_missing(tmp_path):
    (tmp_path / "settings.ini").write_text("[project]\nstate_dir = .llmops\n[serving]\nbackend = benchmark\n")
    proc = run_llmops("worker", "--config", str(tmp_path / "settings.ini"), cwd=tmp_path, timeout=120)
    assert proc.returncode != 0 and "[jobs] redis_url" in proc.stderr, proc.stderr


def test_redis_outage_is_a_503_and_the_queue_recovers(server, redis_server):
    """A hung Redis (SIGSTOP) and a restarted, empty one: 503 `job_queue_unavailable`, then jobs flow again."""
    with server.client(timeout=10) as c:
        redis_server.pause()
        try:
            hung = _submit(c, server.headers(), "/v1/route", {"input": "during the outage"})
        finally:
            redis_server.resume()
        redis_server.stop()
        down = _submit(c, server.headers(), "/v1/route", {"input": "while it is down"})
        redis_server.start()  # the same port, no data: the worker makes its group again
        after = _submit(c, server.headers(), "/v1/route", {"input": "after the restart"})
        assert after.status_code == 202, after.text
        done = wait_job(c, after.json()["id"], server.headers(), timeout=60)
    for r in (hung, down):
        assert r.status_code == 503 and r.json()["error"]["code"] == "job_queue_unavailable", r.text
        assert r.headers["retry-after"] == "2"
    assert done["status"] == "succeeded"


def test_quotas_apply_to_jobs_as_to_direct_calls(tmp_path, redis_server):
    quotas = "[quotas]\nstore = sqlite\ntenant_requests_per_day = 3\n"
    srv = start_server(tmp_path / "metered", extra_ini=jobs_ini(redis_server.url, stream="metered") + quotas)
    worker = start_worker(srv, "metered-worker").wait_consuming()
    try:
        with srv.client() as c:
            h = srv.headers("metered")
            assert c.post("/v1/route", headers=h, json={"input": "Where is my card?"}).status_code == 200
            ids = [
                _submit(c, h, "/v1/route", {"input": f"ticket {i}: my card"}).json()["id"] for i in range(3)
            ]
            answers = [wait_job(c, i, h) for i in ids]
        # the worker runs jobs concurrently: which of the three comes last is not fixed
        assert sorted(a["status"] for a in answers) == ["failed", "succeeded", "succeeded"]
        refused = next(a for a in answers if a["status"] == "failed")["response"]
        assert refused["status_code"] == 429 and refused["body"]["error"]["code"] == "quota_exceeded"
        shown = run_llmops(
            "budget", "show", "--tenant", "metered", "--config", str(srv.root / "settings.ini")
        )
        assert json.loads(shown.stdout)["limits"]["requests_per_day"]["settled"] == 3  # one direct, two jobs
    finally:
        worker.stop()
        srv.stop()


def test_worker_processes_export_their_summed_metrics(tmp_path, redis_server):
    srv = start_server(tmp_path / "scraped", extra_ini=jobs_ini(redis_server.url, stream="scraped"))
    port = free_port()
    workers = start_worker(srv, "scraped-workers", "--processes", "2", "--metrics-port", str(port))
    try:
        deadline = time.monotonic() + 90
        while workers.output().count("consuming") < 2:
            assert workers.proc.poll() is None and time.monotonic() < deadline, workers.output()[-3000:]
            time.sleep(0.2)
        with srv.client() as c:
            h = srv.headers()
            ids = [
                _submit(c, h, "/v1/route", {"input": f"ticket {i}: my card"}).json()["id"] for i in range(5)
            ]
            ids.append(_submit(c, h, "/v1/chat/completions", chat_body("Where is my card?")).json()["id"])
            answers = [wait_job(c, i, h) for i in ids]
        assert [a["status"] for a in answers] == ["succeeded"] * 6
        deadline, samples = time.monotonic() + 10, {}
        while time.monotonic() < deadline:  # a worker writes its request series within a second of being idle
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text)
                for s in fam.samples
            }
            if samples.get(
                (
                    "llmops_requests_total",
                    (("model", "none"), ("outcome", "ok"), ("route", "/v1/route"), ("status", "200")),
                )
            ):
                break
            time.sleep(0.3)
    finally:
        workers.stop()
        srv.stop()

    def total(name, **labels):
        return sum(
            v
            for (n, ls), v in samples.items()
            if n == name and all(dict(ls).get(k) == x for k, x in labels.items())
        )

    assert total("llmops_jobs_total", outcome="stored") == 6, text
    assert total("llmops_job_wait_seconds_count", endpoint="/v1/route") == 5
    assert total("llmops_job_wait_seconds_count", endpoint="/v1/chat/completions") == 1
    assert total("llmops_requests_total", route="/v1/route", status="200") == 5, text
    assert total("llmops_requests_total", route="/v1/chat/completions", status="200") == 1
    assert total("llmops_tokens_total", type="output") > 0


def test_worker_metrics_port_in_use_is_a_clear_error(tmp_path, redis_server):
    (tmp_path / "settings.ini").write_text(
        "[project]\nstate_dir = .llmops\n[serving]\nbackend = benchmark\n" + jobs_ini(redis_server.url)
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_llmops(
            "worker",
            "--config",
            str(tmp_path / "settings.ini"),
            "--metrics-port",
            str(port),
            cwd=tmp_path,
            timeout=120,
        )
    assert proc.returncode != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
