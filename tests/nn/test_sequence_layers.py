"""The sequence-model layers: token and position embeddings over the symbol T, causal transformer blocks,
per-token logits; their shape errors name the layer; nets/char_gpt.py's size and causality."""
from __future__ import annotations

import math
import runpy
from pathlib import Path

import numpy as np
import pytest

from gir.check import check_whole_net_f64
from gir.lower.jax_backend import evaluate
from gir.nn import (N, T, Constraints, Net, dense, layer_norm, position_embedding, token_embedding,
                    transformer_encoder)
from gir.nn.params import init_params
from gir.shapes import ShapeError, specialize
from gir.shapes.macs import node_macs

CHAR_GPT = Path(__file__).resolve().parents[2] / "nets" / "char_gpt.py"


def tiny_gpt(kind: str = "learned", dropout: float = 0.0, max_len: int = 8) -> Net:
    """A two-block causal GPT over 11 tokens, small enough for float64 checks."""
    return Net("tiny_gpt", [token_embedding(11, 8), position_embedding(max_len, 8, kind=kind),
                            transformer_encoder(8, heads=2, mlp=16, depth=2, causal=True, dropout=dropout),
                            layer_norm(8), dense(8, 11)],
               input_shape=(N, T), input_dtype="i32", num_classes=11, sizes={"N": 2, "T": max_len},
               constraints=Constraints().at_most(T, max_len))


def logits_at(net: Net, tokens: np.ndarray, seed: int = 0) -> np.ndarray:
    """Eval-mode logits on the JAX backend at the tokens' batch and length."""
    g = specialize(net.build("eval"), net.binding(batch=tokens.shape[0], seq=tokens.shape[1]), net.constraints)
    return np.asarray(evaluate(g, {**init_params(g, seed), "tokens": tokens})["logits"])


def test_a_token_net_reads_i32_tokens_and_gives_per_token_logits_and_labels():
    net = tiny_gpt()
    g = net.build("train", loss=True)
    assert net.input_name == "tokens" and g.input("tokens").type.dtype.name == "i32"
    assert g.input("tokens").role == "data" and g.input("tokens").type.shape == (N, T)
    assert g.outputs["logits"].type.shape == (N, T, 11)
    assert g.input("labels").type.shape == (N, T)
    [take] = g.ops("take")
    assert take.inputs[0].name == "embed1.weight" and take.inputs[0].type.shape == (11, 8)
    assert [n.attrs.causal for n in g.ops("attention")] == [True, True]


def test_sinusoidal_positions_are_sin_and_cos_of_geometric_frequencies_without_parameters():
    net = Net("sin", [position_embedding(16, 6, kind="sinusoidal")], input_shape=(N, T, 6), sizes={"T": 5},
              constraints=Constraints().at_most(T, 16))
    g = specialize(net.build("eval"), net.binding(batch=1), net.constraints)
    assert not g.params
    got = np.asarray(evaluate(g, {"images": np.zeros((1, 5, 6), np.float32)})["logits"])[0]
    pos, k = np.arange(5)[:, None], np.arange(3)[None, :]
    angle = pos / 10000 ** (2 * k / 6)
    want = np.stack([np.sin(angle), np.cos(angle)], -1).reshape(5, 6)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_learned_positions_take_the_first_t_rows_of_the_table():
    net = Net("pos", [position_embedding(8, 4)], input_shape=(N, T, 4), sizes={"T": 3},
              constraints=Constraints().at_most(T, 8))
    g = specialize(net.build("eval"), net.binding(batch=2), net.constraints)
    params = init_params(g, 0)
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    got = np.asarray(evaluate(g, {**params, "images": x})["logits"])
    np.testing.assert_allclose(got, x + params["pos1.weight"][:3], atol=1e-6)


