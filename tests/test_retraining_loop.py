"""The retraining loop end to end (issue 21): serve the champion, shifted traffic, feedback with corrected intents,
the drift monitor's trigger starting `llmops train`, a challenger with a paired comparison, `llmops promote
--if-better` followed by the running server without a restart, `llmops rollback`; and the bad input of each step."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from test_serving_app_support import start_server

from conftest import run_llmops

MODEL = "support-router"
BASE = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "transfer_timing", "cash_withdrawal_charge"]
SHIFT = [
    "top_up_failed",
    "top_up_reverted",
    "pending_top_up",
]  # rare in the champion's data, common in traffic


def _client(root: Path):
    from llmops_kit.core import load_settings
    from llmops_kit.registry.bundle import _client as registry_client

    return registry_client(load_settings(root / "settings.ini", environ={}))


def _versions(root: Path) -> list[str]:
    try:
        return sorted(v.version for v in _client(root).search_model_versions(f"name = '{MODEL}'"))
    except Exception:
        return []


def _alias(root: Path, alias: str) -> str | None:
    try:
        return str(_client(root).get_model_version_by_alias(MODEL, alias).version)
    except Exception:
        return None


def _llmops(root: Path, *args: str, timeout: float = 600):
    return run_llmops(*args, "--config", str(root / "settings.ini"), cwd=root, timeout=timeout)


def _ok(proc) -> str:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    )
    return proc.stdout


def _banking(shared_data: Path, root: Path) -> tuple[Path, Path, pd.DataFrame]:
    """The champion's data (5 common intents, 3 intents with 3 rows each), the known intents, and test traffic."""
    train = pd.read_csv(shared_data / "banking77" / "train.csv")
    test = pd.read_csv(shared_data / "banking77" / "test.csv")
    parts = [train[train.category == c].head(40) for c in BASE] + [
        train[train.category == c].head(3) for c in SHIFT
    ]
    data = root / "champion.csv"
    pd.concat(parts)[["text", "category"]].to_csv(data, index=False)
    intents = root / "intents.json"
    intents.write_text(json.dumps(BASE + SHIFT))
    rng = random.Random(0)
    shifted = test[test.category.isin(SHIFT)].sample(90, random_state=0)
    usual = test[test.category.isin(BASE)].sample(30, random_state=0)
    rows = pd.concat([shifted, usual]).to_dict("records")
    rng.shuffle(rows)
    return data, intents, pd.DataFrame(rows)


def _served_version(srv, headers) -> str:
    r = httpx.post(
        srv.base_url + "/v1/route", json={"input": "I topped up but it failed"}, headers=headers, timeout=60
    )
    assert r.status_code == 200, r.text
    return r.json()["model_version"]


def _wait_served(srv, headers, version: str, timeout: float = 180) -> float:
    """Seconds until the running server answers with `version` (it polls the registry every second)."""
    t0 = time.monotonic()
    while _served_version(srv, headers) != version:
        assert time.monotonic() - t0 < timeout, f"the server still serves another version than {version}"
        time.sleep(0.5)
    return time.monotonic() - t0


