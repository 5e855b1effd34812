"""Budget race: 256 concurrent reservations from 4 processes against a budget that pays for exactly 100 requests.

Each process has its own store client (SQLite connection or Redis connection pool). All reservations are made
before any is settled (a barrier between the phases), so exactly 100 must be admitted: more is overspending,
fewer is a false rejection. Afterwards the store's spend must equal the sum of the settled costs.
"""

import asyncio
import multiprocessing as mp
import random
import time
import uuid

import pytest
from redis_server import RedisServer

from llmops_kit.serving.quotas import Amounts, Limits, RedisQuotaStore, Refusal, Reservation, SqliteQuotaStore

PROCESSES, PER_PROCESS, ADMITTED = 4, 64, 100
ESTIMATE = Amounts(1, 1500, 10_000)  # what each request reserves: 1,500 tokens, 0.01 USD
TENANT = "tenant:race"
LIMITS = {TENANT: Limits(micro_usd_per_day=ADMITTED * ESTIMATE.micro_usd)}
PHASE_TIMEOUT_S = 60


def _open(kind: str, target: str):
    if kind == "sqlite":
        return SqliteQuotaStore(target, timeout_s=20.0)
    url, prefix = target.split("|")
    return RedisQuotaStore(url, timeout_s=20.0, prefix=prefix)


def _worker(kind: str, target: str, index: int, start, reserved, results) -> None:
    """One process: 64 concurrent reservations, then (after every process reserved) settle each admitted one."""

    async def main():
        store = _open(kind, target)
        rng = random.Random(index)
        keys = [TENANT, f"key:p{index}"]
        start.wait(PHASE_TIMEOUT_S)
        got = await asyncio.wait_for(
            asyncio.gather(*(store.reserve(keys, LIMITS, ESTIMATE, ttl_s=300) for _ in range(PER_PROCESS))),
            PHASE_TIMEOUT_S,
        )
        await asyncio.to_thread(reserved.wait, PHASE_TIMEOUT_S)
        settled = []
        for r in got:
            if isinstance(r, Reservation):
                actual = Amounts(1, rng.randint(1, ESTIMATE.tokens), rng.randint(1, ESTIMATE.micro_usd))
                assert await store.settle(r, actual)
                settled.append((actual.tokens, actual.micro_usd))
        await store.close()
        refusals = sorted({r.limit for r in got if isinstance(r, Refusal)})
        return {"index": index, "admitted": len(settled), "settled": settled, "refusals": refusals}

    try:
        results.put(asyncio.run(main()))
    except BaseException as e:  # report, never hang the parent
        results.put({"index": index, "error": repr(e)})


def _race(kind: str, target: str) -> list[dict]:
    ctx = mp.get_context("spawn")
    start, reserved, results = ctx.Barrier(PROCESSES), ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(kind, target, i, start, reserved, results))
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    try:
        out = [results.get(timeout=3 * PHASE_TIMEOUT_S) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(10)
    errors = [r["error"] for r in out if "error" in r]
    assert not errors, errors
    return out


async def _usage(kind: str, target: str, key: str):
    store = _open(kind, target)
    try:
        return await store.usage(key)
    finally:
        await store.close()


def _check(kind: str, target: str, out: list[dict]) -> None:
    assert sum(r["admitted"] for r in out) == ADMITTED  # no overshoot, no false rejection
    assert {limit for r in out for limit in r["refusals"]} == {"micro_usd_per_day"}
    spend = sum(usd for r in out for _, usd in r["settled"])
    tokens = sum(tok for r in out for tok, _ in r["settled"])
    u = asyncio.run(asyncio.wait_for(_usage(kind, target, TENANT), 30))
    assert u.settled["micro_usd_per_day"] == spend
    assert (u.settled["requests_per_day"], u.settled["tokens_per_day"]) == (ADMITTED, tokens)
    assert set(u.held.values()) == {0}
    for r in out:  # each process's own key carries exactly its own requests
        k = asyncio.run(asyncio.wait_for(_usage(kind, target, f"key:p{r['index']}"), 30))
        assert k.settled["requests_per_day"] == r["admitted"]
        assert k.settled["micro_usd_per_day"] == sum(usd for _, usd in r["settled"])


def _away_from_day_edge() -> None:
    left = 86400 - time.time() % 86400
    if left < 90:  # the race must not straddle UTC midnight, when daily windows reset
        time.sleep(left + 0.1)


def test_budget_race_sqlite(tmp_path):
    _away_from_day_edge()
    target = str(tmp_path / "quotas.db")
    _check("sqlite", target, _race("sqlite", target))


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


def test_budget_race_redis(redis_server):
    _away_from_day_edge()
    target = f"{redis_server.url}|race:{uuid.uuid4().hex}:"
    _check("redis", target, _race("redis", target))
