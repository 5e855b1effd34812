"""The deployment assets of `llmops_kit.export.k8s`, checked by the tools that consume them: kubernetes-validate
(offline schemas), promtool, the Grafana dashboard JSON Schema committed in the package, a running `llmops serve`'s
`/metrics` and audit log, and a real Prometheus that scrapes the server and evaluates the rules."""

from __future__ import annotations

import copy
import json
import shutil
import signal
import subprocess
import time
from importlib import resources
from pathlib import Path

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_serving_app_support import chat_body, free_port, start_server

from conftest import run_llmops
from llmops_kit.core import load_settings
from llmops_kit.errors import InputError
from llmops_kit.export.k8s import (
    RUN_AS_USER,
    STATE_DIR,
    container_settings,
    metric_names,
    to_ecs,
    write_deployment_assets,
)

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
NEEDS_PROMETHEUS = pytest.mark.skipif(
    PROMTOOL is None or PROMETHEUS is None,
    reason="Debian's prometheus (promtool) is not installed (.ci/run installs it)",
)
K8S_VERSIONS = ("1.25", "1.37")  # the oldest and newest schemas kubernetes-validate ships
# Custom resources kubernetes-validate has no schema for, and what checks them instead:
# ServiceMonitor (its selector and port against the Service, below), PrometheusRule (its spec is rules.yaml,
# which promtool checks), Knative Service (its pod template is validated as a core v1 Pod).
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("serving.knative.dev/v1", "Service"),
}
SETTINGS_INI = """[auth]
api_keys_file = keys/api-keys.json
[model.gpt]
kind = openai
base_url = https://api.example.com/v1
upstream_model = gpt-4o-mini
api_key_env = OPENAI_API_KEY
"""


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """The assets of an app whose settings name an API-key file and an upstream model's key variable."""
    root = tmp_path_factory.mktemp("assets")
    (root / "settings.ini").write_text(SETTINGS_INI)
    settings = load_settings(root / "settings.ini", environ={})
    out = root / "out"
    written = write_deployment_assets(
        out, "support-router", "registry.example.com/support-router:1.4", settings
    )
    assert written == sorted(written, key=written.index) and all(p.is_file() for p in written)
    return out


