"""Initializers as a layer argument: each scheme draws with the spread it promises, an explicit Init is used as
given, the defaults (and so every stock net's numbers) are unchanged, and a bad name is one clear error."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gir.ir.graph import Init
from gir.nn import Builder, N, Net, batch_norm, conv2d, conv_bn, dense, depthwise_conv, global_avg_pool
from gir.nn.init import SCHEMES, resolve_init
from gir.nn.params import init_params

FAN_IN, FAN_OUT = 64 * 3 * 3, 128 * 3 * 3   # a 3x3 conv from 64 to 128 channels


def weights(layer, shape=(N, 64, 8, 8), name="weight", seed=0) -> np.ndarray:
    b = Builder("t")
    layer(b, b.input("x", shape))
    params = init_params(b.graph, seed)
    return next(v for k, v in params.items() if k.endswith(name))


@pytest.mark.parametrize("scheme,std", [
    ("kaiming_normal", math.sqrt(2 / FAN_IN)), ("kaiming_normal_fan_out", math.sqrt(2 / FAN_OUT)),
    ("kaiming_uniform", math.sqrt(6 / FAN_IN) / math.sqrt(3)), ("lecun_uniform", 1 / math.sqrt(FAN_IN) / math.sqrt(3)),
    ("xavier_normal", math.sqrt(2 / (FAN_IN + FAN_OUT))),
    ("xavier_uniform", math.sqrt(6 / (FAN_IN + FAN_OUT)) / math.sqrt(3)),
    ("normal_0.01", 0.01), ("trunc_normal_0.02", 0.02 * 0.8796)])   # a normal cut at 2 sigma keeps 88% of its std
def test_each_scheme_draws_its_spread(scheme, std):
    w = weights(conv2d(64, 128, k=3, init=scheme))
    assert w.shape == (128, 64, 3, 3)
    assert abs(w.mean()) < 0.05 * std and w.std() == pytest.approx(std, rel=0.03)
    if "uniform" in scheme:
        assert np.abs(w).max() <= std * math.sqrt(3) + 1e-7
    if scheme.startswith("trunc"):
        assert np.abs(w).max() <= 0.04 + 1e-7


def test_zeros_ones_an_explicit_init_and_the_bn_scale():
    assert (weights(dense(64, 10, init="zeros"), (N, 64)) == 0).all()
    assert (weights(dense(64, 10, bias_init="ones"), (N, 64), name="bias") == 1).all()
    w = weights(depthwise_conv(64, init=Init("uniform", scale=0.5)))
    assert w.shape == (64, 1, 3, 3) and 0.45 < np.abs(w).max() <= 0.5
    assert (weights(conv_bn(64, 32, gamma_init="zeros"), name="bn.gamma") == 0).all()
    assert (weights(batch_norm(64, gamma_init="zeros"), name="gamma") == 0).all()
    assert (weights(conv_bn(64, 32), name="bn.gamma") == 1).all()


def test_defaults_are_what_they_were():
    """No init= gives gir's He-normal kernels and LeCun-uniform dense weights, drawn exactly as before."""
    a = weights(conv_bn(64, 32, k=3), name="conv.weight", seed=3)
    b = weights(conv_bn(64, 32, k=3, init=Init("he_normal", fan_in=64 * 9, fan_out=32 * 9)), name="conv.weight",
                seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(weights(dense(64, 10), (N, 64), seed=4),
                                  weights(dense(64, 10, init="lecun_uniform"), (N, 64), seed=4))


def test_a_net_file_can_use_torchvisions_initialization():
    net = Net("tv", [conv_bn(3, 8, init="kaiming_normal_fan_out"), global_avg_pool(), dense(8, 10, init="normal_0.01")],
              input_shape=(N, 3, 4, 4))
    params = init_params(net.build("eval"))
    assert params["conv1.conv.weight"].std() == pytest.approx(math.sqrt(2 / (8 * 9)), rel=0.3)
    assert params["dense1.weight"].std() == pytest.approx(0.01, rel=0.3)


def test_unknown_initializer_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown initializer 'he'; use an Init or one of: kaiming_normal, "):
        resolve_init("he", 1, 1, Init("zeros"))
    assert set(SCHEMES) >= {"kaiming_normal_fan_out", "xavier_uniform", "trunc_normal_0.02", "zeros", "ones"}
