"""`llmops drift monitor` end to end: an audit log with a campaign, a real webhook server on 127.0.0.1, a real
retrain command and a real MLflow sqlite store whose model version gets tagged."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_llmops
from llmops_kit.core import InferenceRecord, TextRecord


class Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["content-length"]))
        Hook.received.append((self.path, self.headers["content-type"], json.loads(body)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/drift", Hook.received
    server.shutdown()
    server.server_close()


def audit_lines(frame: pd.DataFrame, start: int = 0) -> list[str]:
    """One inference record a minute from 2026-03-02 09:00 UTC, the first one `start` minutes in."""
    return [
        InferenceRecord(
            request_id=f"r{i}",
            ts=(pd.Timestamp("2026-03-02T09:00:00Z") + pd.Timedelta(minutes=i)).isoformat(),
            route="/v1/chat/completions",
            status=200,
            outcome="ok",
            model_version="1",
            latency_ms=20.0 + i % 7,
            prompt_tokens=len(text.split()),
            input=TextRecord.of(text, text),
            prediction={"intent": intent, "confidence": 0.9},
        ).to_json()
        for i, (text, intent) in enumerate(zip(frame["text"], frame["category"], strict=True), start)
    ]


def write_audit_log(folder: Path, frame: pd.DataFrame) -> None:
    """The audit log as the server writes it: rotated files, the older one gzipped."""
    import gzip

    folder.mkdir()
    lines = audit_lines(frame)
    half = len(lines) // 2
    with gzip.open(folder / "audit-0001.jsonl.gz", "wt") as f:
        f.write("\n".join(lines[:half]) + "\n")
    (folder / "audit-0002.jsonl").write_text("\n".join(lines[half:]) + "\n")


def registered_version(tracking_uri: str, artifacts: Path) -> str:
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    exp = client.create_experiment("drift-test", artifact_location=str(artifacts))
    run = client.create_run(exp)
    client.create_registered_model("support-router")
    return str(
        client.create_model_version(
            "support-router", str(artifacts / "model"), run_id=run.info.run_id
        ).version
    )


def test_monitor_fires_retrain_event_on_every_channel(tmp_path, shared_data, webhook):
    url, received = webhook
    bank = pd.read_csv(shared_data / "banking77" / "train.csv").sample(frac=1, random_state=11)
    campaign_mask = bank["category"].isin(["compromised_card", "lost_or_stolen_card", "pin_blocked"])
    normal, campaign = bank[~campaign_mask], bank[campaign_mask]
    normal.iloc[:300].rename(columns={"category": "intent"}).to_csv(tmp_path / "reference.csv", index=False)
    surge = pd.concat([normal.iloc[500:650], campaign.iloc[:150]]).sample(frac=1, random_state=0)
    traffic = pd.concat([normal.iloc[300:500], surge])  # 2 clean windows of 100, then 3 with 50% campaign
    write_audit_log(tmp_path / "audit", traffic)
    db = f"sqlite:///{tmp_path}/mlflow.db"
    version = registered_version(db, tmp_path / "artifacts")
    marker = tmp_path / "retrained.json"
    (tmp_path / "settings.ini").write_text(
        "[project]\nstate_dir = state\n"
        f"[mlflow]\ntracking_uri = {db}\n"
        "[drift]\nwindow = 100\npermutations = 100\ntrigger_windows = 3\ntrigger_min_drifted = 2\n"
        f'retrain_command = printf "%s" "$LLMOPS_DRIFT_EVENT" > {marker}\n'
        f"webhook_url = {url}\n"
    )
    proc = run_llmops(
        "drift",
        "monitor",
        "--reference",
        "reference.csv",
        "--audit-log",
        "audit",
        "--model-name",
        "support-router",
        "--model-version",
        version,
        "--json",
        "--fail-on-drift",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr  # --fail-on-drift: an event fired
    doc = json.loads(proc.stdout)
    assert [w["drift"] for w in doc["windows"]] == [False, False, True, True, True]
    assert len(doc["events"]) == 1
    event = doc["events"][0]["event"]
    assert event["drifted_windows"] == ["rows 200-299", "rows 300-399"]
    assert doc["events"][0]["webhook"] == 200 and doc["events"][0]["mlflow"] == "tagged"
    # the JSONL file under the state folder
    lines = (tmp_path / "state" / "drift" / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == [event["event_id"]]
    # the webhook received the same event as JSON
    assert received == [("/drift", "application/json", event)]
    # the retrain command got it in $LLMOPS_DRIFT_EVENT
    assert json.loads(marker.read_text())["event_id"] == event["event_id"]
    # the model version is tagged in the real sqlite store
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(tracking_uri=db, registry_uri=db).get_model_version("support-router", version).tags
    assert json.loads(tags["llmops.drift.last_event"])["event_id"] == event["event_id"]
    assert tags["llmops.drift.retrain_requested"] == event["ts"]


def test_monitor_dry_run_and_unreachable_webhook(tmp_path, shared_data):
    """--dry-run emits nothing; a webhook that is down is recorded, not fatal."""
    bank = pd.read_csv(shared_data / "banking77" / "train.csv").sample(frac=1, random_state=12)
    topup = bank["category"].str.startswith("top_up")
    bank[~topup].iloc[:200].to_csv(tmp_path / "reference.csv", index=False)
    traffic = pd.concat([bank[~topup].iloc[200:260], bank[topup].iloc[:120]]).sample(frac=1, random_state=0)
    write_audit_log(tmp_path / "audit", traffic)
    (tmp_path / "settings.ini").write_text(
        "[project]\nstate_dir = state\n[drift]\nwindow = 60\npermutations = 100\n"
        "trigger_windows = 2\ntrigger_min_drifted = 2\nwebhook_url = http://127.0.0.1:9/nothing\n"
    )
    args = ["drift", "monitor", "--reference", "reference.csv", "--audit-log", "audit", "--json"]
    proc = run_llmops(*args, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["events"]) == 1 and "webhook" not in doc["events"][0]
    assert not (tmp_path / "state" / "drift" / "events.jsonl").exists()
    proc = run_llmops(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout)["events"][0]
    assert outcome["webhook"].startswith("error: ConnectError")
    assert (tmp_path / "state" / "drift" / "events.jsonl").is_file()


def test_monitor_bad_window_is_one_line_error(tmp_path):
    (tmp_path / "reference.csv").write_text("text\n" + "\n".join(f"q{i}" for i in range(40)) + "\n")
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "a.jsonl").write_text("")
    proc = run_llmops(
        "drift",
        "monitor",
        "--reference",
        "reference.csv",
        "--audit-log",
        "audit",
        "--window",
        "5",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_monitor_scans_windows_in_the_router_view(tmp_path, shared_data):
    """--model adds the router's view to every window's check; a model that is no router is a one-line error."""
    from llmops_kit.router.model import SupportRouter

    bank = pd.read_csv(shared_data / "banking77" / "train.csv").sample(frac=1, random_state=13)
    topup = bank["category"].str.startswith("top_up")
    train = bank.iloc[4000:5500]
    SupportRouter.fit(train["text"].tolist(), train["category"].tolist(), C=1.0).save(tmp_path / "router")
    bank[~topup].iloc[:200].to_csv(tmp_path / "reference.csv", index=False)
    traffic = pd.concat([bank[~topup].iloc[200:260], bank[topup].iloc[:120]]).sample(frac=1, random_state=0)
    write_audit_log(tmp_path / "audit", traffic)
    (tmp_path / "settings.ini").write_text(
        "[project]\nstate_dir = state\n[drift]\nwindow = 60\npermutations = 100\n"
    )
    args = ["drift", "monitor", "--reference", "reference.csv", "--audit-log", "audit", "--json", "--dry-run"]
    proc = run_llmops(*args, "--model", "router", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    windows = json.loads(proc.stdout)["windows"]
    assert len(windows) == 3 and all(w["drift"] for w in windows)
    assert any("knn:model" in w["drifted_tests"].split(",") for w in windows), windows
    proc = run_llmops(*args, "--model", "reference.csv", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "neither a saved router folder" in proc.stderr


def test_monitor_remembers_windows_and_events(tmp_path, shared_data):
    """A second run tests nothing again and fires nothing again; --rescan tests again; a grown log tests only what is new."""
    bank = pd.read_csv(shared_data / "banking77" / "train.csv").sample(frac=1, random_state=14)
    topup = bank["category"].str.startswith("top_up")
    normal, surge = bank[~topup], bank[topup]
    normal.iloc[:200].to_csv(tmp_path / "reference.csv", index=False)
    drifted = pd.concat([normal.iloc[200:350], surge.iloc[:150]]).sample(frac=1, random_state=0)
    write_audit_log(tmp_path / "audit", drifted.iloc[:180])  # 3 windows of 60, each half top-up
    (tmp_path / "settings.ini").write_text(
        "[project]\nstate_dir = state\n[drift]\nwindow = 60\npermutations = 100\n"
        "trigger_windows = 2\ntrigger_min_drifted = 2\n"
    )
    args = ["drift", "monitor", "--reference", "reference.csv", "--audit-log", "audit"]
    args += ["--model-name", "support-router", "--model-version", "3", "--json", "--fail-on-drift"]
    events_file = tmp_path / "state" / "drift" / "events.jsonl"

    def monitor(*extra: str) -> tuple[int, list[str], list[dict]]:
        proc = run_llmops(*args, *extra, cwd=tmp_path)
        assert proc.returncode in (0, 1), proc.stderr
        doc = json.loads(proc.stdout)
        return proc.returncode, [w["window"] for w in doc["windows"]], doc["events"]

    code, windows, events = monitor()
    assert (code, windows) == (1, ["rows 0-59", "rows 60-119", "rows 120-179"])
    assert [e["event"]["windows"] for e in events] == [["rows 0-59", "rows 60-119"]]
    first_id = events[0]["event"]["event_id"]
    assert [json.loads(line)["event_id"] for line in events_file.read_text().splitlines()] == [first_id]

    assert monitor() == (0, [], [])  # the same log: no window tested, no trigger
    assert len(events_file.read_text().splitlines()) == 1

    code, windows, events = monitor("--rescan")  # every window again; the same event, not emitted twice
    assert (code, len(windows)) == (0, 3)
    assert [(e["event"]["event_id"], e["already_emitted"]) for e in events] == [(first_id, True)]
    assert "webhook" not in events[0] and len(events_file.read_text().splitlines()) == 1

    (tmp_path / "audit" / "audit-0003.jsonl").write_text(
        "\n".join(audit_lines(drifted.iloc[180:300], 180)) + "\n"
    )
    code, windows, events = monitor()  # two new windows: only they are tested
    assert (code, windows) == (1, ["rows 180-239", "rows 240-299"])
    # the policy goes on from the remembered windows: the first new one pairs with the last old one
    assert [e["event"]["windows"] for e in events] == [["rows 120-179", "rows 180-239"]]
    assert len(events_file.read_text().splitlines()) == 2

    code, windows, events = monitor("--rescan", "--since", "2026-03-02T11:30:00Z", "--dry-run")
    assert windows == ["rows 120-179", "rows 180-239", "rows 240-299"]  # the windows ending after 11:30
    assert all(e["already_emitted"] for e in events) and code == 0


@pytest.mark.parametrize("value", ["last tuesday", "24x", ""])
def test_monitor_bad_since_is_one_line_error(tmp_path, value):
    (tmp_path / "reference.csv").write_text("text\n" + "\n".join(f"q{i}" for i in range(40)) + "\n")
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "a.jsonl").write_text("")
    proc = run_llmops(
        "drift",
        "monitor",
        "--reference",
        "reference.csv",
        "--audit-log",
        "audit",
        "--since",
        value,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"--since {value!r} is neither a timestamp" in proc.stderr
