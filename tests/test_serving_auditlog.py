"""The audit writer under real threads and processes, rotation, restarts, crashes, and tampering found by
`llmops audit verify`; raw-mode encryption read back by `llmops audit show --decrypt`."""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from conftest import run_llmops
from llmops_kit.core import AuditSettings, InferenceRecord, Settings, load_settings
from llmops_kit.errors import ConfigurationError, LlmopsError
from llmops_kit.serving.auditlog import (
    AuditWriter,
    ChainKeys,
    audit_files,
    canonical_json,
    make_text_record,
    record_hash,
    verify_log,
)


def rec(i, **kw) -> InferenceRecord:
    return InferenceRecord(
        request_id=f"req-{i}",
        ts="2026-11-25T09:30:00+00:00",
        route="/v1/chat/completions",
        status=200,
        outcome="ok",
        tenant="acme",
        stages_ms={"auth": 0.02, "model": 1.5},
        **kw,
    )


def lines_of(folder: Path) -> list[str]:
    return [line for path in audit_files(folder) for line in path.read_text(encoding="utf-8").splitlines()]


def write(folder: Path, n: int, start: int = 0, **kw) -> list[str]:
    with AuditWriter(folder, **kw) as writer:
        futures = [writer.submit(rec(i)) for i in range(start, start + n)]
        return [f.result(30) for f in futures]


def test_many_threads_one_chain_exact_count(tmp_path):
    """16 threads submit through a queue of 8: submit waits when full, nothing is dropped, one valid chain."""
    with AuditWriter(tmp_path, queue_size=8, fsync="interval", fsync_interval_s=0.05) as writer:

        def work(t):
            return [writer.submit(rec(f"{t}-{i}")).result(30) for i in range(150)]

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            hashes = [h for hs in pool.map(work, range(16)) for h in hs]
    result = verify_log(tmp_path)
    assert (result.ok, result.count) == (True, 16 * 150), result
    records = [json.loads(line) for line in lines_of(tmp_path)]
    assert {r["request_id"] for r in records} == {f"req-{t}-{i}" for t in range(16) for i in range(150)}
    assert [r["hash"] for r in records] == [record_hash(r) for r in records]
    assert set(hashes) == {r["hash"] for r in records}, "every future resolved to its record's hash"


WORKER = textwrap.dedent(
    """
    import sys
    from llmops_kit.core import InferenceRecord
    from llmops_kit.serving.auditlog import AuditWriter
    folder, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with AuditWriter(folder, rotate_bytes=int(sys.argv[4]), max_batch=7) as w:
        futs = [w.submit(InferenceRecord(request_id=f"{tag}-{i}", ts="t", route="/v1/embeddings", status=200,
                                         outcome="ok")) for i in range(n)]
        for f in futs: f.result(60)
    """
)


def test_several_processes_share_one_chain(tmp_path):
    """Worker processes of one server append to one folder: the flock keeps a single valid chain."""
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), f"p{k}", "400", "20000"])
        for k in range(3)
    ]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    result = verify_log(tmp_path)
    assert (result.ok, result.count) == (True, 1200), result
    assert len(audit_files(tmp_path)) > 3, "the processes rotated files between them"
    ids = [json.loads(line)["request_id"] for line in lines_of(tmp_path)]
    assert sorted(ids) == sorted(f"p{k}-{i}" for k in range(3) for i in range(400))


def test_rotation_names_sort_chronologically_and_chain_across_files(tmp_path):
    hashes = write(tmp_path, 60, rotate_bytes=1500)
    files = audit_files(tmp_path)
    assert len(files) >= 10 and all(p.stat().st_size <= 1500 for p in files)
    assert [p.name for p in files] == sorted(n for n in os.listdir(tmp_path) if n.endswith(".jsonl"))
    assert [json.loads(line)["hash"] for line in lines_of(tmp_path)] == hashes
    first_of_each = [json.loads(p.read_text().splitlines()[0]) for p in files[1:]]
    last_of_each = [json.loads(p.read_text().splitlines()[-1]) for p in files[:-1]]
    assert [f["prev_hash"] for f in first_of_each] == [last["hash"] for last in last_of_each]
    assert verify_log(tmp_path).count == 60


