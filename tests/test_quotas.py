"""Quotas, budgets and rate limits on both stores: SQLite files and a real redis-server (no fake Redis)."""

import asyncio
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from redis_server import RedisServer, free_port

from llmops_kit.core import ModelSettings
from llmops_kit.errors import ConfigurationError, InputError, RateLimitError, ServiceUnavailableError
from llmops_kit.serving.quotas import (
    Amounts,
    Limits,
    QuotaConfig,
    QuotaStoreUnavailable,
    RedisQuotaStore,
    Refusal,
    Reservation,
    SqliteQuotaStore,
    cost_amounts,
    estimate_amounts,
    open_store,
    rate_headers,
)

TENANT, KEY = "tenant:acme", "key:k1"


def run(coro: Coroutine, timeout_s: float = 30) -> Any:
    """Run a coroutine to completion, never longer than `timeout_s`."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def away_from_window_edges(margin_s: float = 3.0) -> None:
    """Wait until the clock is at least `margin_s` from the next minute (and so day) boundary: fixed windows reset there."""
    left = 60 - time.time() % 60
    if left < margin_s:
        time.sleep(left + 0.05)


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request, tmp_path) -> Callable[..., Any]:
    """A factory of stores of one kind sharing one database (a file, or a key prefix on the module's redis-server)."""
    away_from_window_edges()
    if request.param == "sqlite":
        path = tmp_path / "quotas.db"
        return lambda **kw: SqliteQuotaStore(path, **{"timeout_s": 5.0, **kw})
    url, prefix = request.getfixturevalue("redis_server").url, f"test:{uuid.uuid4().hex}:"
    return lambda **kw: RedisQuotaStore(url, prefix=prefix, **{"timeout_s": 2.0, **kw})


def test_reserve_settle_release(make_store):
    async def main():
        store = make_store()
        limits = {TENANT: Limits(micro_usd_per_day=1000), KEY: Limits(requests_per_minute=5)}
        r1 = await store.reserve([TENANT, KEY], limits, Amounts(1, 100, 600), ttl_s=60)
        assert isinstance(r1, Reservation) and not r1.unchecked
        held = await store.usage(TENANT)
        assert (held.held["micro_usd_per_day"], held.settled["micro_usd_per_day"]) == (600, 0)
        r2 = await store.reserve([TENANT, KEY], limits, Amounts(1, 100, 600), ttl_s=60)
        assert isinstance(r2, Refusal)
        assert (r2.limit, r2.key) == ("micro_usd_per_day", TENANT)
        assert 1 <= r2.retry_after_s <= 86400
        assert "daily budget of tenant:acme is reached: 600 of 1,000 micro-USD" in r2.message
        assert (await store.usage(TENANT)).held["micro_usd_per_day"] == 600  # a refusal changes nothing
        assert (await store.usage(KEY)).held["requests_per_minute"] == 1
        assert await store.settle(r1, Amounts(1, 80, 250)) is True
        assert await store.settle(r1, Amounts(1, 80, 250)) is False  # settled once only
        assert await store.release(r1) is False
        u = await store.usage(TENANT)
        assert u.settled == {
            "requests_per_day": 1,
            "tokens_per_day": 80,
            "micro_usd_per_day": 250,
            "requests_per_minute": 1,
            "tokens_per_minute": 80,
        }
        assert set(u.held.values()) == {0}
        r3 = await store.reserve([TENANT, KEY], limits, Amounts(1, 100, 700), ttl_s=60)  # 250 + 700 fits now
        assert isinstance(r3, Reservation)
        assert await store.release(r3) is True
        assert await store.release(r3) is False
        assert await store.settle(r3, Amounts(1, 1, 1)) is False  # released: nothing to settle
        u = await store.usage(TENANT)
        assert (
            u.settled["micro_usd_per_day"],
            u.held["micro_usd_per_day"],
            u.settled["requests_per_day"],
        ) == (250, 0, 1)
        await store.close()

    run(main())


def test_exact_boundary_and_every_key_checked(make_store):
    async def main():
        store = make_store()
        limits = {TENANT: Limits(requests_per_day=3), KEY: Limits(tokens_per_minute=250)}
        admitted = [await store.reserve([TENANT], limits, Amounts(1, 10, 0), ttl_s=60) for _ in range(4)]
        assert [type(r) for r in admitted] == [Reservation] * 3 + [Refusal]
        assert admitted[3].limit == "requests_per_day"
        assert await store.release(admitted[0]) is True
        again = await store.reserve([TENANT], limits, Amounts(1, 10, 0), ttl_s=60)
        assert isinstance(again, Reservation)  # a released hold is free again
        # the tenant's quota is full, so a request charged to tenant and key is refused even though the key has room
        both = await store.reserve([TENANT, KEY], limits, Amounts(1, 10, 0), ttl_s=60)
        assert (both.limit, both.key) == ("requests_per_day", TENANT)
        assert (await store.usage(KEY)).held["tokens_per_minute"] == 0
        # the key's token rate: 200 fits, 51 more does not, 50 does
        other = "tenant:other"
        assert isinstance(
            await store.reserve([other, KEY], limits, Amounts(1, 200, 0), ttl_s=60), Reservation
        )
        refused = await store.reserve([other, KEY], limits, Amounts(1, 51, 0), ttl_s=60)
        assert (refused.limit, refused.key) == ("tokens_per_minute", KEY)
        assert 1 <= refused.retry_after_s <= 60
        assert isinstance(refused.to_error(), RateLimitError) and refused.to_error().code == "rate_limited"
        assert isinstance(await store.reserve([other, KEY], limits, Amounts(1, 50, 0), ttl_s=60), Reservation)
        await store.close()

    run(main())


def test_concurrent_reservations_in_one_process_are_exact(make_store):
    async def main():
        store = make_store()
        limits = Limits(tokens_per_day=1000)
        got = await asyncio.gather(
            *(store.reserve([TENANT], limits, Amounts(1, 30, 0), ttl_s=60) for _ in range(50))
        )
        assert sum(isinstance(r, Reservation) for r in got) == 33  # 33 * 30 = 990 <= 1000 < 34 * 30
        assert (await store.usage(TENANT)).held["tokens_per_day"] == 990
        await store.close()

    run(main())


def test_expired_reservation_stops_counting_and_still_settles_once(make_store):
    async def main():
        store = make_store()
        limits = Limits(requests_per_day=1, micro_usd_per_day=100)
        crashed = await store.reserve([KEY], limits, Amounts(1, 5, 100), ttl_s=0.3)
        assert isinstance(crashed, Reservation)
        assert isinstance(await store.reserve([KEY], limits, Amounts(1, 5, 1), ttl_s=60), Refusal)
        await asyncio.sleep(0.4)
        u = await store.usage(KEY)
        assert set(u.held.values()) == {0} and set(u.settled.values()) == {0}
        later = await store.reserve([KEY], limits, Amounts(1, 5, 100), ttl_s=60)
        assert isinstance(later, Reservation)
        # a late settle of the expired reservation still records its real cost, once, and gives back no hold twice
        assert await store.settle(crashed, Amounts(1, 4, 40)) is True
        assert await store.settle(crashed, Amounts(1, 4, 40)) is False
        u = await store.usage(KEY)
        assert (u.settled["micro_usd_per_day"], u.held["micro_usd_per_day"]) == (40, 100)
        assert await store.release(later) is True
        assert (await store.usage(KEY)).held["micro_usd_per_day"] == 0
        await store.close()

    run(main())


def test_admin_set_limit_usage_reset(make_store):
    async def main():
        store = make_store()
        configured = Limits(micro_usd_per_day=100)
        assert await store.set_limit(TENANT, "micro_usd_per_day", 1000) == {"micro_usd_per_day": 1000}
        r = await store.reserve([TENANT], configured, Amounts(1, 0, 900), ttl_s=60)
        assert isinstance(r, Reservation) and r.windows[0].value == 1000  # the override wins
        assert await store.settle(r, Amounts(1, 0, 900))
        assert await store.set_limit(TENANT, "requests_per_day", 0) == {
            "micro_usd_per_day": 1000,
            "requests_per_day": 0,
        }
        assert (
            await store.reserve([TENANT], configured, Amounts(1, 0, 0), ttl_s=60)
        ).limit == "requests_per_day"
        assert await store.set_limit(TENANT, "micro_usd_per_day", None) == {
            "micro_usd_per_day": None,
            "requests_per_day": 0,
        }
        await store.set_limit(TENANT, "requests_per_day", None)
        held = await store.reserve([TENANT], configured, Amounts(1, 0, 10**9), ttl_s=60)  # no budget now
        assert isinstance(held, Reservation)
        await store.reset(TENANT)
        u = await store.usage(TENANT)
        assert (u.settled["micro_usd_per_day"], u.held["micro_usd_per_day"]) == (0, 10**9)  # live holds stay
        assert u.overrides == {"micro_usd_per_day": None, "requests_per_day": None}
        await store.reset(TENANT, clear_limits=True)
        assert (await store.usage(TENANT)).overrides == {}
        assert (
            await store.reserve([TENANT], configured, Amounts(1, 0, 1), ttl_s=60)
        ).limit == "micro_usd_per_day"
        with pytest.raises(InputError, match="unknown limit 'usd_per_day'"):
            await store.set_limit(TENANT, "usd_per_day", 5)
        with pytest.raises(InputError, match="must be a whole number"):
            await store.set_limit(TENANT, "requests_per_day", -5)
        await store.close()

    run(main())


def test_bad_requests_are_clear_errors(make_store):
    async def main():
        store = make_store()
        with pytest.raises(InputError, match="distinct non-empty keys"):
            await store.reserve([TENANT, TENANT], Limits(), Amounts(), ttl_s=60)
        with pytest.raises(InputError, match="ttl_s=0 must be"):
            await store.reserve([TENANT], Limits(), Amounts(), ttl_s=0)
        await store.close()

    run(main())
    with pytest.raises(InputError, match="amount tokens=-1"):
        Amounts(tokens=-1)


def test_rate_headers_from_a_real_reservation(make_store):
    async def main():
        store = make_store()
        limits = {
            TENANT: Limits(requests_per_day=100, tokens_per_day=10_000),
            KEY: Limits(requests_per_minute=3),
        }
        r = await store.reserve([TENANT, KEY], limits, Amounts(1, 400, 0), ttl_s=60)
        h = rate_headers(r)
        assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("3", "2")
        assert (
            h["x-ratelimit-reset-requests"].endswith("s") and int(h["x-ratelimit-reset-requests"][:-1]) <= 60
        )
        assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]) == ("10000", "9600")
        assert re.fullmatch(r"(\d+h)?(\d+m)?\d+s", h["x-ratelimit-reset-tokens"])
        for _ in range(2):
            await store.reserve([TENANT, KEY], limits, Amounts(1, 1, 0), ttl_s=60)
        refused = await store.reserve([TENANT, KEY], limits, Amounts(1, 1, 0), ttl_s=60)
        err = refused.to_error()
        assert (err.status, err.headers["x-ratelimit-remaining-requests"]) == (429, "0")
        assert int(err.headers["Retry-After"]) == refused.retry_after_s
        assert rate_headers(await store.reserve(["key:unlimited"], Limits(), Amounts(), ttl_s=60)) == {}
        await store.close()

    run(main())


