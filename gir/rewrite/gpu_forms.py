"""Forms of two primitive ops that IREE 3.13's GPU code generation rejects (found cross-compiling the catalogue's train
steps for rocm and cuda; `default_gpu` runs the pass on every GPU target), rewritten into equal forms it compiles: a
reversed convolution kernel and a sum of negated values."""
from __future__ import annotations

from gir.ir import opdefs as od
from gir.ir.graph import Value
from gir.rewrite.driver import Pass, Rule, register_pass
from gir.rewrite.pattern import Match, Op, Var
from gir.shapes.emit import Emitter

MAX_SLICED_REVERSE = 11
"""The longest reversed dimension rewritten as slices: kernel taps (1 to 11 in the nets) are few slices; a reverse along
a longer one (an image row) would become as many slices and is left alone."""


def _reverse_as_slices(e: Emitter, m: Match) -> Value | None:
    """reverse(x, dims) as, per reversed dim, its unit slices concatenated last to first. The reversed kernel of a
    convolution's input gradient becomes, in front of the convolution, a dispatch whose index arithmetic IREE narrows
    to 16-bit vectors that LLVM's NVPTX backend cannot select (cifar_cnn's 256x256 and 512x256 3x3 kernels on sm_80:
    "Cannot select: v2i16 = umul_lohi"); concatenated slices are copies."""
    x, dims = m["x"], m.node.attrs.dims
    shape = tuple(x.type.shape)
    if not all(isinstance(shape[d], int) and shape[d] <= MAX_SLICED_REVERSE for d in dims):
        return None
    for d in dims:
        if shape[d] == 1:
            continue
        parts = [e.op("slice", x, attrs=od.SliceAttrs(tuple(i if k == d else 0 for k in range(len(shape))),
                                                      tuple(i + 1 if k == d else n for k, n in enumerate(shape)),
                                                      (1,) * len(shape)))
                 for i in reversed(range(shape[d]))]
        x = e.op("concatenate", *parts, attrs=od.ConcatAttrs(d))
    return x


def _negated_sum(e: Emitter, m: Match) -> Value:
    """sum(-x) as -sum(x), bit for bit the same: IREE's GPU reduction tiling fuses the negate into the reduction's
    combiner and then finds no neutral element for it ("failed to get neutral element for reduction", ConvNeXt's
    layer-norm gradients)."""
    return e.neg(e.reduce(m["x"], "sum", m.node.attrs.dims))


RULES = (
    Rule("reverse_as_slices", Op("reverse", (Var("x"),)), _reverse_as_slices,
         f"reverse along dims of at most {MAX_SLICED_REVERSE} -> unit slices concatenated in reverse order"),
    Rule("sum_of_negate", Op("reduce", (Op("negate", (Var("x"),)),), attrs={"kind": "sum"}), _negated_sum,
         "sum(-x) -> -sum(x)"),
)

GPU_FORMS = register_pass(Pass("gpu_forms", "rewrite what IREE's GPU code generation rejects into equal forms: short "
                                            "reverses (convolution kernels) as slices, sums of negations as negated "
                                            "sums", "primitive", RULES))
