"""The `gir` command: `gir show` (layer table), `gir lower` (StableHLO, IREE modules, graph dumps),
`gir check` (the backward pass's invariants and numerics), `gir passes` (the rewrite passes),
`gir train` (training on IREE or JAX, with checkpoints and resume), `gir sample` (text from a sequence net's run),
`gir bench` (train-step timing)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from gir.autodiff import AdjointError
from gir.bench import bench_train_step
from gir.check import check_net, check_whole_net_f64
from gir.ir.dot import to_dot
from gir.ir.printer import print_graph
from gir.lower.iree_compile import TARGETS, CompileError, compile_text
from gir.lower.iree_runtime import DeviceUnavailable, RuntimeSettingError
from gir.lower.pipeline import lower_net
from gir.lower.stablehlo import LoweringError
from gir.netfile import NetFileError, load_net_file
from gir.nn.net import Net
from gir.nn.params import ParamsError
from gir.nn.summary import summarize
from gir.rewrite import PASSES, PIPELINES, Firing, RewriteError, passes_for, pipeline_for_backend, resolve
from gir.shapes.errors import ShapeError
from gir.shapes.specialize import BindingError, check_binding
from gir.train.backend import BackendError, PeerLost
from gir.train.checkpoint import CheckpointError, check_compatible, load_checkpoint
from gir.train.config import OPTIMIZERS, TrainConfig
from gir.train.data import SOURCES, DataError
from gir.train.distributed import (Cluster, DistributedError, check_address, exit_with_parent, leave, running,
                                   supervise, supervised)
from gir.train.loop import (BACKENDS, Interrupted, NonFiniteLoss, RunOptions, TrainError, checkpoint_arrays,
                            default_data, train)
from gir.train.runlog import TRACE, TraceError, read_trace
from gir.train.sample import SampleError, sample_run
from gir.train.step import build_train_step, lower_train_step

USER_ERRORS = (NetFileError, ShapeError, BindingError, ParamsError, CompileError, LoweringError, AdjointError,
               RewriteError, DataError, CheckpointError, TraceError, BackendError, DeviceUnavailable, NonFiniteLoss,
               TrainError, SampleError, DistributedError, PeerLost, RuntimeSettingError)


class CliError(Exception):
    """A problem with the command line or its files, reported as one line."""


def _pass_spec(args: argparse.Namespace) -> str:
    """The rewrite pipeline `--passes` / `--no-opt` ask for, checked before any work: an unknown
    name is reported against the flag."""
    spec = "none" if args.no_opt else args.passes
    try:
        resolve(spec)
    except RewriteError as e:
        raise CliError(f"--passes: {e}") from None
    return spec


def _number(flag: str, convert: Callable[[str], float], what: str, minimum: float | None = None) -> Callable:
    """An argparse type for `flag`: `convert`ed, at least `minimum`, else a message saying what it wants."""
    def parse(s: str):
        try:
            v = convert(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} wants {what}, got {s!r}") from None
        if minimum is not None and v < minimum:
            raise argparse.ArgumentTypeError(f"{flag} wants {what}, got {v}")
        return v
    return parse


def _positive_int(flag: str) -> Callable[[str], int]:
    return _number(flag, int, "a positive integer", 1)


def _count(flag: str) -> Callable[[str], int]:
    return _number(flag, int, "an integer >= 0", 0)


def _float(flag: str) -> Callable[[str], float]:
    return _number(flag, float, "a number")


def _int(flag: str) -> Callable[[str], int]:
    return _number(flag, int, "an integer")


def build_graph(net: Net, path: str, mode: str = "train"):
    """The net's forward graph; errors raised by layer code while building are reported against the file."""
    try:
        return net.build(mode=mode)
    except ShapeError:
        raise
    except (ValueError, TypeError) as e:
        raise NetFileError(f"{path}: while building net {net.name!r}: {e}") from e


def _binding(net: Net, args: argparse.Namespace) -> dict:
    b = net.binding(batch=args.batch, image=args.image, seq=args.seq)
    check_binding(b, net.constraints)
    return b


