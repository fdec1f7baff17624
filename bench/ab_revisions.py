"""A change's speed against a base revision, in one process: the net's train step is lowered by the working tree and
by `--base` (a git revision, checked out in a temporary worktree and lowered there in a child process), both are
compiled for IREE's CPU, and their steps alternate on the same batch, the order flipping each round, so the ratio
comes from one run on this noisy machine. Both lower with the default pipeline for this host; the interface (inputs,
outputs) must be the same. It compares what the revisions emit: both texts compile with the working tree's flags and
AVX2 tuning spec (gir.lower.cpu_tuning, applied at compile time), so a change to those is not compared by it.

    python3 bench/ab_revisions.py --base HEAD~1 --net nets/cifar_cnn.py [--batch 128] [--image 32] [--rounds 6]
    python3 bench/ab_revisions.py --base HEAD~1 --net nets/char_gpt.py [--seq 128]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from report import machine_line  # noqa: E402

from gir.bench import random_batch  # noqa: E402
from gir.lower.iree_runtime import device_config  # noqa: E402
from gir.netfile import NetFileError, load_net_file  # noqa: E402
from gir.nn.params import init_params  # noqa: E402
from gir.rewrite.pipelines import pipeline_for_backend  # noqa: E402
from gir.train.backend import IreeBackend  # noqa: E402
from gir.train.step import lower_train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

LOWER = """
import json, sys
from gir.netfile import load_net_file
from gir.rewrite.pipelines import pipeline_for_backend
from gir.train.step import lower_train_step
net, cfg = load_net_file(sys.argv[1]); sizes = json.loads(sys.argv[2])
mod = lower_train_step(net, cfg.replace(**sizes["config"]), **sizes["bind"],
                       passes=pipeline_for_backend("default", "iree"))
json.dump({"text": mod.text, "signature": mod.signature()}, open(sys.argv[3], "w"))
"""
"""The lowering the base revision runs: only APIs older revisions have too."""


def sizes_for(net, cfg, args: argparse.Namespace) -> dict:
    """The config's changes and the binding (batch, image or sequence length) of the step both sides lower."""
    batch = args.batch or cfg.batch_size
    if net.input_name == "tokens":
        seq = args.seq or cfg.seq_len
        return {"config": {"batch_size": batch, "seq_len": seq}, "bind": {"batch": batch, "seq": seq}}
    image = args.image or cfg.image_size
    return {"config": {"batch_size": batch, "image_size": image}, "bind": {"batch": batch, "image": image}}


def lowered_at(revision: str, net: str, sizes: dict) -> dict:
    """The train step's text and signature as `revision` lowers it."""
    known = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "-q", f"{revision}^{{commit}}"],
                           capture_output=True)
    if known.returncode:
        sys.exit(f"--base {revision}: not a commit of {ROOT}")
    with tempfile.TemporaryDirectory() as tmp:
        tree, out = Path(tmp) / "tree", Path(tmp) / "lowered.json"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), revision], check=True)
        try:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            lowered = subprocess.run([sys.executable, "-c", LOWER, str(Path(net).resolve()), json.dumps(sizes),
                                      str(out)], cwd=tree, env=env)
            if lowered.returncode:
                sys.exit(f"--base {revision} could not lower {net} (its error is above)")
            return json.loads(out.read_text())
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="git revision to compare against (e.g. HEAD~1)")
    ap.add_argument("--net", required=True)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--image", type=int)
    ap.add_argument("--seq", type=int, help="sequence length, for a net that reads tokens")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    try:
        net, cfg = load_net_file(args.net)
    except NetFileError as e:
        sys.exit(f"--net: {e}")
    sizes = sizes_for(net, cfg, args)
    device_config("cpu")
    current = lower_train_step(net, cfg.replace(**sizes["config"]), **sizes["bind"],
                               passes=pipeline_for_backend("default", "iree"))
    base = lowered_at(args.base, args.net, sizes)
    if base["signature"] != current.signature():
        sys.exit(f"{args.base} lowers {net.name} with another interface; the steps cannot share inputs")
    modules = {args.base: attrs.evolve(current, text=base["text"]), "working tree": current}
    params = init_params(current.primitive, 0)
    runners = {}
    for name, module in modules.items():
        t = time.perf_counter()
        runners[name] = IreeBackend(module, None, "cpu")
        runners[name].load(params)
        print(f"{name}: {len(module.text):,} chars, compiled in {time.perf_counter() - t:.1f} s", flush=True)
    inputs, labels = random_batch(current.primitive, net.num_classes, np.random.default_rng(0))
    times: dict[str, list[float]] = {k: [] for k in runners}
    for i in range(args.rounds + 2):   # two rounds of warm-up; the order flips each round (the second ran up to
        for name in list(runners)[::(-1) ** i]:   # 5% slower than the first on this VM with the same code in both)
            runner = runners[name]
            t = time.perf_counter()
            result = runner.step(inputs, labels, 1e-3, i + 1)
            if i == 0:
                print(f"{name}: first loss {result.loss:.6f}")
            if i >= 2:
                times[name].append((time.perf_counter() - t) * 1e3)
    a, b = (statistics.median(times[k]) for k in runners)
    ratios = sorted(x / y for x, y in zip(*times.values()))
    bind = sizes["bind"]
    shape = f"b{bind['batch']}" + (f" T={bind['seq']}" if "seq" in bind else f"@{bind['image']}")
    print(machine_line(f"{net.name} {shape}, {args.rounds} rounds, median ms: {args.base} {a:.1f}, "
                       f"working tree {b:.1f}; speedup {a / b:.3f}x, paired by round {statistics.median(ratios):.3f}x "
                       f"({ratios[0]:.3f}-{ratios[-1]:.3f})"))


if __name__ == "__main__":
    main()
