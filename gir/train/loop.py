"""The training loop: data in a seeded order, per-step learning rate into the compiled step,
evaluation with the running BN statistics, a JSONL trace, checkpoints, exact resume.

Everything random is a function of (seed, epoch) for the data order and (seed, step) for the
augmentation, so a run resumed from a checkpoint at step s sees exactly the batches the
uninterrupted run saw after step s.
"""
from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import attrs
import numpy as np

from gir.ir.graph import Graph
from gir.lower.iree_runtime import device_config
from gir.lower.pipeline import LoweredModule, lower_graph
from gir.messages import warn
from gir.nn.net import Net
from gir.nn.params import init_params
from gir.rewrite import passes_for, pipeline_for_backend
from gir.shapes.specialize import bind_dim
from gir.train.augment import Part, default_augment
from gir.train.backend import BackendError, IreeBackend, JaxBackend, PeerLost
from gir.train.checkpoint import check_compatible, checkpoint_path, load_checkpoint, save_checkpoint
from gir.train.config import TrainConfig, recipe_warnings
from gir.train.data import Dataset, Split, load_dataset
from gir.train.distributed import Cluster, start
from gir.train.pipeline import BatchMaker, Loader, default_workers
from gir.train.runlog import Trace, plot_curves, read_trace, write_metrics
from gir.train.schedule import learning_rate
from gir.train.step import lower_train_step
from gir.train.text import TextData, TokenBatchMaker, TokenSplit, is_text_source, load_text

BACKENDS = ("iree", "jax")


class TrainError(Exception):
    """A run that cannot start: a net without square NCHW input, a batch larger than the data, an
    output folder that cannot be written."""


class TrainingStopped(Exception):
    """The run stopped before its last epoch; the message says why and where the checkpoint is."""


class Interrupted(TrainingStopped):
    """SIGINT or SIGTERM: stopped cleanly after writing a checkpoint."""


class NonFiniteLoss(TrainingStopped):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@attrs.frozen(kw_only=True)
class RunOptions:
    """Where and how to train (the recipe itself is the TrainConfig)."""

    data: str = "digits"
    out: Path
    backend: str = "iree"
    target: str = "cpu"
    chip: str | None = None
    devices: int = 1
    passes: str = "default"
    iree_flags: tuple[str, ...] = ()
    progress: bool = True
    workers: int | None = None  # data worker processes; None: default_workers
    cluster: Cluster | None = None  # one of several processes (--backend jax only); None: a one-process run


def _input_geometry(net: Net, config: TrainConfig) -> tuple[int, int]:
    """(channels, image size) of the net's NCHW input at the config's image size."""
    shape = net.input_type.shape
    if len(shape) != 4:
        raise TrainError(f"gir train needs a net whose input is NCHW images, {net.name!r} takes {net.input_type}")
    binding = net.binding(batch=config.batch_size, image=config.image_size)
    h, w = (int(d) if isinstance(d, int) else int(d.xreplace(binding)) for d in shape[2:])
    if h != w:
        raise TrainError(f"gir train feeds square images; {net.name!r} takes {h}x{w}")
    return int(shape[1]), h


def activation_bytes(net: Net, batch: int, image: int | None, seq: int | None = None) -> int:
    """Bytes of every value the forward pass computes at this batch and image size (or sequence length): what
    the backward pass keeps alive, a lower bound on a train step's memory (known before anything is compiled or
    allocated)."""
    graph = net.build(mode="train")
    binding = net.binding(batch=batch, image=image, seq=seq)
    return sum(int(bind_dim(math.prod(v.type.shape), binding)) * v.type.dtype.numpy.itemsize
               for node in graph.nodes for v in node.outputs)


