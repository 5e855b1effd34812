"""The public API is what each subpackage's `__init__` exports, and the docs list exactly that."""

import importlib
import json
import re
from pathlib import Path

import pytest

from conftest import REPO

SUBPACKAGES = ["drift", "guardrails", "registry", "router", "models", "serving", "advisor", "export", "audit"]


def documented_api() -> dict[str, list[str]]:
    """The names listed per subpackage in the index notebook's "Public API" section."""
    cells = json.loads((REPO / "nbs" / "index.ipynb").read_text())["cells"]
    text = next("".join(c["source"]) for c in cells if "".join(c["source"]).startswith("## Public API"))
    found = re.findall(r"^- \*\*`llmops_kit\.(\w+)`\*\*: (.+)$", text, flags=re.M)
    return {name: re.findall(r"`(\w+)`", names) for name, names in found}


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_public_name_exists_and_is_documented(name):
    package = importlib.import_module(f"llmops_kit.{name}")
    assert len(package.__all__) == len(set(package.__all__)), "a name is exported twice"
    missing = [n for n in package.__all__ if not hasattr(package, n)]
    assert not missing, f"llmops_kit.{name}.__all__ names what it does not define: {missing}"
    assert documented_api()[name] == list(package.__all__), (
        "nbs/index.ipynb's Public API section is out of date"
    )


def test_the_surface_reads_in_one_page():
    total = sum(len(importlib.import_module(f"llmops_kit.{n}").__all__) for n in SUBPACKAGES)
    assert total < 150, f"{total} public names"


def test_no_flat_module_of_the_old_layout_is_left():
    old = [
        "drift_cli",
        "drift_monitor",
        "drift_profile",
        "drift_report",
        "drift_tests",
        "guard_content",
        "guard_model",
        "guard_pii",
        "guard_security",
        "guardrails_cli",
        "lineage",
        "sample_tickets",
        "router",
        "registry",
    ]
    package = Path(importlib.import_module("llmops_kit").__file__).parent
    assert [m for m in old if (package / f"{m}.py").exists()] == []
    assert (
        not (package / "serving" / "limits.py").exists()
        and not (package / "serving" / "backends.py").exists()
    )
