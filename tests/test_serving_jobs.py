"""The job queue end to end: `llmops serve` with `[jobs]`, an `llmops worker` process and a real redis-server."""

from __future__ import annotations

import pytest
from jobs_support import job_hash, job_records, jobs_ini, start_worker, wait_job
from redis_server import RedisServer
from test_serving_app_support import ECHO, chat_body, start_server


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
        r = _submit(c, server.headers(), "/v1/chat/completions", chat_body("Where is my card?", max_tokens=5))
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
        ({"endpoint": "/v1/chat/completions", "body": chat_body(stream=True)}, "stream"),
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


def test_without_redis_url_the_routes_say_why(tmp_path):
    srv = start_server(tmp_path / "nojobs")
    try:
        with srv.client() as c:
            post = _submit(c, srv.headers(), "/v1/route", {"input": "x"})
            get = c.get(f"/v1/jobs/job_{'0' * 32}", headers=srv.headers())
    finally:
        srv.stop()
    for r in (post, get):
        assert r.status_code == 503 and r.json()["error"]["code"] == "jobs_disabled"
        assert "[jobs] redis_url" in r.json()["error"]["message"]