def _check_memory(net: Net, config: TrainConfig, channels: int, image: int | None, batches_in_flight: int) -> None:
    """Refuse a run whose activations and batches in flight cannot fit in this machine's memory, naming the flags
    (for a sequence net, `image` is None and a batch is int32 tokens and labels)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    b = config.batch_size
    per_example = 8 * config.seq_len if image is None else channels * image * image * (1 + net.dtype.numpy.itemsize)
    batches = batches_in_flight * b * per_example   # images: uint8, then as fed
    need = activation_bytes(net, b, image, config.seq_len if image is None else None) + batches
    if need > total:
        gib = 2.0 ** 30
        size = f"--seq {config.seq_len}" if image is None else f"--image {image}"
        raise TrainError(f"{size} with --batch {b}: a train step of {net.name} needs at least "
                         f"{need / gib:,.1f} GiB ({(need - batches) / gib:,.1f} GiB of activations, "
                         f"{batches / gib:,.1f} GiB of batches in flight), more than this machine's "
                         f"{total / gib:.1f} GiB; lower {size.split()[0]} or --batch")


def compile_modules(net: Net, config: TrainConfig, passes: str, backend: str = "iree",
                    target: str = "cpu") -> tuple[LoweredModule, LoweredModule]:
    """The train step and the eval function at the config's batch and image size (or sequence length), rewritten by
    `passes` as the backend and target run them (`default` is `default_jax` on JAX, `default_gpu` on a GPU)."""
    passes = pipeline_for_backend(passes, backend, target)
    binding = net.binding(batch=config.batch_size, image=config.image_size, seq=config.seq_len)
    train = lower_train_step(net, config, batch=config.batch_size, image=config.image_size, passes=passes,
                             seq=config.seq_len)
    return train, lower_eval(net, config, binding, passes)


def lower_eval(net: Net, config: TrainConfig, binding: dict, passes: str) -> LoweredModule:
    """The eval function (running BN statistics) at `binding`, with the pipeline `passes` and the config's bf16
    policy, as the train step has them."""
    names = passes_for(passes, bf16=config.bf16, bf16_conv=config.bf16_conv)
    return lower_graph(net.build(mode="eval"), binding, "eval", net.constraints, passes=names)


def checkpoint_arrays(train_graph: Graph) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of what a checkpoint of this train step holds: parameters and state."""
    return {v.name: (tuple(int(d) for d in v.type.shape), v.type.dtype.numpy_name)
            for v in train_graph.inputs if v.role in ("param", "state")}


def top_k(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """The fraction of rows whose label is among the k largest logits."""
    k = min(k, logits.shape[1])
    best = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(best == labels[:, None], axis=1)))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(labels)), labels]))


