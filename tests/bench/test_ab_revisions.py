"""bench/ab_revisions.py: the working tree against a base revision lowered in a temporary worktree, both compiled and
their steps alternated; an unknown revision or a missing net file is refused by name. It runs from a copy of gir,
nets/ and bench/ committed to a fresh git repository, so the test needs no history from the checkout it runs in."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git repository holding one commit of gir, nets/ and bench/."""
    repo = tmp_path_factory.mktemp("repo")
    for part in ("gir", "nets", "bench"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-c", "user.name=gir", "-c", "user.email=gir@localhost"]
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "base"]):
        subprocess.run(git + cmd, cwd=repo, check=True)
    return repo


def _run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(repo / "bench" / "ab_revisions.py"), *args], cwd=repo,
                          capture_output=True, text=True, timeout=600)


def test_head_against_the_working_tree_trains_alike(repo):
    """Against HEAD: the same first loss on both sides, a speedup line, and no worktree left behind."""
    before = subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True).stdout
    run = _run(repo, "--base", "HEAD", "--net", "nets/digits_cnn.py", "--batch", "8", "--rounds", "2")
    assert run.returncode == 0, run.stderr
    losses = re.findall(r": first loss (\S+)", run.stdout)
    assert len(losses) == 2 and abs(float(losses[0]) - float(losses[1])) < 1e-5
    assert re.search(r"digits_cnn b8@16, 2 rounds, median ms: HEAD [\d.]+, working tree [\d.]+; speedup [\d.]+x",
                     run.stdout)
    assert subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True).stdout == before


def test_an_unknown_revision_is_refused_by_name(repo):
    run = _run(repo, "--base", "no-such-revision", "--net", "nets/digits_cnn.py")
    assert run.returncode != 0
    assert "--base no-such-revision: not a commit of" in run.stderr and "Traceback" not in run.stderr


def test_a_missing_net_file_is_refused_by_name(repo):
    run = _run(repo, "--base", "HEAD", "--net", "nets/nope.py")
    assert run.returncode != 0
    assert "--net: net file not found: nets/nope.py" in run.stderr and "Traceback" not in run.stderr