def test_restart_continues_the_chain(tmp_path):
    first = write(tmp_path, 10)
    second = write(tmp_path, 10, start=10, fsync="always")
    records = [json.loads(line) for line in lines_of(tmp_path)]
    assert records[10]["prev_hash"] == first[-1] and records[-1]["hash"] == second[-1]
    assert verify_log(tmp_path).count == 20


def test_restart_after_a_cut_off_write_drops_the_torn_tail(tmp_path):
    write(tmp_path, 5)
    newest = audit_files(tmp_path)[-1]
    with open(newest, "ab") as f:
        f.write(b'{"request_id":"req-half","sta')  # a write cut off by power loss
    proc = run_llmops("audit", "verify", str(tmp_path))
    assert proc.returncode == 1 and "line 6: the last line is cut off" in proc.stdout
    write(tmp_path, 5, start=5)
    assert verify_log(tmp_path).count == 10
    assert "req-half" not in newest.read_text()


CRASHER = textwrap.dedent(
    """
    import sys, threading
    from llmops_kit.core import InferenceRecord
    from llmops_kit.serving.auditlog import AuditWriter
    w = AuditWriter(sys.argv[1], fsync="never", queue_size=64)
    lock = threading.Lock()
    def client(t):
        i = 0
        while True:
            h = w.submit(InferenceRecord(request_id=f"{t}-{i}", ts="t", route="/v1/chat/completions", status=200,
                                         outcome="ok")).result()
            with lock:  # the 'response' goes out only after the record is written
                sys.stdout.write(f"{t}-{i} {h}\\n")
                sys.stdout.flush()
            i += 1
    for t in range(4): threading.Thread(target=client, args=(t,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_kill_9_loses_no_acknowledged_record(tmp_path):
    """Every record whose future resolved is in the log after SIGKILL, and the chain verifies to the end."""
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    acknowledged = []
    deadline = time.monotonic() + 60
    while len(acknowledged) < 2000 and time.monotonic() < deadline:
        acknowledged.append(proc.stdout.readline().split())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    acknowledged += [line.split() for line in proc.stdout.read().splitlines()]
    acknowledged = [
        a for a in acknowledged if len(a) == 2 and len(a[1]) == 64
    ]  # a line cut by the kill is no answer
    assert len(acknowledged) >= 2000
    written = {json.loads(line)["request_id"]: json.loads(line)["hash"] for line in lines_of(tmp_path)}
    missing = [rid for rid, h in acknowledged if written.get(rid) != h]
    assert not missing, f"{len(missing)} acknowledged records are not in the log, e.g. {missing[:3]}"
    result = verify_log(tmp_path)
    assert result.ok and result.count == len(written) >= len(acknowledged)


@pytest.fixture
def log_dir(tmp_path) -> Path:
    folder = tmp_path / "audit"
    write(folder, 12, rotate_bytes=2000)
    assert len(audit_files(folder)) >= 2
    return folder


def verify_cli(folder: Path) -> subprocess.CompletedProcess:
    """`llmops audit verify FOLDER`, whatever checkpoints the current folder's settings may name."""
    no_checkpoints = {"LLMOPS_AUDIT__CHECKPOINT_DIR": str(folder.parent / "no-checkpoints")}
    return run_llmops("audit", "verify", str(folder), env=no_checkpoints)


def test_verify_cli_reports_an_intact_log(log_dir):
    proc = verify_cli(log_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = json.loads(lines_of(log_dir)[-1])["hash"]
    assert (
        proc.stdout.strip()
        == f"ok: 12 records in {len(audit_files(log_dir))} files, chain intact (0 keyed, 12 unkeyed); no checkpoints (records removed from the end would go unnoticed); last hash {last}"
    )


def rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_verify_cli_finds_an_edited_record(log_dir):
    path = audit_files(log_dir)[0]
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"status":200', '"status":500')
    rewrite(path, lines)
    proc = verify_cli(log_dir)
    assert proc.returncode == 1
    assert proc.stdout.startswith(
        f"TAMPERED: {path.name} line 3: the record's hash does not match its content"
    )
    assert "2 records verified before it" in proc.stdout


def test_verify_cli_finds_an_edit_that_recomputes_the_hash(log_dir):
    """A forger who fixes up the edited record's own hash still breaks the next record's link."""
    path = audit_files(log_dir)[0]
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["tenant"] = "someone-else"
    record["hash"] = record_hash(record)
    lines[1] = json.dumps(record)
    rewrite(path, lines)
    proc = verify_cli(log_dir)
    assert proc.returncode == 1 and f"{path.name} line 3: broken link" in proc.stdout


def test_verify_cli_finds_a_deleted_record(log_dir):
    path = audit_files(log_dir)[0]
    lines = path.read_text().splitlines()
    rewrite(path, lines[:1] + lines[2:])
    proc = verify_cli(log_dir)
    assert proc.returncode == 1
    assert f"{path.name} line 2: broken link: prev_hash is not the previous record's hash" in proc.stdout


def test_verify_cli_finds_reordered_records(log_dir):
    path = audit_files(log_dir)[0]
    lines = path.read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    rewrite(path, lines)
    proc = verify_cli(log_dir)
    assert proc.returncode == 1 and f"{path.name} line 2: broken link" in proc.stdout


def test_verify_cli_finds_a_deleted_file(log_dir):
    files = audit_files(log_dir)
    files[0].unlink()
    proc = verify_cli(log_dir)
    assert proc.returncode == 1
    assert f"{files[1].name} line 1: the first record links to" in proc.stdout
    assert "earlier records missing" in proc.stdout


def test_verify_cli_missing_folder_is_a_usage_error(tmp_path):
    proc = verify_cli(tmp_path / "nope")
    assert (
        proc.returncode == 2
        and proc.stderr.startswith("llmops: error: ")
        and "no such audit folder" in proc.stderr
    )


def test_raw_mode_round_trip_through_show_decrypt(tmp_path):
    key = Fernet.generate_key().decode()
    (tmp_path / "settings.ini").write_text("[audit]\nstore_prompts = raw\ndir = audit\n")
    settings = Settings(root=tmp_path, audit=AuditSettings(store_prompts="raw", dir="audit"))
    with pytest.raises(ConfigurationError, match="needs a Fernet key in LLMOPS_AUDIT_KEY"):
        AuditWriter.from_settings(settings, environ={})
    original = "My card 4111 1111 1111 1111 was charged twice, mail me at ana@example.com"
    redacted = "My card <CREDIT_CARD> was charged twice, mail me at <EMAIL_ADDRESS>"
    with AuditWriter.from_settings(settings, environ={"LLMOPS_AUDIT_KEY": key}) as writer:
        writer.submit(
            rec(1, input=writer.text(original, redacted), output=writer.text("Sorry about that!"))
        ).result(10)
    text = lines_of(tmp_path / "audit")[0]
    assert "4111" not in text and "ana@example.com" not in text, "the original is only stored encrypted"
    plain = run_llmops("audit", "show", cwd=tmp_path)
    assert plain.returncode == 0 and "raw_text" not in plain.stdout
    proc = run_llmops(
        "audit", "show", "--decrypt", "--last", "1", cwd=tmp_path, env={"LLMOPS_AUDIT_KEY": key}
    )
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert (shown["input"]["raw_text"], shown["input"]["text"]) == (original, redacted)
    assert shown["output"]["raw_text"] == "Sorry about that!"
    wrong = run_llmops(
        "audit", "show", "--decrypt", cwd=tmp_path, env={"LLMOPS_AUDIT_KEY": Fernet.generate_key().decode()}
    )
    assert wrong.returncode == 2 and "cannot decrypt a ciphertext: wrong key" in wrong.stderr
    missing = run_llmops("audit", "show", "--decrypt", cwd=tmp_path)
    assert missing.returncode == 2 and "LLMOPS_AUDIT_KEY, which is not set" in missing.stderr
    assert run_llmops("audit", "verify", cwd=tmp_path).returncode == 0, (
        "verified with the project's chain key"
    )


def test_hash_mode_keeps_no_text():
    text = make_text_record("call me at 555-0100", "call me at <PHONE>", "hash")
    assert (text.text, text.ciphertext, text.length) == (None, None, 19)


def test_fsync_policies_all_write_and_closed_writer_refuses(tmp_path):
    for policy in ("always", "interval", "never"):
        assert len(write(tmp_path / policy, 20, fsync=policy, fsync_interval_s=0.01)) == 20
        assert verify_log(tmp_path / policy).count == 20
    writer = AuditWriter(tmp_path / "closed")
    writer.close()
    with pytest.raises(LlmopsError, match="the audit writer is closed"):
        writer.submit(rec(0))


def test_any_client_text_can_be_recorded_and_shown(tmp_path):
    """Lone surrogates (valid JSON escapes a client may send), emoji and numpy numbers: written, verified, shown."""
    import numpy as np

    odd = "caf\u00e9 \ud800 \U0001f600 \x00"
    with AuditWriter(tmp_path) as writer:
        writer.submit(rec(1, input=writer.text(odd), prediction={"confidence": np.float32(0.75)})).result(10)
    (line,) = lines_of(tmp_path)
    assert line.isascii() and json.loads(line)["input"]["text"] == odd
    assert json.loads(line)["prediction"] == {"confidence": 0.75}
    assert verify_log(tmp_path).ok
    proc = run_llmops("audit", "show", str(tmp_path))
    assert proc.returncode == 0 and "req-1" in proc.stdout, proc.stderr


def test_an_empty_newest_file_from_a_crash_is_harmless(tmp_path):
    """A crash right after starting a file leaves it empty: the chain goes on through it, before or after a restart."""
    from llmops_kit.serving.auditlog import next_file_name

    with AuditWriter(tmp_path) as writer:
        writer.submit(rec(0)).result(10)
        (tmp_path / next_file_name(audit_files(tmp_path)[-1].name)).touch()  # the crashed process's new file
        writer.submit(rec(1)).result(10)
    write(tmp_path, 2, start=2)
    assert (verify_log(tmp_path).ok, verify_log(tmp_path).count) == (True, 4)
    assert [json.loads(line)["request_id"] for line in lines_of(tmp_path)] == [f"req-{i}" for i in range(4)]


def test_canonical_json_keeps_the_bytes_and_hashes_of_existing_logs():
    """The hashes below were computed by the earlier encoder (json.encoder.c_make_encoder, built by hand)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from serving_blocks import record

    from llmops_kit.core import TextRecord
    from llmops_kit.serving.auditlog import _as_dict, canonical_json

    mixed = {
        "request_id": "req-1",
        "ts": "2026-11-25T09:30:00+00:00",
        "tenant": "acmé ☕",
        "latency_ms": 1.5,
        "n": 3,
        "ok": True,
        "none": None,
        "nested": {"b": [1, 2.25, "x\u2028y"], "a": {"z": 1, "y": "\U0001f600"}},
        "scopes": frozenset({"chat", "admin"}),
        "tup": (1, 2),
        "nan": float("inf"),
        "prev_hash": None,
        "hash": "ignored",
        "big": 10**20,
        "neg0": -0.0,
        "ctl": "\x00\t\n",
    }
    assert record_hash(mixed) == "3b614523c8df036dbe650aa5d4512665b60a97de916c20baab982b36f24c9bad"
    # a record as the server wrote it before `subject` was added to the schema
    served = {**{k: v for k, v in _as_dict(record(0)).items() if k != "subject"}, "prev_hash": "0" * 64}
    assert record_hash(served) == "c80991df821e9d4b977e1e13ae68319b8aa1e5c0e3567fc04515d3e29dfc35d0"
    assert record_hash({"t": TextRecord("a" * 64, 3, "abc"), "s": {"x", "y"}}) == (
        "bbd241789767fd7021b0e316e612cddb1713f06a2d93b62c0fc0375b6ba5010a"
    )
    body = {k: v for k, v in mixed.items() if k != "hash"}
    assert canonical_json(body) == (
        '{"big":100000000000000000000,"ctl":"\\u0000\\t\\n","latency_ms":1.5,"n":3,"nan":Infinity,"neg0":-0.0,'
        '"nested":{"a":{"y":"\\ud83d\\ude00","z":1},"b":[1,2.25,"x\\u2028y"]},"none":null,"ok":true,"prev_hash":null,'
        '"request_id":"req-1","scopes":["admin","chat"],"tenant":"acm\\u00e9 \\u2615","ts":"2026-11-25T09:30:00+00:00","tup":[1,2]}'
    )


# --- the keyed chain: a project whose settings name the key file (the writer makes it on first use)


@pytest.fixture
def keyed(tmp_path) -> Path:
    """A project with 12 records written by the server's writer (`AuditWriter.from_settings`)."""
    (tmp_path / "settings.ini").write_text(
        "[project]\nstate_dir = .llmops\n[audit]\ndir = audit\nrotate_bytes = 2000\ncheckpoint_every = 5\n"
    )
    write_keyed(tmp_path, 12)
    return tmp_path


def write_keyed(project: Path, n: int, start: int = 0) -> list[str]:
    settings = load_settings(project / "settings.ini")
    with AuditWriter.from_settings(settings) as writer:
        return [writer.submit(rec(i)).result(30) for i in range(start, start + n)]


def key_file(project: Path) -> Path:
    return project / ".llmops" / "keys" / "audit-chain.jsonl"


def records_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in lines_of(folder)]


def put_records(folder: Path, records: list[dict]) -> None:
    """Write `records` back into the files they came from, in order (the same number per file)."""
    it = iter(records)
    for path in audit_files(folder):
        count = len(path.read_text().splitlines())
        rewrite(path, [canonical_json(next(it)) for _ in range(count)])


def test_keyed_log_written_by_the_server_writer_verifies(keyed):
    keys = key_file(keyed)
    assert keys.stat().st_mode & 0o777 == 0o600 and keys.parent.stat().st_mode & 0o777 == 0o700
    (entry,) = [json.loads(line) for line in keys.read_text().splitlines()]
    records = records_of(keyed / "audit")
    assert {r["key_id"] for r in records} == {entry["id"]}
    assert record_hash(records[0]) != records[0]["hash"], "not a plain sha256"
    proc = run_llmops("audit", "verify", cwd=keyed)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(
        f"ok: 12 records in {len(audit_files(keyed / 'audit'))} files, chain intact (12 keyed, 0 unkeyed)"
    )


@pytest.mark.parametrize("drop_key_id", [False, True])
def test_rechaining_the_tail_without_the_key_is_detected(keyed, drop_key_id):
    """What someone who can write the files but not read the key can do: edit, then re-make every hash after."""
    records = records_of(keyed / "audit")
    records[8]["tenant"] = "someone-else"
    for i in range(8, 12):
        if drop_key_id:
            del records[i]["key_id"]
        records[i]["prev_hash"] = records[i - 1]["hash"]
        records[i]["hash"] = record_hash(records[i])
    put_records(keyed / "audit", records)
    path = [p for p in audit_files(keyed / "audit") if "someone-else" in p.read_text()][0]
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "someone-else" in text)
    proc = run_llmops("audit", "verify", cwd=keyed)
    assert proc.returncode == 1, proc.stdout
    why = (
        "a record without key_id after keyed ones"
        if drop_key_id
        else "the record's hash does not match its content"
    )
    assert proc.stdout.startswith(f"TAMPERED: {path.name} line {line}: {why}"), proc.stdout
    assert "8 records verified before it" in proc.stdout


