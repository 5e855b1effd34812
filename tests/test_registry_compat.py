"""Models logged before the package was split into subpackages still load and predict."""

import json
from pathlib import Path

import mlflow
import pandas as pd

FIXTURE = Path(__file__).parent / "fixtures" / "model_v0_flat"


def test_model_logged_by_the_flat_layout_loads_and_predicts():
    """The fixture was logged by the flat layout (loader `llmops_kit.registry`, predictor `llmops_kit.router`)."""
    manifest = json.loads((FIXTURE / "data" / "app" / "app.json").read_text())
    assert manifest["predictor"] == "llmops_kit.router:SupportRouter"
    assert "loader_module: llmops_kit.registry" in (FIXTURE / "MLmodel").read_text()

    model = mlflow.pyfunc.load_model(str(FIXTURE))
    out = model.predict(pd.DataFrame({"text": ["My new card has not arrived yet", "I forgot my password"]}))
    assert list(out.columns) == ["intent", "confidence", "top_k", "route", "reply", "abstained"]
    assert out.intent[0] == "card_delivery" and not out.abstained[0]
    assert out.route[0] and out.reply[0]
    bundle = model.get_raw_model()
    assert bundle.policy_yaml and "pii" in bundle.policy_yaml.lower()
