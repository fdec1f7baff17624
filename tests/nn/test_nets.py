"""The net files in nets/: each loads, exposes `net` and `config`, builds in train and eval mode
with symbolic shapes, and has the parameter count of its reference definition."""
import functools
import json
import math
import runpy
from pathlib import Path

import pytest
import sympy

from gir.cli import main
from gir.nn import H, N, T, W, Net
from gir.train import TrainConfig

NETS_DIR = Path(__file__).resolve().parents[2] / "nets"
NET_FILES = sorted(p.stem for p in NETS_DIR.glob("*.py") if not p.name.startswith("_"))

# torchvision / timm counts with the 1000-class head replaced by a 10-class one (torchvision's
# `models.<name>(num_classes=10)`; timm 1.0.15's `create_model("mobilenetv4_conv_small", num_classes=10)`)
PARAM_COUNTS = {
    "mlp": 669_706,
    "mnist_cnn": 1_659_146,
    "cifar_cnn": 3_660_490,
    "mobilenet_v2": 2_236_682,
    "resnet34": 21_289_802,
    "resnet50": 23_528_522,
    "efficientnet_b0": 4_020_358,
    "vit_tiny": 5_526_346,
    "resnet18": 11_181_642,
    "mobilenet_v3_large": 4_214_842,
    "efficientnet_v2_s": 20_190_298,
    "convnext_tiny": 27_827_818,
    "mobilenet_v4_conv_s": 2_505_834,
    "char_gpt": 212_545,   # tinyGPT-nano's 212K: untied head with bias, at V = 65 (tinyshakespeare's characters)
}
TOKEN_NETS = {"char_gpt": 65}
"""Nets over token ids [N, T], with their vocabulary: per-token logits [N, T, V]; the rest classify into 10."""


@functools.cache
def load(name: str) -> dict:
    return runpy.run_path(str(NETS_DIR / f"{name}.py"))


@functools.cache
def built(name: str, mode: str):
    return load(name)["net"].build(mode)


def n_params(graph) -> int:
    return sum(math.prod(v.type.shape) for v in graph.params)


def test_expected_nets_exist():
    assert set(PARAM_COUNTS) <= set(NET_FILES)


@pytest.mark.parametrize("name", NET_FILES)
def test_exposes_net_and_config(name):
    ns = load(name)
    assert isinstance(ns.get("net"), Net)
    assert isinstance(ns.get("config"), TrainConfig)
    assert ns["net"].num_classes == TOKEN_NETS.get(name, 10)


@pytest.mark.parametrize("name", NET_FILES)
def test_module_docstring(name):
    doc = load(name).get("__doc__")
    assert doc and doc.strip() and "\n" not in doc.strip()


@pytest.mark.parametrize("name", NET_FILES)
def test_fixed_input_size_matches_config(name):
    ns = load(name)
    if name in TOKEN_NETS:
        assert ns["net"].input_type.shape == (N, T) and ns["net"].input_name == "tokens" and not ns["net"].image_sized
        return
    h, w = ns["net"].input_type.shape[2:]
    assert ns["net"].image_sized == (not isinstance(h, int))
    if isinstance(h, int):
        assert h == w == ns["config"].image_size


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", NET_FILES)
def test_builds_with_symbolic_batch(name, mode):
    g = built(name, mode)
    assert g.outputs["logits"].type.shape == ((N, T, TOKEN_NETS[name]) if name in TOKEN_NETS else (N, 10))


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_param_count(name):
    assert n_params(built(name, "train")) == PARAM_COUNTS[name]
    assert n_params(built(name, "eval")) == PARAM_COUNTS[name]


@pytest.mark.parametrize("name", NET_FILES)
def test_train_mode_reports_batch_stats(name):
    g = built(name, "train")
    bns = list(g.ops("batch_norm"))
    assert all(n.attrs.training and len(n.inputs) == 3 and len(n.outputs) == 3 for n in bns)
    assert sum(k.startswith("bn_mean:") for k in g.outputs) == len(bns)
    assert sum(k.startswith("bn_var:") for k in g.outputs) == len(bns)


@pytest.mark.parametrize("name", NET_FILES)
def test_eval_mode_uses_running_stats(name):
    g = built(name, "eval")
    assert not any(k.startswith(("bn_mean:", "bn_var:")) for k in g.outputs)
    bns = list(g.ops("batch_norm"))
    assert len(bns) == len(list(built(name, "train").ops("batch_norm")))
    for n in bns:
        assert not n.attrs.training and len(n.outputs) == 1
        mean, var = n.inputs[3:]
        assert mean.role == var.role == "state"
        assert mean.name.endswith("running_mean") and var.name.endswith("running_var")


@pytest.mark.parametrize("name", NET_FILES)
def test_builds_with_loss(name):
    ns = load(name)
    g = ns["net"].build("train", loss=True, label_smoothing=ns["config"].label_smoothing)
    assert g.outputs["loss"].type.shape == ()
    assert g.input("labels").type.shape == ((N, T) if name in TOKEN_NETS else (N,))


def test_mobilenet_v2_has_52_batch_norms():
    assert len(list(built("mobilenet_v2", "train").ops("batch_norm"))) == 52
    assert len(list(built("mobilenet_v2", "eval").ops("batch_norm"))) == 52


def test_mobilenet_v2_symbolic_shape_inference():
    """Shape inference over the whole net with symbolic N, H, W (a fresh build, not the cached one)."""
    g = load("mobilenet_v2")["net"].build()
    assert g.outputs["logits"].type.shape == (N, 10)
    pooled = next(g.ops("global_avg_pool")).inputs[0].type.shape
    assert pooled == (N, 1280, sympy.ceiling(H / 32), sympy.ceiling(W / 32))


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_gir_show_json_reports_the_param_count(name, capsys):
    assert main(["show", str(NETS_DIR / f"{name}.py"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == PARAM_COUNTS[name]
