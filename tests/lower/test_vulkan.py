"""IREE's GPU pipeline run on a Vulkan device (`--target vulkan`; on a machine without a GPU, Mesa's lavapipe, which
.ci/run installs): the eval module and a few train steps of the small nets and of MobileNetV2 at a small size, against
the JAX backend, through the same host reads and writes a discrete GPU needs (staging buffers)."""
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
CASES = {"digits_cnn": (8, 16), "mlp": (8, None), "mnist_cnn": (4, 28), "mobilenet_v2": (4, 32)}
"""Batch and image size per net: the nets' own images, MobileNetV2 at 32x32 (its digits recipe's size)."""
EVAL_RTOL = 1e-4


@pytest.fixture
def vulkan() -> None:
    try:
        device_config("vulkan")
    except DeviceUnavailable as e:
        pytest.skip(f"{e}; install a Vulkan driver (Debian: mesa-vulkan-drivers)")


@pytest.mark.parametrize("name", sorted(CASES))
def test_train_steps_on_vulkan_match_jax(name, vulkan):
    net, config = load_net_file(str(NETS / f"{name}.py"))
    batch, image = CASES[name]
    train_in_lockstep(net, config.replace(batch_size=batch), batch, image if net.image_sized else None, 3,
                      f"{name} on vulkan", target="vulkan")


@pytest.mark.parametrize("name", sorted(CASES))
def test_eval_on_vulkan_matches_jax(name, vulkan):
    net, _ = load_net_file(str(NETS / f"{name}.py"))
    batch, image = CASES[name]
    mod = lower_net(net, batch=batch, image=image if net.image_sized else None, passes="default_gpu")["eval"]
    values = init_params(mod.graph, 0)
    rng = np.random.default_rng(0)
    args = [values[v.name] if v.name in values else rng.standard_normal(tuple(v.type.shape)).astype(np.float32)
            for v in mod.primitive.inputs]
    session = IreeSession(compile_text(mod.text, "vulkan"), "vulkan")
    got = session.call_numpy("eval", *[session.to_device(a) for a in args])[0]
    want = np.asarray(evaluate(mod.graph, {v.name: a for v, a in zip(mod.primitive.inputs, args)})["logits"])
    np.testing.assert_allclose(got, want, rtol=EVAL_RTOL, atol=EVAL_RTOL * float(np.abs(want).max()))


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
    env = {**os.environ, "VK_ICD_FILENAMES": str(tmp_path / "none.json"), "VK_DRIVER_FILES": str(tmp_path / "none.json")}
    r = subprocess.run([sys.executable, "-m", "gir", "train", str(NETS / "digits_cnn.py"), "--target", "vulkan",
                        "--out", str(tmp_path / "run"), "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        "gir: error: no vulkan device is available on this machine (IREE's 'vulkan' driver could not create one); "
        "modules for vulkan still compile (gir lower --target vulkan) but cannot run here"]
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
