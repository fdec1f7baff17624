"""Random bits as graph ops: gir's threefry2x32 decomposition gives Random123's known answer, and `random_bits`
gives the same bits on IREE (the decomposition) and on JAX (JAX's own threefry) for every key, salt and shape."""
from __future__ import annotations

import numpy as np
import pytest

from gir.ir import DType, Graph, TensorType
from gir.ir import opdefs as od
from gir.lower.decompose import decompose, threefry2x32
from gir.lower.iree_compile import compile_text
from gir.lower.iree_runtime import IreeSession
from gir.lower.jax_backend import evaluate
from gir.lower.stablehlo import print_module
from gir.shapes.emit import Emitter

I32 = DType.i32
SCALAR = TensorType((), I32)
SHAPES = {"flat": ((7,), 0), "nchw": ((2, 3, 4, 5), 11), "wide": ((3, 1000), 2**31 - 1)}


def i32(word: int) -> int:
    """A 32-bit word as the i32 with the same bits."""
    return word - 2**32 if word >= 2**31 else word


def u32(values) -> list[int]:
    return [int(v) & 0xFFFFFFFF for v in np.asarray(values).reshape(-1)]


def known_answer_graph() -> Graph:
    """Random123's threefry2x32_20 test vector: key (0x13198a2e, 0x03707344), counter (0x243f6a88, 0x85a308d3)."""
    g = Graph("kat")
    k0, k1 = g.add_input("k0", SCALAR, "data"), g.add_input("k1", SCALAR, "data")
    e = Emitter(g)
    block = TensorType((1,), I32)
    y0, y1 = threefry2x32(e, k0, k1, e.const(i32(0x243F6A88), block), e.const(i32(0x85A308D3), block))
    g.set_output("y0", y0)
    g.set_output("y1", y1)
    return g


def bits_graph(shape, salt) -> Graph:
    g = Graph("bits")
    k0, k1 = g.add_input("k0", SCALAR, "data"), g.add_input("k1", SCALAR, "data")
    g.set_output("bits", Emitter(g).op("random_bits", k0, k1, attrs=od.RandomAttrs(shape, salt)))
    return g


@pytest.fixture(scope="module")
def session():
    graphs = {"kat": decompose(known_answer_graph()),
              **{f"bits_{name}": decompose(bits_graph(*spec)) for name, spec in SHAPES.items()}}
    return IreeSession(compile_text(print_module(graphs, "random"), "cpu"))


KEY = (np.int32(i32(0x13198A2E)), np.int32(0x03707344))


def test_the_decomposition_gives_random123s_known_answer(session):
    want = [0xC4923A9C, 0x483DF7A0]
    assert u32(session.call_numpy("kat", *KEY)) == want                       # IREE
    out = evaluate(decompose(known_answer_graph()), {"k0": KEY[0], "k1": KEY[1]})
    assert u32([out["y0"], out["y1"]]) == want                                # JAX running the same primitives


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("key", [(0, 0), (42, 7), (i32(0xDEADBEEF), -1)])
def test_random_bits_agree_bit_for_bit(session, name, key):
    shape, salt = SHAPES[name]
    k0, k1 = np.int32(key[0]), np.int32(key[1])
    (iree,) = session.call_numpy(f"bits_{name}", k0, k1)
    jax_rule = evaluate(bits_graph(shape, salt), {"k0": k0, "k1": k1})["bits"]
    jax_decomposed = evaluate(decompose(bits_graph(shape, salt)), {"k0": k0, "k1": k1})["bits"]
    assert iree.shape == shape and iree.dtype == np.int32
    np.testing.assert_array_equal(iree, jax_rule)
    np.testing.assert_array_equal(jax_decomposed, jax_rule)


def test_bits_look_uniform_and_depend_on_key_and_salt(session):
    (a,) = session.call_numpy("bits_wide", np.int32(1), np.int32(2))
    (b,) = session.call_numpy("bits_wide", np.int32(1), np.int32(3))
    other_salt = evaluate(bits_graph((3, 1000), 5), {"k0": np.int32(1), "k1": np.int32(2)})["bits"]
    assert np.mean(a == b) < 0.01 and np.mean(a == other_salt) < 0.01
    ones = np.unpackbits(a.view(np.uint8)).mean()            # 96,000 bits
    assert abs(ones - 0.5) < 0.01
    assert len(np.unique(a)) > 2990


def test_random_bits_shape_rule():
    g = Graph("bad")
    f = g.add_input("f", TensorType((), DType.f32), "data")
    k = g.add_input("k", SCALAR, "data")
    with pytest.raises(Exception, match="keys are i32 scalars"):
        Emitter(g).op("random_bits", f, k, attrs=od.RandomAttrs((2,), 0))
    with pytest.raises(ValueError):
        od.RandomAttrs((2,), 2**31)


def shared_key_graph() -> Graph:
    """Every SHAPES draw from one key, as a net's dropouts and drop paths share the seed and step after CSE."""
    g = Graph("shared")
    k0, k1 = g.add_input("k0", SCALAR, "data"), g.add_input("k1", SCALAR, "data")
    e = Emitter(g)
    for name, (shape, salt) in SHAPES.items():
        g.set_output(name, e.op("random_bits", k0, k1, attrs=od.RandomAttrs(shape, salt)))
    return g


def test_draws_sharing_a_key_come_from_one_threefry_with_the_same_bits():
    """Decomposition lays the draws' counters end to end and runs threefry once (one set of its 20 rounds' xors),
    and each draw gets the bits it gets alone."""
    g = decompose(shared_key_graph())
    assert sum(n.op == "xor" for n in g.nodes) == sum(n.op == "xor" for n in decompose(bits_graph((7,), 0)).nodes)
    k0, k1 = np.int32(42), np.int32(7)
    together = evaluate(g, {"k0": k0, "k1": k1})
    for name, spec in SHAPES.items():
        np.testing.assert_array_equal(together[name], evaluate(bits_graph(*spec), {"k0": k0, "k1": k1})["bits"])