def test_verify_without_the_signing_key_fails_and_names_it(keyed):
    kid = records_of(keyed / "audit")[0]["key_id"]
    key_file(keyed).unlink()
    proc = run_llmops("audit", "verify", cwd=keyed)
    assert proc.returncode == 1
    assert (
        f"line 1: the record names chain key {kid!r}, which is not in the key file (none was found)"
        in proc.stdout
    )


def test_rotate_key_records_before_and_after_verify(keyed):
    first = json.loads(key_file(keyed).read_text())["id"]
    proc = run_llmops("audit", "rotate-key", cwd=keyed)
    assert proc.returncode == 0, proc.stderr
    ids = [json.loads(line)["id"] for line in key_file(keyed).read_text().splitlines()]
    assert len(ids) == 2 and ids[0] == first and f"new audit chain key {ids[1]}" in proc.stdout
    write_keyed(keyed, 5, start=12)
    assert [r["key_id"] for r in records_of(keyed / "audit")] == [first] * 12 + [ids[1]] * 5
    proc = run_llmops("audit", "verify", cwd=keyed)
    assert proc.returncode == 0 and "17 records" in proc.stdout and "(17 keyed, 0 unkeyed)" in proc.stdout, (
        proc.stdout + proc.stderr
    )


def test_an_old_unkeyed_log_still_verifies_and_a_keyed_writer_continues_it(tmp_path):
    (tmp_path / "settings.ini").write_text("[audit]\ndir = audit\nrotate_bytes = 100000\n")
    old = write(tmp_path / "audit", 7)  # as written before keyed chains: plain sha256, no key_id
    assert all("key_id" not in r for r in records_of(tmp_path / "audit"))
    proc = run_llmops("audit", "verify", cwd=tmp_path)
    assert proc.returncode == 0 and "7 records in 1 files, chain intact (0 keyed, 7 unkeyed)" in proc.stdout
    assert proc.stdout.strip().endswith(old[-1])
    write_keyed(tmp_path, 3, start=7)
    proc = run_llmops("audit", "verify", cwd=tmp_path)
    assert proc.returncode == 0 and "(3 keyed, 7 unkeyed)" in proc.stdout, proc.stdout + proc.stderr
    with pytest.raises(ConfigurationError, match="this audit chain is keyed"):
        AuditWriter(tmp_path / "audit")


