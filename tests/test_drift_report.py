"""The HTML report of a large run stays self-contained and small."""

import json

import numpy as np
import pandas as pd

from llmops_kit.core import load_settings
from llmops_kit.drift.profile import ReferenceProfile
from llmops_kit.drift.report import check_drift


def test_html_report_for_10k_plus_10k_rows_is_under_2_mb(tmp_path):
    rng = np.random.default_rng(0)

    def unit(rows: int, shift: float) -> np.ndarray:
        v = rng.normal(size=(rows, 384)).astype(np.float32)
        v[:, 0] += shift
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    n = 10_000
    reference = pd.DataFrame(
        {"text": [f"reference query {i}" for i in range(n)], "latency_ms": rng.gamma(4, 10, n)}
    )
    current = pd.DataFrame(
        {"text": [f"current query {i} <b>&</b>" for i in range(n)], "latency_ms": rng.gamma(4, 12, n)}
    )
    profile = ReferenceProfile.from_frame(reference, embeddings=unit(n, 0.0), max_embeddings=n)
    report = check_drift(
        profile, current, current_embeddings=unit(n, 0.3), settings=load_settings(environ={}), permutations=20
    )
    path = tmp_path / "report.html"
    page = report.to_html(path)
    assert path.stat().st_size < 2_000_000
    assert page.count("data:image/png;base64,") == 2
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in page and "<b>&</b>" not in page  # examples are escaped
    doc = json.loads(report.to_json())
    assert (doc["n_reference"], doc["n_current"], doc["drift"]) == (n, n, True)
