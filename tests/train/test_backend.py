"""The IREE backend on the CPU keeps its train step's transient storage across steps."""
from pathlib import Path

import numpy as np

from gir.netfile import load_net_file
from gir.nn.params import init_params
from gir.train.backend import IreeBackend
from gir.train.step import lower_train_step

NET = str(Path(__file__).resolve().parents[2] / "nets" / "digits_cnn.py")


def test_cpu_train_step_takes_caller_kept_transient_storage():
    net, cfg = load_net_file(NET)
    backend = IreeBackend(lower_train_step(net, cfg, batch=8, image=8), None)
    backend.load(init_params(backend.train, 0))
    storage = backend.session.transient_storage("train_step")
    assert storage is not None and storage.byte_length() > 0
    rng = np.random.default_rng(0)
    images, labels = rng.standard_normal((8, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32)
    losses = [backend.step(images, labels, 0.01, s).loss for s in (1, 2)]
    assert all(np.isfinite(losses)) and losses[1] < losses[0]
    assert backend.session.transient_storage("train_step") is storage