def _check_folder(path: str) -> None:
    """A file can be written at `path` only into a folder that exists."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CliError(f"cannot write {path}: folder {folder} does not exist")


def _write(path: str, text: str) -> None:
    _check_folder(path)
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror}") from None


# ---- gir show -------------------------------------------------------------------------------

def _table(rows: list[dict], cols: Sequence[tuple[str, str]]) -> str:
    widths = [max(len(h), *(len(str(r[k])) for r in rows)) if rows else len(h) for k, h in cols]
    line = lambda vals: "  ".join(str(v).ljust(w) for v, w in zip(vals, widths)).rstrip()
    out = [line(h for _, h in cols), line("-" * w for w in widths)]
    out += [line(r[k] for k, _ in cols) for r in rows]
    return "\n".join(out)


def cmd_show(args: argparse.Namespace) -> int:
    net, _ = load_net_file(args.net)
    graph = build_graph(net, args.net, mode="eval" if args.eval else "train")
    bound = any(getattr(args, k) is not None for k in ("batch", "image", "seq"))
    binding = _binding(net, args)
    info = summarize(graph, binding if bound else None)
    info["file"] = args.net
    info["input"] = net.input_type.short()
    if not bound:
        info["binding"] = {str(s): v for s, v in binding.items()}
        info["macs_value"] = summarize(graph, binding)["macs_value"]
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [dict(r, params=f"{r['params']:,}" if r["params"] else "") for r in info["layers"]]
    print(_table(rows, [("path", "path"), ("op", "op"), ("shape", "output shape"), ("params", "params"),
                        ("macs", "MACs")]))
    at = ", ".join(f"{k}={v}" for k, v in info["binding"].items())
    print()
    print(f"net {info['name']} ({args.net}), input {info['input']}")
    print(f"params: {info['params']:,}   BN state: {info['state']:,}   BN layers: {info['bn_layers']}   "
          f"nodes: {info['nodes']}")
    print(f"MACs: {info['macs']}")
    print(f"      = {info['macs_value']:,} at {at}")
    return 0


# ---- gir lower ------------------------------------------------------------------------------

LOWERED_DIR = "lowered"          # gir lower's default output folder: lowered/<net>/
MANIFEST = "lowered.json"        # names the net a folder's modules were lowered from
MODULES = ("forward", "eval", "train_step")
RENDER_MAX_NODES = 1000
"""Graphs gir renders to .svg itself: MobileNetV2's forward (152 nodes) takes Graphviz about a second,
its train step (3,803 nodes, clustered per adjoint) over 5 minutes; larger graphs get the command."""
DOT_TIMEOUT_S = 120   # a guard for graphs under the limit that still take Graphviz too long


def _claim_out_dir(path: str, net: Net) -> str:
    """The output folder, created if missing; refused when it holds another net's modules."""
    out = _out_dir(path)
    manifest = os.path.join(out, MANIFEST)
    if os.path.exists(manifest):
        try:
            with open(manifest) as f:
                owner = json.load(f)["net"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CliError(f"{manifest} is unreadable ({e}); remove it or choose another -o") from None
        if owner != net.name:
            raise CliError(f"{out} holds the lowered modules of net {owner!r}, not {net.name!r}; choose another "
                           f"folder with -o DIR, or remove {out}")
    else:
        found = sorted(f for f in os.listdir(out) if os.path.splitext(f)[0] in MODULES)
        if found:
            raise CliError(f"{out} holds {', '.join(found)} from an unknown net (no {MANIFEST}); choose another "
                           f"folder with -o DIR, or remove those files")
    return out


def _render_svg(dot_path: str, nodes: int) -> str:
    """Renders `dot_path` (a graph of `nodes` nodes) beside itself with Graphviz when `dot` is on PATH
    and the graph is small enough to render in seconds; says what happened."""
    svg = os.path.splitext(dot_path)[0] + ".svg"
    exe = shutil.which("dot")
    if exe is None or nodes > RENDER_MAX_NODES:
        why = ("Graphviz's dot is not on PATH" if exe is None else
               f"not rendered here: {nodes:,} nodes take Graphviz minutes")
        return f"render it with: dot -Tsvg {dot_path} -o {svg} ({why})"
    try:
        subprocess.run([exe, "-Tsvg", dot_path, "-o", svg], check=True, capture_output=True, text=True,
                       timeout=DOT_TIMEOUT_S)
    except subprocess.CalledProcessError as e:
        why = (e.stderr or "").strip().splitlines()
        return f"Graphviz could not render it: {why[-1] if why else f'dot exited with {e.returncode}'}"
    except subprocess.TimeoutExpired:
        return f"Graphviz took over {DOT_TIMEOUT_S} s to render it; gave up (the .dot is complete)"
    return f"wrote {svg} (rendered by Graphviz dot)"


def _dump_path(given: str | bool | None, out: str, net: Net, dump: str, ext: str) -> str | None:
    """Where a dump goes: the file given, or `<net>.<ext>` (`<net>.<dump>.<ext>` for eval/train_step)
    in the output folder for a bare flag, or None without the flag."""
    if given is None:
        return None
    if isinstance(given, str):
        return given
    return os.path.join(out, f"{net.name}.{ext}" if dump == "forward" else f"{net.name}.{dump}.{ext}")


def cmd_lower(args: argparse.Namespace) -> int:
    net, config = load_net_file(args.net)
    binding = _binding(net, args)
    spec = _pass_spec(args)
    graph = build_graph(net, args.net, mode="eval" if args.dump == "eval" else "train")
    for given in (args.dump_dot, args.dump_graph):
        if isinstance(given, str):
            _check_folder(given)
    out = _claim_out_dir(args.out or os.path.join(LOWERED_DIR, net.name), net)
    at = ", ".join(f"{k}={v}" for k, v in sorted(binding.items(), key=lambda kv: (str(kv[0]) != "N", str(kv[0]))))
    how = "StableHLO only (--no-compile)" if args.no_compile else f"compiled for {args.target}"
    print(f"gir lower {net.name}: forward, eval and train_step at {at}, {how}, into {out}/")
    if args.dump == "train_step":
        graph = build_train_step(net, config).graph
    dot = _dump_path(args.dump_dot, out, net, args.dump, "dot")
    if dot:
        _write(dot, to_dot(graph))
        print(f"wrote {dot} ({args.dump} graph, symbolic, {len(graph.nodes)} nodes)")
        print(_render_svg(dot, len(graph.nodes)))
    text = _dump_path(args.dump_graph, out, net, args.dump, "gir")
    if text:
        _write(text, print_graph(graph) + "\n")
        print(f"wrote {text} ({args.dump} graph, symbolic, {len(graph.nodes)} nodes)")
    spec = pipeline_for_backend(spec, "iree", args.target)
    passes = passes_for(spec, bf16=args.bf16, bf16_conv=args.bf16_conv)
    config = config.replace(bf16=args.bf16 or config.bf16, bf16_conv=args.bf16_conv or config.bf16_conv)
    trace: list[Firing] | None = [] if args.trace_rewrites else None
    modules = lower_net(net, batch=args.batch, image=args.image, passes=passes, trace=trace, seq=args.seq)
    modules["train_step"] = lower_train_step(net, config, batch=args.batch, image=args.image, seq=args.seq,
                                             passes=spec, trace=trace)
    if trace is not None:
        _print_trace(trace)
    manifest = os.path.join(out, MANIFEST)
    _write(manifest, json.dumps({"net": net.name, "file": args.net, "binding": {str(k): v for k, v in binding.items()},
                                 "target": None if args.no_compile else args.target, "passes": spec,
                                 "modules": list(modules)}, indent=1) + "\n")
    print(f"wrote {manifest} (net, sizes, target, passes)")
    for name, mod in modules.items():
        stem = os.path.join(out, name)
        _write(stem + ".mlir", mod.text)
        _write(stem + ".json", json.dumps(mod.signature(), indent=1) + "\n")
        line = f"wrote {stem}.mlir ({len(mod.text):,} chars, {len(mod.primitive.nodes)} ops), {stem}.json"
        if not args.no_compile:
            t0 = time.perf_counter()
            vmfb = compile_text(mod.text, args.target, args.chip, args.iree_flag)
            with open(stem + ".vmfb", "wb") as f:
                f.write(vmfb)
            line += f", {stem}.vmfb ({args.target}, {time.perf_counter() - t0:.1f} s)"
        print(line)
    return 0


def _print_trace(trace: list[Firing]) -> None:
    """Every fired rule (module: pass/rule: op #node at layer path (file:line)), then counts per rule."""
    for f in trace:
        print(f"rewrite {f}")
    counts: dict[str, int] = {}
    for f in trace:
        counts[f"{f.pass_name}/{f.rule}"] = counts.get(f"{f.pass_name}/{f.rule}", 0) + 1
    print(f"rewrites: {len(trace)} in all; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(),
                                                                                     key=lambda kv: -kv[1])))


