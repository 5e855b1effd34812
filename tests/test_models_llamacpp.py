"""The local llama.cpp chat model on the real SmolLM2-135M-Instruct GGUF: turns, timeouts, abandoned streams, bad files."""

import asyncio
import importlib.util
import time
from pathlib import Path

import pytest

# Found, not imported: the model sets OMP_WAIT_POLICY before llama.cpp's OpenMP runtime loads.
if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip(
        "llama-cpp-python is not installed: pip install 'llmops-kit[local]' (it builds from source)",
        allow_module_level=True,
    )

from llmops_kit.core import ModelSettings, Settings  # noqa: E402
from llmops_kit.errors import (  # noqa: E402
    ConfigurationError,
    InputError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamTimeoutError,
)
from llmops_kit.models.chat import ChatRequest  # noqa: E402
from llmops_kit.models.llamacpp import LlamaCppChatModel, resolve_gguf  # noqa: E402

LONG = ChatRequest(
    [{"role": "user", "content": "Write a long story about a dragon and a knight."}], temperature=0
)


def ask(text: str, **options) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}], temperature=0, **options)


def make_model(**section) -> LlamaCppChatModel:
    model = LlamaCppChatModel("local", ModelSettings(kind="llamacpp", threads=2, **section), Settings())
    model.load()
    return model


@pytest.fixture(scope="module")
def model():
    model = make_model(max_concurrency=8, read_timeout_s=120, max_tokens=8)
    yield model
    asyncio.run(model.aclose())


async def quick_answer_s(model: LlamaCppChatModel) -> float:
    """Seconds a 2-token answer takes: short only when nothing else is generating."""
    started = time.monotonic()
    result = await model.complete(ask("Say hi.", max_tokens=2))
    assert 0 < result.completion_tokens <= 2
    return time.monotonic() - started


def test_concurrent_requests_each_answered_as_if_alone(model):
    prompts = [f"Name an animal whose name starts with the letter {letter}." for letter in "ABCDEFGH"]

    async def run():
        alone = [(await model.complete(ask(p))).content for p in prompts]
        ticks = 0

        async def ticker():  # proves the event loop keeps running while the model generates
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        started = time.monotonic()
        together = await asyncio.gather(*(model.complete(ask(p)) for p in prompts))
        elapsed = time.monotonic() - started
        tick_task.cancel()
        return alone, together, ticks, elapsed

    alone, together, ticks, elapsed = asyncio.run(run())
    assert [r.content for r in together] == alone  # each answer whole and its own: nothing interleaved
    assert all(r.content.strip() and 0 < r.completion_tokens <= 8 for r in together)
    assert ticks >= 0.5 * elapsed / 0.01, f"the event loop was blocked: {ticks} ticks in {elapsed:.1f}s"
    assert model._in_line == 0


def test_stream_concatenates_to_the_completion(model):
    async def run():
        whole = await model.complete(ask("What is a bank account?", max_tokens=24))
        chunks = [c async for c in model.stream(ask("What is a bank account?", max_tokens=24))]
        return whole, chunks

    whole, chunks = asyncio.run(run())
    assert len(chunks) > 2 and all(c.finish_reason is None for c in chunks[:-1])
    assert "".join(c.content for c in chunks) == whole.content
    last = chunks[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == (
        whole.finish_reason,
        whole.prompt_tokens,
        whole.completion_tokens,
    )


def test_full_line_is_refused_and_late_requests_time_out():
    model = make_model(max_concurrency=2, read_timeout_s=0.5, max_tokens=300)

    async def run():
        outcomes = await asyncio.gather(
            model.complete(LONG), model.complete(LONG), model.complete(LONG), return_exceptions=True
        )
        return outcomes, await quick_answer_s(model)

    try:
        outcomes, next_answer_s = asyncio.run(run())
    finally:
        asyncio.run(model.aclose())
    running, waiting, refused = outcomes
    assert isinstance(refused, RateLimitError) and refused.code == "model_busy" and refused.status == 429
    assert isinstance(running, UpstreamTimeoutError) and isinstance(waiting, UpstreamTimeoutError)
    assert waiting.status == 504 and "read_timeout_s = 0.5s" in waiting.message
    assert "requests ahead of it in line: 1" in waiting.message
    assert all("\n" not in str(e) for e in outcomes)
    assert next_answer_s < 3, f"the timed-out generation kept the model busy ({next_answer_s:.1f}s)"


def test_abandoned_stream_stops_generating():
    model = make_model(max_tokens=400, read_timeout_s=60)

    async def run():
        stream = model.stream(LONG)
        got = [await anext(stream) for _ in range(3)]
        await stream.aclose()  # the client went away
        return got, await quick_answer_s(model)

    try:
        got, next_answer_s = asyncio.run(run())
    finally:
        asyncio.run(model.aclose())
    assert all(c.content for c in got)
    # 400 tokens at 20-60 tokens/s would hold the model for 7-20 s
    assert next_answer_s < 3, f"the abandoned stream kept generating ({next_answer_s:.1f}s)"


def test_cancelled_complete_stops_generating():
    model = make_model(max_tokens=400, read_timeout_s=60)

    async def run():
        task = asyncio.create_task(model.complete(LONG))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await quick_answer_s(model)

    try:
        next_answer_s = asyncio.run(run())
    finally:
        asyncio.run(model.aclose())
    assert next_answer_s < 3, f"the cancelled request kept generating ({next_answer_s:.1f}s)"


def test_prompt_longer_than_the_context_is_the_callers_error():
    model = make_model(n_ctx=128)
    try:
        with pytest.raises(InputError) as caught:
            asyncio.run(model.complete(ask("tell me more " * 100)))
    finally:
        asyncio.run(model.aclose())
    assert caught.value.status == 400 and "context window" in caught.value.message


def test_not_loaded_is_unavailable():
    model = LlamaCppChatModel("local", ModelSettings(kind="llamacpp"), Settings())
    assert model.readiness() == (False, "model 'local': SmolLM2-135M-Instruct.Q4_1.gguf is not loaded")
    with pytest.raises(ServiceUnavailableError, match="not loaded yet"):
        asyncio.run(model.complete(ask("hi")))


@pytest.mark.parametrize(
    "gguf, content, expected",
    [
        ("models/missing.gguf", None, "[model.local] gguf = models/missing.gguf: no such file"),
        ("notes.gguf", b"just some notes", "[model.local] gguf = notes.gguf: "),
        ("package:not_a_package_here", None, "no installed package 'not_a_package_here'"),
    ],
)
def test_bad_gguf_is_a_one_line_configuration_error(tmp_path: Path, gguf, content, expected):
    if content is not None:
        (tmp_path / gguf).write_bytes(content)
    with pytest.raises(ConfigurationError) as caught:
        LlamaCppChatModel("local", ModelSettings(kind="llamacpp", gguf=gguf), Settings(root=tmp_path))
    assert expected in caught.value.message and "\n" not in caught.value.message


def test_truncated_gguf_fails_at_load(tmp_path: Path):
    (tmp_path / "cut.gguf").write_bytes(resolve_gguf("", Settings()).read_bytes()[:65536])
    model = LlamaCppChatModel(
        "local", ModelSettings(kind="llamacpp", gguf="cut.gguf"), Settings(root=tmp_path)
    )
    with pytest.raises(ConfigurationError) as caught:
        model.load()
    assert caught.value.message.startswith("[model.local] gguf = cut.gguf: llama.cpp cannot load")
    assert "\n" not in caught.value.message
    assert model.readiness()[0] is False
