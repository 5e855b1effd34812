"""`verify_log` checking the files of a keyed log each on its own in worker processes, and from the bytes the writer
signed: on real files, the result is the in-order result to the word, whatever was edited, removed or reordered."""

import concurrent.futures
import contextlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_serving_auditlog import rec

from llmops_kit.serving.auditlog import (
    AuditWriter,
    ChainKeys,
    VerifyResult,
    _check_ahead,
    _link_checks,
    audit_files,
    canonical_json,
    record_hash,
    verify_log,
)


@pytest.fixture
def chain(tmp_path) -> tuple[Path, ChainKeys, Path]:
    """A keyed log of 120 records over about a dozen files, with checkpoints, as the server's writer makes it."""
    keys = ChainKeys.load(tmp_path / "keys" / "audit-chain.jsonl", create=True)
    folder, marks = tmp_path / "audit", tmp_path / "checkpoints"
    with AuditWriter(
        folder, chain_keys=keys, rotate_bytes=4000, checkpoint_dir=marks, checkpoint_every=7
    ) as w:
        for fut in [w.submit(rec(i)) for i in range(120)]:
            fut.result(30)
    assert len(audit_files(folder)) >= 8
    return folder, keys, marks


def in_workers(folder: Path, keys: ChainKeys) -> VerifyResult:
    """`verify_log`'s chain with every file checked by a worker process first (none left for this one to take)."""
    files = audit_files(folder)
    with contextlib.ExitStack() as stack:
        ahead = _check_ahead(files, keys, {}, 2, stack)
        assert all(isinstance(f, concurrent.futures.Future) for f in ahead)
        concurrent.futures.wait(ahead)
        return _link_checks(files, ahead, keys, {})[0]


def verified(folder: Path, keys: ChainKeys, checkpoints: Path | None = None) -> VerifyResult:
    """The result with worker processes, once it is known to equal the in-order result."""
    in_order = verify_log(folder, keys, checkpoints, workers=0)
    assert verify_log(folder, keys, checkpoints, workers=2) == in_order
    if checkpoints is None:
        assert in_workers(folder, keys) == in_order
    return in_order


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def rewrite(path: Path, text: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in text), encoding="utf-8")


def before(files: list[Path]) -> int:
    return sum(len(lines(p)) for p in files)


def test_an_intact_log_verifies_the_same_in_worker_processes(chain):
    folder, keys, marks = chain
    files = audit_files(folder)
    last = json.loads(lines(files[-1])[-1])["hash"]
    r = verified(folder, keys, marks)
    assert (r.ok, r.count, r.files, r.last_hash, r.unkeyed, r.checkpoints) == (
        True,
        120,
        len(files),
        last,
        0,
        len(list(marks.iterdir())),
    )
    assert in_workers(folder, keys) == verify_log(folder, keys)
    with contextlib.ExitStack() as stack:  # each file checked on its own, from its first record's link
        checks = [f.result() for f in _check_ahead(files, keys, {}, 2, stack)]
    assert [c.first[0] for c in checks[1:]] == [c.last_hash for c in checks[:-1]]
    assert sum(c.count for c in checks) == 120
    wanted: dict[str, set[int]] = {}  # the lines the checkpoints name: workers note their hashes too
    for mark in marks.iterdir():
        body = json.loads(mark.read_text())
        wanted.setdefault(body["file"], set()).add(body["records"])
    with contextlib.ExitStack() as stack:
        ahead = _check_ahead(files, keys, wanted, 2, stack)
        concurrent.futures.wait(ahead)
        linked = _link_checks(files, ahead, keys, wanted)
    assert linked == _link_checks(files, [None] * len(files), keys, wanted)
    assert len(linked[1]) == sum(len(ns) for ns in wanted.values()) == r.checkpoints


