"""Graphviz DOT export: nodes clustered by layer path (and by adjoint), edges labelled with shapes."""
from __future__ import annotations

from gir.ir.graph import Graph, Node, Value


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Cluster:
    def __init__(self, label: str):
        self.label = label
        self.items: list[str] = []
        self.children: dict[str, "_Cluster"] = {}

    def child(self, key: str, label: str) -> "_Cluster":
        if key not in self.children:
            self.children[key] = _Cluster(label)
        return self.children[key]

    def emit(self, out: list[str], indent: str, counter: list[int], style: str = "") -> None:
        for item in self.items:
            out.append(indent + item)
        for c in self.children.values():
            counter[0] += 1
            out.append(f"{indent}subgraph cluster_{counter[0]} {{")
            out.append(f"{indent}  label={_q(c.label)}; {style or 'style=rounded; color=gray50;'}")
            c.emit(out, indent + "  ", counter, style)
            out.append(indent + "}")


def _place(root: _Cluster, path: str) -> _Cluster:
    c = root
    for part in [p for p in path.split(".") if p] if path else []:
        c = c.child(part, part)
    return c


def to_dot(graph: Graph) -> str:
    """The graph as DOT text. Forward nodes nest in clusters per layer-path component; nodes made
    by an adjoint sit in one cluster per forward node they differentiate."""
    root = _Cluster(graph.name)
    ids: dict[Value, str] = {}
    for k, v in enumerate(graph.inputs):
        ids[v] = f"in{k}"
        shape = "box3d" if v.role in ("param", "state") else "ellipse"
        label = v.name.rsplit(".", 1)[-1] if v.role in ("param", "state") else v.name
        owner = v.name.rsplit(".", 1)[0] if v.role in ("param", "state") and "." in v.name else ""
        _place(root, owner).items.append(
            f"in{k} [label={_q(label)}, shape={shape}, style=filled, fillcolor={'lightyellow' if shape == 'box3d' else 'lightblue'}];")
    adjoints: dict[Node, _Cluster] = {}
    for k, node in enumerate(graph.nodes):
        nid = f"n{k}"
        for i, v in enumerate(node.outputs):
            ids[v] = nid
        label = node.op
        if node.adjoint_of is not None:
            src = node.adjoint_of
            if src not in adjoints:
                adjoints[src] = root.child(f"adj{src.id}", f"adjoint of {src.op} {src.loc.path}".strip())
            cluster = adjoints[src]
            color = "mistyrose"
        else:
            cluster = _place(root, node.loc.path)
            color = "white"
        tip = node.loc.where()
        cluster.items.append(f"{nid} [label={_q(label)}, shape=box, style=filled, fillcolor={color}"
                             f"{', tooltip=' + _q(tip) if tip else ''}];")
    out = [f"digraph {_q(graph.name)} {{", "  rankdir=TB; node [fontname=Helvetica, fontsize=10];",
           "  edge [fontname=Helvetica, fontsize=8];"]
    root.emit(out, "  ", [0])
    for k, node in enumerate(graph.nodes):
        for v in node.inputs:
            out.append(f"  {ids[v]} -> n{k} [label={_q(v.type.short())}];")
    for k, (name, v) in enumerate(graph.outputs.items()):
        out.append(f"  out{k} [label={_q(name)}, shape=ellipse, style=filled, fillcolor=palegreen];")
        out.append(f"  {ids[v]} -> out{k} [label={_q(v.type.short())}];")
    out.append("}")
    return "\n".join(out) + "\n"
