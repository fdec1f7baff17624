"""From a net to StableHLO modules: build, bind symbols, rewrite layer ops, decompose, rewrite
primitives, print."""
from __future__ import annotations

from typing import Iterable, Mapping

import attrs
import sympy

from gir.ir.graph import Graph
from gir.ir.verify import verify
from gir.lower.decompose import decompose
from gir.lower.stablehlo import print_module
from gir.nn.net import Net
from gir.rewrite import Context, Firing, run_pipeline
from gir.shapes.dims import Constraints
from gir.shapes.rules import infer_node
from gir.shapes.specialize import specialize


@attrs.frozen
class LoweredModule:
    """One function's module: its text and the static graphs it came from (for signatures and checks)."""

    name: str
    graph: Graph        # specialized, layer level, before any pass
    primitive: Graph    # rewritten and decomposed: what the text prints
    text: str

    def signature(self) -> dict:
        """Inputs and outputs in call order, with names, roles, shapes and dtypes."""
        return {
            "function": self.name,
            "inputs": [{"name": v.name, "role": v.role, "shape": list(v.type.shape), "dtype": str(v.type.dtype)}
                       for v in self.primitive.inputs],
            "outputs": [{"name": k, "shape": list(v.type.shape), "dtype": str(v.type.dtype)}
                        for k, v in self.primitive.outputs.items()],
        }


def lower_graph(graph: Graph, binding: Mapping[sympy.Symbol, int], fname: str,
                constraints: Constraints = Constraints(), check: bool = True,
                passes: str | Iterable[str] = "default", trace: list[Firing] | None = None) -> LoweredModule:
    """Binds the symbols, runs the layer-level passes, decomposes layer ops, runs the primitive
    passes and prints one module with one public function. `passes` is a pipeline name or a list
    of pass names (see gir.rewrite); fired rules are appended to `trace` when given."""
    static = specialize(graph, binding, constraints)
    ctx = Context(constraints, trace, module=fname)   # per-pass verification: Context(check=True) in tests
    prim = decompose(run_pipeline(static, passes, "layer", ctx))
    if check:
        verify(prim, "decompose", type_rule=infer_node)
    prim = run_pipeline(prim, passes, "primitive", ctx)
    if check:
        verify(prim, "the rewrite passes", type_rule=infer_node)
    return LoweredModule(fname, static, prim, print_module({fname: prim}, f"{graph.name}_{fname}"))


def lower_net(net: Net, batch: int | None = None, image: int | None = None, passes: str | Iterable[str] = "default",
              trace: list[Firing] | None = None, seq: int | None = None) -> dict[str, LoweredModule]:
    """The `forward` (train-mode BN, also returning batch statistics) and `eval` (running BN
    statistics) modules of a net at a concrete batch and image size (or sequence length `seq`)."""
    binding = net.binding(batch=batch, image=image, seq=seq)
    passes = tuple(passes) if not isinstance(passes, str) else passes
    return {mode_name: lower_graph(net.build(mode=mode), binding, mode_name, net.constraints, passes=passes,
                                   trace=trace)
            for mode_name, mode in (("forward", "train"), ("eval", "eval"))}
