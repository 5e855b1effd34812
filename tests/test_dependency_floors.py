"""The declared dependency floors are true: the kit's tests pass with the lowest declared version of every direct dependency.

The slow test builds a virtual environment once per machine (and per `pyproject.toml`), under
`$XDG_CACHE_HOME/llmops-kit/floors-venv-<hash>` (default `~/.cache/...`): `torch==2.13.0` first, then the
project with its `ml`, `registry` and `serve` extras, every declared direct dependency constrained to
`NAME==FLOOR` (uv resolves and installs; the transitive dependencies get what the resolver picks for them).
It then runs the fast tests of the core, serving and the registry inside that environment.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
EXTRAS = ("ml", "registry", "serve")
TORCH = "torch==2.13.0"  # first, alone: the CPU build (an unpinned resolve pulls a CUDA build)
REGISTRY = "https://pypi.org/simple/"
TESTS = (
    "tests/test_settings.py",
    "tests/test_cli.py",
    "tests/test_public_api.py",
    "tests/test_guardrails.py",
    "tests/test_embeddings.py",
    "tests/test_drift_report.py",
    "tests/test_registry_compat.py",
    "tests/test_registry_lineage.py",
    "tests/test_serving_app.py",
    "tests/test_serving_auth.py",
    "tests/test_serving_metrics.py",
)


def declared_requirements() -> list[Requirement]:
    """Every direct dependency in `pyproject.toml`: the core list and each extra (not the kit's own extras)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    reqs = [Requirement(line) for line in lines]
    return [r for r in reqs if canonicalize_name(r.name) != "llmops-kit"]


def floors() -> dict[str, str]:
    """The declared floor of each direct dependency that applies on this machine: {normalised name: version}."""
    out: dict[str, str] = {}
    for req in declared_requirements():
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        lows = [s.version for s in req.specifier if s.operator in (">=", "==", "~=")]
        assert len(lows) == 1, f"{req}: declare one floor (>=X) for each direct dependency"
        name = canonicalize_name(req.name)
        assert out.get(name, lows[0]) == lows[0], (
            f"{req.name} is declared with two floors: {out[name]} and {lows[0]}"
        )
        out[name] = lows[0]
    return out


def test_every_direct_dependency_declares_one_floor():
    """Each direct dependency says the lowest version it works with, and says it once."""
    found = floors()
    for name in (
        "fastapi",
        "pydantic",
        "mlflow",
        "sentence-transformers",
        "pyjwt",
        "prometheus-client",
        "jinja2",
    ):
        assert name in found, f"{name} is not a declared dependency"
    assert found["torch"] == "2.13.0"
    assert Version(found["fastapi"]) >= Version("0.142")  # FastAPI(telemetry=...) arrived in 0.142.0
    assert Version(found["mlflow"]) >= Version("3.0")  # log_model(name=...), MlflowClient.get_logged_model


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmops-kit"


def _run(args: list, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise AssertionError(
            f"`{' '.join(map(str, args))}` failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def _registry_reachable() -> str | None:
    """None when the package registry answers, else why not."""
    try:
        with urllib.request.urlopen(REGISTRY + "uv/", timeout=20) as resp:
            resp.read(1)
        return None
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def _build(venv: Path, constraints: Path) -> None:
    """A fresh venv: torch first, then uv, then the project at its floors (editable, so the tests see this tree)."""
    if venv.exists():
        shutil.rmtree(venv)
    _run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", TORCH], timeout=900)
    _run([py, "-m", "pip", "install", "-q", "uv"], timeout=300)
    target = f"{REPO}[{','.join(EXTRAS)}]"
    _run(
        [
            venv / "bin" / "uv",
            "pip",
            "install",
            "--compile-bytecode",
            "--python",
            py,
            "-c",
            constraints,
            "-e",
            target,
            "pytest",
        ],
        timeout=1200,
    )
    _run([venv / "bin" / "uv", "pip", "check", "--python", py], timeout=120)


def _drop_stale(current: Path) -> None:
    """Remove floor venvs of older `pyproject.toml` files (a few GB each) not touched for a day."""
    for other in current.parent.glob("floors-venv-*"):
        if other.is_dir() and other != current and time.time() - other.stat().st_mtime > 86400:
            other.with_name(other.name + ".done").unlink(
                missing_ok=True
            )  # the stamp first: never a stamp without a venv
            shutil.rmtree(other, ignore_errors=True)
            for suffix in (".constraints.txt", ".lock"):
                other.with_name(other.name + suffix).unlink(missing_ok=True)


def floors_venv() -> Path:
    """The cached venv at the declared floors, built (under a lock) when missing; skips only if it cannot be fetched."""
    wanted = floors()
    constraints_text = "".join(f"{name}=={version}\n" for name, version in sorted(wanted.items()))
    key = hashlib.sha256(
        "\n".join(
            [constraints_text, (REPO / "pyproject.toml").read_text(), str(REPO), sys.version, TORCH, *EXTRAS]
        ).encode()
    ).hexdigest()[:16]
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv, stamp = root / f"floors-venv-{key}", root / f"floors-venv-{key}.done"
    with open(root / f"floors-venv-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and (venv / "bin" / "python").exists()):
            why = _registry_reachable()
            if why is not None:
                pytest.skip(
                    f"the package registry {REGISTRY} cannot be reached to build the floors venv ({why})"
                )
            constraints = root / f"floors-venv-{key}.constraints.txt"
            constraints.write_text(constraints_text)
            started = time.perf_counter()
            _build(venv, constraints)
            stamp.write_text(json.dumps({"built_s": round(time.perf_counter() - started, 1)}))
            _drop_stale(venv)
    os.utime(venv)
    return venv


def installed_versions(venv: Path) -> dict[str, str]:
    """{normalised name: version} of every distribution in the venv."""
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    out = _run([venv / "bin" / "python", "-c", code]).stdout
    return {canonicalize_name(k): v for k, v in json.loads(out).items()}


@pytest.mark.slow
def test_tests_pass_at_the_declared_floors(tmp_path):
    """Core, serving and registry tests pass with every direct dependency at its declared floor."""
    started = time.perf_counter()
    venv = floors_venv()
    built_s = json.loads(venv.with_name(venv.name + ".done").read_text())["built_s"]
    wanted, installed = floors(), installed_versions(venv)
    print(f"\nfloors venv {venv} (built in {built_s} s)")
    for name, floor in sorted(wanted.items()):
        print(f"  {name:24} floor {floor:10} installed {installed.get(name, '-')}")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = {
        canonicalize_name(Requirement(r).name)
        for r in [*project["dependencies"], *(r for e in EXTRAS for r in project["optional-dependencies"][e])]
    } & set(wanted)
    for name in sorted(needed | {"pytest"}):
        assert name in installed, f"{name} was not installed in the floors venv"
        got = Version(Version(installed[name]).public)
        assert got == Version(wanted[name]), (
            f"{name}: installed {installed[name]}, declared floor {wanted[name]}"
        )

    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTEST_ADDOPTS")}
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    )
    # MLflow at its floor opens a default store when it loads a model by path: keep it out of the repository
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_started = time.perf_counter()
    proc = subprocess.run(
        [venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=5", *TESTS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if "slowest" in proc.stdout:
        print(proc.stdout[proc.stdout.index("slowest") :].strip())
    print(
        f"inner run: {tail} ({time.perf_counter() - run_started:.0f} s; whole test {time.perf_counter() - started:.0f} s)"
    )
    assert proc.returncode == 0, (
        f"tests fail at the declared floors:\n{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}"
    )
    assert " passed" in tail, tail
