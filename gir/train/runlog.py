"""A run's records: trace.jsonl (a header with the full config, then one JSON object per step and
per evaluation, flushed as written), metrics.json (the final numbers) and curves.png."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TRACE = "trace.jsonl"
METRICS = "metrics.json"
PLOT = "curves.png"


class TraceError(Exception):
    """A trace.jsonl that cannot be continued: unreadable, or damaged before its last line."""


def read_trace(path: str | Path) -> list[dict[str, Any]]:
    """The trace's records in order. A last line cut short by a crash (no newline after it) is dropped; any other
    line that is not a JSON object is a TraceError naming the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(f"cannot read the trace {path}: {getattr(e, 'strerror', None) or e}") from None
    out = []
    for number, line in enumerate(text.split("\n")[:-1], 1):   # after the last newline: "" or a cut-short line
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            record, why = None, f"not JSON ({e.msg} at column {e.colno})"
        else:
            why = "not a JSON object"
        if not isinstance(record, dict):
            raise TraceError(f"{path} line {number} is damaged: {why}; remove the damaged lines (or the file) "
                             f"to go on")
        out.append(record)
    return out


class Trace:
    """Appends records to trace.jsonl. On resume it keeps the header and the records up to the
    checkpoint's step, so the file reads as one uninterrupted run."""

    def __init__(self, run_dir: Path, header: Mapping[str, Any] | None = None, resume_step: int | None = None):
        self.path = run_dir / TRACE
        if resume_step is None:
            self._f = open(self.path, "w")  # noqa: SIM115 (kept open for the run; closed by close())
            self.write({"header": True, **(header or {})})
            return
        kept = [r for r in (read_trace(self.path) if self.path.exists() else [])
                if r.get("header") or r.get("step", 0) <= resume_step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp, self.path)
        self._f = open(self.path, "a")  # noqa: SIM115 (kept open for the run; closed by close())

    def write(self, record: Mapping[str, Any]) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def write_metrics(run_dir: Path, metrics: Mapping[str, Any]) -> None:
    tmp = run_dir / (METRICS + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=1) + "\n")
    os.replace(tmp, run_dir / METRICS)


def plot_curves(run_dir: Path, records: list[dict[str, Any]], title: str) -> Path:
    """Training loss per step and, per epoch, validation top-1/top-5 (or bits per token for text), side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if "loss" in r and "step" in r and not r.get("eval")]
    evals = [r for r in records if r.get("eval")]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, label="train loss")
    if evals:
        a.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", label="val loss")
    text = any("bits_per_token" in r for r in evals)
    if text:
        b.plot([r["epoch"] for r in evals], [r["bits_per_token"] for r in evals], "o-", label="val bits per token")
        b.set(xlabel="epoch", ylabel="bits per token", title="validation")
    elif evals:
        b.plot([r["epoch"] for r in evals], [100 * r["top1"] for r in evals], "o-", label="val top-1")
        b.plot([r["epoch"] for r in evals], [100 * r["top5"] for r in evals], "s--", label="val top-5")
    if not text:
        b.set(xlabel="epoch", ylabel="accuracy (%)", ylim=(0, 100), title="validation")
    a.set(xlabel="step", ylabel="loss", title=title)
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = run_dir / PLOT
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
