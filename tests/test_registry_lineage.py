"""OpenLineage events over HTTP to a real server on 127.0.0.1, and through the file transport: START, then COMPLETE, FAIL or ABORT."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmops_kit.core import load_settings
from llmops_kit.registry.bundle import DataFile
from llmops_kit.registry.lineage import LineageRun, events_file, model_dataset


@pytest.fixture
def collector():
    """A lineage endpoint that stores what it receives; it answers 201 like Marquez."""
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers.get("Content-Type"), json.loads(body)))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()
    server.server_close()


def test_http_transport_posts_start_and_complete(project, collector, tmp_path):
    url, received = collector
    data_file = tmp_path / "train.csv"
    data_file.write_text("text,category\nlost my card,lost_card\n")
    env = {"LLMOPS_LINEAGE__TRANSPORT": "http", "LLMOPS_LINEAGE__ENDPOINT": f"{url}/api/v1/lineage"}
    settings = load_settings(project / "settings.ini", environ=env)
    data = [DataFile.from_path("train", data_file, 1)]
    with LineageRun(settings, "support-router.train", data) as run:
        run.complete([model_dataset("support-router", "3", "sqlite:///x.db")], {"accuracy": 0.93}, "run-1")
    assert run.errors == []
    assert [(path, event["eventType"]) for path, _, event in received] == [
        ("/api/v1/lineage", "START"),
        ("/api/v1/lineage", "COMPLETE"),
    ]
    assert received[0][1].startswith("application/json")
    complete = received[1][2]
    assert (complete["job"]["namespace"], complete["job"]["name"]) == ("llmops-kit", "support-router.train")
    assert complete["inputs"][0]["name"] == str(data_file.resolve())
    assert complete["inputs"][0]["facets"]["version"]["datasetVersion"] == data[0].sha256
    assert complete["outputs"][0]["name"] == "models/support-router/3"
    assert complete["run"]["facets"]["llmops_metrics"]["metrics"] == {"accuracy": 0.93}
    assert complete["run"]["runId"] == received[0][2]["run"]["runId"] == run.run_id
    assert not events_file(settings).exists()  # nothing written locally with the http transport


def test_unreachable_endpoint_is_reported_not_raised(project, collector):
    url, _ = collector
    port = int(url.rsplit(":", 1)[1]) + 1 if not url.endswith("65535") else 1
    env = {
        "LLMOPS_LINEAGE__TRANSPORT": "http",
        "LLMOPS_LINEAGE__ENDPOINT": f"http://127.0.0.1:{port}/lineage",
    }
    run = LineageRun(load_settings(project / "settings.ini", environ=env), "support-router.train").start()
    assert len(run.errors) == 1 and run.errors[0].startswith("START: ")


def test_transport_none_emits_nothing(project):
    settings = load_settings(project / "settings.ini", environ={"LLMOPS_LINEAGE__TRANSPORT": "none"})
    with LineageRun(settings, "support-router.train") as run:
        run.complete()
    assert run.events == [] and not events_file(settings).exists()


def file_events(settings) -> list[dict]:
    return [json.loads(line) for line in events_file(settings).read_text().splitlines()]


def train_inputs(tmp_path) -> list[DataFile]:
    data_file = tmp_path / "train.csv"
    data_file.write_text("text,category\nlost my card,lost_card\n")
    return [DataFile.from_path("train", data_file, 1)]


def test_an_exception_fails_the_run_with_its_message(project, tmp_path):
    settings = load_settings(project / "settings.ini", environ={})
    with pytest.raises(ValueError, match="no rows"):
        with LineageRun(settings, "support-router.train", train_inputs(tmp_path)) as run:
            raise ValueError("no rows for intent 'lost_card'")
    events = file_events(settings)
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    assert {e["run"]["runId"] for e in events} == {run.run_id}
    error = events[1]["run"]["facets"]["errorMessage"]
    assert error["message"] == "ValueError: no rows for intent 'lost_card'"
    assert error["programmingLanguage"] == "python"
    assert 'raise ValueError("no rows' in error["stackTrace"]
    assert error["_schemaURL"].endswith("ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet")
    assert (
        events[1]["inputs"][0]["facets"]["version"]["datasetVersion"]
        == run.inputs[0].facets["version"].datasetVersion
    )
    assert run.ended == "FAIL" and run.errors == []


def test_an_interruption_aborts_the_run(project, tmp_path):
    settings = load_settings(project / "settings.ini", environ={})
    with pytest.raises(KeyboardInterrupt):
        with LineageRun(settings, "support-router.train", train_inputs(tmp_path)):
            raise KeyboardInterrupt
    events = file_events(settings)
    assert [e["eventType"] for e in events] == ["START", "ABORT"]
    assert events[1]["run"]["facets"]["errorMessage"]["message"] == "interrupted (KeyboardInterrupt)"


def test_a_run_spanning_steps_ends_once(project, tmp_path):
    """The quickstart's pattern: start in one stage, end in another or on the error that stopped the stages."""
    settings = load_settings(project / "settings.ini", environ={})
    train = LineageRun(settings, "support-router.train", train_inputs(tmp_path)).start()
    evaluate = LineageRun(settings, "support-router.evaluate").start()
    train.complete([model_dataset("support-router", "1", "sqlite:///x.db")], {"accuracy": 0.9})
    error = RuntimeError("the registry is locked")
    for run in (train, evaluate):
        run.end_with(error)  # the completed run is left as it is
    evaluate.complete()  # too late: it has failed
    events = [(e["job"]["name"], e["eventType"]) for e in file_events(settings)]
    assert events == [
        ("support-router.train", "START"),
        ("support-router.evaluate", "START"),
        ("support-router.train", "COMPLETE"),
        ("support-router.evaluate", "FAIL"),
    ]
    assert (train.ended, evaluate.ended) == ("COMPLETE", "FAIL")


def test_a_block_that_does_not_end_the_run_completes_it(project):
    settings = load_settings(project / "settings.ini", environ={})
    with LineageRun(settings, "support-router.evaluate") as run:
        pass
    assert [e["eventType"] for e in file_events(settings)] == ["START", "COMPLETE"] == run.events