@pytest.mark.slow
def test_retraining_loop(tmp_path: Path, shared_data: Path):
    root = tmp_path / "project"
    root.mkdir()
    data, intents, traffic = _banking(shared_data, root)
    extra = (
        "[drift]\nwindow = 40\ntrigger_windows = 2\ntrigger_min_drifted = 1\npermutations = 200\n"
        f"retrain_data = {data.name}\n"
    )
    from test_serving_app_support import write_settings

    write_settings(root, {"registry_poll_s": 1}, extra)

    # the first model: there is no champion yet, so it may be registered as champion directly
    out = _ok(
        _llmops(root, "train", "--data", str(data), "--intents", str(intents), "--register", "champion")
    )
    assert "@champion -> version 1" in out
    assert _alias(root, "champion") == "1"

    srv = start_server(root, backend="mlflow", serving={"registry_poll_s": 1}, extra_ini=extra, timeout=240)
    try:
        acme = srv.headers("acme", ("chat", "feedback"))
        assert _served_version(srv, acme) == "1"

        # shifted traffic: 75% of it from intents the champion saw 3 times each
        ids, truth = [], {}
        with srv.client(headers=acme, timeout=60) as c:
            for row in traffic.itertuples():
                r = c.post("/v1/route", json={"input": row.text})
                assert r.status_code == 200, r.text
                ids.append(r.headers["x-request-id"])
                truth[ids[-1]] = (row.category, r.json()["data"][0]["intent"])
        srv.wait_records(ids)
        champion_right = sum(t == p for t, p in truth.values()) / len(truth)

        # feedback: the agents' corrected intents on the shifted tickets, thumbs up where the router was right
        given = 0
        with srv.client(headers=acme) as c:
            for rid, (true, predicted) in truth.items():
                if true not in SHIFT:
                    continue
                body = {"request_id": rid, "rating": "up" if true == predicted else "down"}
                if true != predicted:
                    body["correct_intent"] = true
                r = c.post("/v1/feedback", json=body)
                assert r.status_code == 201, r.text
                fb = r.json()
                assert fb["request_id"] == rid and len(fb["record_hash"]) == 64
                given += 1
            # bad feedback: an unknown id, another tenant's request, an intent the model does not know, no scope
            r = c.post("/v1/feedback", json={"request_id": "no-such-request-0001", "rating": "down"})
            assert r.status_code == 404 and r.json()["error"]["code"] == "request_not_found"
            globex = srv.headers("globex", ("chat", "feedback"))
            r = c.post("/v1/feedback", json={"request_id": ids[0], "rating": "down"}, headers=globex)
            assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
            r = c.post(
                "/v1/feedback",
                json={"request_id": ids[0], "rating": "down", "correct_intent": "top_up_faild"},
            )
            assert r.status_code == 400 and "top_up_faild" in r.json()["error"]["message"]
            r = c.post("/v1/feedback", json={"request_id": ids[0], "rating": "meh"})
            assert r.status_code == 422 and "error" in r.json()
            r = c.post(
                "/v1/feedback",
                json={"request_id": ids[0], "rating": "up"},
                headers=srv.headers("acme", ("chat",)),
            )
            assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
            metrics = c.get("/metrics", headers=srv.headers("ops", ("metrics",))).text
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("llmops_feedback_total{")
        )
        assert counted == given
        corrected = sum(1 for t, p in truth.values() if t in SHIFT and t != p)
        assert corrected > 10, f"the champion got {champion_right:.0%} right; the shift should show"

        exported = root / "feedback.csv"
        _ok(_llmops(root, "feedback", "export", "--since", "1d", "--out", str(exported)))
        rows = pd.read_csv(exported)
        assert len(rows) == given and set(rows.category) <= set(SHIFT)
        assert set(rows.request_id) <= set(ids) and rows.record_hash.str.len().eq(64).all()

        # the monitor finds the shift and its trigger starts `llmops train` on the data plus the feedback
        mon = _ok(
            _llmops(
                root,
                "drift",
                "monitor",
                "--reference",
                str(data),
                "--audit-log",
                str(srv.audit_dir),
                "--model-name",
                MODEL,
                "--model-version",
                "1",
            )
        )
        assert "retrain event" in mon and "started llmops train" in mon, mon
        deadline = time.monotonic() + 600
        while _alias(root, "challenger") is None:
            assert time.monotonic() < deadline, "no challenger registered: " + "\n".join(
                p.read_text()[-2000:] for p in (root / ".llmops" / "drift").glob("retrain-*.log")
            )
            time.sleep(2)
        assert _alias(root, "champion") == "1", "the trigger never promotes"
        challenger = _alias(root, "challenger")
        tags = _client(root).get_model_version(MODEL, challenger).tags
        assert tags["llmops.trained_by"] == "llmops train" and "llmops.data.feedback.sha256" in tags
        assert _served_version(srv, acme) == "1"

        # promote: the paired comparison, then champion moves and the running server follows
        out = _ok(_llmops(root, "promote", "--if-better"))
        assert "95% CI" in out and "McNemar" in out and f"champion -> version {challenger}" in out, out
        assert (_alias(root, "champion"), _alias(root, "previous"), _alias(root, "challenger")) == (
            challenger,
            "1",
            None,
        )
        comparison = json.loads(
            _client(root).get_model_version(MODEL, challenger).tags["llmops.promotion.comparison"]
        )
        assert comparison["difference"] >= 0.005 and comparison["ci_low"] > 0 and comparison["n"] > 0
        _wait_served(srv, acme, challenger)
        assert srv.proc.poll() is None  # the same process: no restart

        # promote again: there is no challenger any more
        again = _llmops(root, "promote", "--if-better")
        assert again.returncode != 0 and "has no challenger" in again.stderr

        # roll back: champion returns to version 1, and so does the server
        _ok(_llmops(root, "rollback"))
        assert _alias(root, "champion") == "1" and _alias(root, "previous") is None
        _wait_served(srv, acme, "1")

        # a challenger that is no better (the champion's own data again) is refused, and nothing moves
        _ok(_llmops(root, "train", "--data", str(data)))
        same = _alias(root, "challenger")
        refused = _llmops(root, "promote", "--if-better")
        assert refused.returncode != 0 and "not promoted" in refused.stderr, refused.stderr
        assert _alias(root, "champion") == "1" and _alias(root, "challenger") == same
        events = [
            json.loads(line)
            for line in (root / ".llmops" / "registry" / "events.jsonl").read_text().splitlines()
        ]
        assert [e["kind"] for e in events] == ["promoted", "rolled_back", "promotion_refused"]
    finally:
        srv.stop()


