"""`gir check`: build a net's backward pass and check what was built, structurally (symbolic) and
numerically (float64, per distinct layer node, at a small binding)."""
from __future__ import annotations

from typing import Callable

from gir.autodiff import ADJOINTS, grad
from gir.autodiff.invariants import Finding, op_count, structural
from gir.autodiff.numeric import AdjointCheck, check_adjoint
from gir.lower.decompose import decompose
from gir.nn.net import Net
from gir.shapes.specialize import check_binding, specialize

NUMERIC_TOL = 1e-4


def _numeric_findings(results: list[AdjointCheck], tol: float) -> list[Finding]:
    def worst(attr: str) -> float:
        return max((getattr(r, attr) for r in results if getattr(r, attr) is not None), default=0.0)

    linear = [r for r in results if r.linearity is not None]
    bad = [f for r in results for f in r.failures(tol)]
    return [
        Finding("numerics (float64)", f"{len(results)} distinct layer nodes: max relative error {worst('vs_jax'):.1e} "
                f"vs jax.vjp, {worst('vs_fd'):.1e} vs central differences (eps 1e-5, tolerance {tol:g})",
                tuple(b for b in bad if "dot-product" not in b)),
        Finding("linearity", f"{len(linear)} linear nodes pass the dot-product test <Jv, w> = <v, J^T w> "
                f"(max relative error {worst('linearity'):.1e})", tuple(b for b in bad if "dot-product" in b)),
    ]


def check_net(net: Net, batch: int = 2, image: int | None = None, numeric: bool = True,
              label_smoothing: float = 0.1, progress: Callable[[str], None] = lambda s: None) -> list[Finding]:
    """Every invariant of the net's backward pass (loss w.r.t. parameters) as findings."""
    graph = net.build(mode="train", loss=True, label_smoothing=label_smoothing)
    forward = list(graph.nodes)
    back = grad(graph, constraints=net.constraints)
    findings = structural(back)
    binding = net.binding(batch=batch, image=image)
    check_binding(binding, net.constraints)
    static = specialize(graph, binding, net.constraints)
    findings.append(op_count(decompose(static)))
    if numeric:
        seen: dict[tuple, AdjointCheck] = {}
        for node in static.nodes[:len(forward)]:
            if node.op not in ADJOINTS or not any(v.type.dtype.is_float for v in node.inputs):
                continue
            key = (node.op, node.attrs, tuple(v.type for v in node.inputs))
            if key not in seen:
                progress(f"{node.op} at {node.loc.path}")
                seen[key] = check_adjoint(node.op, node.attrs, [v.type for v in node.inputs], node.loc)
        findings += _numeric_findings(list(seen.values()), NUMERIC_TOL)
    return findings