class _StopFlag:
    """SIGINT/SIGTERM set a flag the loop checks between steps; a second signal aborts at once."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Self:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    """One run: dataset, compiled modules, backend, and the loop state (step, elapsed time)."""

    def __init__(self, net: Net, config: TrainConfig, options: RunOptions, net_file: str = "",
                 log: Callable[[str], None] = print, main: bool = True):
        self.net, self.config, self.options, self.log, self.main = net, config, options, log, main
        self.net_file = net_file
        self.sequence = net.input_name == "tokens"
        if self.sequence:
            channels, self.image = 0, None
            self.data: Dataset | TextData = _open_text(net, config, options.data)
            self.augment = None
            self.workers = options.workers or 0   # slicing windows out of memory: a thread keeps up
        else:
            if is_text_source(options.data):
                raise TrainError(f"--data {options.data} is text; {net.name} reads images")
            channels, self.image = _input_geometry(net, config)
            self.data = load_dataset(options.data, self.image, channels, net.num_classes)
            self.augment = (attrs.evolve(default_augment(self.image), flip=self.data.mirror_safe)
                            if config.augment else None)
            self.workers = default_workers(self.data, self.augment) if options.workers is None else options.workers
        net_classes = None if self.sequence else net.num_classes   # text may use fewer tokens than the net embeds
        for line in recipe_warnings(config, net_classes, self.data.classes, options.data):
            warn(line)
        self.steps_per_epoch = len(self.data.train) // config.batch_size
        if self.steps_per_epoch < 1:
            raise TrainError(f"batch {config.batch_size} is larger than the {len(self.data.train)} training "
                             f"{'windows' if self.sequence else 'images'} of {options.data}")
        self.total_steps = self.steps_per_epoch * config.epochs
        self.unit, self.per_item = ("tokens", config.seq_len) if self.sequence else ("images", 1)
        _check_memory(net, config, channels, self.image, Loader.batches_in_flight(self.workers))
        if options.backend == "iree":
            device_config(options.target)   # fail before compiling when the device is missing
        t0 = time.perf_counter()
        train, evaluate = compile_modules(net, config, options.passes, options.backend, options.target)
        self.train_graph = train.primitive
        if options.backend == "iree":
            self.backend: IreeBackend | JaxBackend = IreeBackend(train, evaluate, options.target, options.chip,
                                                                 options.iree_flags)
        elif options.backend == "jax":
            self.backend = JaxBackend(train, evaluate, options.devices)
        else:
            raise BackendError(f"unknown backend {options.backend!r}; choose one of {', '.join(BACKENDS)}")
        rows = self.backend.rows
        part = Part(rows.start, rows.stop, config.batch_size)
        self.batches: BatchMaker | TokenBatchMaker = (
            TokenBatchMaker(self.data, config.batch_size, config.seed, part) if self.sequence
            else BatchMaker(self.data, config.batch_size, config.seed, self.augment, part))
        self.compile_s = time.perf_counter() - t0
        self.step = 0
        self.elapsed = 0.0

    # ---- state ------------------------------------------------------------------------------

    def start_fresh(self) -> None:
        self.backend.load(init_params(self.train_graph, self.config.seed))

    def resume(self) -> dict[str, Any]:
        arrays, meta = load_checkpoint(self.options.out)
        where = str(checkpoint_path(self.options.out))
        if meta.get("net") != self.net.name:
            raise TrainError(f"{where} is a checkpoint of net {meta.get('net')!r}, not {self.net.name!r}")
        check_compatible(arrays, checkpoint_arrays(self.train_graph), where)
        self.backend.load(arrays)
        self.step, self.elapsed = int(meta["step"]), float(meta["elapsed"])
        return meta

    def checkpoint(self) -> Path:
        """Writes the checkpoint (process 0 only; every process holds the same replicated values) and says where."""
        if not self.main:
            return checkpoint_path(self.options.out)
        meta = {"net": self.net.name, "net_file": self.net_file, "step": self.step, "elapsed": self.elapsed,
                "epoch": self.step // self.steps_per_epoch, "steps_per_epoch": self.steps_per_epoch,
                "data": self.options.data, "data_order": "permutation(default_rng([seed, epoch]))",
                "augment_rng": "default_rng([seed, 1, step])", "seed": self.config.seed,
                "config": self.config.to_dict()}
        if self.sequence:   # what `gir sample` needs to turn ids back into text
            meta.update(vocab=list(self.data.vocab), unit=self.data.unit, context=self.config.seq_len,
                        data_order="windows at default_rng([seed, 2, step]).integers(0, n - T, batch)")
        return save_checkpoint(self.options.out, self.backend.values(), meta)

    # ---- batches ----------------------------------------------------------------------------

    def evaluate(self, loader: Loader) -> dict[str, float]:
        """Top-1, top-5 and loss on the validation split, in batches of the compiled size; for a sequence net per
        token (the next one), with the loss also in bits per token."""
        z, labels = [], []
        for inputs, y, _ in loader.val():
            z.append(self.backend.logits(self.data.normalize(inputs))[:len(y)])
            labels.append(y)
        logits, truth = np.concatenate(z), np.concatenate(labels).astype(np.int64)
        logits, truth = logits.reshape(-1, logits.shape[-1]), truth.reshape(-1)
        out = {"top1": top_k(logits, truth, 1), "top5": top_k(logits, truth, 5),
               "val_loss": cross_entropy(logits, truth)}
        if self.sequence:
            out["bits_per_token"] = out["val_loss"] / math.log(2)
        return out

    # ---- the loop ---------------------------------------------------------------------------

    def run(self, trace: Trace | None) -> dict[str, Any]:
        """Steps to the end (or to a signal), evaluating and checkpointing as the config says; records go to
        `trace` (None: a process other than 0, which writes nothing)."""
        cfg = self.config
        spe = self.steps_per_epoch
        last = {"loss": math.nan}
        evals: list[dict[str, Any]] = []
        bar = _progress(self.total_steps, self.step, self.options.progress and self.main)
        rate = f"{self.unit[:3]}_s"
        made_per_s = lambda seconds_per_batch: loader.images_per_s(seconds_per_batch) * self.per_item
        seen, ran, waited, made = 0, 0, 0.0, 0.0  # waited: after the first batch, which also starts the workers
        t_run = t_first = time.perf_counter()
        with _StopFlag() as stop, Loader(self.batches, self.workers) as loader:
            batches = loader.train(self.step + 1, self.total_steps)
            while self.step < self.total_steps:
                t0 = time.perf_counter()
                step = self.step + 1
                lr = learning_rate(cfg, step, spe)
                images, labels, make_s = next(batches)
                wait = time.perf_counter() - t0
                res = self.backend.step(self.data.normalize(images), labels, lr, step)
                dt = time.perf_counter() - t0
                if not math.isfinite(res.loss):
                    raise NonFiniteLoss(self._non_finite(step, res.loss))
                self.step, self.elapsed = step, self.elapsed + dt
                seen, ran, made = seen + cfg.batch_size * self.per_item, ran + 1, made + make_s  # global
                if ran == 1:
                    t_first = time.perf_counter()
                else:
                    waited += wait
                epoch = (step - 1) // spe + 1
                rec = {"step": step, "epoch": epoch, "loss": res.loss, "lr": lr, "time": round(self.elapsed, 4),
                       "data_wait": round(wait, 5), f"input_{self.unit}_per_s": round(made_per_s(make_s), 1)}
                if res.grad_norm is not None:
                    rec["grad_norm"] = res.grad_norm
                if trace is not None:
                    trace.write(rec)
                last = rec
                bar.update(1)
                run_s = time.perf_counter() - t_run
                bar.set_postfix(loss=f"{res.loss:.4f}", lr=f"{lr:.2e}", **{rate: f"{seen / run_s:.0f}"},
                                **{f"input_{rate}": f"{made_per_s(made / ran):.0f}"},
                                data_wait=f"{100 * _share(waited, t_first):.0f}%", refresh=False)
                end_of_epoch = step % spe == 0
                if end_of_epoch and (epoch % cfg.eval_every == 0 or step == self.total_steps):
                    ev = {"eval": True, "epoch": epoch, "step": step, **self.evaluate(loader)}
                    if trace is not None:
                        trace.write(ev)
                    evals.append(ev)
                    line = f"epoch {epoch}: {_eval_line(ev, self.data)}"
                    (bar.write if self.options.progress and self.main else self.log)(line)
                if end_of_epoch and (epoch % cfg.checkpoint_every == 0 or step == self.total_steps):
                    self.checkpoint()
                if stop.signal is not None:
                    path = self.checkpoint()
                    bar.close()
                    raise Interrupted(f"{stop.signal}: stopped after step {step} of {self.total_steps}; checkpoint "
                                      f"{path}; continue with --resume {self.options.out}")
        bar.close()
        run_s = time.perf_counter() - t_run
        return {"last": last, "evals": evals, f"{self.unit}_per_s": seen / run_s if run_s > 0 else 0.0,
                f"input_{self.unit}_per_s": made_per_s(made / ran) if ran else 0.0,
                "data_wait_share": _share(waited, t_first)}

    def _non_finite(self, step: int, loss: float) -> str:
        ckpt = checkpoint_path(self.options.out)
        kept = (f"the last good checkpoint {ckpt} (step {load_checkpoint(self.options.out)[1]['step']}) is kept"
                if ckpt.exists() else "no checkpoint was written before it")
        return (f"loss is {loss} at step {step} (epoch {(step - 1) // self.steps_per_epoch + 1}); stopped; {kept}. "
                f"Try a lower --lr or --clip-norm")


def default_data(net: Net) -> str:
    """The built-in data a net trains on without --data: the shakespeare corpus for a sequence net, else digits."""
    return "shakespeare" if net.input_name == "tokens" else "digits"


def _open_text(net: Net, config: TrainConfig, spec: str) -> TextData:
    """A sequence net's text: the built-in corpus or a text/bytes file, in windows of the config's length."""
    if not is_text_source(spec):
        raise TrainError(f"--data {spec}: {net.name} reads text (its input is token ids); use shakespeare, "
                         f"text:FILE or bytes:FILE")
    return load_text(spec, config.seq_len, net.num_classes)


def _count(split: Split | TokenSplit) -> int:
    """A split's images, or its tokens."""
    return len(split.tokens) if isinstance(split, TokenSplit) else len(split)


