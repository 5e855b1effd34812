"""The embedder in real processes: offline loading and a cache shared across processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

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
