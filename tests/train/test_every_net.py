"""Every net in nets/ trains on the default path: its own recipe (batch reduced to BATCH for time, image
size kept), the train step lowered with the default IREE pipeline exactly as `gir train` builds it,
compiled for the CPU and run for a few steps beside the JAX backend (its own default pipeline, XLA). A
new net file is picked up without editing this.

The two run in lockstep: before each step IREE is handed JAX's parameters and optimizer state, so every
step is compared from the same point (momentum and running statistics included) and a difference cannot
compound. Left to run apart, deep BN nets at init separate within three steps whatever the compiler
(resnet50 at batch 8, 32x32: losses 10% apart at step 3, IREE and JAX each 3.5% (median) from a float64
evaluation of the same step): their f32 gradients at init cross ReLU kinks and normalize a few values
per channel at the smallest maps, so rounding alone moves them by percents."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gir.netfile import load_net_file
from gir.nn.params import init_params
from gir.rewrite import pipeline_for_backend
from gir.train.backend import IreeBackend, JaxBackend
from gir.train.schedule import learning_rate
from gir.train.step import lower_train_step

NETS = sorted((Path(__file__).resolve().parents[2] / "nets").glob("*.py"))
BATCH = 8             # each net's own batch, up to this (the image size stays the net's own)
STEPS = 3
STEPS_PER_EPOCH = 10  # the schedule's epoch length: nets with warmup take its first, growing steps
LOSS_RTOL = 1e-4      # the loss is the forward pass at the step's parameters
UPDATE_RTOL = 1e-1    # |update_iree - update_jax| / |update_jax| over all parameters; measured up to 2.7%
                      # (resnet50, mobilenet_v2: the rounding sensitivity above), 1e-4 or less for the rest


@pytest.mark.parametrize("path", NETS, ids=lambda p: p.stem)
def test_net_trains_on_the_default_iree_path_as_on_jax(path: Path):
    net, config = load_net_file(str(path))
    config = config.replace(batch_size=min(config.batch_size, BATCH))
    batch, image = config.batch_size, config.image_size if any(str(s) == "H" for s in net.symbols) else None
    iree = jax = None
    for backend in ("iree", "jax"):
        step = lower_train_step(net, config, batch=batch, image=image,
                                passes=pipeline_for_backend("default", backend))
        if backend == "iree":
            iree = IreeBackend(step, None, "cpu")
        else:
            jax = JaxBackend(step, None)
    params = [v.name for v in step.primitive.inputs if v.role == "param"]
    jax.load(init_params(step.primitive, config.seed))
    shape = tuple(int(d) for d in step.primitive.input("images").type.shape)
    rng = np.random.default_rng(0)
    for t in range(1, STEPS + 1):
        start = jax.values()
        iree.load(start)
        images = rng.standard_normal(shape).astype(np.float32)
        labels = rng.integers(0, net.num_classes, batch).astype(np.int32)
        lr = learning_rate(config, t, STEPS_PER_EPOCH)
        got, want = iree.step(images, labels, lr, t).loss, jax.step(images, labels, lr, t).loss
        assert np.isfinite(got) and got == pytest.approx(want, rel=LOSS_RTOL), f"{path.stem} step {t}: {got} {want}"
        after = {"iree": iree.values(), "jax": jax.values()}
        update = {k: np.concatenate([(v[p] - start[p]).ravel() for p in params]) for k, v in after.items()}
        assert np.linalg.norm(update["jax"]) > 0, f"{path.stem} step {t}: no parameter changed"
        diff = float(np.linalg.norm(update["iree"] - update["jax"]) / np.linalg.norm(update["jax"]))
        assert diff < UPDATE_RTOL, f"{path.stem} step {t}: the updates differ by {diff:.1e} of their norm"
