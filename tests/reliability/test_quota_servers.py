"""Quotas through running servers: the budget race over HTTP, a rate limit across processes, a Redis outage.

Two `llmops serve` processes with two workers each share one store (Redis, or one SQLite file on this host);
the clients are asyncio tasks in this process.
"""

import asyncio
import json
import time

import httpx
import pytest
from redis_server import RedisServer
from test_serving_app_support import start_server

from conftest import run_llmops

PRICED = (  # a priced echo model: a long prompt's answer is exactly 10 tokens, so the estimate is the cost
    "[model.priced]\nkind = benchmark\nmax_tokens = 10\nprompt_usd_per_mtok = 0\ncompletion_usd_per_mtok = 1000\n"
)
COST = 10_000  # micro-USD per answer
LONG = "please tell me everything about my card and my account and the transfer from yesterday"


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


def _away_from_edges(window_s: int, margin_s: float) -> None:
    """Wait until at least `margin_s` are left in the current window (daily or per-minute counters reset at its end)."""
    left = window_s - time.time() % window_s
    if left < margin_s:
        time.sleep(left + 0.2)


def _ini(store: str, redis_url: str, sqlite_path, **limits) -> str:
    lines = [
        "[quotas]",
        f"store = {store}",
        f"redis_url = {redis_url}",
        f"sqlite_path = {sqlite_path}",
        "timeout_s = 5",
    ]
    return "\n".join(lines + [f"{k} = {v}" for k, v in limits.items()]) + "\n" + PRICED


async def _burst(servers, n: int, tenant: str) -> list[httpx.Response]:
    """`n` concurrent chat requests, alternating between the servers."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        body = {"model": "priced", "messages": [{"role": "user", "content": LONG}]}

        async def one(i: int) -> httpx.Response:
            srv = servers[i % len(servers)]
            return await client.post(
                srv.base_url + "/v1/chat/completions", json=body, headers=srv.headers(tenant)
            )

        return await asyncio.gather(*(one(i) for i in range(n)))


def _usage(srv, tenant: str) -> dict:
    out = run_llmops(
        "budget", "show", "--tenant", tenant, "--config", str(srv.root / "settings.ini"), cwd=srv.root
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["limits"]


@pytest.mark.parametrize("store", ["redis", "sqlite"])
def test_budget_race_through_two_servers(tmp_path, redis_server, store):
    ini = _ini(store, redis_server.url, tmp_path / "quotas.db", tenant_micro_usd_per_day=100 * COST)
    servers = [start_server(tmp_path / f"s{i}", serving={"workers": 2}, extra_ini=ini) for i in range(2)]
    try:
        _away_from_edges(86400, 120)
        answers = asyncio.run(_burst(servers, 256, "race"))
        statuses = [r.status_code for r in answers]
        assert (statuses.count(200), statuses.count(429)) == (100, 156), sorted(set(statuses))
        assert all(r.json()["error"]["code"] == "quota_exceeded" for r in answers if r.status_code == 429)
        spent = _usage(servers[0], "race")["micro_usd_per_day"]
        assert (spent["settled"], spent["held"]) == (100 * COST, 0)
        ids = {r.headers["x-request-id"] for r in answers if r.status_code == 200}
        records = {}
        for srv in servers:
            records |= {
                i: recs[0] for i, recs in srv.wait_records(ids & set(srv.records_by_id()) or ()).items()
            }
        answered = [records[i] for i in ids if i in records]
        assert len(answered) == 100
        assert sum(round(r["cost_usd"] * 1e6) for r in answered) == spent["settled"]
    finally:
        for srv in servers:
            srv.stop()


def test_rate_limit_across_processes(tmp_path, redis_server):
    ini = _ini("redis", redis_server.url, "quotas.db", tenant_requests_per_minute=60)
    servers = [start_server(tmp_path / f"s{i}", serving={"workers": 2}, extra_ini=ini) for i in range(2)]
    try:
        _away_from_edges(60, 25)
        answers = asyncio.run(_burst(servers, 180, "rpm"))  # three times the limit, within one minute
        statuses = [r.status_code for r in answers]
        admitted = statuses.count(200)
        assert 60 * 0.99 <= admitted <= 60, admitted
        assert statuses.count(429) == 180 - admitted
        refused = next(r for r in answers if r.status_code == 429)
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    finally:
        for srv in servers:
            srv.stop()


@pytest.mark.parametrize("fail_open", [False, True])
def test_redis_outage_keeps_time_outs_and_policy(tmp_path, redis_server, fail_open):
    ini = (
        f"[quotas]\nstore = redis\nredis_url = {redis_server.url}\ntimeout_s = 0.25\nreservation_ttl_s = 3\n"
        f"fail_open = {str(fail_open).lower()}\ntenant_requests_per_day = 1000\n" + PRICED
    )
    srv = start_server(tmp_path / "srv", extra_ini=ini)
    body = {"model": "priced", "messages": [{"role": "user", "content": LONG}]}
    try:
        with srv.client() as c:
            before = [
                c.post("/v1/chat/completions", json=body, headers=srv.headers("outage")) for _ in range(3)
            ]
            assert [r.status_code for r in before] == [200] * 3
            redis_server.pause()  # the harder outage: connections accepted, nothing answered
            try:

                async def during():
                    async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as ac:

                        async def one():
                            t = time.monotonic()
                            r = await ac.post(
                                "/v1/chat/completions", json=body, headers=srv.headers("outage")
                            )
                            return r, time.monotonic() - t

                        return await asyncio.gather(*(one() for _ in range(20)))

                results = asyncio.run(during())
                ready = c.get("/readyz").json()
            finally:
                redis_server.resume()
            # no request waited on the dead store beyond its time-out (plus the request's own work)
            assert max(waited for _, waited in results) < 0.25 + 2.0
            codes = {r.status_code for r, _ in results}
            if fail_open:
                assert codes == {200}
            else:
                assert codes == {503}
                err = results[0][0].json()["error"]
                assert err["code"] == "quota_store_unavailable" and "unavailable" in err["message"]
            assert ready["status"] == "degraded" and ready["degraded"] == ["quotas"], ready
            assert "unavailable" in ready["checks"]["quotas"]["detail"]
            after = [
                c.post("/v1/chat/completions", json=body, headers=srv.headers("outage")) for _ in range(3)
            ]
            assert [r.status_code for r in after] == [200] * 3
            assert c.get("/readyz").json()["degraded"] == []
        # the counters hold exactly the checked answers, before and after (fail-open answers went unchecked); a
        # reservation Redis ran after its client gave up is held until its TTL, then nothing is left held
        deadline = time.monotonic() + 15
        while (usage := _usage(srv, "outage")["requests_per_day"])["held"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (usage["settled"], usage["held"]) == (6, 0)
    finally:
        srv.stop()