def test_retraining_bad_input(tmp_path: Path, shared_data: Path):
    """A training file with a missing column or unknown intents, and `promote`/`rollback` with nothing to do:
    each a clear error and a non-zero exit, and nothing registered."""
    root = tmp_path
    (root / "settings.ini").write_text("[project]\nstate_dir = .llmops\n")
    data, intents, _ = _banking(shared_data, root)
    frame = pd.read_csv(data)

    no_label = root / "no_label.csv"
    frame.rename(columns={"category": "intent"}).to_csv(no_label, index=False)
    p = _llmops(root, "train", "--data", str(no_label))
    assert p.returncode != 0 and str(no_label) in p.stderr and "'category'" in p.stderr, p.stderr

    typo = root / "typo.csv"
    frame.assign(category=frame.category.replace({"top_up_failed": "top_up_faild"})).to_csv(typo, index=False)
    p = _llmops(root, "train", "--data", str(typo), "--intents", str(intents))
    assert p.returncode != 0 and str(typo) in p.stderr and "'top_up_faild'" in p.stderr, p.stderr

    bad_feedback = root / "feedback.csv"
    pd.DataFrame({"text": ["my top up did not go through"], "category": ["not_an_intent"]}).to_csv(
        bad_feedback, index=False
    )
    p = _llmops(
        root, "train", "--data", str(data), "--intents", str(intents), "--feedback", str(bad_feedback)
    )
    assert p.returncode != 0 and "'not_an_intent'" in p.stderr and str(bad_feedback) in p.stderr, p.stderr

    p = _llmops(root, "promote", "--if-better")
    assert p.returncode != 0 and "has no challenger" in p.stderr, p.stderr
    p = _llmops(root, "rollback")
    assert p.returncode != 0 and "no previous champion" in p.stderr, p.stderr
    p = _llmops(root, "promote")
    assert p.returncode != 0 and "--if-better" in p.stderr
    assert _versions(root) == []  # nothing half-registered