def test_a_key_file_open_to_others_or_malformed_is_refused_naming_file_and_line(keyed):
    keys = key_file(keyed)
    os.chmod(keys, 0o644)
    proc = run_llmops("audit", "verify", cwd=keyed)
    assert proc.returncode == 2
    assert f"{keys}: the audit chain key file is open to group or others (mode 0644)" in proc.stderr
    assert run_llmops("audit", "rotate-key", cwd=keyed).returncode == 2, "no key is added to an exposed file"
    os.chmod(keys, 0o600)
    with open(keys, "a") as f:
        f.write('{"id": "k2", "key": "dG9vIHNob3J0"}\n')
    proc = run_llmops("audit", "verify", cwd=keyed)
    assert proc.returncode == 2 and f"{keys} line 2: not a key" in proc.stderr, proc.stderr
    with pytest.raises(ConfigurationError, match="line 2: not a key"):
        AuditWriter.from_settings(load_settings(keyed / "settings.ini"))
    assert ChainKeys.load(keys.with_name("other.jsonl"), create=True).current[0]


# --- signed checkpoints, kept apart from the log


def checkpoints_of(project: Path) -> list[Path]:
    return sorted((project / ".llmops" / "audit-checkpoints").glob("*.json"))


def test_the_writer_checkpoints_every_n_records_and_at_close(keyed):
    files = audit_files(keyed / "audit")
    where = [(p.name, n) for p in files for n, _ in enumerate(p.read_text().splitlines(), 1)]
    marks = [json.loads(p.read_text()) for p in checkpoints_of(keyed)]
    assert [(m["file"], m["records"]) for m in marks] == [
        where[4],
        where[9],
        where[11],
    ]  # 5, 10, and the close
    assert [m["last_request_id"] for m in marks] == ["req-4", "req-9", "req-11"]
    assert not any((keyed / "audit").glob("*.json")), "checkpoints are not kept in the audit folder"
    proc = run_llmops("audit", "verify", cwd=keyed)
    assert proc.returncode == 0 and "; 3 checkpoints hold;" in proc.stdout, proc.stdout + proc.stderr


