"""Checkpoints: parameters, optimizer state and BN statistics plus a JSON record (step, epoch,
data order, RNG seed, config, net), in one .npz written atomically (temporary file, fsync,
rename), so a crash, a full disk or Ctrl-C never leaves a half-written checkpoint in its place.

Loading never runs code: arrays are read with allow_pickle=False and the record is JSON text.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT = "checkpoint.npz"
META_KEY = "__gir_checkpoint__"
FORMAT = 1
TEMP_PREFIX, TEMP_SUFFIX = ".checkpoint-", ".npz.tmp"


RECORD_FIELDS: tuple[tuple[str, type | tuple[type, ...], Any], ...] = (
    ("net", str, bool), ("step", int, lambda v: v >= 0), ("elapsed", (int, float), lambda v: v >= 0),
    ("steps_per_epoch", int, lambda v: v > 0), ("data", str, bool), ("seed", int, lambda v: True),
    ("config", dict, lambda v: True))
"""What resume reads from a checkpoint's record: (field, type, check of the value)."""


class CheckpointError(Exception):
    """A checkpoint that cannot be written or read, or that belongs to another net."""


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT


def save_checkpoint(run_dir: str | Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Writes run_dir/checkpoint.npz atomically; the previous checkpoint stays intact on any failure."""
    path = checkpoint_path(run_dir)
    record = json.dumps({"format": FORMAT, **meta})
    tmp: str | None = None
    try:
        for stale in path.parent.glob(TEMP_PREFIX + "*" + TEMP_SUFFIX):  # left by a write that was killed
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{META_KEY: np.array(record)}, **{k: np.asarray(v) for k, v in arrays.items()})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}; the previous checkpoint "
                                  f"(if any) is kept") from None
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Makes the rename durable (best effort: not every file system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(run_dir: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and the JSON record of run_dir's checkpoint."""
    path = checkpoint_path(run_dir)
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"cannot resume: {run_dir} is not a folder")
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {run_dir} has no checkpoint ({CHECKPOINT}); was the run stopped "
                              f"before its first checkpoint?")
    try:
        with np.load(path, allow_pickle=False) as z:
            if META_KEY not in z.files:
                raise CheckpointError(f"{path} is not a gir checkpoint (no {META_KEY} record)")
            meta = json.loads(str(z[META_KEY]))
            arrays = {k: z[k] for k in z.files if k != META_KEY}
    except CheckpointError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError, EOFError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the checkpoint's record is damaged (not a JSON object)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {meta.get('format')!r}; this gir reads {FORMAT}")
    for key, kind, ok in RECORD_FIELDS:
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or not ok(value):
            raise CheckpointError(f"{path}: the checkpoint's record is damaged: {key} is {value!r}")
    return arrays, meta


def check_compatible(arrays: Mapping[str, np.ndarray], expected: Mapping[str, tuple[tuple[int, ...], str]],
                     where: str) -> None:
    """Every expected array present with its shape and dtype, and nothing else: else the checkpoint is
    from another net (or another configuration of it)."""
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    wrong = [f"{k} {list(arrays[k].shape)} {arrays[k].dtype} (want {list(shape)} {dtype})"
             for k, (shape, dtype) in expected.items()
             if k in arrays and (tuple(arrays[k].shape) != tuple(shape) or str(arrays[k].dtype) != dtype)]
    if missing or extra or wrong:
        parts = ([f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"] if missing else []) + (
            [f"unexpected {', '.join(extra[:4])}{' ...' if len(extra) > 4 else ''}"] if extra else []) + (
            [f"wrong shape {', '.join(wrong[:3])}"] if wrong else [])
        raise CheckpointError(f"{where} does not match this net and optimizer: {'; '.join(parts)}")
