"""The embedder in real processes (offline loading, a cache shared across processes) and the cache's bounds, modes and keys."""

import hashlib
import hmac
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmops_kit.core import load_settings
from llmops_kit.embeddings import MODEL_ID as MODEL
from llmops_kit.embeddings import Embedder, EmbeddingCache
from llmops_kit.errors import InputError

SCRIPT = """
import json, sys
from llmops_kit.embeddings import Embedder
e = Embedder(cache_path=sys.argv[1])
v = e.encode(["I lost my card", "my card was stolen", "what is the exchange rate"])
print(json.dumps({"loaded": e._model is not None, "cached": len(e.cache), "first": v[0, :4].tolist(),
                  "sim": float(v[0] @ v[1]), "far": float(v[0] @ v[2])}))
"""


def run_script(cache: Path) -> dict:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(cache.parent / "hf"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cache)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_loads_offline_and_second_process_reads_the_cache(tmp_path: Path):
    cache = tmp_path / "embeddings.sqlite"
    first = run_script(cache)
    assert first["loaded"] and first["cached"] == 3
    assert first["sim"] > 0.5 > first["far"]
    second = run_script(cache)
    assert not second["loaded"], "a fully cached call must not load the model"
    assert second["first"] == first["first"]
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.safetensors"))


SHARED = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
from llmops_kit.embeddings import Embedder
from llmops_kit.router.model import shared_embedder
with ThreadPoolExecutor(4) as pool:  # four embedders asking for the model at once, as the server's threads do
    models = list(pool.map(lambda i: Embedder(cache_path=None, batch_size=8 * (i + 1)).model, range(4)))
models.append(shared_embedder().model)  # the router's
one = Embedder(cache_path=None).encode("I lost my card")
batch = Embedder(cache_path=None).encode(["a much longer sentence about a card I lost abroad last week", "I lost my card"])
print(json.dumps({"encoders": len({id(m) for m in models}), "difference": float(abs(one - batch[1]).max()),
                  "imported": sorted(m for m in ("sentence_transformers",) if m in sys.modules)}))
"""


def test_every_embedder_in_a_process_runs_one_encoder_without_sentence_transformers(tmp_path: Path):
    """The router's and the guardrails' embedders load MiniLM once per process, even when they ask at the same time; a
    single text (unpadded) gets the vector it gets in a padded batch; sentence-transformers is never imported. (Older
    transformers, at the declared floor, import scikit-learn whenever it is installed; that the torch runtime needs
    neither is shown by the torch container test, whose image has neither.)"""
    env = {k: v for k, v in os.environ.items() if k != "LLMOPS_SETTINGS"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", SHARED], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["encoders"] == 1
    assert got["difference"] < 1e-5
    assert got["imported"] == []


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_cache_bounded_at_n_entries_keeps_the_newest_n(tmp_path: Path):
    cache = EmbeddingCache(tmp_path / "e.sqlite", max_entries=5)
    for i in range(12):  # one write per entry: each is younger than the one before
        cache.put_many([(cache.key(MODEL, f"text {i}"), np.full(4, i))])
    assert len(cache) == 5
    kept = cache.get_many([cache.key(MODEL, f"text {i}") for i in range(12)])
    assert sorted(int(v[0]) for v in kept.values()) == [7, 8, 9, 10, 11]
    cache.put_many(
        [(cache.key(MODEL, f"batch {i}"), np.ones(4)) for i in range(8)]
    )  # one batch larger than the bound
    assert len(cache) == 5


def test_entries_older_than_max_age_are_not_returned(tmp_path: Path):
    cache = EmbeddingCache(tmp_path / "e.sqlite", max_age_days=30)
    old, fresh = cache.key(MODEL, "old ticket"), cache.key(MODEL, "fresh ticket")
    cache.put_many([(old, np.ones(4)), (fresh, np.zeros(4))])
    with sqlite3.connect(cache.path) as db:  # age one entry past the limit
        db.execute("UPDATE embeddings SET created = created - 31 * 86400 WHERE key = ?", (old,))
    assert list(cache.get_many([old, fresh])) == [fresh]
    reopened = EmbeddingCache(tmp_path / "e.sqlite", max_age_days=30)  # opening deletes what has expired
    assert len(reopened) == 1


def test_cache_file_folder_and_secret_are_owner_only(tmp_path: Path):
    cache = EmbeddingCache(tmp_path / "cache" / "e.sqlite")
    cache.put_many([(cache.key(MODEL, "my card 4111 1111 1111 1111"), np.ones(4))])
    assert mode(cache.path) == 0o600
    assert mode(cache.path.with_name("e.sqlite-wal")) == 0o600
    assert mode(cache.path.parent) == 0o700
    assert mode(cache.key_path) == 0o600


def test_key_is_an_hmac_not_the_plain_sha256(tmp_path: Path):
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    text = "my card 4111 1111 1111 1111 was stolen"
    key = cache.key(MODEL, text)
    assert key != hashlib.sha256(text.encode()).digest()
    assert key != hashlib.sha256(MODEL.encode() + b"\x00" + text.encode()).digest()
    secret = cache.key_path.read_bytes()
    assert key == hmac.new(secret, MODEL.encode() + b"\x00" + text.encode(), hashlib.sha256).digest()
    assert EmbeddingCache(tmp_path / "e.sqlite").key(MODEL, text) == key  # the secret is generated once
    assert EmbeddingCache(tmp_path / "other.sqlite").key(MODEL, text) != key


def test_a_cache_from_before_keyed_hashes_is_emptied(tmp_path: Path):
    path = tmp_path / "embeddings.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE embeddings (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")
        plain = hashlib.sha256(b"m\x00my card was stolen").digest()
        db.execute("INSERT INTO embeddings VALUES (?, ?)", (plain, np.ones(4, dtype=np.float32).tobytes()))
    os.chmod(path, 0o644)
    cache = EmbeddingCache(path)
    assert len(cache) == 0 and mode(path) == 0o600
    assert plain not in path.read_bytes()  # dropped and vacuumed, not just unlinked from the table


def test_from_settings_caches_in_the_state_folder_with_its_bounds(project: Path):
    settings = load_settings(project / "settings.ini", environ={})
    (project / ".llmops" / "cache").mkdir(
        parents=True, mode=0o755
    )  # made earlier, e.g. by ProjectPaths.ensure
    embedder = Embedder.from_settings(settings, max_entries=100, max_age_days=7)
    assert embedder.cache.path == project / ".llmops" / "cache" / "embeddings.sqlite"
    assert embedder.cache.key_path == project / ".llmops" / "cache" / "embeddings.key"
    assert (embedder.cache.max_entries, embedder.cache.max_age_days) == (100, 7.0)
    assert mode(project / ".llmops" / "cache") == 0o700


def test_unusable_bounds_and_key_files_are_clear_errors(tmp_path: Path):
    with pytest.raises(InputError, match="max_entries >= 1"):
        EmbeddingCache(tmp_path / "e.sqlite", max_entries=0)
    with pytest.raises(InputError, match="max_age_days > 0"):
        EmbeddingCache(tmp_path / "e.sqlite", max_age_days=0)
    key = tmp_path / "k.key"
    key.write_bytes(b"\x00" * 32)
    os.chmod(key, 0o644)
    with pytest.raises(InputError, match="chmod 600"):
        EmbeddingCache(tmp_path / "e.sqlite", key_path=key)
