"""OpenAICompatibleModel against a real local upstream: an OpenAI-shaped aiohttp.web app on a free port, in a
background thread, scripted request by request (normal answers, error statuses, hangs, dropped streams)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from aiohttp import web

from llmops_kit.core import ModelSettings, Settings
from llmops_kit.errors import (
    ConfigurationError,
    InputError,
    RateLimitError,
    UpstreamError,
    UpstreamTimeoutError,
)
from llmops_kit.models.backends import count_tokens
from llmops_kit.models.chat import ChatRequest
from llmops_kit.models.upstream import OpenAICompatibleModel

KEY = "sk-test-do-not-leak-4f2a9c"
WORDS = ["Your", " card", " ships", " tomorrow."]
USAGE = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
ASK = ChatRequest([{"role": "user", "content": "Where is my card?"}], max_tokens=16)
TEST_TIMEOUT_S = 20  # no test may take longer, whatever the upstream does


class Upstream:
    """An OpenAI-shaped upstream in a thread of its own; `script` says how the next requests go."""

    def __init__(self) -> None:
        self.script: list = []
        self.seen: list[dict] = []
        self.in_flight = self.most_in_flight = 0

    def start(self) -> Upstream:
        self.loop, ready = asyncio.new_event_loop(), threading.Event()

        def run() -> None:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self.handle)
            self.runner = web.AppRunner(app, shutdown_timeout=0.2, access_log=None)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10), "the test upstream did not start"
        self.base_url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1"
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            await self.runner.cleanup()
            rest = asyncio.all_tasks() - {asyncio.current_task()}
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(
            {"authorization": request.headers.get("Authorization"), "body": body, "at": time.monotonic()}
        )
        how = self.script.pop(0) if self.script else "ok"
        if how != "slow":
            return await self.answer(request, body, how)
        self.in_flight += 1  # counted for the slow ones only: hung handlers of other tests may linger
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self.answer(request, body, how)
        finally:
            self.in_flight -= 1

    async def answer(self, request: web.Request, body: dict, how) -> web.StreamResponse:
        if isinstance(how, tuple):  # (status, headers[, message])
            message = how[2] if len(how) > 2 else f"scripted {how[0]}"
            return web.json_response({"error": {"message": message}}, status=how[0], headers=how[1])
        if how == "hang":
            await asyncio.sleep(30)
        if how == "slow":
            await asyncio.sleep(0.3)
        if how == "reset":  # close the connection without answering
            request.transport.close()
            return web.Response()
        usage = {} if how == "no-usage" else {"usage": USAGE}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(WORDS)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return web.json_response(
                {"object": "chat.completion", "model": body["model"], "choices": [choice], **usage}
            )
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        for i, word in enumerate(WORDS):
            if how == "drop" and i == 2:
                request.transport.close()
                return out
            if how == "stall" and i == 2:
                await asyncio.sleep(30)
            if how == "steady" and i:
                await asyncio.sleep(0.3)  # each piece within the read timeout, the whole longer than it
            event = {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            await out.write(f"data: {json.dumps(event)}\n\n".encode())
        await out.write(
            f"data: {json.dumps({'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n".encode()
        )
        if usage:
            await out.write(f"data: {json.dumps({'choices': [], **usage})}\n\n".encode())
        await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
        return out


@pytest.fixture(scope="module")
def server() -> Iterator[Upstream]:
    upstream = Upstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def upstream(server: Upstream) -> Upstream:
    server.script.clear()
    server.seen.clear()
    server.most_in_flight = 0
    return server


def make_model(base_url: str, **spec) -> OpenAICompatibleModel:
    settings = dict(kind="openai", base_url=base_url, upstream_model="qwen2.5-7b", api_key_env="WRITER_KEY")
    settings |= dict(connect_timeout_s=1.0, read_timeout_s=1.0, max_retries=2, max_concurrency=4) | spec
    return OpenAICompatibleModel("writer", ModelSettings(**settings), Settings(), environ={"WRITER_KEY": KEY})


def run(coro):
    """Run `coro` on a fresh loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT_S))


async def complete(model: OpenAICompatibleModel, request: ChatRequest = ASK):
    try:
        return await model.complete(request)
    finally:
        await model.aclose()