def test_sqlite_locked_past_timeout_follows_the_policy(tmp_path):
    path = tmp_path / "quotas.db"
    run(SqliteQuotaStore(path).usage(TENANT))  # creates the schema
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        for fail_open in (False, True):
            store = SqliteQuotaStore(path, timeout_s=0.2, fail_open=fail_open)
            t0 = time.monotonic()
            out = run(store.reserve([TENANT], Limits(requests_per_day=1), Amounts(), ttl_s=60))
            assert time.monotonic() - t0 < 1.5
            if fail_open:
                assert isinstance(out, Reservation) and out.unchecked
                assert run(store.settle(out, Amounts())) is False and run(store.release(out)) is False
            else:
                assert (out.limit, out.key) == ("store_unavailable", "")
                err = out.to_error()
                assert isinstance(err, ServiceUnavailableError) and err.code == "quota_store_unavailable"
            run(store.close())
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert isinstance(
        run(SqliteQuotaStore(path).reserve([TENANT], Limits(), Amounts(), ttl_s=60)), Reservation
    )


@pytest.mark.parametrize("outage", ["paused", "stopped"])
def test_redis_outage_is_bounded_and_follows_the_policy(outage):
    server = RedisServer().start()
    try:

        async def during_outage():
            healthy = RedisQuotaStore(server.url, timeout_s=0.3)
            before = await healthy.reserve([TENANT], Limits(requests_per_day=10), Amounts(), ttl_s=60)
            assert isinstance(before, Reservation)
            server.pause() if outage == "paused" else server.stop()
            for fail_open in (False, True):
                store = RedisQuotaStore(server.url, timeout_s=0.3, fail_open=fail_open)
                for _ in range(3):
                    t0 = time.monotonic()
                    out = await store.reserve([TENANT], Limits(requests_per_day=10), Amounts(), ttl_s=60)
                    assert time.monotonic() - t0 < 0.6
                    if fail_open:
                        assert isinstance(out, Reservation) and out.unchecked
                        assert await store.settle(out, Amounts()) is False
                    else:
                        assert out.limit == "store_unavailable" and "unavailable" in out.message
                await store.close()
            t0 = time.monotonic()
            with pytest.raises(QuotaStoreUnavailable, match="is unavailable"):
                await healthy.settle(before, Amounts())
            assert time.monotonic() - t0 < 0.6
            return before

        before = run(during_outage())
        server.resume() if outage == "paused" else server.start()

        async def after_outage():
            store = RedisQuotaStore(server.url, timeout_s=1.0)
            r = await store.reserve([TENANT], Limits(requests_per_day=10), Amounts(), ttl_s=60)
            assert isinstance(r, Reservation)  # scripts are loaded again after a restart
            if (
                outage == "paused"
            ):  # the data survived: the earlier reservation is still held and settles once
                assert await store.settle(before, Amounts(1, 3, 0)) is True
                assert (await store.usage(TENANT)).settled["requests_per_day"] == 1
            await store.close()

        run(after_outage())
    finally:
        server.stop()


