"""IREE's GPU pipeline run on a Vulkan device (`--target vulkan`; on a machine without a GPU, Mesa's lavapipe, which
.ci/run installs): the forward and eval modules and a few train steps of the small nets and of MobileNetV2 at a small
size, against the JAX backend, through the same host reads and writes a discrete GPU needs (staging buffers). The train
steps hold to tests/lockstep.py's bounds (loss 1e-4, update 10% of its norm); forward and eval to CASES' tolerances."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lockstep import train_in_lockstep

from gir.lower.iree_compile import CompileError, compile_text
from gir.lower.iree_runtime import DeviceUnavailable, IreeSession, device_config
from gir.lower.jax_backend import evaluate
from gir.lower.pipeline import lower_net
from gir.netfile import load_net_file
from gir.nn.params import init_params

NETS = Path(__file__).resolve().parents[2] / "nets"
CASES = {"digits_cnn": (8, 16, 1e-4), "mlp": (8, None, 1e-4), "mnist_cnn": (4, 28, 1e-4), "mobilenet_v2": (4, 32, 5e-3)}
"""Batch, image size and the forward/eval tolerance per net: the nets' own images, MobileNetV2 at 32x32 (its digits
recipe's size). MobileNetV2's train-mode forward normalizes 4 images of 1x1 maps late in the net, which amplifies
rounding: its logits differ from JAX by 1.3e-3 on Vulkan and 6.7e-4 on IREE's CPU target."""


@pytest.fixture
def vulkan() -> None:
    try:
        device_config("vulkan")
    except DeviceUnavailable as e:
        pytest.skip(f"{e}; install a Vulkan driver (Debian: mesa-vulkan-drivers)")


@pytest.mark.parametrize("name", sorted(CASES))
def test_train_steps_on_vulkan_match_jax(name, vulkan):
    net, config = load_net_file(str(NETS / f"{name}.py"))
    batch, image, _ = CASES[name]
    train_in_lockstep(net, config.replace(batch_size=batch), batch, image if net.image_sized else None, 3,
                      f"{name} on vulkan", target="vulkan")


@pytest.mark.parametrize("module", ["forward", "eval"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_eval_on_vulkan_match_jax(name, module, vulkan):
    """Every output (logits, and the forward's batch statistics) within the net's tolerance, relative to the output's
    largest value or to 1 where it is smaller (a batch mean after a normalized layer is about 1e-8)."""
    net, _ = load_net_file(str(NETS / f"{name}.py"))
    batch, image, tol = CASES[name]
    mod = lower_net(net, batch=batch, image=image if net.image_sized else None, passes="default_gpu")[module]
    values = init_params(mod.graph, 0)
    rng = np.random.default_rng(0)
    args = [values[v.name] if v.name in values else rng.standard_normal(tuple(v.type.shape)).astype(np.float32)
            for v in mod.primitive.inputs]
    session = IreeSession(compile_text(mod.text, "vulkan"), "vulkan")
    got = session.call_numpy(module, *[session.to_device(a) for a in args])
    want = evaluate(mod.graph, {v.name: a for v, a in zip(mod.primitive.inputs, args)})
    assert len(got) == len(want)
    for (k, w), g in zip(want.items(), got):
        w = np.asarray(w)
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * max(1.0, float(np.abs(w).max())), err_msg=k)


def test_scalars_and_integers_round_trip_through_staging(vulkan):
    session = IreeSession(compile_text(lower_net(load_net_file(str(NETS / "mlp.py"))[0], batch=2)["eval"].text,
                                       "vulkan"), "vulkan")
    for a in (np.float32(2.5), np.arange(7, dtype=np.int32), np.ones((3, 5), np.float32)):
        back = session.to_host(session.to_device(a))
        assert back.dtype == a.dtype and back.shape == np.shape(a) and np.array_equal(back, a)


def test_an_unknown_vulkan_target_names_the_chip_flag():
    mod = lower_net(load_net_file(str(NETS / "mlp.py"))[0], batch=2)["eval"]
    with pytest.raises(CompileError, match=r"Unknown Vulkan target 'bogus'.*--chip bogus"):
        compile_text(mod.text, "vulkan", chip="bogus", use_cache=False)


def test_no_vulkan_device_is_one_clear_line(tmp_path):
    """A machine without a Vulkan driver (here: the loader pointed at no driver): one line, before compiling."""
    none = str(tmp_path / "none.json")
    env = {**os.environ, "VK_ICD_FILENAMES": none, "VK_DRIVER_FILES": none}
    r = subprocess.run([sys.executable, "-m", "gir", "train", str(NETS / "digits_cnn.py"), "--target", "vulkan",
                        "--out", str(tmp_path / "run"), "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        "gir: error: no vulkan device is available on this machine (IREE's 'vulkan' driver could not create one); "
        "modules for vulkan still compile (gir lower --target vulkan) but cannot run here"]
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
