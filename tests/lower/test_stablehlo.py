"""The StableHLO printer's barriers: an `optimization_barrier` node prints as IREE's compute barriers, which keep the
walled forms apart (the transposes stay their own dispatches) without making the host wait: every dispatch of a
module with several barriers is still submitted in one go."""
from __future__ import annotations

import re

import numpy as np
from iree.compiler.tools import compile_str

from gir.ir import DType, Graph, TensorType
from gir.ir import opdefs as od
from gir.lower.iree_compile import compile_text, target_flags
from gir.lower.iree_runtime import IreeSession
from gir.lower.stablehlo import print_module
from gir.shapes.emit import Emitter


def _walled_chain(layers: int = 3) -> Graph:
    """x @ w, `layers` times, each operand transposed and walled before the matmul (as gir's matmul forms do)."""
    g = Graph("walls")
    e = Emitter(g)
    x = g.add_input("x", TensorType((64, 32), DType.f32), "data")
    for i in range(layers):
        w = g.add_input(f"w{i}", TensorType((32, 32), DType.f32), "data")
        xt = e.op("optimization_barrier", e.transpose(x, (1, 0)))
        x = e.op("dot_general", e.op("optimization_barrier", e.transpose(w, (1, 0))), xt,
                 attrs=od.DotGeneralAttrs((), (), (1,), (0,)))
        x = e.transpose(x, (1, 0))
    g.set_output("y", x)
    return g


def test_a_barrier_prints_as_compute_barriers():
    text = print_module({"f": _walled_chain(1)})
    assert "stablehlo.optimization_barrier" not in text
    assert text.count("iree_tensor_ext.compute_barrier.start") == text.count("iree_tensor_ext.compute_barrier.end") == 2


def test_walled_dispatches_are_submitted_together_and_compute_the_product():
    """Three walled matmuls: one execute region and one wait (StableHLO's barrier made one per barrier), the
    transposes still dispatches of their own; the values are the plain product."""
    text = print_module({"f": _walled_chain(3)})
    stream = compile_str(text, extra_args=[*target_flags("cpu"), "--compile-to=stream"]).decode()
    assert stream.count("stream.cmd.execute") == 1 and stream.count("stream.timepoint.await") == 1
    assert len(re.findall(r"stream\.cmd\.dispatch @\w+::@\w+_transpose_", stream)) >= 3
    rng = np.random.default_rng(0)
    x, *ws = (rng.standard_normal(s).astype(np.float32) for s in [(64, 32)] + [(32, 32)] * 3)
    got = IreeSession(compile_text(text, "cpu")).call_numpy("f", x, *ws)[0]
    want = x
    for w in ws:
        want = want @ w
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