def test_redis_unreachable_port_fails_fast():
    store_port = free_port()

    async def main():
        store = RedisQuotaStore(f"redis://127.0.0.1:{store_port}/0", timeout_s=0.3)
        t0 = time.monotonic()
        out = await store.reserve([TENANT], Limits(), Amounts(), ttl_s=60)
        assert out.limit == "store_unavailable" and time.monotonic() - t0 < 0.6
        await store.close()

    run(main())


def test_estimates_costs_and_config(tmp_path):
    model = ModelSettings(
        kind="openai", prompt_usd_per_mtok=0.15, completion_usd_per_mtok=0.6, max_tokens=512
    )
    assert cost_amounts(1000, 200, model) == Amounts(1, 1200, 270)
    assert estimate_amounts(1000, None, model) == Amounts(1, 1512, 150 + 308)  # 512 * 0.6 = 307.2, rounded up
    assert estimate_amounts(10, 50_000, model, cap=100).tokens == 110
    cfg = QuotaConfig.from_mapping(
        {"tenant_micro_usd_per_day": "5000000", "key_requests_per_minute": 60, "timeout_s": "0.5"}
    )
    assert (cfg.tenant.micro_usd_per_day, cfg.key.requests_per_minute, cfg.timeout_s) == (5_000_000, 60, 0.5)
    store = open_store(cfg, tmp_path)
    assert isinstance(store, SqliteQuotaStore) and store.path == tmp_path / "quotas.db"
    assert isinstance(open_store(QuotaConfig.from_mapping({"store": "redis"})), RedisQuotaStore)
    with pytest.raises(ConfigurationError, match="reservation_ttl_s=0.0 must be between"):
        QuotaConfig.from_mapping({"reservation_ttl_s": 0})
    with pytest.raises(ConfigurationError, match="is not a Redis URL"):
        open_store(QuotaConfig.from_mapping({"store": "redis", "redis_url": "localhost:6379"}))