def _data_line(trainer: Trainer) -> str:
    """What the run reads, for its first line."""
    data = trainer.data
    if trainer.sequence:
        return (f"{_count(data.train):,} train / {_count(data.val):,} val {data.unit}s, vocabulary "
                f"{data.classes}, windows of {trainer.config.seq_len}")
    return (f"{len(data.train)} train / {len(data.val)} val images, {data.classes} classes, "
            f"{trainer.image}x{trainer.image}")


def _eval_line(ev: dict[str, Any], data: Dataset | TextData) -> str:
    if isinstance(data, TextData):
        return (f"val {ev['bits_per_token']:.3f} bits/{data.unit}  next-{data.unit} top-1 {100 * ev['top1']:.2f}%  "
                f"val loss {ev['val_loss']:.4f}")
    return f"val top-1 {100 * ev['top1']:.2f}%  top-5 {100 * ev['top5']:.2f}%  val loss {ev['val_loss']:.4f}"


def _share(waited: float, since: float) -> float:
    """The fraction of the time since `since` spent waiting for data."""
    elapsed = time.perf_counter() - since
    return waited / elapsed if elapsed > 0 else 0.0


def _finite_or_none(x: float) -> float | None:
    """JSON has no NaN: an unknown number is null."""
    return x if math.isfinite(x) else None


