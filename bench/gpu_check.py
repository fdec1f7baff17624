"""The catalogue's train steps on a lent GPU: gir -> IREE (`--target cuda`) and gir -> JAX on the GPU, each checked
against gir -> IREE on the CPU, with step times for docs/performance.md.

A lent GPU machine has JAX but not IREE's compiler (its wheel is larger than the 64 MiB a device call may carry; the
runtime's, 15 MB, travels), so the work is split in two:

  python3 bench/gpu_check.py prepare BUNDLE [--nets a,b] [--target cuda] [--chip sm_90] [--batch 8] [--image 64]
      here, on the CPU: lowers each net's train step at a small shape with the GPU pipeline, compiles it for the
      target, and runs its first step on IREE's CPU from gir's initial values on a random batch; writes the module,
      the batch and the CPU's loss and parameter update (sampled) into BUNDLE/NET/
  python3 bench/gpu_check.py run BUNDLE [--steps 20] [--net-limit 60] [--total 480] [--report FILE]
      there: the module on IREE's device for the target and the same train step through JAX on its default device
      (float32 matmuls at full precision); checks each first step against the CPU's (loss to LOSS_RTOL, the sampled
      update to UPDATE_RTOL of its norm), then times steps; rewrites the markdown table after every net, so a run cut
      short keeps what it measured

On a machine without a GPU, `prepare --target vulkan` (Mesa's lavapipe) or `--target cpu` followed by `run` exercises
the same code (tests/test_gpu_check.py).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NETS = ROOT / "nets"
SEED = 0
PER_PARAM = 64        # sampled elements of each parameter's update (all of a smaller one): a layer computed wrongly
                      # shows in its own samples, and the bundle stays small (the whole update of ResNet-50 is 100 MB)
LOSS_RTOL = 1e-4      # the first step's loss is the forward pass at the initial values: float32 sums in another order
UPDATE_RTOL = 1e-1    # as tests/lockstep.py: train-mode BN over few values makes the update rounding-sensitive (2.7%)


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def net_names(only: str | None) -> list[str]:
    """The stems of nets/*.py, or the comma-separated ones in `only`."""
    names = sorted(Path(p).stem for p in glob.glob(str(NETS / "*.py")))
    if only:
        want = [n.strip().removesuffix(".py") for n in only.split(",") if n.strip()]
        unknown = sorted(set(want) - set(names))
        if unknown:
            raise SystemExit(f"gpu_check.py: no net {', '.join(unknown)} in nets/")
        names = [n for n in names if n in want]
    return names


def train_step(name: str, target: str, batch: int, image: int, backend: str = "iree"):
    """The net's train step at the shape, lowered with the pipeline `backend` runs on `target`."""
    from gir.netfile import load_net_file
    from gir.rewrite import pipeline_for_backend
    from gir.train.step import lower_train_step

    net, config = load_net_file(str(NETS / f"{name}.py"))
    return net, config, lower_train_step(net, config.replace(batch_size=batch), batch=batch,
                                         image=image if net.image_sized else None,
                                         passes=pipeline_for_backend("default", backend, target))


def params_of(mod) -> list[str]:
    return [v.name for v in mod.primitive.inputs if v.role == "param"]


def checksum(values: dict[str, np.ndarray], names: list[str]) -> list[float]:
    """Sum and sum of squares (float64) of the named arrays: the run checks it starts from the same values."""
    flat = np.concatenate([np.asarray(values[k], np.float64).ravel() for k in names])
    return [float(flat.sum()), float((flat * flat).sum())]


# ---- prepare (a machine with IREE's compiler) ---------------------------------------------------

def prepare_net(name: str, out: Path, target: str, chip: str | None, batch: int, image: int) -> dict:
    """Compiles the net's step for `target`, runs its first step on IREE's CPU and writes BUNDLE/NAME/."""
    from gir.bench import random_batch
    from gir.lower.iree_compile import compile_text
    from gir.nn.params import init_params
    from gir.train.backend import IreeBackend, iree_module_text

    t0 = time.perf_counter()
    net, config, mod = train_step(name, target, batch, image)
    text = iree_module_text(mod, None, target)
    vmfb = compile_text(text, target, chip)
    compile_s = time.perf_counter() - t0
    _, _, cpu_mod = train_step(name, "cpu", batch, image)
    cpu = IreeBackend(cpu_mod, None, "cpu")
    init = init_params(cpu_mod.primitive, config.seed)
    rng = np.random.default_rng(SEED)
    images, labels = random_batch(mod.primitive, net.num_classes, rng)   # token ids for a sequence net
    shape = images.shape
    cpu.load(init)
    loss = cpu.step(images, labels, config.learning_rate, 1).loss
    after = cpu.values()
    names = params_of(cpu_mod)
    sample: dict[str, np.ndarray] = {}
    for k in names:
        size = init[k].size
        idx = np.sort(rng.choice(size, min(size, PER_PARAM), replace=False)).astype(np.int64)
        sample[f"idx:{k}"] = idx
        sample[f"upd:{k}"] = (after[k].ravel()[idx] - init[k].ravel()[idx]).astype(np.float32)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_step.vmfb").write_bytes(vmfb)
    np.savez_compressed(folder / "reference.npz", images=images, labels=labels, **sample)
    meta = {"net": name, "target": target, "chip": chip, "batch": shape[0],
            "image": shape[2] if len(shape) == 4 else None, "seq": shape[1] if net.input_name == "tokens" else None,
            "lr": config.learning_rate, "seed": config.seed,
            "text_sha256": hashlib.sha256(text.encode()).hexdigest(), "signature": mod.signature(), "cpu_loss": loss,
            "init_checksum": checksum(init, names), "compile_s": round(compile_s, 1), "vmfb_bytes": len(vmfb)}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def prepare(args: argparse.Namespace) -> None:
    out = Path(args.bundle)
    failed = []
    for name in net_names(args.nets):
        log(f"{name}: lower, compile for {args.target}, first step on the CPU")
        try:
            meta = prepare_net(name, out, args.target, args.chip, args.batch, args.image)
            log(f"  {name}: {meta['compile_s']} s, module {meta['vmfb_bytes'] / 1e6:.1f} MB, "
                f"CPU loss {meta['cpu_loss']:.6f}")
        except Exception as e:  # noqa: BLE001 (a net that fails is reported, the others still prepared)
            traceback.print_exc(file=sys.stderr)
            failed.append(f"{name}: {first_line(e)}")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) if out.exists() else 0
    log(f"bundle {out}: {size / 2**20:.1f} MiB")
    if failed:
        raise SystemExit("gpu_check.py prepare: failed: " + "; ".join(failed))


# ---- run (the lent GPU: IREE's runtime and JAX) ---------------------------------------------------

def sampled_update_error(after: dict[str, np.ndarray], start: dict[str, np.ndarray], ref) -> tuple[float, str, float]:
    """|update - CPU's| / |CPU's| over the sampled elements, and the parameter whose samples differ most (relative)."""
    names = [k[4:] for k in ref.files if k.startswith("idx:")]
    got, want, worst = [], [], ("", 0.0)
    for k in names:
        idx = ref[f"idx:{k}"]
        g = np.asarray(after[k]).ravel()[idx] - np.asarray(start[k]).ravel()[idx]
        w = ref[f"upd:{k}"]
        got.append(g)
        want.append(w)
        rel = float(np.linalg.norm(g - w) / max(float(np.linalg.norm(w)), 1e-30))
        if rel > worst[1]:
            worst = (k, rel)
    g, w = np.concatenate(got), np.concatenate(want)
    return float(np.linalg.norm(g - w) / np.linalg.norm(w)), *worst


def timed_steps(runner, images: np.ndarray, labels: np.ndarray, lr: float, steps: int, deadline: float) -> list[float]:
    """Up to `steps` steps (ms each, the loss read back), fewer where the deadline comes first."""
    times = []
    for t in range(steps):
        if time.monotonic() >= deadline:
            break
        t0 = time.perf_counter()
        loss = runner.step(images, labels, lr, t + 2).loss
        times.append(1e3 * (time.perf_counter() - t0))
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss {loss} at timed step {t + 1}")
    return times


def run_system(build: Callable[[], object], init: dict[str, np.ndarray], ref, meta: dict, steps: int,
               deadline: float) -> dict:
    """One system on one net: set up, the checked first step, one untimed step, then timed ones."""
    r: dict = {}
    try:
        t0 = time.perf_counter()
        runner = build()
        runner.load(init)
        images, labels = ref["images"], ref["labels"]
        loss = runner.step(images, labels, meta["lr"], 1).loss
        r["setup_s"] = time.perf_counter() - t0   # building, loading and the first step (JAX: its jit)
        r["loss"] = loss
        r["update_err"], r["worst_param"], r["worst_err"] = sampled_update_error(runner.values(), init, ref)
        r["loss_ok"] = bool(abs(loss - meta["cpu_loss"]) <= LOSS_RTOL * abs(meta["cpu_loss"]))
        r["update_ok"] = r["update_err"] < UPDATE_RTOL
        r["ok"] = r["loss_ok"] and r["update_ok"]
        runner.step(images, labels, meta["lr"], 2)
        r["times"] = timed_steps(runner, images, labels, meta["lr"], steps, deadline)
    except Exception as e:  # noqa: BLE001 (reported in the table)
        traceback.print_exc(file=sys.stderr)
        r["error"] = first_line(e)
    return r


def run_net(folder: Path, steps: int, deadline: float) -> dict:
    """The bundle's net on IREE (its target's device) and on JAX (its default device), checked and timed."""
    from gir.nn.params import init_params
    from gir.train.backend import IreeBackend, JaxBackend, iree_module_text

    meta = json.loads((folder / "meta.json").read_text())
    case = {k: meta.get(k) for k in ("net", "target", "batch", "image", "seq", "cpu_loss")}
    _, _, mod = train_step(meta["net"], meta["target"], meta["batch"], meta["image"])
    if mod.signature() != meta["signature"]:
        return {**case, "error": "the bundle's module takes other inputs than this checkout's train step (prepare it "
                                 "again)"}
    if hashlib.sha256(iree_module_text(mod, None, meta["target"]).encode()).hexdigest() != meta["text_sha256"]:
        case["note"] = "this checkout prints the step's text differently (other package versions?)"
        log(f"  {meta['net']}: {case['note']}")
    init = init_params(mod.primitive, meta["seed"])
    if checksum(init, params_of(mod)) != meta["init_checksum"]:
        return {**case, "error": "the initial values differ from the bundle's (another NumPy generator?)"}
    ref = np.load(folder / "reference.npz")
    vmfb = (folder / "train_step.vmfb").read_bytes()
    halfway = time.monotonic() + (deadline - time.monotonic()) / 2   # IREE's timed steps leave JAX its share
    case["iree"] = run_system(lambda: IreeBackend(mod, None, meta["target"], vmfb=vmfb), init, ref, meta, steps,
                              halfway)
    _, _, jax_mod = train_step(meta["net"], meta["target"], meta["batch"], meta["image"], backend="jax")
    case["jax"] = run_system(lambda: JaxBackend(jax_mod, None), init, ref, meta, steps, deadline)
    return case


def device_line(target: str) -> str:
    """The date, the GPU (JAX's name for its first device) and the versions."""
    import jax
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "?"
    d = jax.devices()[0]
    return (f"{datetime.date.today()}, {d.device_kind} ({d.platform}); IREE runtime {v('iree-base-runtime')} "
            f"(`--target {target}`), JAX {v('jax')}")


def ms(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}" if x < 10 else f"{x:.1f}"


def first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def cell(r: dict | None) -> tuple[str, str, str]:
    """Median ms (steps), first-step loss, sampled update error against the CPU."""
    if not r:
        return "not run", "-", "-"
    if "error" in r:
        return f"failed: {r['error']}", "-", "-"
    med = f"{ms(statistics.median(r['times']))} ({len(r['times'])})" if r["times"] else "no time left"
    no = {True: "", False: " **NO**"}
    worst = f"worst {r['worst_param']} {r['worst_err']:.1e}" if r["worst_param"] else "exact"
    return med, f"{r['loss']:.6f}{no[r['loss_ok']]}", f"{r['update_err']:.1e}{no[r['update_ok']]} ({worst})"


def render(head: str, cases: list[dict]) -> str:
    rows = []
    for c in cases:
        shape = f"b{c['batch']}" + (f"@{c['image']}" if c.get("image") else f" T={c['seq']}" if c.get("seq") else "")
        if "error" in c or "not_run" in c:
            what = f"failed: {c['error']}" if "error" in c else f"not run ({c['not_run']})"
            rows.append(f"| {c['net']} | {shape} | {what} | | | | | | |")
            continue
        (im, il, iu), (jm, jl, ju) = cell(c.get("iree")), cell(c.get("jax"))
        rows.append(f"| {c['net']} | {shape} | {im} | {jm} | {c['cpu_loss']:.6f} / {il} / {jl} | {iu} | {ju} |"
                    + (f" {c['note']} |" if "note" in c else " |"))
    header = ("| net | shape | IREE ms (steps) | JAX ms (steps) | first-step loss: CPU / IREE / JAX "
              "| update vs CPU: IREE | update vs CPU: JAX | note |")
    return "\n".join([head, "", header, "|" + " --- |" * 8, *rows]) + "\n"


def run(args: argparse.Namespace) -> None:
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")   # float32 as gir's graph says, not TF32
    start = time.monotonic()
    folders = sorted(p.parent for p in Path(args.bundle).glob("*/meta.json"))
    if args.nets:
        folders = [f for f in folders if f.name in net_names(args.nets)]
    if not folders:
        raise SystemExit(f"gpu_check.py run: no prepared net in {args.bundle}")
    target = json.loads((folders[0] / "meta.json").read_text())["target"]
    head = (f"{device_line(target)}; `bench/gpu_check.py run`, up to {args.steps} timed steps a system after a checked "
            f"first step and one more; median ms with the loss read back each step. Checked against gir -> IREE on "
            f"the CPU: the first step's loss to {LOSS_RTOL:g} relative, the parameter update (up to {PER_PARAM} "
            f"sampled elements a parameter) to {UPDATE_RTOL:g} of its norm (**NO** marks a miss).")
    report = Path(args.report)
    report.with_suffix(".jsonl").write_text("")
    cases: list[dict] = []
    for folder in folders:
        left = args.total - (time.monotonic() - start)
        if left <= 0:
            cases.append({"net": folder.name, **{k: json.loads((folder / "meta.json").read_text())[k]
                                                 for k in ("batch", "image")}, "not_run": "--total reached"})
        else:
            log(f"{folder.name}: IREE and JAX ({left:.0f} s left)")
            cases.append(run_net(folder, args.steps, time.monotonic() + min(args.net_limit, left)))
        report.write_text(render(head, cases))
        with open(report.with_suffix(".jsonl"), "a") as f:
            f.write(json.dumps(cases[-1]) + "\n")
    print(report.read_text())
    if any(not all(c.get(s, {}).get("ok") for s in ("iree", "jax")) for c in cases):
        raise SystemExit("gpu_check.py run: a net failed, disagreed with the CPU or was not run (see the table)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="compile the train steps for the target and record the CPU's first step")
    p.add_argument("bundle", help="folder to write (one subfolder per net)")
    p.add_argument("--nets", help="comma-separated net names (files in nets/); default: all")
    p.add_argument("--target", default="cuda", choices=("cuda", "rocm", "vulkan", "cpu"), help="default cuda")
    p.add_argument("--chip", help="the GPU (default: gir's for the target, sm_80 for cuda)")
    p.add_argument("--batch", type=int, default=8, help="default 8")
    p.add_argument("--image", type=int, default=64, help="image size of nets whose input size is free (default 64)")
    p.set_defaults(func=prepare)
    r = sub.add_parser("run", help="run the prepared steps on the target's device and JAX's, checked and timed")
    r.add_argument("bundle", help="a folder written by prepare")
    r.add_argument("--nets", help="comma-separated net names; default: all in the bundle")
    r.add_argument("--steps", type=int, default=20, help="timed steps per system (default 20)")
    r.add_argument("--net-limit", type=float, default=60.0,
                   help="seconds per net after which no further timed step starts (default 60)")
    r.add_argument("--total", type=float, default=480.0,
                   help="seconds after which no further net starts (default 480: a device call's 10 minutes, less "
                        "start-up and one net's overrun)")
    r.add_argument("--report", default="gpu_check.md", help="markdown table, rewritten after each net (and a .jsonl "
                                                            "beside it); default gpu_check.md")
    r.set_defaults(func=run)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