def test_truncating_the_newest_records_is_detected_with_checkpoints(keyed):
    last = audit_files(keyed / "audit")[-1]
    lines = last.read_text().splitlines()
    rewrite(last, lines[:-2])  # the two newest records removed: what is left is a valid chain
    alone = run_llmops("audit", "verify", cwd=keyed, env={"LLMOPS_AUDIT__CHECKPOINT_DIR": "nowhere"})
    assert alone.returncode == 0 and "10 records" in alone.stdout and "no checkpoints" in alone.stdout, (
        alone.stdout
    )
    folder = keyed / ".llmops" / "audit-checkpoints"
    for where in (["--checkpoint", str(folder)], ["--checkpoint", str(checkpoints_of(keyed)[-1])], []):
        proc = run_llmops("audit", "verify", *where, cwd=keyed)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert proc.stdout.startswith(
            f"TRUNCATED: {last.name} line {len(lines)}: the file ends at line {len(lines) - 2}, before the record "
        ), proc.stdout
        assert "req-11" in proc.stdout and len(proc.stdout.strip().splitlines()) == 1
    last.unlink()  # a whole file removed
    proc = run_llmops("audit", "verify", cwd=keyed)
    assert proc.returncode == 1, proc.stdout  # the first checkpoint into the removed file is reported
    assert proc.stdout.startswith(
        f"TRUNCATED: {last.name} line 1: the file is gone, with the record checkpoint "
    )


