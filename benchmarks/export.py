"""Export benchmark: the size of the image `llmops export docker` builds and the time from container start to ready,
next to the image `mlflow models generate-dockerfile` produces for the same registered model, both built with podman on
the same local Debian bookworm base (no image registry is reachable here) in the same run.

MLflow's Dockerfile cannot build on that base unchanged; the adaptations are the fewest that let it build and serve,
and each is recorded in the results: its `FROM` becomes the local base; a virtual environment is put first on the
`PATH` (the base has `python3` but no `python`/`pip`, and Debian's own pip refuses to install into the system, PEP 668);
pip installs offline from wheels fetched here by this machine's pip (`PIP_NO_INDEX`, `PIP_FIND_LINKS`: inside a container
PyPI fails TLS verification behind this network's intercepting proxy, and the model pins `torch==2.13.0+cpu`, which
PyPI does not have); and llmops-kit's wheel is installed with its core dependencies, because the model's `loader_module` is `llmops_kit.registry`
and MLflow's requirements file does not list the kit. Everything else (nginx from Debian, `pip install mlflow`,
MLflow's own dependency install, its entry point) is MLflow's.

Run: `nice -n 10 .venv/bin/python benchmarks/export.py [--starts N]`. Writes `benchmarks/results/export.json`.
Needs podman, runc and debootstrap (`apt-get install -y podman runc debootstrap`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from llmops_kit import __version__
from llmops_kit.core import load_settings
from llmops_kit.export.context import build_image, local_base_image, podman_flags, write_context
from llmops_kit.quickstart import build_champion

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OURS_TAG = "localhost/llmops-bench-export:ours"
MLFLOW_TAG = "localhost/llmops-bench-export:mlflow"
SECRET = "benchmark-secret-0123456789abcdefghijklmnopqrstuv"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def image_size(tag: str) -> int:
    done = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", tag],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


def start_to_ready(tag: str, url: str, env: dict[str, str], timeout_s: float = 300) -> float:
    """Seconds from `podman run -d` to the first 200 from `url` (the container is removed afterwards)."""
    flags = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
    t0 = time.perf_counter()
    started = subprocess.run(
        ["podman", "run", "-d", *podman_flags(), *flags, tag], capture_output=True, text=True, check=True
    )
    container = started.stdout.strip().splitlines()[-1]
    try:
        while time.perf_counter() - t0 < timeout_s:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        logs = subprocess.run(["podman", "logs", container], capture_output=True, text=True)
        raise RuntimeError(f"{tag} not ready within {timeout_s} s: {(logs.stdout + logs.stderr)[-1000:]}")
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "5", container], capture_output=True)


def model_load_seconds(model_dir: Path, settings_file: Path) -> float:
    """`load_app` of the exported model folder in a fresh interpreter on this machine, imports included."""
    code = (
        "import time; t = time.perf_counter(); from llmops_kit.core import load_settings; "
        "from llmops_kit.registry.bundle import load_app; "
        f"a = load_app({str(model_dir)!r}, load_settings({str(settings_file)!r})); "
        "a.predict(['warm up']); print(time.perf_counter() - t)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        ).stdout
    )


def mlflow_context(model_uri: str, tracking_uri: str, ours: Path, out: Path, base: str) -> list[str]:
    """MLflow's generated build context, adapted to build on `base`; return the adaptations made."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    mlflow = Path(sys.executable).parent / "mlflow"
    subprocess.run(
        [str(mlflow), "models", "generate-dockerfile", "-m", model_uri, "-d", str(out)],
        env=env,
        check=True,
        capture_output=True,
    )
    text = (out / "Dockerfile").read_text()
    original_from = re.search(r"^FROM .*$", text, re.M).group(0)
    import mlflow as mlflow_package
    import yaml

    build_deps = (
        yaml.safe_load((out / "model_dir" / "python_env.yaml").read_text()).get("build_dependencies") or []
    )
    wheels = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(out / "wheels"), f"mlflow=={mlflow_package.__version__}",
         *build_deps, "gunicorn[gevent]", "--requirement", str(out / "model_dir" / "requirements.txt")],
        capture_output=True, text=True,
    )  # fmt: skip
    if wheels.returncode != 0:
        raise RuntimeError(f"pip wheel of MLflow's requirements failed: {wheels.stderr[-800:]}")
    shutil.copytree(ours / "wheels", out / "wheels", dirs_exist_ok=True)  # the kit's own dependencies
    shutil.copytree(ours / "kit", out / "kit")
    kit = next((out / "kit").glob("*.whl")).name
    text = text.replace(
        original_from,
        f"FROM {base}\nRUN python3 -m venv /opt/venv\nENV PATH=/opt/venv/bin:$PATH PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/wheels\nCOPY wheels /opt/wheels",
    )
    text = text.replace(
        "ENV MLFLOW_DISABLE_ENV_CREATION=True",
        f"COPY kit /opt/kit\nRUN pip install /opt/kit/{kit}\nENV MLFLOW_DISABLE_ENV_CREATION=True",
    )
    (out / "Dockerfile").write_text(text)
    return [
        f"{original_from} -> FROM {base} (no registry reachable)",
        "RUN python3 -m venv /opt/venv; ENV PATH=/opt/venv/bin:$PATH (the base has no python/pip; Debian's pip refuses system installs, PEP 668)",
        "ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/wheels: mlflow, the model's requirements and its python_env.yaml build dependencies and MLflow's serving dependency gunicorn[gevent] as wheels fetched by the host's pip "
        "(PyPI fails TLS verification inside the container behind this network's proxy; torch==2.13.0+cpu is not on PyPI)",
        "pip install llmops-kit's wheel with its core dependencies (the model's loader_module; MLflow's requirements do not list it)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="container starts timed per image")
    args = parser.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    base = local_base_image()
    result: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "llmops_kit": __version__,
        "base_image": {
            "tag": base,
            "bytes": image_size(base),
            "how": "debootstrap --variant=minbase bookworm + python3 python3-venv python3-pip, podman import",
        },
        "engine": subprocess.run(["podman", "--version"], capture_output=True, text=True).stdout.strip(),
    }
    with tempfile.TemporaryDirectory(prefix="llmops-bench-export-") as work:
        work = Path(work)
        (work / "settings.ini").write_text("[lineage]\ntransport = none\n")
        settings = load_settings(work / "settings.ini", environ={})
        champion = build_champion(settings, profile=False)
        t = time.perf_counter()
        ctx = write_context(champion.uri, work / "ours", settings)
        export_s = time.perf_counter() - t
        t = time.perf_counter()
        build_image(ctx, tag=OURS_TAG, build_args={"BASE_IMAGE": base}, engine="podman")
        build_s = time.perf_counter() - t
        port = free_port()
        starts = [
            start_to_ready(
                OURS_TAG,
                f"http://127.0.0.1:{port}/readyz",
                {"LLMOPS_JWT_SECRET": SECRET, "LLMOPS_SERVING__PORT": str(port)},
            )
            for _ in range(args.starts)
        ]
        result["ours"] = {
            "tag": OURS_TAG, "bytes": image_size(OURS_TAG), "export_s": round(export_s, 1), "build_s": round(build_s, 1),
            "start_to_ready_s": [round(s, 2) for s in starts], "start_to_ready_median_s": round(statistics.median(starts), 2),
            "model_load_s_host": round(model_load_seconds(ctx.folder / "model", ctx.folder / "settings.ini"), 2),
            "requirements": len(ctx.requirements), "runtime": ctx.runtime,
        }  # fmt: skip
        print(json.dumps(result["ours"]), flush=True)
        mlflow: dict = {"tag": MLFLOW_TAG}
        try:
            mlflow["adaptations"] = mlflow_context(
                f"models:/{champion.name}/{champion.version}",
                f"sqlite:///{work}/.llmops/mlflow.db",
                ctx.folder,
                work / "mlflow",
                base,
            )
            t = time.perf_counter()
            done = subprocess.run(
                ["podman", "build", "--format", "docker", *podman_flags(), "-t", MLFLOW_TAG, str(work / "mlflow")],
                capture_output=True, text=True,
            )  # fmt: skip
            mlflow["build_s"] = round(time.perf_counter() - t, 1)
            if done.returncode != 0:
                raise RuntimeError(f"podman build failed: {(done.stdout + done.stderr)[-1500:]}")
            mlflow["bytes"] = image_size(MLFLOW_TAG)
            if (
                shutil.which("ss")
                and ":8080 " in subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout
            ):
                raise RuntimeError("port 8080 (MLflow's fixed serving port) is taken on this host")
            mstarts = [
                start_to_ready(MLFLOW_TAG, "http://127.0.0.1:8080/ping", {}) for _ in range(args.starts)
            ]
            mlflow["start_to_ready_s"] = [round(s, 2) for s in mstarts]
            mlflow["start_to_ready_median_s"] = round(statistics.median(mstarts), 2)
        except Exception as e:  # recorded, not hidden: the comparison says why it is missing
            mlflow["error"] = str(e)
        result["mlflow_generate_dockerfile"] = mlflow
        if "bytes" in mlflow:
            result["size_ratio_ours_to_mlflow"] = round(result["ours"]["bytes"] / mlflow["bytes"], 3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
