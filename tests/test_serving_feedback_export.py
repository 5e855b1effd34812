"""`llmops feedback export` where pandas is missing, as in a serving image: a one-line error and exit 2, no traceback."""

import subprocess
import sys


def test_feedback_export_without_pandas_names_what_is_missing(tmp_path):
    ini, out = tmp_path / "settings.ini", tmp_path / "feedback.csv"
    ini.write_text("[project]\nstate_dir = .llmops\n")
    code = (
        "import sys\n"
        "sys.modules['pandas'] = None  # as if it were not installed\n"
        "from llmops_kit.cli import main\n"
        f"sys.exit(main(['feedback', 'export', '--config', {str(ini)!r}, '--out', {str(out)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "exporting feedback needs pandas" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()
