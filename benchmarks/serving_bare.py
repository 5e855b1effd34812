"""The bare baseline of benchmarks/serving.py: one FastAPI endpoint with the same pydantic body, calling the same
benchmark backend, and nothing else (no auth, guardrails, audit, metrics or middleware).

Usage: .venv/bin/python benchmarks/serving_bare.py --port 8001 [--workers 1]
"""

from __future__ import annotations

import argparse
import time

from fastapi import FastAPI
from fastapi.responses import Response

from llmops_kit.models.backends import BenchmarkBackend, count_tokens
from llmops_kit.serving.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    RoutingInfo,
    Usage,
)

app = FastAPI(title="bare baseline")
backend = BenchmarkBackend()


@app.post("/v1/chat/completions", response_model=ChatCompletion)
async def chat(body: ChatCompletionRequest) -> Response:
    text = next(m.text() for m in reversed(body.messages) if m.role == "user")
    p = (await backend.predict([text]))[0]
    prompt, completion = sum(count_tokens(m.text()) for m in body.messages), count_tokens(p["reply"])
    out = ChatCompletion(
        id="chatcmpl-bare",
        created=int(time.time()),
        model=backend.info.id,
        choices=[ChatChoice(index=0, message=AssistantMessage(content=p["reply"]), finish_reason="stop")],
        usage=Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
        llmops=RoutingInfo(intent=p["intent"], confidence=p["confidence"], route=p["route"], abstained=False),
    )
    return Response(out.model_dump_json(), media_type="application/json")


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(
        "serving_bare:app",
        app_dir=str(__import__("pathlib").Path(__file__).parent),
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


if __name__ == "__main__":
    main()
