"""Parameters as data: initialize them, count them, save and load them as `.npz` by layer path."""
from __future__ import annotations

import math
import os
import tempfile
import zipfile
import zlib
from typing import Mapping

import numpy as np

from gir.ir.graph import Graph, Init, Value


class ParamsError(ValueError):
    """A parameter file that cannot be read or does not match the graph."""


def _draw(init: Init, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    kind = init.kind
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    if kind == "ones":
        return np.ones(shape, np.float32)
    if kind == "constant":
        return np.full(shape, init.scale, np.float32)
    if kind == "normal":
        return (rng.standard_normal(shape) * init.scale).astype(np.float32)
    if kind == "he_normal":
        return (rng.standard_normal(shape) * math.sqrt(2.0 / init.fan_in)).astype(np.float32)
    if kind == "uniform":
        return rng.uniform(-init.scale, init.scale, shape).astype(np.float32)
    if kind == "trunc_normal":  # resample beyond two standard deviations
        x = rng.standard_normal(shape)
        bad = np.abs(x) > 2
        while bad.any():
            x[bad] = rng.standard_normal(int(bad.sum()))
            bad = np.abs(x) > 2
        return (x * init.scale).astype(np.float32)
    raise ValueError(f"unknown init kind {kind!r}")


def init_params(graph: Graph, seed: int = 0, roles: tuple[str, ...] = ("param", "state")) -> dict[str, np.ndarray]:
    """Initial values of the graph's parameters and state, by name. Each array's stream depends
    only on the seed and its name, so adding a layer does not change the others."""
    out = {}
    for v in graph.inputs:
        if v.role in roles:
            if v.init is None:
                raise ValueError(f"input {v.name!r} has no init scheme")
            rng = np.random.default_rng([seed, zlib.crc32(v.name.encode())])
            out[v.name] = _draw(v.init, tuple(v.type.shape), rng).astype(v.type.dtype.numpy, copy=False)
    return out


def param_count(graph: Graph, role: str = "param") -> int:
    return sum(math.prod(v.type.shape) for v in graph.inputs_by_role(role))


def save_params(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes `.npz` atomically: a temporary file in the same folder, flushed, then renamed."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_params(path: str | os.PathLike, graph: Graph | None = None,
                roles: tuple[str, ...] = ("param", "state")) -> dict[str, np.ndarray]:
    """Reads `.npz` without unpickling anything; with `graph`, checks names, shapes and dtypes."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ParamsError(f"{path}: no such parameter file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # a bad CRC is a BadZipFile
        raise ParamsError(f"{path}: not a readable .npz parameter file ({e})") from None
    if graph is not None:
        want = {v.name: v for v in graph.inputs if v.role in roles}
        check_params(arrays, want, path)
    return arrays


def check_params(arrays: Mapping[str, np.ndarray], want: Mapping[str, Value], source: str) -> None:
    missing = sorted(set(want) - set(arrays))
    extra = sorted(set(arrays) - set(want))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
        raise ParamsError(f"{source}: parameters do not match the net ({'; '.join(parts)})")
    for name, v in want.items():
        a = arrays[name]
        if tuple(a.shape) != tuple(v.type.shape):
            raise ParamsError(f"{source}: {name} has shape {list(a.shape)}, the net expects "
                              f"{list(v.type.shape)}")
        if a.dtype != np.float32:
            raise ParamsError(f"{source}: {name} has dtype {a.dtype}, the net expects float32")