def test_a_record_edited_in_a_middle_file_is_reported_there(chain):
    folder, keys, marks = chain
    files = audit_files(folder)
    middle = files[len(files) // 2]
    text = lines(middle)
    text[2] = text[2].replace('"status":200', '"status":500')
    rewrite(middle, text)
    r = verified(folder, keys, marks)
    assert (r.ok, r.problem, r.file, r.line, r.count) == (
        False,
        "tampered",
        middle.name,
        3,
        before(files[: len(files) // 2]) + 2,
    )
    assert (
        r.first_error == "the record's hash does not match its content: it was changed after it was written"
    )
    assert r.last_hash == json.loads(text[1])["hash"]


def test_a_file_removed_from_the_middle_breaks_the_link_into_the_next_one(chain):
    folder, keys, _ = chain
    files = audit_files(folder)
    files[3].unlink()
    r = verified(folder, keys)
    assert (r.ok, r.file, r.line, r.count, r.files) == (
        False,
        files[4].name,
        1,
        before(files[:3]),
        len(files) - 1,
    )
    assert r.first_error.startswith("broken link: prev_hash is not the previous record's hash")
    assert r.last_hash == json.loads(lines(files[2])[-1])["hash"]


def test_files_in_the_wrong_order_break_the_first_link(chain):
    folder, keys, _ = chain
    files = audit_files(folder)
    third, fourth = files[2].read_bytes(), files[3].read_bytes()
    files[2].write_bytes(fourth)
    files[3].write_bytes(third)
    r = verified(folder, keys)
    assert (r.ok, r.file, r.line, r.count) == (False, files[2].name, 1, before(files[:2]))
    assert r.first_error.startswith("broken link")


def test_the_first_files_removed_leave_records_linking_outside_the_folder(chain):
    folder, keys, _ = chain
    files = audit_files(folder)
    files[0].unlink()
    r = verified(folder, keys)
    assert (r.ok, r.file, r.line, r.count, r.last_hash) == (False, files[1].name, 1, 0, None)
    assert r.first_error.endswith("which is not in this folder (earlier records missing)")


def test_a_middle_file_rechained_without_the_key_is_refused_at_its_first_line(chain):
    """Someone without the key re-makes a middle file with plain sha256 from its first record on."""
    folder, keys, _ = chain
    files = audit_files(folder)
    records = [json.loads(line) for line in lines(files[5])]
    records[0]["tenant"] = "someone-else"
    for i, record in enumerate(records):
        del record["key_id"]
        if i:
            record["prev_hash"] = records[i - 1]["hash"]
        record["hash"] = record_hash(record)
    rewrite(files[5], [canonical_json(r) for r in records])
    r = verified(folder, keys)
    assert (r.ok, r.file, r.line, r.count) == (False, files[5].name, 1, before(files[:5]))
    assert r.first_error.startswith("a record without key_id after keyed ones")


def test_a_cut_off_line_in_a_middle_file_is_reported_there(chain):
    folder, keys, _ = chain
    files = audit_files(folder)
    files[4].write_bytes(files[4].read_bytes()[:-20])
    r = verified(folder, keys)
    assert (r.ok, r.file, r.line) == (False, files[4].name, len(lines(files[4])))
    assert r.first_error == "the last line is cut off (a write was interrupted)"


def test_lines_not_as_the_writer_wrote_them_get_the_full_check(chain):
    """Re-formatted lines, the hash in its sorted place, and `key_id`/`prev_hash` inside a record's content: the
    shortcut on the signed bytes does not apply, and the full check finds the same chain as before."""
    folder, keys, _ = chain
    files = audit_files(folder)
    text = lines(files[1])
    text[0] = json.dumps(json.loads(text[0]), indent=None)  # spaces after separators
    text[1] = canonical_json(json.loads(text[1]))  # "hash" among the sorted keys
    rewrite(files[1], text)
    with AuditWriter(folder, chain_keys=keys) as w:  # content that names the chain's own fields
        w.submit(rec(120, prediction={"key_id": "x", "prev_hash": None})).result(30)
    r = verified(folder, keys)
    assert (r.ok, r.count, r.unkeyed) == (True, 121, 0)
    assert '"prediction":{"key_id":"x","prev_hash":null}' in lines(audit_files(folder)[-1])[-1]


UNGUARDED = textwrap.dedent(
    """
    import sys
    from llmops_kit.serving.auditlog import ChainKeys, verify_log
    r = verify_log(sys.argv[1], ChainKeys.load(sys.argv[2]), workers=2)  # no `if __name__ == "__main__":`
    print(r.ok, r.count, r.file, r.line)
    """
)


def test_a_script_without_a_main_guard_still_gets_the_answer(chain, tmp_path):
    """Worker processes start by importing the script again; one without the guard stops them at once, and what
    they did not check is checked in the script's own process."""
    folder, keys, _ = chain
    files = audit_files(folder)
    files[3].unlink()
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    done = subprocess.run(
        [sys.executable, str(script), str(folder), str(keys.path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", str(before(files[:3])), files[4].name, "1"]