async def stream(model: OpenAICompatibleModel, request: ChatRequest = ASK, got: list | None = None) -> list:
    got = [] if got is None else got
    try:
        async for chunk in model.stream(request):
            got.append(chunk)
        return got
    finally:
        await model.aclose()


def failure(coro) -> Exception:
    with pytest.raises(Exception) as info:
        run(coro)
    return info.value


def test_completion_with_usage_and_bearer_key(upstream: Upstream) -> None:
    result = run(complete(make_model(upstream.base_url)))
    assert (result.content, result.finish_reason) == ("Your card ships tomorrow.", "stop")
    assert (result.prompt_tokens, result.completion_tokens) == (11, 4)
    assert (result.upstream_status, result.attempts) == (200, 1)
    sent = upstream.seen[-1]
    assert sent["authorization"] == f"Bearer {KEY}"
    assert sent["body"] == {
        "model": "qwen2.5-7b",
        "messages": ASK.messages,
        "max_tokens": 16,
        "temperature": 0.7,
    }


def test_upstream_model_defaults_to_section_name(upstream: Upstream) -> None:
    run(complete(make_model(upstream.base_url, upstream_model="")))
    assert upstream.seen[-1]["body"]["model"] == "writer"


def test_missing_usage_is_counted(upstream: Upstream) -> None:
    upstream.script = ["no-usage"]
    result = run(complete(make_model(upstream.base_url)))
    assert result.prompt_tokens == count_tokens("Where is my card?")
    assert result.completion_tokens == count_tokens("Your card ships tomorrow.")
    upstream.script = ["no-usage"]
    last = run(stream(make_model(upstream.base_url)))[-1]
    assert (last.prompt_tokens, last.completion_tokens) == (result.prompt_tokens, result.completion_tokens)


def test_streaming(upstream: Upstream) -> None:
    chunks = run(stream(make_model(upstream.base_url)))
    assert [c.content for c in chunks[:-1]] == WORDS
    assert (chunks[-1].finish_reason, chunks[-1].prompt_tokens, chunks[-1].completion_tokens) == (
        "stop",
        11,
        4,
    )
    body = upstream.seen[-1]["body"]
    assert (body["stream"], body["stream_options"]) == (True, {"include_usage": True})


def test_500_then_success_is_retried(upstream: Upstream) -> None:
    upstream.script = [(500, {})]
    result = run(complete(make_model(upstream.base_url)))
    assert (result.content, result.attempts, result.upstream_status) == ("Your card ships tomorrow.", 2, 200)
    assert len(upstream.seen) == 2


def test_connection_closed_before_an_answer_is_retried(upstream: Upstream) -> None:
    upstream.script = ["reset"]
    assert run(complete(make_model(upstream.base_url))).attempts == 2


def test_429_waits_for_retry_after(upstream: Upstream) -> None:
    upstream.script = [(429, {"Retry-After": "1"})]
    result = run(complete(make_model(upstream.base_url)))
    assert result.attempts == 2
    waited = upstream.seen[1]["at"] - upstream.seen[0]["at"]
    assert 0.9 <= waited < 2.0


def test_429_beyond_retries_is_a_rate_limit_with_retry_after(upstream: Upstream) -> None:
    upstream.script = [(429, {"Retry-After": "0"})] * 2
    err = failure(complete(make_model(upstream.base_url, max_retries=1)))
    assert isinstance(err, RateLimitError) and err.status == 429
    assert (err.headers, err.extra) == ({"Retry-After": "1"}, {"upstream_status": 429, "attempts": 2})


def test_429_with_a_long_retry_after_is_not_waited_for(upstream: Upstream) -> None:
    upstream.script = [(429, {"Retry-After": "120"})]
    t0 = time.monotonic()
    err = failure(complete(make_model(upstream.base_url)))
    assert isinstance(err, RateLimitError) and err.headers == {"Retry-After": "120"}
    assert time.monotonic() - t0 < 1.0 and len(upstream.seen) == 1


