"""`gir check --f64`: the whole train step's gradient in float64 against jax.grad, and float64 nets end to end."""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from gir.autodiff import ADJOINTS
from gir.check import WHOLE_NET_TOL, check_whole_net_f64
from gir.cli import main
from gir.netfile import load_net_file

ROOT = Path(__file__).resolve().parents[1]
F64_NET = """from gir.nn import N, Net, conv_bn, dense, dropout, global_avg_pool, residual_block
from gir.train import TrainConfig

net = Net("f64_cnn", [conv_bn(1, 16, k=3, act="relu6"), residual_block(16, 32, stride=2), global_avg_pool(),
                      dropout(0.1), dense(32, 10)], input_shape=(N, 1, 16, 16), num_classes=10, dtype="f64")
config = TrainConfig(image_size=16, epochs=1, batch_size=32, learning_rate=0.05, optimizer="adam")
"""


def test_the_whole_gradient_agrees_with_jax_grad_to_rounding():
    net, config = load_net_file(str(ROOT / "nets" / "digits_cnn.py"))
    finding = check_whole_net_f64(net, batch=2, label_smoothing=config.label_smoothing)
    assert finding.ok and finding.name == "whole net (float64)"
    assert not jax.config.jax_enable_x64   # float64 was switched on for the check only
    worst = float(finding.summary.split("max relative error ")[1].split()[0])
    assert worst < WHOLE_NET_TOL


def test_a_wrong_adjoint_fails_it(monkeypatch, tmp_path):
    """relu6's adjoint scaled by 1.001: the layer before the relu6 gets a gradient off by about 1e-3."""
    right = ADJOINTS["relu6"]
    monkeypatch.setitem(ADJOINTS, "relu6", lambda e, node, cts: [e.mul_scalar(c, 1.001) if c is not None else None
                                                                  for c in right(e, node, cts)])
    (tmp_path / "f64_cnn.py").write_text(F64_NET)
    net, _ = load_net_file(str(tmp_path / "f64_cnn.py"))
    finding = check_whole_net_f64(net, batch=2)
    assert not finding.ok and any(v.startswith("grad:conv1.") for v in finding.violations)


def test_a_float64_net_trains_the_same_on_iree_and_jax(tmp_path, capsys):
    (tmp_path / "f64_cnn.py").write_text(F64_NET)
    for backend in ("iree", "jax"):
        assert main(["train", str(tmp_path / "f64_cnn.py"), "-q", "--backend", backend,
                     "--out", str(tmp_path / backend)]) == 0
    losses = [[json.loads(line)["loss"] for line in (tmp_path / b / "trace.jsonl").read_text().splitlines()
               if '"loss"' in line and '"eval"' not in line] for b in ("iree", "jax")]
    assert len(losses[0]) == 45
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-12)   # float64 on both: agreement to rounding
    assert not jax.config.jax_enable_x64   # the JAX backend turned float64 on around its own calls only
    capsys.readouterr()
    assert main(["check", str(tmp_path / "f64_cnn.py"), "--f64"]) == 0
    assert "whole net (float64)   ok" in capsys.readouterr().out
