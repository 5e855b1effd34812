"""Settings failure modes, through the real command line: each error text names what to fix."""

from pathlib import Path

import pytest

from conftest import run_llmops


@pytest.mark.parametrize(
    ("ini", "env", "message"),
    [
        (
            "[drfit]\nalpha = 0.1\n",
            {},
            "settings.ini: unknown section [drfit]; known sections: project, embeddings, "
            "mlflow, lineage, drift, guardrails, serving, auth, audit, export",
        ),
        (
            "[drift]\nalfa = 0.1\n",
            {},
            "settings.ini: unknown key 'alfa' in section [drift]; known keys: alpha, "
            "correction, permutations, effect_size_floor, window, trigger_windows, trigger_min_drifted, retrain_command, "
            "webhook_url, retrain_data",
        ),
        (
            "[drift]\nalpha = high\n",
            {},
            "settings.ini: [drift] alpha = 'high' is invalid: Input should be a valid "
            "number, unable to parse string as a number",
        ),
        (
            "[serving]\nport = 70000\n",
            {},
            "settings.ini: [serving] port = '70000' is invalid: Input should be less than or equal to 65535",
        ),
        (
            "[drift]\ncorrection = bonferroni\n",
            {},
            "settings.ini: [drift] correction = 'bonferroni' is invalid: "
            "Input should be 'holm', 'bh' or 'none'",
        ),
        (
            "",
            {"LLMOPS_DRIFT__ALPHA": "2"},
            "LLMOPS_DRIFT__ALPHA: [drift] alpha = '2' is invalid: Input should be less than 1",
        ),
        (
            "",
            {"LLMOPS_SERVING__PROT": "80"},
            "LLMOPS_SERVING__PROT: unknown key 'prot' in section [serving]; known "
            "keys: host, port, workers, model_uri, backend, max_body_bytes, request_timeout_s, metrics_port, tls_cert, tls_key, cors_origins, max_in_flight",
        ),
        (
            "",
            {"LLMOPS_SERVNG__PORT": "80"},
            "LLMOPS_SERVNG__PORT: unknown section [servng]; known sections: "
            "project, embeddings, mlflow, lineage, drift, guardrails, serving, auth, audit, export",
        ),
        ("[drift\n", {}, "cannot parse"),
    ],
)
def test_bad_settings_fail_with_exact_message(tmp_path: Path, ini: str, env: dict, message: str):
    (tmp_path / "settings.ini").write_text(ini)
    proc = run_llmops("settings", "check", cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("llmops: error: ")
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, "the error is one line"


def test_env_override_wins_over_file(tmp_path: Path):
    (tmp_path / "settings.ini").write_text("[serving]\nport = 9000\n[drift]\nalpha = 0.01\n")
    proc = run_llmops("settings", "show", cwd=tmp_path, env={"LLMOPS_SERVING__PORT": "9100"})
    assert proc.returncode == 0, proc.stderr
    assert '"port": 9100' in proc.stdout
    assert '"alpha": 0.01' in proc.stdout


def test_repository_settings_file_is_valid_and_says_what_it_is():
    repo = Path(__file__).resolve().parents[1]
    first = (repo / "settings.ini").read_text().splitlines()[0]
    assert first.startswith("# llmops-kit runtime settings") and "pyproject.toml" in first
    proc = run_llmops("settings", "check", "--config", str(repo / "settings.ini"))
    assert proc.returncode == 0, proc.stderr
