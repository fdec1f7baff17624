"""bench/gpu_check.py, the lent-GPU script, in its cheap modes: `prepare` cross-compiles the MLP's train step for cuda
here; `prepare --target vulkan` and `run` on lavapipe go the whole way, the run with IREE's compiler unimportable as on
a lent GPU, and a doctored CPU loss makes the run fail."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gir.lower.iree_runtime import DeviceUnavailable, device_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "bench" / "gpu_check.py")
NO_COMPILER = "import sys, runpy; sys.modules['iree.compiler'] = None; sys.argv = sys.argv[1:]; " \
              "runpy.run_path(sys.argv[0], run_name='__main__')"
"""Runs the script with `import iree.compiler` failing, as on a lent GPU that carries IREE's runtime alone."""


def _gpu_check(*args: str, no_compiler: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, *(["-c", NO_COMPILER] if no_compiler else []), SCRIPT, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_prepare_cross_compiles_for_cuda_and_records_the_cpu_step(tmp_path):
    r = _gpu_check("prepare", str(tmp_path), "--nets", "mlp", "--batch", "4")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "mlp" / "meta.json").read_text())
    assert meta["target"] == "cuda" and meta["batch"] == 4 and np.isfinite(meta["cpu_loss"])
    assert (tmp_path / "mlp" / "train_step.vmfb").read_bytes()[:2] == b"PK"   # a .vmfb is a zip-aligned archive
    ref = np.load(tmp_path / "mlp" / "reference.npz")
    sampled = [k for k in ref.files if k.startswith("upd:")]
    assert sampled and all(np.abs(ref[k]).max() > 0 for k in sampled)   # every parameter moved in the first step
    assert ref["images"].shape[0] == 4


def test_run_on_vulkan_without_the_compiler_agrees_with_the_cpu(tmp_path):
    try:
        device_config("vulkan")
    except DeviceUnavailable as e:
        pytest.skip(f"{e}; install a Vulkan driver (Debian: mesa-vulkan-drivers)")
    bundle, report = tmp_path / "bundle", tmp_path / "gpu.md"
    assert _gpu_check("prepare", str(bundle), "--nets", "mlp", "--target", "vulkan").returncode == 0
    r = _gpu_check("run", str(bundle), "--steps", "2", "--report", str(report), no_compiler=True)
    assert r.returncode == 0, r.stderr
    case = json.loads(report.with_suffix(".jsonl").read_text())
    assert case["net"] == "mlp" and case["iree"]["ok"] and case["jax"]["ok"] and len(case["iree"]["times"]) == 2
    row = next(line for line in report.read_text().splitlines() if line.startswith("| mlp | b8@28 |"))
    assert "**NO**" not in row

    meta = bundle / "mlp" / "meta.json"
    doctored = json.loads(meta.read_text())
    doctored["cpu_loss"] *= 1.01
    meta.write_text(json.dumps(doctored))
    r = _gpu_check("run", str(bundle), "--steps", "1", "--report", str(report), no_compiler=True)
    row = next(line for line in report.read_text().splitlines() if line.startswith("| mlp |"))
    assert r.returncode != 0 and "disagreed with the CPU" in r.stderr and row.count("**NO**") == 2
