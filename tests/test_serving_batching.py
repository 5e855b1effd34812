"""Micro-batching in a real server: concurrent `/v1/route` and `/v1/embeddings` requests are answered in batches
(`llmops_batch_size` shows more than one text per call), each with exactly the answer it gets alone."""

from __future__ import annotations

import asyncio
import sys

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_serving_app_support import start_server

from llmops_kit.core import load_settings

TEXTS = [
    "my card has not arrived yet",
    "someone stole my card on the bus",
    "what exchange rate do you use for dollars",
    "I was charged twice for one payment",
    "how do I top up my account",
    "my transfer is still pending",
    "can I change my PIN at an ATM",
    "hello?",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from llmops_kit.quickstart import quickstart

    root = tmp_path_factory.mktemp("batching")
    (root / "settings.ini").write_text("[project]\nstate_dir = .llmops\n")
    settings = load_settings(root / "settings.ini", environ={})
    _, results = quickstart(settings, skip=["serve", "audit", "export"], progress=sys.stderr)
    assert [r.status for r in results if r.name == "register"] == ["done"]
    serving = {"batching": "true", "batch_max_size": 16, "batch_max_wait_ms": 25, "request_timeout_s": 60}
    srv = start_server(root, backend="mlflow", serving=serving, timeout=180)
    yield srv
    srv.stop()


async def concurrently(srv, path: str, bodies: list[dict]) -> list[dict]:
    headers = srv.headers("acme", ("chat", "embeddings"))
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=60) as client:
        responses = await asyncio.gather(*(client.post(path, headers=headers, json=b) for b in bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies), [
        r.text for r in responses if r.status_code != 200
    ]
    return [r.json() for r in responses]


def batch_sizes(srv) -> dict[str, tuple[float, float]]:
    """(number of batched calls, texts in them) per call kind, from `/metrics`."""
    with srv.client() as client:
        text = client.get("/metrics", headers=srv.headers("ops", ("metrics",))).text
    out: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "llmops_batch_size":
            for s in family.samples:
                if s.name.endswith(("_count", "_sum")):
                    out.setdefault(s.labels["call"], [0.0, 0.0])[s.name.endswith("_sum")] = s.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def test_concurrent_routes_are_batched_and_each_gets_its_own_answer(server):
    from llmops_kit.registry.bundle import load_app

    bodies = [{"input": f"{TEXTS[i % len(TEXTS)]} (ticket {i})"} for i in range(48)]
    answers = asyncio.run(concurrently(server, "/v1/route", bodies))
    calls, texts = batch_sizes(server)["predict"]
    assert texts == 48 and calls < 48, (calls, texts)  # 48 texts in fewer calls: more than one per call
    app = load_app("models:/support-router@champion", load_settings(server.root / "settings.ini", environ={}))
    for body, answer in zip(bodies, answers, strict=True):
        (alone,) = app.predict([body["input"]])  # the unbatched answer
        (got,) = answer["data"]
        assert (got["intent"], got["route"], got["abstained"]) == (
            alone["intent"],
            alone["route"],
            alone["abstained"],
        )
        assert got["confidence"] == pytest.approx(alone["confidence"], abs=1e-5)
        assert [t["intent"] for t in got["top_k"]] == [t["intent"] for t in alone["top_k"]]


def test_a_request_with_several_texts_stays_whole(server):
    bodies = [{"input": [f"{t} #{i}" for t in TEXTS[: 1 + i % 4]]} for i in range(12)]
    answers = asyncio.run(concurrently(server, "/v1/route", bodies))
    for body, answer in zip(bodies, answers, strict=True):
        assert [d["index"] for d in answer["data"]] == list(range(len(body["input"])))


def test_concurrent_embeddings_are_batched_and_equal_to_unbatched(server):
    from llmops_kit.embeddings import Embedder

    before = batch_sizes(server).get("embed", (0.0, 0.0))
    bodies = [
        {"model": "all-MiniLM-L6-v2", "input": f"{TEXTS[i % len(TEXTS)]} (ticket {i})"} for i in range(32)
    ]
    answers = asyncio.run(concurrently(server, "/v1/embeddings", bodies))
    calls, texts = (a - b for a, b in zip(batch_sizes(server)["embed"], before, strict=True))
    assert texts == 32 and calls < 32, (calls, texts)
    embedder = Embedder.from_settings(load_settings(server.root / "settings.ini", environ={}))
    for body, answer in zip(bodies, answers, strict=True):
        alone = np.asarray(embedder.encode([body["input"]]))[0]
        got = np.asarray(answer["data"][0]["embedding"])
        assert np.abs(got - alone).max() < 1e-4


def test_a_request_alone_is_answered_after_the_burst(server):
    with server.client() as client:
        r = client.post("/v1/route", headers=server.headers(), json={"input": TEXTS[0]})
    assert r.status_code == 200 and r.json()["data"][0]["intent"]
