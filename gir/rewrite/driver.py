"""The one rewrite driver: rules are (pattern, replacement) data grouped into named passes; a pass
runs its rules over the graph to a fixed point; pipelines are lists of pass names.

A sweep rebuilds the graph in topological order. Each node, with its inputs already rewritten, is
offered to the rules keyed by its op; the first rule whose pattern matches and whose replacement
does not decline replaces the node's outputs. Replacement nodes inherit the rewritten node's
provenance (layer path, file:line, adjoint_of). Dead nodes are dropped after every sweep.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import attrs

from gir.ir.graph import Graph, Loc, Node, Value
from gir.ir.verify import verify
from gir.rewrite.pattern import Match, Op, match
from gir.shapes.dims import Constraints
from gir.shapes.emit import Emitter
from gir.shapes.rules import infer_node

Replacement = Callable[[Emitter, Match], "Value | tuple[Value, ...] | None"]
LEVELS = ("layer", "primitive", "any")


class RewriteError(Exception):
    """A pass or pipeline that cannot run: unknown name, a rule changing a type, no fixed point."""


@attrs.frozen
class Rule:
    """Replace what `pattern` matches by what `replace(emitter, match)` builds (None declines)."""

    name: str
    pattern: Op
    replace: Replacement
    doc: str = ""


@attrs.frozen
class Firing:
    """One rule application, for --trace-rewrites."""

    pass_name: str
    rule: str
    op: str
    node_id: int
    loc: Loc
    module: str = ""

    def __str__(self) -> str:
        where = self.loc.where()
        return ((f"{self.module}: " if self.module else "")
                + f"{self.pass_name}/{self.rule}: {self.op} #{self.node_id} at {self.loc.path or '<no layer>'}"
                + (f" ({where})" if where else ""))


@attrs.define
class Context:
    """What every pass may read: the graph's dim constraints, the trace sink (tagged with the
    module being lowered), the sweep bound, and whether to verify after each pass."""

    constraints: Constraints = attrs.Factory(Constraints)
    trace: list[Firing] | None = None
    max_sweeps: int = 16
    check: bool = False
    module: str = ""

    def record(self, pass_name: str, rule: str, node: Node) -> None:
        if self.trace is not None:
            self.trace.append(Firing(pass_name, rule, node.op, node.id, node.loc, self.module))


@attrs.frozen
class Pass:
    """A named pass: rules run to a fixed point, or a whole-graph `transform` (DCE, CSE).

    `level` says where lowering runs it: on layer ops before decomposition, on primitives
    after it, or both ("any").
    """

    name: str
    doc: str
    level: str
    rules: tuple[Rule, ...] = ()
    transform: Callable[[Graph, Context], Graph] | None = None

    def __attrs_post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"pass {self.name!r}: level must be one of {LEVELS}, got {self.level!r}")
        if bool(self.rules) == (self.transform is not None):
            raise ValueError(f"pass {self.name!r} needs rules or a transform, not both")


PASSES: dict[str, Pass] = {}
PIPELINES: dict[str, tuple[str, ...]] = {}


def register_pass(p: Pass) -> Pass:
    if p.name in PASSES or p.name in PIPELINES:
        raise ValueError(f"pass {p.name!r} is already registered")
    PASSES[p.name] = p
    return p


# ---- graph rebuilding ------------------------------------------------------------------------

Visit = Callable[[Graph, Node, Callable[[Value], int]], "tuple[Value, ...] | None"]


def rebuild(graph: Graph, visit: Visit) -> tuple[Graph, int]:
    """A copy of `graph` in which `visit(out, candidate, uses)` may replace each node's outputs.

    The candidate is the node with rewritten inputs, not yet in `out`; returning None keeps it.
    `uses(value)` counts a value's uses in the input graph (conservatively huge when unknown).
    Returns the new graph and how many nodes were replaced.
    """
    users = Counter(v for n in graph.nodes for v in n.inputs)
    users.update(graph.outputs.values())
    original = set(graph.inputs).union(*(n.outputs for n in graph.nodes))
    out = Graph(graph.name)
    out.inputs = list(graph.inputs)   # the interface: shared, never copied or dropped
    vmap: dict[Value, Value] = {}     # only values that changed
    origin: dict[Value, Value | None] = {}
    nmap: dict[Node, Node] = {}

    def uses(v: Value) -> int:
        old = origin[v] if v in origin else (v if v in original else None)
        return users[old] if old is not None else 1 << 30

    replaced = 0
    for node in graph.nodes:
        ins = tuple(vmap.get(v, v) for v in node.inputs)
        adjoint_of = nmap.get(node.adjoint_of, node.adjoint_of)
        if ins == node.inputs and adjoint_of is node.adjoint_of:
            cand = node   # nothing upstream changed: offer the node itself (nodes are never mutated)
        else:
            cand = Node(node.op, ins, node.attrs, (v.type for v in node.outputs), node.loc, adjoint_of)
        res = visit(out, cand, uses)
        if res is None:
            out.nodes.append(cand)
            if cand is node:
                continue
            nmap[node] = cand
            res = cand.outputs
        else:
            replaced += 1
        for old, new in zip(node.outputs, res):
            vmap[old] = new
            origin[new] = None if new in origin or new in original else old
    for name, v in graph.outputs.items():
        out.set_output(name, vmap.get(v, v))
    return out, replaced


def dead_code_elimination(graph: Graph, ctx: Context | None = None) -> Graph:
    """The graph without nodes no output depends on."""
    live = graph.live_nodes()
    if ctx is not None and ctx.trace is not None and len(live) != len(graph.nodes):
        keep = set(live)
        for n in graph.nodes:
            if n not in keep:
                ctx.record("dce", "dead", n)
    out = Graph(graph.name)
    out.inputs, out.nodes, out.outputs = list(graph.inputs), live, dict(graph.outputs)
    return out


register_pass(Pass("dce", "drop nodes that no output depends on", "any", transform=dead_code_elimination))


# ---- running rules ---------------------------------------------------------------------------

def _rule_visit(pass_name: str, rules: Sequence[Rule], ctx: Context) -> Visit:
    index: dict[str, list[Rule]] = {}
    for r in rules:
        for op in r.pattern.ops:
            index.setdefault(op, []).append(r)

    def visit(out: Graph, cand: Node, uses: Callable[[Value], int]) -> tuple[Value, ...] | None:
        for rule in index.get(cand.op, ()):
            m = match(rule.pattern, cand)
            if m is None:
                continue
            m.uses = uses
            r = rule.replace(Emitter(out, cand.loc, cand.adjoint_of, ctx.constraints), m)
            if r is None:
                continue
            res = r if isinstance(r, tuple) else (r,)
            got, want = [v.type for v in res], [v.type for v in cand.outputs]
            if got != want:
                raise RewriteError(f"rule {pass_name}/{rule.name} turned {cand.op} at {cand.loc} of type "
                                   f"{[str(t) for t in want]} into {[str(t) for t in got]}")
            ctx.record(pass_name, rule.name, cand)
            return res
        return None
    return visit


def apply_rules(graph: Graph, rules: Sequence[Rule], ctx: Context | None = None, name: str = "rules") -> Graph:
    """Runs `rules` over `graph` until none fires (at most ctx.max_sweeps sweeps)."""
    ctx = ctx or Context()
    visit = _rule_visit(name, rules, ctx)
    graph = dead_code_elimination(graph)  # use counts must not include dead users
    for _ in range(ctx.max_sweeps):
        graph, fired = rebuild(graph, visit)
        graph = dead_code_elimination(graph)
        if not fired:
            return graph
    still = sorted({f.rule for f in (ctx.trace or [])[-50:] if f.pass_name == name})
    raise RewriteError(f"pass {name!r} did not reach a fixed point in {ctx.max_sweeps} sweeps"
                       + (f"; still firing: {', '.join(still)}" if still else "")
                       + " (rules that undo each other?)")


def run_pass(graph: Graph, p: Pass | str, ctx: Context | None = None) -> Graph:
    """One pass over `graph`; with ctx.check, verifies the result and names the pass if it broke it."""
    ctx = ctx or Context()
    p = get_pass(p) if isinstance(p, str) else p
    out = p.transform(graph, ctx) if p.transform is not None else apply_rules(graph, p.rules, ctx, p.name)
    if ctx.check:
        verify(out, f"pass {p.name}", type_rule=infer_node)
    return out


def get_pass(name: str) -> Pass:
    try:
        return PASSES[name]
    except KeyError:
        raise RewriteError(f"unknown pass {name!r}; passes: {', '.join(PASSES)}; "
                           f"pipelines: {', '.join(PIPELINES)}") from None


def resolve(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Pass names from a pipeline name, a comma-separated list of pass or pipeline names, or a list."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for n in names:
        if not n:
            continue
        if n in PIPELINES:
            out.extend(PIPELINES[n])
        else:
            out.append(get_pass(n).name)
    return tuple(out)


def run_pipeline(graph: Graph, spec: str | Iterable[str], level: str | None = None,
                 ctx: Context | None = None) -> Graph:
    """The passes of `spec` in order; with `level`, only those that run at that level (or "any")."""
    ctx = ctx or Context()
    for name in resolve(spec):
        p = PASSES[name]
        if level is None or p.level in (level, "any"):
            graph = run_pass(graph, p, ctx)
    return graph