def _progress(total: int, done: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=done, unit="step", disable=not enabled, dynamic_ncols=True, leave=False)


def train(net: Net, config: TrainConfig, options: RunOptions, resume: bool = False, net_file: str = "",
          log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Trains `net` with `config`; writes trace.jsonl, checkpoint.npz, metrics.json and curves.png
    into options.out and returns the metrics. In a multi-process run every process trains; process 0 alone
    writes the run folder and returns the metrics, the others return None."""
    process, processes = start(options.cluster) if options.cluster is not None else (0, 1)
    if process:
        _follow(Trainer(net, config, options, net_file, lambda line: None, main=False), resume)
        return None
    out = Path(options.out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainError(f"cannot create the run folder {out}: {e.strerror}") from None
    if not os.access(out, os.W_OK):
        raise TrainError(f"the run folder {out} is not writable")
    try:
        trainer = Trainer(net, config, options, net_file, log)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()   # nothing was written: leave no empty folder behind
        raise
    data, unit = trainer.data, trainer.unit
    log(f"gir train {net.name}: {options.data} ({_data_line(trainer)}), batch {config.batch_size}, "
        f"{trainer.steps_per_epoch} steps/epoch x {config.epochs} epochs on {options.backend}"
        f"{'' if options.backend == 'jax' else ' ' + options.target}"
        f"{_devices(options.devices, processes)}; modules ready in {trainer.compile_s:.1f} s")
    if resume:
        trainer.resume()
        log(f"resumed {out} at step {trainer.step} of {trainer.total_steps}")
        trace = Trace(out, resume_step=trainer.step)
    else:
        trainer.start_fresh()
        header = {"net": net.name, "net_file": net_file, "data": options.data, "backend": options.backend,
                  "target": options.target, "devices": options.devices, "processes": processes,
                  "passes": options.passes,
                  "image_size": trainer.image, "steps_per_epoch": trainer.steps_per_epoch,
                  f"train_{unit}": _count(data.train), f"val_{unit}": _count(data.val),
                  "classes": data.classes, "config": config.to_dict()}
        trace = Trace(out, header)
    try:
        result = _run(trainer, trace)
    finally:
        trace.close()
    records = read_trace(out / "trace.jsonl")
    evals = [r for r in records if r.get("eval")]
    metrics = {"net": net.name, "data": options.data, "backend": options.backend, "steps": trainer.step,
               "epochs": config.epochs, "final_loss": _finite_or_none(result["last"]["loss"]),
               "val_top1": evals[-1]["top1"] if evals else None, "val_top5": evals[-1]["top5"] if evals else None,
               "best_val_top1": max((r["top1"] for r in evals), default=None),
               **({f"val_bits_per_{data.unit}": evals[-1]["bits_per_token"] if evals else None}
                  if trainer.sequence else {}),
               "train_time_s": round(trainer.elapsed, 2), "compile_time_s": round(trainer.compile_s, 2),
               f"{unit}_per_s": round(result[f"{unit}_per_s"], 1),
               f"input_{unit}_per_s": round(result[f"input_{unit}_per_s"], 1),
               "data_wait_share": round(result["data_wait_share"], 4), "workers": trainer.workers}
    write_metrics(out, metrics)
    plot_curves(out, records, f"{net.name} on {options.data}")
    return metrics


def _follow(trainer: Trainer, resume: bool) -> None:
    """A process other than 0: the same steps on its rows of each batch, nothing written."""
    if resume:
        trainer.resume()
    else:
        trainer.start_fresh()
    _run(trainer, None)


def _run(trainer: Trainer, trace: Trace | None) -> dict[str, Any]:
    """Trainer.run; a lost peer's message says how to go on."""
    try:
        return trainer.run(trace)
    except PeerLost as e:
        raise PeerLost(f"{e}; stopped. Start every process again with --resume {trainer.options.out} to continue "
                       f"from the last checkpoint process 0 wrote") from None


def _devices(per_process: int, processes: int) -> str:
    """How the log line names the devices: " x4 devices (2 processes x 2)", " x4 devices", or nothing for one."""
    total = per_process * processes
    return "" if total == 1 else f" x{total} devices" + (f" ({processes} processes x {per_process})"
                                                         if processes > 1 else "")