def test_a_tail_rewritten_after_truncation_is_detected(keyed):
    last = audit_files(keyed / "audit")[-1]
    lines = last.read_text().splitlines()
    rewrite(last, lines[:-2])
    write_keyed(keyed, 2, start=50)  # other records (signed with the key, even) where the removed ones were
    marks = {json.loads(p.read_text())["last_request_id"]: p for p in checkpoints_of(keyed)}
    assert set(marks) == {"req-4", "req-9", "req-11", "req-51"}, (
        "the new checkpoint did not replace the old one"
    )
    for where in (["--checkpoint", str(marks["req-11"])], []):
        proc = run_llmops("audit", "verify", *where, cwd=keyed)
        assert proc.returncode == 1, proc.stdout
        assert proc.stdout.startswith(
            f"REWRITTEN: {last.name} line {len(lines)}: another record is here than the one checkpoint "
            f"{marks['req-11'].name} vouches for req-11"
        ), proc.stdout


def test_a_forged_checkpoint_is_reported(keyed):
    mark = checkpoints_of(keyed)[0]
    body = json.loads(mark.read_text())
    mark.write_text(json.dumps({**body, "records": body["records"] - 1}))  # edited, MAC kept
    proc = run_llmops("audit", "verify", cwd=keyed)
    assert proc.returncode == 1
    assert (
        proc.stdout.strip()
        == f"BAD CHECKPOINT: {mark.name}: its MAC does not match its content: it was forged or edited"
    )
    mark.write_text(json.dumps(body))
    assert run_llmops("audit", "verify", cwd=keyed).returncode == 0
    made_up = mark.with_name("audit-29991231T000000Z-000001-000000001.json")
    made_up.write_text(
        json.dumps({**body, "key_id": "k-forger", "file": "audit-29991231T000000Z-000001.jsonl"})
    )
    proc = run_llmops("audit", "verify", cwd=keyed)
    assert proc.returncode == 1
    assert proc.stdout.startswith(
        f"BAD CHECKPOINT: {made_up.name}: it names chain key 'k-forger', which is not in"
    )


def test_verify_with_a_missing_checkpoint_path_is_a_usage_error(keyed):
    proc = run_llmops("audit", "verify", "--checkpoint", str(keyed / "nope"), cwd=keyed)
    assert proc.returncode == 2 and "nope: no such checkpoint file or folder" in proc.stderr
