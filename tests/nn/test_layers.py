"""The blocks of the newer vision nets (issue 21), structurally: which convolutions each form of a block builds, its
channel rounding, its residual and drop-path rules, and its errors. Their numbers are checked against hand-written
JAX in tests/train/test_one_step_oracles.py, and every net using them in tests/train/test_every_net.py."""
from __future__ import annotations

import pytest

from gir.check import check_whole_net_f64
from gir.nn import (H, N, W, Constraints, Net, conv_bn, convnext_downsample, convnext_stage, dense, fused_mb_conv,
                    global_avg_pool, inverted_bottleneck, layer_norm2d, make_divisible, mb_conv, uib)
from gir.nn.params import init_params
from gir.shapes import ShapeError


def _image_net(*layers, c: int = 8) -> Net:
    return Net("t", [conv_bn(3, c, k=3, name="stem"), *layers], input_shape=(N, 3, H, W), num_classes=None)


def _depthwise(graph) -> list[tuple[str, int, tuple]]:
    """(layer path, kernel size, stride) of every depthwise conv."""
    return [(n.loc.path, n.inputs[1].type.shape[-1], n.attrs.stride) for n in graph.ops("depthwise_conv2d")]


@pytest.mark.parametrize("v,want", [(4, 8), (18, 24), (30, 32), (60, 64), (120, 120), (168, 168), (240, 240)])
def test_make_divisible_rounds_as_torchvision(v, want):
    assert make_divisible(v) == want


@pytest.mark.parametrize("start_k,mid_k,want", [
    (5, 3, [("u.block1.dw_start.conv", 5, (1, 1)), ("u.block1.dw_mid.conv", 3, (2, 2))]),   # ExtraDW
    (0, 3, [("u.block1.dw_mid.conv", 3, (2, 2))]),                                          # IB
    (5, 0, [("u.block1.dw_start.conv", 5, (2, 2))]),                                        # ConvNeXt-like
])
def test_uib_forms_and_which_depthwise_strides(start_k, mid_k, want):
    g = _image_net(uib(8, 16, t=2, start_k=start_k, mid_k=mid_k, stride=2, name="u")).build()
    assert _depthwise(g) == want
    expand = next(v for v in g.params if v.name == "u.block1.expand.conv.weight")
    assert expand.type.shape[:2] == (16, 8)   # make_divisible(8 * 2)


def test_uib_ffn_has_no_depthwise_and_cannot_stride():
    g = _image_net(uib(8, 8, t=4, start_k=0, mid_k=0, name="u")).build()
    assert _depthwise(g) == [] and any(n.op == "add" for n in g.nodes)   # residual kept
    with pytest.raises(ValueError, match="FFN block.*stride 2"):
        _image_net(uib(8, 8, start_k=0, mid_k=0, stride=2)).build()


def test_inverted_bottleneck_squeezes_to_a_rounded_quarter_and_gates_with_hard_sigmoid():
    g = _image_net(inverted_bottleneck(8, 8, hidden=72, se=0.25, name="b")).build()
    reduce = next(v for v in g.params if v.name == "b.se.reduce.weight")
    assert reduce.type.shape == (72, make_divisible(72 * 0.25)) == (72, 24)
    assert [n.loc.path for n in g.ops("hard_sigmoid")] == ["b.se.expand"]
    assert any(v.name.startswith("b.expand.") for v in g.params)
    g = _image_net(inverted_bottleneck(8, 8, hidden=8, name="b")).build()
    assert not any(v.name.startswith(("b.expand.", "b.se.")) for v in g.params)   # hidden == ic, se=0: neither


def test_fused_mb_conv_t1_is_one_conv_and_t4_expands_then_projects():
    one = _image_net(fused_mb_conv(8, 8, t=1, name="f")).build()
    assert {v.name.rsplit(".", 2)[0] for v in one.params if v.name.startswith("f.")} == {"f.block1.conv"}
    four = _image_net(fused_mb_conv(8, 16, t=4, stride=2, name="f")).build()
    kernels = {v.name: v.type.shape for v in four.params if v.name.endswith("conv.weight") and v.name.startswith("f.")}
    assert kernels == {"f.block1.expand.conv.weight": (32, 8, 3, 3), "f.block1.project.conv.weight": (16, 32, 1, 1)}


def _random_layers(graph) -> list[str]:
    return [n.loc.path for n in graph.ops("random_bits")]


def test_drop_path_per_block_only_where_a_block_has_a_residual_and_a_rate():
    net = _image_net(mb_conv(8, 16, t=2, stride=2, n=3, drop_path=[0.1, 0.0, 0.2], name="s"))
    assert _random_layers(net.build()) == ["s.block3"]   # block1 has no residual, block2 a rate of 0
    assert _random_layers(net.build(mode="eval")) == []
    with pytest.raises(ValueError, match="mb_conv: drop_path has 2 rates for 3 blocks"):
        _image_net(mb_conv(8, 16, n=3, drop_path=[0.1, 0.2])).build()
    with pytest.raises(ValueError, match="drop_path must be a rate or a list"):
        _image_net(uib(8, 8, drop_path="0.1")).build()


def test_convnext_block_layer_scale_starts_at_its_value_and_norms_over_channels():
    net = Net("t", [conv_bn(3, 8, k=3, name="stem"), convnext_stage(8, n=2, layer_scale=1e-6, name="s"),
                    convnext_downsample(8, 16, name="down")], input_shape=(N, 3, 8, 8), num_classes=None)
    g = net.build()
    values = init_params(g)
    assert (values["s.block1.layer_scale"] == 1e-6).all() and values["s.block1.layer_scale"].shape == (8,)
    norms = list(g.ops("layer_norm"))
    assert [n.loc.path for n in norms] == ["s.block1.ln", "s.block2.ln", "down.ln"]
    assert all(n.inputs[0].type.shape[-1] == 8 for n in norms)   # channels last when normalized
    assert g.outputs["logits"].type.shape == (N, 16, 4, 4)
    assert not any(v.name.endswith("layer_scale") for v in
                   Net("t", [convnext_stage(3, layer_scale=0)], input_shape=(N, 3, 8, 8)).build().params)


def test_layer_norm2d_wants_an_image():
    with pytest.raises(ShapeError, match="layer_norm2d needs a rank-4"):
        Net("t", [dense(4, 4), layer_norm2d(4)], input_shape=(N, 4), num_classes=None).build()


def test_the_whole_gradient_through_every_new_block_agrees_with_jax_grad():
    """In float64, drop path active: gir's backward pass of every new block against jax.grad of its forward."""
    net = Net("blocks", [
        conv_bn(3, 8, k=3, stride=2, act="hard_swish", name="stem"),
        inverted_bottleneck(8, 8, hidden=16, k=5, se=0.25, act="hard_swish", drop_path=0.3, name="mbv3"),
        fused_mb_conv(8, 8, t=2, n=2, drop_path=[0.0, 0.3], name="fused"),
        uib(8, 8, t=2, start_k=3, mid_k=3, drop_path=0.3, name="uib"),
        layer_norm2d(8, name="norm"),
        convnext_stage(8, n=1, layer_scale=0.5, drop_path=0.3, name="convnext"),
        convnext_downsample(8, 16, name="down"),
        global_avg_pool(),
        dense(16, 10),
    ], input_shape=(N, 3, H, W), num_classes=10,
        constraints=Constraints().at_least(H, 4).divisible_by(H, 4).at_least(W, 4).divisible_by(W, 4))
    finding = check_whole_net_f64(net, batch=4, image=8)
    assert finding.ok, finding.violations
