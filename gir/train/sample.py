"""Text from a trained sequence net: the eval function at batch 1 over a window of the net's context length,
one token at a time, with temperature, from a seeded generator (the same seed gives the same text)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from gir.nn.net import Net
from gir.rewrite import pipeline_for_backend
from gir.train.backend import IreeBackend
from gir.train.checkpoint import CheckpointError, check_compatible, checkpoint_path, load_checkpoint
from gir.train.config import TrainConfig
from gir.train.loop import checkpoint_arrays, lower_eval
from gir.train.text import decode, encode


class SampleError(Exception):
    """A run that cannot be sampled from: not a sequence net's run, or a checkpoint without its vocabulary."""


def next_token(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """A token drawn from softmax(logits / temperature); temperature 0 takes the most likely one."""
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


def generate(logits_of: Callable[[np.ndarray], np.ndarray], prompt: np.ndarray, tokens: int, context: int,
             temperature: float, seed: int) -> np.ndarray:
    """`tokens` ids after `prompt`. Each comes from the logits at the last real position of a window of the
    last `context` ids, padded on the right (causal attention: padding after a position does not change it)."""
    rng = np.random.default_rng(seed)
    ids = list(int(i) for i in prompt)
    for _ in range(tokens):
        window = ids[-context:]
        x = np.zeros((1, context), np.int32)
        x[0, :len(window)] = window
        ids.append(next_token(logits_of(x)[0, len(window) - 1], temperature, rng))
    return np.array(ids[len(prompt):], np.int32)


def sample_run(net: Net, run_dir: str | Path, prompt: str, tokens: int, temperature: float = 1.0, seed: int = 0,
               target: str = "cpu", chip: str | None = None) -> str:
    """`tokens` characters (or bytes) that `net`, with the weights of run_dir's checkpoint, writes after `prompt`."""
    arrays, meta = load_checkpoint(run_dir)
    where = str(checkpoint_path(run_dir))
    if meta["net"] != net.name:
        raise CheckpointError(f"{where} is a checkpoint of net {meta['net']!r}, not {net.name!r}")
    if "vocab" not in meta:
        raise SampleError(f"{where} holds no vocabulary: it is not the run of a sequence net on text")
    vocab, unit = tuple(meta["vocab"]), meta["unit"]
    config = TrainConfig(**meta["config"])
    context = int(meta["context"])
    passes = pipeline_for_backend("default", "iree", target)
    evaluate = lower_eval(net, config, net.binding(batch=1, seq=context), passes)
    wanted = checkpoint_arrays(evaluate.primitive)   # the eval function's share of what the checkpoint holds
    check_compatible({k: arrays[k] for k in wanted if k in arrays}, wanted, where)
    backend = IreeBackend(None, evaluate, target, chip)
    backend.load(arrays)
    start = encode(prompt, vocab, unit, where) if prompt else np.array([vocab.index("\n") if "\n" in vocab else 0])
    in_vocabulary = lambda x: backend.logits(x)[..., :len(vocab)]   # the net's spare rows are no token of this text
    return decode(generate(in_vocabulary, start, tokens, context, temperature, seed), vocab, unit)