# ---- gir passes -----------------------------------------------------------------------------

def cmd_passes(args: argparse.Namespace) -> int:
    print("passes (gir lower --passes NAME[,NAME...]; 'layer' passes run before layer ops are decomposed, "
          "'primitive' after, 'any' both):")
    width = max(len(n) for n in PASSES)
    in_default = list(dict.fromkeys(PIPELINES["default"]))
    for p in sorted(PASSES.values(), key=lambda p: (p.name not in in_default, in_default.index(p.name)
                                                    if p.name in in_default else 0)):
        print(f"  {p.name.ljust(width)}  {p.level.ljust(9)}  {p.doc}")
        rw = max((len(r.name) for r in p.rules), default=0)
        for r in p.rules:
            print(f"  {''.ljust(width)}    {r.name.ljust(rw)}  {r.doc}")
    print("pipelines (gir lower --passes NAME):")
    for name, names in PIPELINES.items():
        print(f"  {name.ljust(width)}  {', '.join(names) if names else '(no passes; same as --no-opt)'}")
    print("the default pipeline runs when lowering (default_avx2 on an AVX2 CPU, default_jax with --backend jax, "
          "default_gpu for --target rocm, cuda or vulkan); --bf16 / --bf16-conv add the bf16 or bf16_conv pass and a "
          "simplify, cse, dce cleanup")
    return 0


