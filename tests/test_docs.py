"""Every command shown in README.md and docs/ runs as written, with the output shown.

Each doc is replayed in order in a fresh folder holding a copy of nets/ and tests/data/ (what the
docs call the repository root) and the files the doc itself saves (tests/doc_commands.py says how
docs are read, and refreshes a doc's outputs). A session marked `<!-- doc-test: slow -->` runs
under `--slow`.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from doc_commands import doc_files, doc_steps, environment, expects_failure, matches, prepare, replay_doc

ROOT = Path(__file__).resolve().parent.parent
SESSION_TIMEOUT_S = 1800


def _commands(doc: Path) -> list:
    return [s for s in doc_steps(doc, ROOT, slow=True) if s.kind == "cmd"]


def test_the_docs_show_gir_commands():
    """The replay below is not vacuous: the README and the CLI guide show gir commands, the design
    card's first."""
    readme, cli = _commands(ROOT / "README.md"), _commands(ROOT / "docs" / "cli.md")
    assert readme and readme[0].text == "gir lower nets/mobilenet_v2.py --dump-dot"
    assert cli and cli[0].text == "gir lower nets/mobilenet_v2.py --dump-dot"
    assert sum(s.text.startswith("gir ") for d in doc_files(ROOT) for s in _commands(d)) >= 40


@pytest.mark.parametrize("doc", [d for d in doc_files(ROOT) if _commands(d)], ids=lambda d: d.name)
def test_doc_commands_run_as_written(doc: Path, tmp_path: Path, slow: bool):
    steps, results = replay_doc(doc, ROOT, tmp_path, slow, SESSION_TIMEOUT_S)
    wrong = []
    for step, rc, out in results:
        where = f"{doc.name}:{step.line}: {step.text}"
        if step.kind == "run":
            if rc != 0:
                wrong.append(f"{where}\n  hidden step failed (exit {rc}):\n{out}")
            continue
        fails = expects_failure(steps, steps.index(step))
        if (rc != 0) != fails:
            wrong.append(f"{where}\n  exit {rc}, documented to {'fail' if fails else 'succeed'}; it printed:\n{out}")
        elif not matches(step.expected, out.splitlines()):
            wrong.append(f"{where}\n  documented:\n" + "\n".join(step.expected) + "\n  printed:\n" + out)
    ran = sum(s.kind != "file" for s in steps)
    assert len(results) == ran, f"the replay stopped after {len(results)} of {ran} steps"
    assert not wrong, f"{len(wrong)} of {ran} documented commands differ:\n\n" + "\n\n".join(wrong)


def test_readme_first_command_trains_mobilenet_v2_on_built_in_data(tmp_path: Path):
    """The README's first block: install, then `gir train nets/mobilenet_v2.py` on the built-in
    digits, run here as written (the install is the test environment's own) to the accuracy the
    README states."""
    first = ROOT.joinpath("README.md").read_text().split("```")[1].strip().splitlines()
    assert first[0] == "pip install -e '.[test]' && gir train nets/mobilenet_v2.py"
    assert first[1] == "python3 -m pytest -q -n 2"
    prepare(ROOT, tmp_path)
    command = first[0].split(" && ", 1)[1]
    r = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True,
                       env=environment(str(Path(sys.executable).parent)), timeout=SESSION_TIMEOUT_S)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("mobilenet_v2-")
    assert {"trace.jsonl", "metrics.json", "curves.png", "checkpoint.npz"} <= {p.name for p in run.iterdir()}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"] == "digits" and metrics["backend"] == "iree"
    assert metrics["val_top1"] >= 0.95, metrics       # the README says 97.5-98%