def documents(out: Path) -> list[tuple[Path, dict]]:
    return [
        (path, doc)
        for folder in ("k8s", "knative")
        for path in sorted((out / folder).rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]


def test_every_manifest_validates_offline(assets):
    skipped, checked = set(), []
    for _path, doc in documents(assets):
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                checked.append((doc["kind"], version))
            except kubernetes_validate.SchemaNotFoundError:
                skipped.add((doc["apiVersion"], doc["kind"]))
    assert skipped == CUSTOM_KINDS
    kinds = {k for k, _ in checked}
    assert kinds == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert len([k for k, _ in checked if k == "Deployment"]) == 2 * len(K8S_VERSIONS)  # stable and canary


def test_validation_catches_a_broken_manifest(assets):
    deployment = yaml.safe_load((assets / "k8s/deployment.yaml").read_text())
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = [8000]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.37", strict=True)
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["secrets"] = "baked"  # an unknown field, strict mode
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.37", strict=True)


def test_knative_pod_template_validates_as_a_pod(assets):
    ksvc = yaml.safe_load((assets / "knative/service.yaml").read_text())
    spec = {
        k: v
        for k, v in ksvc["spec"]["template"]["spec"].items()
        if k not in ("timeoutSeconds", "containerConcurrency")
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": ksvc["spec"]["template"]["metadata"], "spec": spec}
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    annotations = ksvc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    assert [t["percent"] for t in ksvc["spec"]["traffic"]] == [90, 10]
    assert ksvc["spec"]["traffic"][0]["revisionName"] == ksvc["spec"]["template"]["metadata"]["name"]
    assert [len(c.get("ports", [])) for c in spec["containers"]] == [1, 0]  # Knative serves one port
    assert (
        "securityContext" not in spec and "startupProbe" not in spec["containers"][0]
    )  # outside Knative's subset
    assert all(c["securityContext"]["runAsNonRoot"] for c in spec["containers"])


def test_manifests_agree_with_each_other(assets):
    docs = {(path.relative_to(assets).as_posix(), doc["kind"]): doc for path, doc in documents(assets)}
    stable, canary = (
        docs["k8s/deployment.yaml", "Deployment"],
        docs["k8s/canary/deployment.yaml", "Deployment"],
    )
    svc, hpa = docs["k8s/service.yaml", "Service"], docs["k8s/hpa.yaml", "HorizontalPodAutoscaler"]
    pdb, monitor = (
        docs["k8s/pdb.yaml", "PodDisruptionBudget"],
        docs["k8s/servicemonitor.yaml", "ServiceMonitor"],
    )
    selector = svc["spec"]["selector"].items()
    for d in (stable, canary):  # the Service spreads over both tracks
        assert selector <= d["spec"]["template"]["metadata"]["labels"].items()
        assert (
            pdb["spec"]["selector"]["matchLabels"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        )
    assert stable["spec"]["template"]["metadata"]["labels"]["track"] == "stable"
    assert canary["spec"]["template"]["metadata"]["labels"]["track"] == "canary"
    assert canary["metadata"]["annotations"]["llmops-kit/canary-weight"] == "10"
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (2, 1)
    assert hpa["spec"]["scaleTargetRef"]["name"] == stable["metadata"]["name"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    adapter = yaml.safe_load((assets / "prometheus/adapter-rules.yaml").read_text())
    assert adapter["rules"][0]["name"]["as"] == hpa["spec"]["metrics"][1]["pods"]["metric"]["name"]
    pod = stable["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert (
        server["securityContext"]["readOnlyRootFilesystem"]
        and not server["securityContext"]["allowPrivilegeEscalation"]
    )
    assert (server["livenessProbe"]["httpGet"]["path"], server["readinessProbe"]["httpGet"]["path"]) == (
        "/healthz",
        "/readyz",
    )
    assert set(server["resources"]) == {"requests", "limits"}
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"] if "valueFrom" in e}
    assert {k: (v["name"], v["optional"]) for k, v in secrets.items()} == {
        "LLMOPS_JWT_SECRET": ("support-router-secrets", False),
        "LLMOPS_AUDIT_KEY": ("support-router-secrets", True),
        "OPENAI_API_KEY": ("support-router-secrets", False),
    }
    assert {"name": "api-keys", "secret": {"secretName": "support-router-api-keys"}} in pod["volumes"]
    assert not [
        e for e in server["env"] if e["name"] in secrets and "value" in e
    ]  # references only, never values


def test_pods_run_as_the_images_user():
    dockerfile = resources.files("llmops_kit").joinpath("data/docker/Dockerfile.j2").read_text()
    assert f"--uid {RUN_AS_USER} " in dockerfile and f"--home-dir {STATE_DIR} " in dockerfile
    assert f"USER {RUN_AS_USER}:{RUN_AS_USER}" in dockerfile


def test_configmap_settings_read_back(assets, tmp_path):
    cm = yaml.safe_load((assets / "k8s/configmap.yaml").read_text())
    (tmp_path / "settings.ini").write_text(cm["data"]["settings.ini"])
    back = load_settings(tmp_path / "settings.ini", environ={})
    user = load_settings(assets.parent / "settings.ini", environ={})
    expected = container_settings(user)
    for section in ("project", "serving", "auth", "audit", "export", "drift", "guardrails"):
        assert getattr(back, section) == getattr(expected, section), section
    assert back.models == user.models
    assert back.auth.api_keys_file == "/etc/llmops/api-keys/api-keys.json"
    assert yaml.safe_load(cm["data"]["vector.yaml"]) == yaml.safe_load(
        (assets / "logging/vector.yaml").read_text()
    )


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"name": "Support_Router"}, "DNS-1123"),
        ({"image": ""}, "image"),
        ({"replicas": 0}, "replicas"),
        ({"canary_weight": 75}, "canary weight"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, kw, message):
    args = {"name": "app", "image": "img:1", **kw}
    with pytest.raises(InputError, match=message):
        write_deployment_assets(tmp_path / "out", settings=load_settings(environ={}), **args)
    assert not (tmp_path / "out").exists()


def test_unwritable_folder_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="cannot write the deployment assets"):
        write_deployment_assets(tmp_path / "file" / "out", "app", "img:1", load_settings(environ={}))


@NEEDS_PROMETHEUS
def test_promtool_accepts_the_rules(assets, tmp_path):
    r = subprocess.run(
        [PROMTOOL, "check", "rules", str(assets / "prometheus/rules.yaml")], capture_output=True, text=True
    )
    assert r.returncode == 0 and "SUCCESS: 11 rules found" in r.stdout, r.stdout + r.stderr
    crd = yaml.safe_load((assets / "k8s/prometheusrule.yaml").read_text())
    assert crd["spec"] == yaml.safe_load((assets / "prometheus/rules.yaml").read_text())
    broken = copy.deepcopy(crd["spec"])
    broken["groups"][1]["rules"][0]["expr"] = "llmops:request_duration_seconds:p99_5m >"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    r = subprocess.run(
        [PROMTOOL, "check", "rules", str(tmp_path / "broken.yaml")], capture_output=True, text=True
    )
    assert r.returncode != 0, "promtool must reject a rule that does not parse"


def test_dashboard_matches_the_grafana_schema(assets):
    schema = json.loads(
        resources.files("llmops_kit").joinpath("data/grafana/dashboard.schema.json").read_text()
    )
    assert "@grafana/schema" in schema["$comment"]
    validator = jsonschema.Draft7Validator(schema)
    dashboard = json.loads((assets / "grafana/llmops-dashboard.json").read_text())
    assert not list(validator.iter_errors(dashboard))
    assert len(dashboard["panels"]) >= 8 and all(p["targets"] for p in dashboard["panels"])
    broken = copy.deepcopy(dashboard)
    broken["panels"][0]["gridPos"] = {"h": 8, "w": 12}  # x and y are required
    broken["panles"] = []  # an unknown key
    errors = list(validator.iter_errors(broken))
    messages = " ".join(
        e.message for top in errors for e in [top, *top.context]
    )  # panels are anyOf Panel|RowPanel
    assert "'x' is a required property" in messages and "panles" in messages


def named_metrics(assets: Path) -> set[str]:
    texts = [(assets / p).read_text() for p in ("prometheus/rules.yaml", "grafana/llmops-dashboard.json")]
    return metric_names("\n".join(texts))


def exposed_names(text: str) -> set[str]:
    """Every series name `/metrics` exposes, including families without samples yet."""
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        names |= {
            "counter": {family.name + "_total"},
            "histogram": {family.name + s for s in ("_bucket", "_sum", "_count")},
        }.get(family.type, {family.name})
    return names


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout} s")
        time.sleep(0.5)