# ---- gir train -----------------------------------------------------------------------------

RECIPE_FLAGS = {  # flag dest -> TrainConfig field
    "lr": "learning_rate", "batch": "batch_size", "epochs": "epochs", "optimizer": "optimizer",
    "momentum": "momentum", "weight_decay": "weight_decay", "cosine": "cosine", "warmup_epochs": "warmup_epochs",
    "label_smoothing": "label_smoothing", "augment": "augment", "clip_norm": "clip_norm", "bf16": "bf16",
    "bf16_conv": "bf16_conv", "seed": "seed", "eval_every": "eval_every", "checkpoint_every": "checkpoint_every",
    "image": "image_size", "seq": "seq_len",
}
FIELD_FLAGS = {field: "--" + dest.replace("_", "-") for dest, field in RECIPE_FLAGS.items()}


def recipe(config: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    """The net file's config with every given flag applied; a bad value names its flag."""
    changes = {field: getattr(args, dest) for dest, field in RECIPE_FLAGS.items() if getattr(args, dest) is not None}
    try:
        return config.replace(**changes)
    except (ValueError, TypeError) as e:
        msg = str(e)
        for field, flag in FIELD_FLAGS.items():
            if msg.startswith(field + " "):
                msg = flag + msg[len(field):]
        raise CliError(f"invalid training option: {msg}") from None


def _default_out(net: Net) -> str:
    return os.path.join("runs", f"{net.name}-{time.strftime('%Y%m%d-%H%M%S')}")


def cmd_train(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    if cluster is not None:
        if not supervised():   # the real run is a child, so that JAX's own aborts can be told in one line
            who = (f"process {args.process_id} of {args.processes}" if None not in (args.process_id, args.processes)
                   else "this process")
            run = args.resume or args.out
            return supervise(args.argv, who, f"Start every process again with --resume {run or 'RUN_DIR'} to "
                                             f"continue from the last checkpoint process 0 wrote")
        exit_with_parent()
    net, config = load_net_file(args.net)
    build_graph(net, args.net)   # layer and shape errors now, before data or compiling
    if args.resume:
        given = sorted(FIELD_FLAGS[f] for d, f in RECIPE_FLAGS.items() if getattr(args, d) is not None)
        if given or args.data or args.out:
            raise CliError(f"--resume continues the saved run with its own recipe, data and folder; drop "
                           f"{', '.join(given + [f for f, v in (('--data', args.data), ('--out', args.out)) if v])}")
        arrays, meta = load_checkpoint(args.resume)
        if os.path.exists(os.path.join(args.resume, TRACE)):
            read_trace(os.path.join(args.resume, TRACE))   # a damaged trace is reported before anything is compiled
        where = os.path.join(args.resume, "checkpoint.npz")
        if meta.get("net") != net.name:
            raise CheckpointError(f"{where} is a checkpoint of net {meta.get('net')!r}, not {net.name!r}")
        try:
            config = TrainConfig(**meta["config"])
            check_compatible(arrays, checkpoint_arrays(build_train_step(net, config).graph), where)
            total = int(meta["steps_per_epoch"]) * config.epochs
            data, out, done = meta["data"], args.resume, int(meta["step"])
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{where}: the checkpoint's record is not usable: {e}") from None
        if done >= total:
            print(f"the run in {out} is already complete ({done} of {total} steps); nothing to do")
            return 0
    else:
        config = recipe(config, args)
        data, out = args.data or default_data(net), args.out or _default_out(net)
        if os.path.exists(out) and not os.path.isdir(out):
            raise CliError(f"--out {out} is a file, not a folder")
        if os.path.exists(os.path.join(out, "checkpoint.npz")):
            raise CliError(f"{out} already holds a run (checkpoint.npz); continue it with --resume {out} or choose "
                           f"another --out")
    if args.devices > 1 and args.backend != "jax":
        raise CliError(f"--devices {args.devices} needs --backend jax (IREE runs on one device)")
    options = RunOptions(data=data, out=out, backend=args.backend, target=args.target, chip=args.chip,
                         devices=args.devices, passes=_pass_spec(args), iree_flags=tuple(args.iree_flag),
                         progress=not args.quiet, workers=args.workers, cluster=cluster)
    try:
        metrics = train(net, config, options, resume=bool(args.resume), net_file=args.net)
    except Interrupted as e:
        print(f"gir: {e}", file=sys.stderr)
        return 130
    if metrics is None:
        print(f"done: this process's share of every step; process 0 wrote {out}/")
        return 0
    print(f"done: {metrics['steps']} steps, final loss {metrics['final_loss']:.4f}{_val_summary(metrics)}; "
          f"wrote {out}/ (trace.jsonl, metrics.json, curves.png, checkpoint.npz)")
    return 0


def _val_summary(metrics: dict) -> str:
    """The last evaluation and the speed, for the run's final line."""
    unit = "tokens" if "tokens_per_s" in metrics else "images"
    top1 = metrics["val_top1"]
    bits = next(((k.rpartition("_")[2], v) for k, v in metrics.items() if k.startswith("val_bits_per_")), None)
    if top1 is None:
        ev = ""
    elif bits is not None:
        ev = f", val {bits[1]:.3f} bits/{bits[0]}, next-{bits[0]} top-1 {100 * top1:.2f}%"
    else:
        ev = f", val top-1 {100 * top1:.2f}%, top-5 {100 * metrics['val_top5']:.2f}%"
    return f"{ev}, {metrics[f'{unit}_per_s']:.0f} {unit}/s"


def _cluster(args: argparse.Namespace) -> Cluster | None:
    """The multi-process run the flags ask for (None: one process); what is not given comes from the launcher's
    environment with --distributed, else is an error naming the missing flags."""
    given = {"--processes": args.processes, "--process-id": args.process_id, "--coordinator": args.coordinator}
    named = [flag for flag, v in given.items() if v is not None]
    if not named and not args.distributed:
        return None
    if args.backend != "jax":
        raise CliError(f"{(named or ['--distributed'])[0]} needs --backend jax (several processes run on JAX)")
    missing = [flag for flag, v in given.items() if v is None]
    if missing and not args.distributed:
        raise CliError(f"{named[0]} needs {' and '.join(missing)} too (or --distributed, to read them from the "
                       f"launcher's environment)")
    if None not in (args.processes, args.process_id) and args.process_id >= args.processes:
        raise CliError(f"--process-id {args.process_id} is out of range for --processes {args.processes} "
                       f"(0 to {args.processes - 1})")
    return Cluster(args.coordinator, args.processes, args.process_id)


def _address(s: str) -> str:
    try:
        return check_address(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--coordinator {e}") from None


def _add_train_flags(s: argparse.ArgumentParser) -> None:
    r = s.add_argument_group("recipe (each overrides the net file's config)")
    r.add_argument("--lr", type=_float("--lr"), help="peak learning rate")
    r.add_argument("--epochs", type=_int("--epochs"), help="epochs")
    r.add_argument("--optimizer", choices=OPTIMIZERS, help="optimizer")
    r.add_argument("--momentum", type=_float("--momentum"), help="SGD momentum")
    r.add_argument("--weight-decay", type=_float("--weight-decay"), help="weight decay (decoupled for adamw)")
    r.add_argument("--cosine", action=argparse.BooleanOptionalAction, default=None, help="cosine decay after warmup")
    r.add_argument("--warmup-epochs", type=_float("--warmup-epochs"), help="linear warmup length in epochs")
    r.add_argument("--label-smoothing", type=_float("--label-smoothing"), help="label smoothing in [0, 1)")
    r.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crops and horizontal flips")
    r.add_argument("--clip-norm", type=_float("--clip-norm"), help="clip gradients to this global norm (0: off)")
    r.add_argument("--bf16", action="store_true", default=None, help="matmuls in bf16")
    r.add_argument("--bf16-conv", action="store_true", default=None, help="matmuls and convolutions in bf16")
    r.add_argument("--seed", type=_int("--seed"), help="initialization, data order and augmentation seed")
    r.add_argument("--eval-every", type=_int("--eval-every"), help="evaluate every N epochs (and at the end)")
    r.add_argument("--checkpoint-every", type=_int("--checkpoint-every"),
                   help="checkpoint every N epochs (and at the end)")
    g = s.add_argument_group("run")
    g.add_argument("--data", metavar="SOURCE",
                   help=f"digits (default, built in) or KIND:PATH with KIND one of {', '.join(SOURCES[1:])}")
    g.add_argument("--workers", type=_count("--workers"), metavar="N",
                   help="data worker processes decoding and augmenting batches ahead of the step (0: one "
                        "background thread; default: one per core but one for image files and resized crops, "
                        "else 0)")
    g.add_argument("--out", metavar="DIR", help="run folder (default runs/NET-DATE-TIME)")
    g.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint, exactly")
    g.add_argument("--backend", choices=BACKENDS, default="iree", help="iree (default) or jax")
    g.add_argument("--devices", type=_positive_int("--devices"), default=1,
                   help="data-parallel devices (--backend jax; on a CPU set "
                        "XLA_FLAGS=--xla_force_host_platform_device_count=N)")
    g.add_argument("--target", choices=TARGETS, default="cpu", help="IREE target (default cpu)")
    g.add_argument("--chip", help="GPU chip or CPU model for IREE")
    g.add_argument("--iree-flag", action="append", default=[], metavar="FLAG", help="extra iree-compile flag")
    g.add_argument("--passes", default="default", help="rewrite pipeline or passes (see `gir passes`)")
    g.add_argument("--no-opt", action="store_true", help="no rewrite passes")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d = s.add_argument_group("several processes (--backend jax; --devices is then per process; docs/cli.md)")
    d.add_argument("--processes", type=_positive_int("--processes"), metavar="P", help="processes in the run")
    d.add_argument("--process-id", type=_count("--process-id"), metavar="I", help="this process's id, 0 to P-1 "
                   "(process 0 serves the coordinator and writes the run folder)")
    d.add_argument("--coordinator", type=_address, metavar="HOST:PORT",
                   help="process 0's host and a free port, the same for every process")
    d.add_argument("--distributed", action="store_true",
                   help="take what the three flags above do not give from the launcher's environment (SLURM, "
                        "Open MPI, Kubernetes, JAX_COORDINATOR_ADDRESS), as jax.distributed.initialize does")


# ---- gir bench -----------------------------------------------------------------------------

def cmd_bench(args: argparse.Namespace) -> int:
    net, config = load_net_file(args.net)
    batch, image, seq = args.batch or config.batch_size, args.image or config.image_size, args.seq or config.seq_len
    check_binding(net.binding(batch=batch, image=image, seq=seq), net.constraints)
    r = bench_train_step(net, config, batch, image, backend=args.backend, target=args.target, chip=args.chip,
                         steps=args.steps, warmup=args.warmup, flags=tuple(args.iree_flag),
                         passes=_pass_spec(args), seq=seq)
    if args.json:
        print(json.dumps(r.to_dict()))
        return 0
    where = f"iree {r.target}" if r.backend == "iree" else "jax"
    size, rate = ((f"T={r.seq}", f"{r.tokens_per_s:.0f} tokens/s") if r.seq is not None
                  else (f"{r.image}x{r.image}", f"{r.images_per_s:.0f} images/s"))
    print(f"gir bench {r.net}: train step at batch {r.batch}, {size} on {where} ({r.ops:,} ops, "
          f"front end {r.front_end_s:.2f} s, compile {r.compile_s:.1f} s)")
    print(f"{r.steps} steps after {r.warmup} warm-up: median {r.median_ms:.1f} ms (min {r.min_ms:.1f}, max "
          f"{r.max_ms:.1f}); {rate}; {r.gflop_per_step:.2f} GFLOP per step, {r.gflops:.1f} GFLOP/s")
    return 0


# ---- gir sample -----------------------------------------------------------------------------

def cmd_sample(args: argparse.Namespace) -> int:
    _, meta = load_checkpoint(args.run)
    net_file = args.net or meta.get("net_file")
    if not net_file:
        raise CliError(f"{args.run}: the checkpoint does not name its net file; give it with --net FILE")
    if not os.path.exists(net_file):
        raise CliError(f"{args.run} was trained from {net_file}, which is not there now; give the net file "
                       f"with --net FILE")
    net, _ = load_net_file(net_file)
    text = sample_run(net, args.run, args.prompt, args.tokens, args.temperature, args.seed, args.target, args.chip)
    print(args.prompt + text)
    return 0


# ---- gir check ------------------------------------------------------------------------------

def cmd_check(args: argparse.Namespace) -> int:
    net, config = load_net_file(args.net)
    progress = (lambda s: print(f"  checking {s}", file=sys.stderr)) if args.verbose else (lambda s: None)
    t0 = time.perf_counter()
    findings = check_net(net, batch=args.batch or 2, image=args.image, seq=args.seq, numeric=not args.no_numeric,
                         label_smoothing=config.label_smoothing, progress=progress)
    if args.f64:
        progress("the whole train step in float64 against jax.grad")
        findings.append(check_whole_net_f64(net, batch=args.batch or 2, image=args.image, seq=args.seq,
                                            label_smoothing=config.label_smoothing, seed=config.seed))
    width = max(len(f.name) for f in findings)
    print(f"gir check {args.net}: backward pass of net {net.name!r} (loss w.r.t. every parameter)")
    for f in findings:
        print(f"  {f.name.ljust(width)}  {'ok  ' if f.ok else 'FAIL'}  {f.summary}")
        for v in f.violations:
            print(f"      {v}")
    failed = sum(not f.ok for f in findings)
    print(f"{len(findings) - failed} of {len(findings)} checks passed in {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


def _out_dir(path: str) -> str:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create output folder {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise CliError(f"output folder {path} is not writable")
    return path


# ---- main -----------------------------------------------------------------------------------

def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gir", description="A compiler front end for training deep networks.")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def net_cmd(name: str, help: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help, description=help)
        s.add_argument("net", help="net file (Python defining `net`, e.g. nets/mobilenet_v2.py)")
        s.add_argument("--batch", type=_positive_int("--batch"), help="bind N (batch size)")
        s.add_argument("--image", type=_positive_int("--image"), help="bind H and W (image size)")
        s.add_argument("--seq", type=_positive_int("--seq"), help="bind T (sequence length of a sequence net)")
        s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        s.set_defaults(command_parser=s)
        return s

    s = net_cmd("show", "print the layer table: path, op, symbolic output shape, params, MACs")
    s.add_argument("--json", action="store_true", help="print the same as one JSON object")
    s.add_argument("--eval", action="store_true", help="show the eval-mode graph (BN from running statistics)")
    s.set_defaults(func=cmd_show)

    s = net_cmd("lower", "write StableHLO modules (forward, eval, train_step), compile them with IREE, draw a graph")
    s.add_argument("-o", "--out", metavar="DIR",
                   help="write forward/eval/train_step .mlir, .json signatures and .vmfb here (default "
                        "lowered/NET; a folder holding another net's modules is refused)")
    s.add_argument("--target", choices=TARGETS, default="cpu", help="IREE target (default cpu)")
    s.add_argument("--chip", help="GPU chip or CPU model (defaults: rocm gfx1100, cuda sm_80, cpu host)")
    s.add_argument("--iree-flag", action="append", default=[], metavar="FLAG",
                   help="extra iree-compile flag, e.g. --iree-flag=--iree-global-opt-use-im2col-for-convs (repeatable)")
    s.add_argument("--no-compile", action="store_true", help="write the .mlir text only")
    s.add_argument("--dump-dot", metavar="FILE", nargs="?", const=True,
                   help="also draw the graph chosen by --dump as Graphviz DOT: to FILE, or bare to NET.dot in the "
                        "output folder; rendered to .svg beside it when Graphviz's dot is on PATH")
    s.add_argument("--dump-graph", metavar="FILE", nargs="?", const=True,
                   help="also write that graph in gir's text form: to FILE, or bare to NET.gir in the output folder")
    s.add_argument("--dump", choices=("forward", "eval", "train_step"), default="forward",
                   help="which graph --dump-dot/--dump-graph write (default forward; train_step shows the "
                        "backward nodes grouped by the forward node whose adjoint made them)")
    s.add_argument("--passes", default="default", metavar="PIPELINE|PASS,...",
                   help="rewrite pipeline or comma-separated passes (default: default; see `gir passes`)")
    s.add_argument("--no-opt", action="store_true", help="run no rewrite passes (same as --passes none)")
    s.add_argument("--trace-rewrites", action="store_true",
                   help="print every rule that fired: pass/rule, node, layer path, file:line")
    s.add_argument("--bf16", action="store_true", help="run matmuls in bf16 (f32 master weights and state)")
    s.add_argument("--bf16-conv", action="store_true", help="also run every convolution in bf16 (implies --bf16)")
    s.set_defaults(func=cmd_lower)

    s = net_cmd("check", "build the backward pass and check its invariants and every adjoint numerically")
    s.add_argument("--no-numeric", action="store_true", help="structural checks only (no float64 comparisons)")
    s.add_argument("--f64", action="store_true",
                   help="also compare the whole train step's gradient, built in float64, with jax.grad (~1e-10)")
    s.add_argument("-v", "--verbose", action="store_true", help="name each node as it is checked numerically")
    s.set_defaults(func=cmd_check)

    s = net_cmd("train", "train the net on built-in or given data with IREE or JAX; checkpoints, resume, logs")
    _add_train_flags(s)
    s.set_defaults(func=cmd_train)

    s = net_cmd("bench", "time the net's compiled train step on random data (median, min, max ms per step)")
    s.add_argument("--backend", choices=BACKENDS, default="iree", help="iree (default) or jax")
    s.add_argument("--target", choices=TARGETS, default="cpu", help="IREE target (default cpu)")
    s.add_argument("--chip", help="GPU chip or CPU model for IREE")
    s.add_argument("--iree-flag", action="append", default=[], metavar="FLAG", help="extra iree-compile flag")
    s.add_argument("--steps", type=_positive_int("--steps"), default=10, help="timed steps (default 10)")
    s.add_argument("--warmup", type=_int("--warmup"), default=2, help="untimed steps first (default 2)")
    s.add_argument("--passes", default="default", help="rewrite pipeline or passes (see `gir passes`)")
    s.add_argument("--no-opt", action="store_true", help="no rewrite passes")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_bench)

    help = "generate text from a sequence net's run: its checkpoint's weights and vocabulary, on IREE"
    s = sub.add_parser("sample", help=help, description=help)
    s.add_argument("run", metavar="RUN_DIR", help="the run folder (`gir train --out`) holding checkpoint.npz")
    s.add_argument("--prompt", default="", help="text to continue (default: start after a newline)")
    s.add_argument("--tokens", type=_positive_int("--tokens"), default=200, help="tokens to generate (default 200)")
    s.add_argument("--temperature", type=_number("--temperature", float, "a number >= 0", 0), default=0.8,
                   help="divide the logits by this before sampling; 0 takes the most likely token (default 0.8)")
    s.add_argument("--seed", type=_int("--seed"), default=0, help="sampling seed: the same seed, the same text")
    s.add_argument("--net", metavar="FILE", help="the net file (default: the one the run was trained from)")
    s.add_argument("--target", choices=TARGETS, default="cpu", help="IREE target (default cpu)")
    s.add_argument("--chip", help="GPU chip or CPU model for IREE")
    s.set_defaults(func=cmd_sample, command_parser=s)

    s = sub.add_parser("passes", help="list the rewrite passes, their rules and the pipelines",
                       description="list the rewrite passes, their rules and the pipelines")
    s.set_defaults(func=cmd_passes, command_parser=s)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    args.argv = argv
    if extra:  # the command's own usage line, which lists its flags
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    code = _run_command(args)
    if code and running():
        leave(code)  # at once: JAX's shutdown barrier would wait for peers that are still stepping
    return code


def _run_command(args: argparse.Namespace) -> int:
    """The command's exit status; a user error is one line on stderr."""
    try:
        return args.func(args)
    except (CliError, *USER_ERRORS) as e:
        if args.debug:
            raise
        print(f"gir: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gir: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `gir show ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
