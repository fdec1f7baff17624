"""`gir check`: build a net's backward pass and check what was built, structurally (symbolic) and
numerically (float64, per distinct layer node, at a small binding)."""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from gir.autodiff import ADJOINTS, grad
from gir.autodiff.invariants import Finding, op_count, structural
from gir.autodiff.numeric import AdjointCheck, check_adjoint
from gir.lower.decompose import decompose
from gir.lower.jax_backend import as_jax_function, evaluate
from gir.nn.builder import STEP
from gir.nn.net import Net
from gir.nn.params import init_params
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


WHOLE_NET_TOL = 1e-10


def check_whole_net_f64(net: Net, batch: int = 2, image: int | None = None, label_smoothing: float = 0.1,
                        seed: int = 0, seq: int | None = None) -> Finding:
    """The whole train step's gradient (loss w.r.t. every parameter), built by gir and run on the JAX backend in
    float64, against jax.grad of the same forward pass: in float64 no input lands on the other side of a ReLU6
    kink, so the two must agree to rounding (WHOLE_NET_TOL)."""
    with jax.enable_x64(True):   # for this check only: the process keeps JAX's float32 default
        return _whole_net_f64(net, batch, image, label_smoothing, seed, seq)


def _whole_net_f64(net: Net, batch: int, image: int | None, label_smoothing: float, seed: int,
                   seq: int | None) -> Finding:
    f64 = net.with_dtype("f64")
    binding = f64.binding(batch=batch, image=image, seq=seq)
    check_binding(binding, f64.constraints)

    def build():
        return f64.build(mode="train", loss=True, label_smoothing=label_smoothing, seed=seed)

    forward, graph = build(), build()
    grad(graph, constraints=f64.constraints)
    forward = decompose(specialize(forward, binding, f64.constraints))
    with_grads = decompose(specialize(graph, binding, f64.constraints))
    rng = np.random.default_rng(seed)
    feeds = init_params(with_grads, seed)
    classes = int(with_grads.outputs["logits"].type.shape[-1])
    for v in with_grads.inputs:
        if v.name in ("labels", "tokens"):   # token ids drawn like labels: a language model's vocabulary is its classes
            feeds[v.name] = rng.integers(0, classes, v.type.shape).astype(np.int32)
        elif v.name == STEP:
            feeds[v.name] = np.int32(1)
        elif v.name not in feeds:
            feeds[v.name] = rng.standard_normal(v.type.shape)
    ours = evaluate(with_grads, feeds)
    params = [v.name for v in with_grads.inputs if v.role == "param"]
    loss_fn = as_jax_function(forward)
    reference = jax.grad(lambda p: loss_fn({**feeds, **p})["loss"])({k: feeds[k] for k in params})
    # A gradient that is zero in exact arithmetic (a BN shift feeding another BN) is rounding noise on both sides:
    # each is compared against its own norm or a millionth of the whole gradient's, whichever is larger.
    floor = 1e-6 * float(np.sqrt(sum(np.sum(np.square(reference[k])) for k in params)))
    errors = {k: float(np.linalg.norm(ours[f"grad:{k}"] - reference[k]) / max(np.linalg.norm(reference[k]), floor,
                                                                                 1e-300))
              for k in params}
    worst = max(errors, key=errors.get)
    bad = tuple(f"grad:{k} differs from jax.grad by {e:.1e} (relative)" for k, e in errors.items()
                if not e <= WHOLE_NET_TOL)
    return Finding("whole net (float64)", f"{len(params)} parameter gradients of the whole train step vs jax.grad: "
                   f"max relative error {errors[worst]:.1e} ({worst}; tolerance {WHOLE_NET_TOL:g})", bad)


def check_net(net: Net, batch: int = 2, image: int | None = None, numeric: bool = True,
              label_smoothing: float = 0.1, progress: Callable[[str], None] = lambda s: None,
              seq: int | None = None) -> list[Finding]:
    """Every invariant of the net's backward pass (loss w.r.t. parameters) as findings."""
    graph = net.build(mode="train", loss=True, label_smoothing=label_smoothing)
    forward = list(graph.nodes)
    back = grad(graph, constraints=net.constraints)
    findings = structural(back)
    binding = net.binding(batch=batch, image=image, seq=seq)
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
