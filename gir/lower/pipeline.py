"""From a net to StableHLO modules: build, bind symbols, decompose layer ops, print."""
from __future__ import annotations

from typing import Mapping

import attrs
import sympy

from gir.ir.graph import Graph
from gir.ir.verify import verify
from gir.lower.decompose import decompose
from gir.lower.stablehlo import print_module
from gir.nn.net import Net
from gir.shapes.dims import Constraints
from gir.shapes.rules import infer_node
from gir.shapes.specialize import specialize


@attrs.frozen
class LoweredModule:
    """One function's module: its text and the static graphs it came from (for signatures and checks)."""

    name: str
    graph: Graph        # specialized, layer level
    primitive: Graph    # decomposed: what the text prints
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
                constraints: Constraints = Constraints(), check: bool = True) -> LoweredModule:
    """Binds the symbols, decomposes layer ops and prints one module with one public function."""
    static = specialize(graph, binding, constraints)
    prim = decompose(static)
    if check:
        verify(prim, "decompose", type_rule=infer_node)
    return LoweredModule(fname, static, prim, print_module({fname: prim}, f"{graph.name}_{fname}"))


def lower_net(net: Net, batch: int | None = None, image: int | None = None) -> dict[str, LoweredModule]:
    """The `forward` (train-mode BN, also returning batch statistics) and `eval` (running BN
    statistics) modules of a net at a concrete batch and image size."""
    binding = net.binding(batch=batch, image=image)
    return {mode_name: lower_graph(net.build(mode=mode), binding, mode_name, net.constraints)
            for mode_name, mode in (("forward", "train"), ("eval", "eval"))}