@NEEDS_PROMETHEUS
def test_a_running_server_and_prometheus(assets, tmp_path):
    """The named metrics exist in `llmops serve`'s /metrics; the audit records map to ECS; Prometheus evaluates the rules."""
    metrics_port = free_port()
    server = start_server(  # a chat model, so its breaker's gauge is exposed too
        tmp_path / "project",
        serving={"metrics_port": metrics_port},
        extra_ini="[model.echo]\nkind = benchmark\n[quotas]\nstore = sqlite\n",
    )  # and quotas, so a refusal is counted
    prometheus = None
    try:
        with server.client() as c:
            assert (
                c.post("/v1/chat/completions", headers=server.headers(), json=chat_body()).status_code == 200
            )
            streamed = c.post("/v1/chat/completions", headers=server.headers(), json=chat_body(stream=True))
            assert streamed.status_code == 200 and "[DONE]" in streamed.text
            assert c.post("/v1/chat/completions", headers={}, json=chat_body()).status_code == 401
            out = run_llmops("budget", "set", "--tenant", "broke", "requests_per_day", "0",
                             "--config", str(server.root / "settings.ini"))  # fmt: skip
            assert out.returncode == 0, out.stderr
            refused = c.post("/v1/chat/completions", headers=server.headers("broke"), json=chat_body())
            assert refused.status_code == 429
            scraped = c.get("/metrics", headers=server.headers("ops", ("metrics",)))
        assert scraped.status_code == 200
        exposed = exposed_names(scraped.text)
        named = named_metrics(assets)
        assert named and named <= exposed, f"named but not exposed: {sorted(named - exposed)}"
        assert "llmops_time_to_first_token_seconds_bucket" in {
            s.name for f in text_string_to_metric_families(scraped.text) for s in f.samples
        }

        records = wait_for(lambda: len(server.records()) >= 3 and server.records(), 10, "three audit records")
        for record in records:
            doc = to_ecs(record)
            assert doc["@timestamp"] == record["ts"] and doc["url"]["path"] == record["route"]
            assert doc["http"]["response"]["status_code"] == record["status"]
            assert doc["event"]["duration"] == round(record["latency_ms"] * 1_000_000)
            assert isinstance(doc["event"]["duration"], int)
            assert doc["event"]["outcome"] == ("success" if record["outcome"] == "ok" else "failure")
            assert doc["ecs"]["version"] and doc["llmops"]["hash"] == record["hash"]
            if record["status"] == 200:
                assert (doc["labels"]["tenant"], doc["user"]["id"]) == (record["tenant"], record["subject"])

        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(assets / "prometheus/rules.yaml")],
            "scrape_configs": [
                {"job_name": "llmops", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = open(tmp_path / "prometheus.log", "wb")
        prometheus = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        api = f"http://127.0.0.1:{port}/api/v1"

        def recorded():
            with server.client() as c:  # keep traffic flowing while Prometheus scrapes
                c.post("/v1/chat/completions", headers=server.headers(), json=chat_body())
            if prometheus.poll() is not None:
                raise AssertionError(
                    f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()[-2000:]}"
                )
            try:  # Prometheus answers in plain text while it starts
                r = httpx.get(f"{api}/query", params={"query": "llmops:requests:rate5m"}, timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return None
            return [
                s
                for s in r["data"]["result"]
                if s["metric"].get("outcome") == "ok" and float(s["value"][1]) > 0
            ]

        series = wait_for(recorded, 60, "llmops:requests:rate5m with a rate above 0")
        assert {s["metric"]["route"] for s in series} == {"/v1/chat/completions"}
        groups = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 11
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
        targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"]
    finally:
        if prometheus is not None:
            prometheus.send_signal(signal.SIGTERM)
            try:
                prometheus.wait(20)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait(10)
        server.stop()


QUEUED_INI = (
    SETTINGS_INI
    + """[jobs]
redis_url = redis://:s3cret@redis.internal:6379/0
[quotas]
store = redis
redis_url = redis://:s3cret@redis.internal:6379/1
"""
)


@pytest.fixture(scope="module")
def queued_assets(tmp_path_factory) -> Path:
    """The assets of the same app with a job queue and quotas in Redis (URLs with a password)."""
    root = tmp_path_factory.mktemp("queued")
    (root / "settings.ini").write_text(QUEUED_INI)
    settings = load_settings(root / "settings.ini", environ={})
    write_deployment_assets(
        root / "out", "support-router", "registry.example.com/support-router:1.4", settings
    )
    return root / "out"


def test_workers_validate_and_get_their_own_pods(queued_assets):
    docs = {
        (path.relative_to(queued_assets).as_posix(), doc["kind"]): doc
        for path, doc in documents(queued_assets)
    }
    worker, hpa = docs["k8s/worker.yaml", "Deployment"], docs["k8s/worker.yaml", "HorizontalPodAutoscaler"]
    monitor, svc = docs["k8s/worker-podmonitor.yaml", "PodMonitor"], docs["k8s/service.yaml", "Service"]
    for doc in (worker, hpa):
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    pod_labels = worker["spec"]["template"]["metadata"]["labels"].items()
    assert not svc["spec"]["selector"].items() <= pod_labels  # the Service never sends a request to a worker
    assert (
        not docs["k8s/pdb.yaml", "PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items()
        <= pod_labels
    )
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in {p["name"] for p in container["ports"]}
    assert container["command"][:2] == ["llmops", "worker"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert [c["name"] for c in worker["spec"]["template"]["spec"]["containers"]] == [
        "worker",
        "audit-shipper",
    ]


def test_redis_urls_come_from_the_secret(queued_assets, tmp_path):
    for path in queued_assets.rglob("*"):
        if path.is_file():
            assert "s3cret" not in path.read_text(), f"{path} holds the Redis password"
    docs = {
        (path.relative_to(queued_assets).as_posix(), doc["kind"]): doc
        for path, doc in documents(queued_assets)
    }
    for rel in ("k8s/deployment.yaml", "k8s/worker.yaml"):
        env = {
            e["name"]: e for e in docs[rel, "Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        for var in ("LLMOPS_JOBS__REDIS_URL", "LLMOPS_QUOTAS__REDIS_URL"):
            assert env[var]["valueFrom"]["secretKeyRef"] == {
                "name": "support-router-secrets",
                "key": var,
                "optional": False,
            }
    ini = tmp_path / "settings.ini"
    ini.write_text(docs["k8s/configmap.yaml", "ConfigMap"]["data"]["settings.ini"])
    url = "redis://:s3cret@redis.internal:6379/0"
    loaded = load_settings(ini, environ={"LLMOPS_JOBS__REDIS_URL": url, "LLMOPS_QUOTAS__REDIS_URL": url})
    assert (loaded.jobs.redis_url, loaded.quotas.redis_url, loaded.quotas.store) == (url, url, "redis")
    readme = (queued_assets / "README.md").read_text()
    assert "--from-literal=LLMOPS_JOBS__REDIS_URL=..." in readme
