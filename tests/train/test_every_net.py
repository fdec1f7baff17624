"""Every net in nets/ trains on the default path: its own recipe (batch reduced to BATCH for time, image
size kept), the train step lowered with the default IREE pipeline exactly as `gir train` builds it,
compiled for the CPU and run for a few steps in lockstep with the JAX backend (tests/lockstep.py). A new
net file is picked up without editing this."""
from __future__ import annotations

from pathlib import Path

import pytest
from lockstep import train_in_lockstep

from gir.netfile import load_net_file

NETS = sorted((Path(__file__).resolve().parents[2] / "nets").glob("*.py"))
BATCH = 8   # each net's own batch, up to this (the image size stays the net's own)
STEPS = 3


@pytest.mark.parametrize("path", NETS, ids=lambda p: p.stem)
def test_net_trains_on_the_default_iree_path_as_on_jax(path: Path):
    net, config = load_net_file(str(path))
    config = config.replace(batch_size=min(config.batch_size, BATCH))
    image = config.image_size if net.image_sized else None
    train_in_lockstep(net, config, config.batch_size, image, STEPS, path.stem)