def test_503_beyond_max_retries(upstream: Upstream) -> None:
    upstream.script = [(503, {})] * 3
    err = failure(complete(make_model(upstream.base_url, max_retries=2)))
    assert type(err) is UpstreamError and err.status == 502
    assert err.extra == {"upstream_status": 503, "attempts": 3}
    assert err.to_dict()["error"]["upstream_status"] == 503
    assert len(upstream.seen) == 3


@pytest.mark.parametrize(
    "status, kind, code, http",
    [
        (400, InputError, "invalid_request", 400),
        (422, InputError, "invalid_request", 400),
        (401, UpstreamError, "upstream_auth_failed", 502),
        (403, UpstreamError, "upstream_auth_failed", 502),
        (404, UpstreamError, "upstream_model_not_found", 502),
    ],
)
def test_client_errors_are_mapped_and_not_retried(upstream: Upstream, status, kind, code, http) -> None:
    upstream.script = [(status, {}, f"rejected: max_tokens too large; key {KEY}")]
    err = failure(complete(make_model(upstream.base_url)))
    assert type(err) is kind and (err.code, err.status) == (code, http)
    assert err.extra["upstream_status"] == status and len(upstream.seen) == 1
    if kind is InputError:
        assert "rejected: max_tokens too large" in err.message
    assert KEY not in err.message and KEY not in json.dumps(err.to_dict())


def test_hang_past_read_timeout_is_a_quick_timeout(upstream: Upstream) -> None:
    upstream.script = ["hang"]
    t0 = time.monotonic()
    err = failure(complete(make_model(upstream.base_url, read_timeout_s=0.5)))
    assert isinstance(err, UpstreamTimeoutError) and err.status == 504
    assert time.monotonic() - t0 < 3.0 and len(upstream.seen) == 1  # a read timeout is never retried


def test_read_timeout_applies_between_stream_pieces(upstream: Upstream) -> None:
    upstream.script = ["steady"]  # ~0.9 s in all, 0.3 s between pieces
    chunks = run(stream(make_model(upstream.base_url, read_timeout_s=0.6)))
    assert "".join(c.content for c in chunks) == "Your card ships tomorrow."
    upstream.script = ["stall"]
    got: list = []
    t0 = time.monotonic()
    err = failure(stream(make_model(upstream.base_url, read_timeout_s=0.5), got=got))
    assert isinstance(err, UpstreamTimeoutError) and [c.content for c in got] == WORDS[:2]
    assert (
        time.monotonic() - t0 < 3.0 and len(upstream.seen) == 2
    )  # the steady one, then the stall (not retried)


def test_stream_dropped_midway(upstream: Upstream) -> None:
    upstream.script = ["drop"]
    got: list = []
    err = failure(stream(make_model(upstream.base_url), got=got))
    assert type(err) is UpstreamError and err.code == "upstream_stream_dropped"
    assert err.extra["upstream_status"] == 200
    assert [c.content for c in got] == WORDS[:2] and len(
        upstream.seen
    ) == 1  # never retried after bytes went out


def test_unreachable_upstream_is_retried_then_reported() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = failure(complete(make_model(f"http://127.0.0.1:{port}/v1", max_retries=1)))
    assert type(err) is UpstreamError and err.code == "upstream_unreachable"
    assert err.extra == {"upstream_status": None, "attempts": 2}


def test_max_concurrency_bounds_in_flight_calls(upstream: Upstream) -> None:
    upstream.script = ["slow"] * 6
    model = make_model(upstream.base_url, max_concurrency=2)

    async def many():
        try:
            return await asyncio.gather(*(model.complete(ASK) for _ in range(6)))
        finally:
            await model.aclose()

    t0 = time.monotonic()
    results = run(many())
    assert len(results) == 6 and upstream.most_in_flight == 2
    assert time.monotonic() - t0 >= 0.85  # three waves of 0.3 s


def test_missing_key_variable_is_a_configuration_error() -> None:
    spec = ModelSettings(kind="openai", base_url="http://127.0.0.1:9/v1", api_key_env="WRITER_KEY")
    with pytest.raises(ConfigurationError, match="environment variable WRITER_KEY is not set"):
        OpenAICompatibleModel("writer", spec, Settings(), environ={})
    with pytest.raises(ConfigurationError, match="needs base_url"):
        OpenAICompatibleModel("writer", ModelSettings(kind="openai"), Settings(), environ={})
