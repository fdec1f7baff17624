"""The learning-rate schedule against its formula: linear warmup, then half-cosine from the peak."""
from __future__ import annotations

import itertools
import math

import pytest

from gir.train import TrainConfig
from gir.train.schedule import learning_rate


def test_warmup_then_cosine():
    cfg = TrainConfig(learning_rate=0.4, epochs=5, warmup_epochs=1, cosine=True)
    spe = 10
    lrs = [learning_rate(cfg, s, spe) for s in range(1, 51)]
    assert lrs[:10] == pytest.approx([0.4 * s / 10 for s in range(1, 11)])      # linear up to the peak
    for s in range(11, 51):                                                      # then 0.5 lr (1 + cos(pi p))
        p = (s - 1 - 10) / 40
        assert lrs[s - 1] == pytest.approx(0.5 * 0.4 * (1 + math.cos(math.pi * p)))
    assert lrs[10] == pytest.approx(0.4) and 0 < lrs[-1] < 0.001
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def test_constant_without_cosine_and_fractional_warmup():
    cfg = TrainConfig(learning_rate=0.1, epochs=3, warmup_epochs=0.5, cosine=False)
    assert [learning_rate(cfg, s, 4) for s in (1, 2, 3, 10)] == pytest.approx([0.05, 0.1, 0.1, 0.1])
    assert learning_rate(TrainConfig(learning_rate=0.1, epochs=2, cosine=True), 1, 5) == pytest.approx(0.1)


def test_bad_steps_are_rejected():
    with pytest.raises(ValueError, match="step and steps_per_epoch must be >= 1"):
        learning_rate(TrainConfig(), 0, 10)