def test_more_positions_than_max_len_is_a_shape_error_naming_the_layer_and_the_constraint():
    with pytest.raises(ShapeError) as e:
        Net("unbounded", [token_embedding(11, 8), position_embedding(8, 8)], input_shape=(N, T), input_dtype="i32",
            sizes={"T": 8}).build()
    msg = str(e.value)
    assert "position_embedding(max_len=8) needs at most 8 positions" in msg and "at layer 'pos1'" in msg
    assert "T has no upper bound" in msg and "Constraints().at_most(T, 8)" in msg
    assert "test_sequence_layers.py:" in msg   # the user's line
    with pytest.raises(ShapeError, match=r"T has values up to 16 \(constraints now: 1 <= T <= 16\)"):
        Net("loose", [token_embedding(11, 8), position_embedding(8, 8)], input_shape=(N, T), input_dtype="i32",
            sizes={"T": 8}, constraints=Constraints().at_most(T, 16)).build()
    with pytest.raises(ShapeError, match="the sequence has 9 positions"):
        Net("fixed", [position_embedding(8, 4)], input_shape=(N, 9, 4)).build()


def test_binding_t_beyond_the_constraint_is_refused():
    from gir.shapes.specialize import BindingError, check_binding
    net = tiny_gpt(max_len=8)
    with pytest.raises(BindingError, match="T"):
        check_binding(net.binding(batch=2, seq=9), net.constraints)


def test_float_ids_are_a_shape_error_naming_the_layer():
    with pytest.raises(ShapeError) as e:
        Net("floats", [token_embedding(11, 8)], input_shape=(N, T), sizes={"T": 4}).build()
    msg = str(e.value)
    assert "token_embedding needs integer token ids (i32), got f32" in msg and "at layer 'embed1'" in msg
    assert 'input_dtype="i32"' in msg


def test_odd_sinusoidal_dim_and_unknown_kind_are_refused():
    with pytest.raises(ShapeError, match="needs an even dim, got 5"):
        Net("odd", [position_embedding(8, 5, kind="sinusoidal")], input_shape=(N, 4, 5)).build()
    with pytest.raises(ValueError, match="kind must be 'learned' or 'sinusoidal'"):
        Net("kind", [position_embedding(8, 4, kind="rotary")], input_shape=(N, 4, 4)).build()


def test_a_later_token_changes_no_earlier_position_s_logits():
    net = tiny_gpt()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 11, (2, 8)).astype(np.int32)
    changed = tokens.copy()
    changed[:, 5:] = (changed[:, 5:] + 1 + rng.integers(0, 9, (2, 3))) % 11
    before, after = logits_at(net, tokens), logits_at(net, changed)
    np.testing.assert_array_equal(before[:, :5], after[:, :5])
    assert np.abs(before[:, 5:] - after[:, 5:]).min() > 0   # while the changed positions do see the change


@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
def test_the_whole_gpt_gradient_agrees_with_jax_grad_in_float64(kind):
    finding = check_whole_net_f64(tiny_gpt(kind, dropout=0.1), batch=2)
    assert finding.ok, finding.violations


def test_char_gpt_is_tinygpt_nano_with_an_exact_parameter_count():
    ns = runpy.run_path(str(CHAR_GPT))
    net = ns["net"]
    g = net.build("train")
    count = sum(math.prod(v.type.shape) for v in g.params)
    per_block = 2 * 64 + (64 * 192 + 192) + (64 * 64 + 64) + 2 * 64 + (64 * 256 + 256) + (256 * 64 + 64)
    assert count == 212_545 == 65 * 64 + 64 * 64 + 4 * per_block + 2 * 64 + (64 * 65 + 65)
    assert "212,545" in ns["__doc__"]
    assert ns["VOCAB"] == net.num_classes == 65 and net.sizes == {N: 32, T: 64}
    assert len(list(g.ops("attention"))) == 4 and all(n.attrs.causal and n.attrs.heads == 2 for n in g.ops("attention"))


def test_char_gpt_macs_are_a_formula_in_n_and_t_quadratic_through_attention():
    net = runpy.run_path(str(CHAR_GPT))["net"]
    g = net.build("eval")
    total = sum(node_macs(n) for n in g.nodes)
    assert total.free_symbols == {N, T}
    attention = sum(node_macs(n) for n in g.ops("attention"))
    assert attention == 4 * 2 * N * T * T * 64
    assert (total - attention).subs(T, 2 * T).expand() == (2 * (total - attention)).expand()   # the rest is linear
