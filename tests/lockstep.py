"""Training a net on IREE (the default pipeline, as `gir train` builds it) and on the JAX backend in
lockstep, step by step from the same parameters and optimizer state; shared by the per-net test
(tests/train/test_every_net.py) and the random-net fuzzer (tests/train/test_fuzz_nets.py).

Before each step IREE is handed JAX's parameters and state, so every step is compared from the same
point (momentum and running statistics included) and a difference cannot compound. Left to run apart,
deep BN nets at init separate within three steps whatever the compiler (resnet50 at batch 8, 32x32:
losses 10% apart at step 3, IREE and JAX each 3.5% (median) from a float64 evaluation of the same
step): their f32 gradients at init cross ReLU kinks and normalize a few values per channel at the
smallest maps, so rounding alone moves them by percents."""
from __future__ import annotations

import numpy as np

from gir.bench import random_batch
from gir.nn.net import Net
from gir.nn.params import init_params
from gir.rewrite import pipeline_for_backend
from gir.train.backend import IreeBackend, JaxBackend
from gir.train.config import TrainConfig
from gir.train.schedule import learning_rate
from gir.train.step import lower_train_step

LOSS_RTOL = 1e-4      # the loss is the forward pass at the step's parameters
UPDATE_RTOL = 1e-1    # |update_iree - update_jax| / |update_jax| over all parameters; measured up to 2.7%
                      # (resnet50, mobilenet_v2: the rounding sensitivity above), 1e-4 or less for the rest
STEPS_PER_EPOCH = 10  # the schedule's epoch length: nets with warmup take its first, growing steps


def train_in_lockstep(net: Net, config: TrainConfig, batch: int, image: int | None, steps: int,
                      what: str, target: str = "cpu", seq: int | None = None) -> None:
    """`steps` train steps on random data, IREE (on `target`) beside JAX; asserts each step's loss and parameter
    update agree (`what` names the net in messages). `seq` binds a token net's T (its own default when None)."""
    runners = {}
    for backend in ("iree", "jax"):
        step = lower_train_step(net, config, batch=batch, image=image, seq=seq,
                                passes=pipeline_for_backend("default", backend, target))
        runners[backend] = IreeBackend(step, None, target) if backend == "iree" else JaxBackend(step, None)
    iree, jax = runners["iree"], runners["jax"]
    params = [v.name for v in step.primitive.inputs if v.role == "param"]
    jax.load(init_params(step.primitive, config.seed))
    rng = np.random.default_rng(0)
    for t in range(1, steps + 1):
        start = jax.values()
        iree.load(start)
        data, labels = random_batch(step.primitive, net.num_classes, rng)
        lr = learning_rate(config, t, STEPS_PER_EPOCH)
        got, want = iree.step(data, labels, lr, t).loss, jax.step(data, labels, lr, t).loss
        assert np.isfinite(got) and abs(got - want) <= LOSS_RTOL * abs(want), f"{what} step {t}: loss {got} vs {want}"
        after = {"iree": iree.values(), "jax": jax.values()}
        update = {k: np.concatenate([(v[p] - start[p]).ravel() for p in params]) for k, v in after.items()}
        assert np.linalg.norm(update["jax"]) > 0, f"{what} step {t}: no parameter changed"
        diff = float(np.linalg.norm(update["iree"] - update["jax"]) / np.linalg.norm(update["jax"]))
        assert diff < UPDATE_RTOL, f"{what} step {t}: the updates differ by {diff:.1e} of their norm"
