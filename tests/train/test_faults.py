"""Faults: a kill in the middle of a checkpoint write, a full disk while writing one, and
determinism (same seed and backend: bit-identical per-step losses on the CPU)."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gir.cli import main
from gir.train.checkpoint import TEMP_SUFFIX, load_checkpoint, save_checkpoint
from gir.train.runlog import read_trace

ROOT = Path(__file__).resolve().parents[2]
NET = str(ROOT / "nets" / "digits_cnn.py")

RECORD = {"net": "n", "elapsed": 0.5, "steps_per_epoch": 10, "data": "digits", "seed": 0, "config": {}}
"""A checkpoint's record as a run writes it, less the step."""

# Writes checkpoint 1, then starts checkpoint 2 and stops (says MID) after 1 MB of it is on disk.
SLOW_WRITER = textwrap.dedent(f"""
    import sys, time
    import numpy as np
    from gir.train import checkpoint as ck

    run, record = sys.argv[1], {RECORD!r}
    ck.save_checkpoint(run, {{"w": np.full(1_000_000, 1.0, np.float32)}}, {{**record, "step": 1}})
    savez = np.savez

    class Stalling:
        def __init__(self, f):
            self.f, self.n = f, 0
        def write(self, b):
            out = self.f.write(b)
            self.n += len(b)
            if self.n > 1_000_000:
                print("MID", flush=True)
                time.sleep(600)
            return out
        def __getattr__(self, name):
            return getattr(self.f, name)

    np.savez = lambda f, **arrays: savez(Stalling(f), **arrays)
    ck.save_checkpoint(run, {{"w": np.full(1_000_000, 2.0, np.float32)}}, {{**record, "step": 2}})
""")


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "MID"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = list(tmp_path.glob("*" + TEMP_SUFFIX))
    assert len(partial) == 1 and partial[0].stat().st_size > 1_000_000      # killed mid-write, for real
    arrays, meta = load_checkpoint(tmp_path)
    assert meta["step"] == 1 and np.all(arrays["w"] == 1.0)                  # the previous one, whole
    save_checkpoint(tmp_path, {"w": np.full(3, 3.0, np.float32)}, {**RECORD, "step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]  # the next write clears the debris
    assert load_checkpoint(tmp_path)[1]["step"] == 3


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_while_checkpointing_fails_clearly_and_keeps_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gir", "train", NET, "-q", "--epochs", "2", "--out", str(run)],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    while not (run / "trace.jsonl").exists() or max((r.get("step", 0) for r in read_trace(run / "trace.jsonl")),
                                                      default=0) < 5:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    step = load_checkpoint(run)[1]["step"]
    size = (run / "checkpoint.npz").stat().st_size
    # Resume with files capped below a checkpoint's size: the run goes on until its next checkpoint.
    r = subprocess.run([sys.executable, "-m", "gir", "train", NET, "-q", "--resume", str(run)], cwd=ROOT,
                       capture_output=True, text=True, preexec_fn=_limit_file_size(size // 2), timeout=300)
    assert r.returncode == 1, r.stderr
    assert r.stderr == (f"gir: error: cannot write checkpoint {run}/checkpoint.npz: File too large; the previous "
                        f"checkpoint (if any) is kept\n")
    arrays, meta = load_checkpoint(run)
    assert meta["step"] == step and not list(run.glob("*" + TEMP_SUFFIX))
    assert max(r["step"] for r in read_trace(run / "trace.jsonl") if "step" in r) == 45   # on to its next checkpoint


@pytest.mark.parametrize("backend", ["iree", "jax"])
def test_same_seed_same_backend_gives_bit_identical_losses(tmp_path, backend):
    runs = []
    for k in range(2):
        out = tmp_path / f"r{k}"
        assert main(["train", NET, "--epochs", "1", "--augment", "--backend", backend, "--out", str(out), "-q"]) == 0
        runs.append([(r["step"], r["loss"]) for r in read_trace(out / "trace.jsonl") if "loss" in r])
    assert len(runs[0]) == 45 and runs[0] == runs[1]      # loss for loss
    other = tmp_path / "seed1"
    assert main(["train", NET, "--epochs", "1", "--seed", "1", "--backend", backend, "--out", str(other), "-q"]) == 0
    assert [r["loss"] for r in read_trace(other / "trace.jsonl") if "loss" in r][:5] != [x[1] for x in runs[0][:5]]
    assert os.path.exists(other / "metrics.json")
