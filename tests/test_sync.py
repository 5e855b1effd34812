"""A hand edit of a generated module makes the test command's sync check fail with a clear message."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_repo(dest: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files into a fresh git repository."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], cwd=dest, check=True)
    return dest


def check_sync(repo: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VENV": str(Path(sys.executable).parent.parent)}
    return subprocess.run(
        ["bash", ".ci/check_sync.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )


def test_clean_copy_is_in_sync(tmp_path: Path):
    proc = check_sync(copy_repo(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "in sync" in proc.stdout


def test_hand_edit_of_generated_module_fails(tmp_path: Path):
    repo = copy_repo(tmp_path)
    core = repo / "llmops_kit" / "core.py"
    core.write_text(core.read_text() + "\nHAND_EDIT = True\n")
    proc = check_sync(repo)
    assert proc.returncode == 1
    assert "notebooks and library out of sync" in proc.stderr
    assert "llmops_kit/core.py" in proc.stderr
