"""Helpers for the job queue tests: `llmops worker` processes, polling a job, reading job hashes. (No tests here.)"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from test_serving_app_support import Server, server_env

from conftest import LLMOPS


def jobs_ini(redis_url: str, **overrides) -> str:
    """A `[jobs]` section on `redis_url` (extra keys as keyword arguments)."""
    return (
        "\n".join(["[jobs]", f"redis_url = {redis_url}", *(f"{k} = {v}" for k, v in overrides.items())])
        + "\n"
    )


@dataclass
class Worker:
    """A running `llmops worker` process (its own session, so `kill9` reaches it alone)."""

    proc: subprocess.Popen
    log: Path

    @property
    def consumer(self) -> str:
        import socket

        return f"{socket.gethostname()}-{self.proc.pid}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_consuming(self, timeout: float = 90) -> Worker:
        deadline = time.monotonic() + timeout
        while "consuming" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"llmops worker did not start (exit {self.proc.poll()}):\n{self.output()[-3000:]}"
                )
            time.sleep(0.1)
        return self

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()


def start_worker(server: Server, name: str, *args: str) -> Worker:
    """`llmops worker` with the server's settings and environment, logging to `root/NAME.log`."""
    log = server.root / f"{name}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                str(LLMOPS),
                "worker",
                "--config",
                str(server.root / "settings.ini"),
                "--backend",
                "benchmark",
                *args,
            ],
            cwd=server.root,
            env=server_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(proc, log)


def wait_job(
    client: httpx.Client, job_id: str, headers: dict, timeout: float = 60, until=("succeeded", "failed")
) -> dict:
    """Poll `GET /v1/jobs/{id}` until its status is one of `until`; the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/v1/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["status"] in until:
            return r.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {r.json()['status']} after {timeout} s")
        time.sleep(0.1)


def job_hash(redis_url: str, job_id: str, prefix: str = "llmops:job:") -> dict[str, str]:
    """The job's Redis hash, read directly."""
    import redis

    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        return r.hgetall(prefix + job_id)


def job_records(server: Server) -> dict[str, list[dict]]:
    """The workers' audit records by job id (records of `POST /v1/jobs` left out)."""
    out: dict[str, list[dict]] = {}
    for rec in server.records():
        job = (rec.get("prediction") or {}).get("job")
        if job and rec["route"] != "/v1/jobs" and not rec["route"].startswith("/v1/jobs/"):
            out.setdefault(job["id"], []).append(rec)
    return out
