"""Helpers shared by the serving tests: start a real `llmops serve` subprocess on a free port, mint tokens,
read the audit log. (No tests here.)"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from conftest import LLMOPS

SECRET = "serving-tests-secret-0123456789abcdefghij"
ECHO = "llmops-benchmark-echo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "PROMETHEUS_"))}
    if "LLMOPS_SHARED_DATA" in os.environ:
        env["LLMOPS_SHARED_DATA"] = os.environ["LLMOPS_SHARED_DATA"]
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", LLMOPS_JWT_SECRET=SECRET, **(extra or {}))
    return env


@dataclass
class Server:
    """A running `llmops serve` subprocess and its project folder."""

    proc: subprocess.Popen
    root: Path
    base_url: str
    log: Path
    verify: ssl.SSLContext | bool = True
    tokens: dict = field(default_factory=dict)

    @property
    def audit_dir(self) -> Path:
        return self.root / ".llmops" / "audit"

    def token(
        self, tenant: str = "acme", scopes: tuple[str, ...] = ("chat", "embeddings"), ttl: float = 600
    ) -> str:
        from llmops_kit.core import load_settings
        from llmops_kit.serving.auth import mint_token

        key = (tenant, scopes, ttl)
        if key not in self.tokens:
            settings = load_settings(self.root / "settings.ini", environ={})
            self.tokens[key] = mint_token(
                settings, tenant, scopes, ttl, environ={"LLMOPS_JWT_SECRET": SECRET}
            )
        return self.tokens[key]

    def headers(
        self, tenant: str = "acme", scopes: tuple[str, ...] = ("chat", "embeddings")
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant, scopes)}"}

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=self.verify, timeout=kw.pop("timeout", 30), **kw)

    def records(self) -> list[dict]:
        from llmops_kit.serving.auditlog import audit_files

        out = []
        if not self.audit_dir.is_dir():
            return out
        for path in audit_files(self.audit_dir):
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    out.append(json.loads(line))
        return out

    def records_by_id(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for r in self.records():
            out.setdefault(r["request_id"], []).append(r)
        return out

    def wait_records(self, ids, timeout: float = 10) -> dict[str, list[dict]]:
        """The records by id once every id in `ids` has one (records of disconnects may trail the response)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.records_by_id()
            if all(i in found for i in ids) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def write_settings(root: Path, serving: dict | None = None, extra: str = "") -> Path:
    # the embedding guards (MiniLM similarity) take milliseconds per text; tests turn them on where they matter
    lines = ["[project]", "state_dir = .llmops", "log_format = json", "[audit]", "dir = .llmops/audit"]
    if "[guardrails]" not in extra:
        lines += ["[guardrails]", "embedding_guards = false"]
    lines += ["[serving]"]
    lines += [f"{k} = {v}" for k, v in (serving or {}).items()]
    ini = root / "settings.ini"
    ini.write_text("\n".join(lines) + "\n" + extra)  # extra sections come after [serving]
    return ini


def start_server(
    root: Path,
    *,
    backend: str = "benchmark",
    serving: dict | None = None,
    extra_ini: str = "",
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    tls: tuple[Path, Path] | None = None,
    ready: str = "/readyz",
    timeout: float = 90,
) -> Server:
    """Start `llmops serve` in `root` and wait until `ready` answers 200."""
    root.mkdir(parents=True, exist_ok=True)
    ini = write_settings(root, serving, extra_ini)
    port = free_port()
    cmd = [str(LLMOPS), "serve", "--config", str(ini), "--port", str(port), "--backend", backend, *args]
    scheme, verify = "http", True
    if tls:
        cmd += ["--certfile", str(tls[0]), "--keyfile", str(tls[1])]
        scheme, verify = "https", ssl.create_default_context(cafile=str(tls[0]))
    log = root / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd, cwd=root, env=server_env(env), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(proc, root, f"{scheme}://127.0.0.1:{port}", log, verify)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"llmops serve exited with {proc.returncode}:\n{server.stderr()[-3000:]}")
        try:
            r = httpx.get(server.base_url + ready, verify=verify, timeout=2)
            if r.status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"llmops serve not ready after {timeout} s:\n{server.stderr()[-3000:]}")
        time.sleep(0.2)


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def chat_body(text: str = "Where is my card?", model: str = ECHO, **kw) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **kw}


def run_audit_verify(server: Server) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(LLMOPS),
            "audit",
            "verify",
            str(server.audit_dir),
            "--config",
            str(server.root / "settings.ini"),
        ],
        cwd=server.root,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


__all__ = [
    "ECHO",
    "SECRET",
    "Server",
    "chat_body",
    "free_port",
    "run_audit_verify",
    "self_signed_cert",
    "server_env",
    "start_server",
]
