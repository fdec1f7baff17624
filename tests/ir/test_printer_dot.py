"""The text printer and the Graphviz DOT export of Builder-made graphs."""
import inspect
import re
import shutil
import subprocess

from gir.ir import Graph, Loc, TensorType
from gir.ir import opdefs as od
from gir.ir.dot import to_dot
from gir.ir.printer import format_attrs, print_graph
from gir.nn import Builder, Constraints, H, Init, N, W


def _line() -> int:
    return inspect.currentframe().f_back.f_lineno


def _net():
    """x -> stage1.conv (conv2d + param) -> stage1 relu -> stage2.pool max_pool -> y; plus a dense head."""
    b = Builder("t", Constraints().at_least(H, 8).at_least(W, 8))
    x = b.input("x", (N, 3, H, W))
    lines = {}
    with b.scope("stage1"):
        with b.scope("conv"):
            w = b.param("weight", (32, 3, 3, 3), Init("he_normal", fan_in=27))
            y = b.conv2d(x, w, stride=2); lines["conv2d"] = _line()  # noqa: E702
        y = b.unary("relu", y); lines["relu"] = _line()  # noqa: E702
    with b.scope("stage2"):
        with b.scope("pool"):
            y = b.max_pool(y, 2, 2, padding="same"); lines["max_pool"] = _line()  # noqa: E702
    g = b.global_avg_pool(y); lines["global_avg_pool"] = _line()  # noqa: E702
    b.graph.set_output("y", y)
    b.graph.set_output("feat", g)
    return b.graph, lines


# ---- print_graph -------------------------------------------------------------------------

def test_print_graph_shows_op_types_path_and_line_per_node():
    graph, lines = _net()
    text = print_graph(graph)
    node_lines = [ln for ln in text.splitlines() if re.match(r"\s+%\d+ = ", ln)]
    assert len(node_lines) == len(graph.nodes) == 4
    for node, ln in zip(graph.nodes, node_lines):
        assert f"= {node.op}(" in ln
        assert str(node.out.type) in ln
        assert node.loc.path in ln
        assert re.search(rf"test_printer_dot\.py:{lines[node.op]}\b", ln), ln
    conv = node_lines[0]
    assert "tensor<Nx32xceil(H/2)xceil(W/2)xf32>" in conv
    assert "stage1.conv" in conv and "padding='same'" in conv and "stride=(2, 2)" in conv
    assert "tensor<Nx32xceil(H/4)xceil(W/4)xf32>" in node_lines[2]
    assert "tensor<Nx32xf32>" in node_lines[3]


def test_print_graph_lists_inputs_with_roles_and_outputs():
    graph, _ = _net()
    text = print_graph(graph)
    assert text.startswith("graph t(")
    assert "%x: tensor<Nx3xHxWxf32>  [data]" in text
    assert "%stage1.conv.weight: tensor<32x3x3x3xf32>  [param]" in text
    assert "y: %2" in text and "feat: %3" in text
    assert "%0 = conv2d(%x, %stage1.conv.weight)" in text
    assert "%1 = relu(%0)" in text


def test_print_graph_multi_output_and_adjoint_notes():
    g = Graph("bn")
    x = g.add_input("x", TensorType((N, 4)), "data")
    gam = g.add_input("gamma", TensorType((4,)), "param")
    bet = g.add_input("beta", TensorType((4,)), "param")
    bn = g.add_node("batch_norm", [x, gam, bet], od.BatchNormAttrs(),
                    [x.type, TensorType((4,)), TensorType((4,))], Loc("bn1", "net.py", 12))
    adj = g.add_node("negate", [bn.outputs[1]], None, [TensorType((4,))], Loc("bn1"), adjoint_of=bn)
    g.set_output("m", adj.out)
    text = print_graph(g)
    assert "%0#0, %0#1, %0#2 = batch_norm(%x, %gamma, %beta)" in text
    assert "tensor<Nx4xf32>, tensor<4xf32>, tensor<4xf32>" in text
    assert "bn1  net.py:12" in text
    assert "%1 = negate(%0#1)" in text and "adjoint of batch_norm %0" in text


def test_format_attrs():
    assert format_attrs(None) == ""
    assert format_attrs(od.ReshapeAttrs((N, 3 * H))) == "{shape=(N, 3*H)}"
    assert format_attrs(od.ConvertAttrs(od.DType.i32)) == "{dtype=i32}"
    assert format_attrs(od.ConcatAttrs(1)) == "{dim=1}"
    assert format_attrs(od.TransposeAttrs((0,))) == "{perm=(0,)}"


# ---- DOT -----------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<arrow>->|--)|(?P<punct>[{}\[\];=,])|(?P<id>[A-Za-z_0-9.]+))')


def _tokens(text):
    pos, out = 0, []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m and m.end() > pos, f"unparseable DOT at {text[pos:pos + 40]!r}"
        pos = m.end()
        kind = m.lastgroup
        tok = m.group(kind)
        out.append((kind, bytes(tok[1:-1], "utf-8").decode("unicode_escape") if kind == "str" else tok))
    return out


class _Dot:
    """A tiny parser for the DOT subset `to_dot` writes: nested clusters, node and edge
    statements with attribute lists, `key=value;` graph attributes."""

    def __init__(self, text):
        self.toks = _tokens(text)
        self.i = 0
        self.nodes = {}      # id -> (attrs, cluster label path)
        self.edges = []      # (src, dst, attrs)
        self.clusters = []   # label paths
        assert self.next() == "digraph"
        self.name = self.next()
        self.block([])
        assert self.i == len(self.toks), "trailing tokens after the graph"

    def peek(self):
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def next(self):
        tok = self.toks[self.i][1]
        self.i += 1
        return tok

    def expect(self, tok):
        got = self.next()
        assert got == tok, f"expected {tok!r}, got {got!r}"

    def attrs(self):
        out = {}
        if self.peek() != "[":
            return out
        self.next()
        while self.peek() != "]":
            k = self.next()
            self.expect("=")
            out[k] = self.next()
            if self.peek() == ",":
                self.next()
        self.next()
        return out

    def block(self, path):
        self.expect("{")
        label = None
        while self.peek() != "}":
            tok = self.next()
            if tok == "subgraph":
                name = self.next()
                assert name.startswith("cluster_")
                start = len(self.clusters)
                self.clusters.append(None)
                sub_label = self.block(path + ["?"])
                self.clusters[start] = tuple(path + [sub_label])
                # fix up the label path of everything placed inside it
                for nid, (a, p) in self.nodes.items():
                    if p[:len(path) + 1] == tuple(path + ["?"]):
                        self.nodes[nid] = (a, tuple(path + [sub_label]) + p[len(path) + 1:])
                for k in range(start + 1, len(self.clusters)):
                    c = self.clusters[k]
                    if c[:len(path) + 1] == tuple(path + ["?"]):
                        self.clusters[k] = tuple(path + [sub_label]) + c[len(path) + 1:]
            elif tok in ("node", "edge", "graph"):
                self.attrs()
            elif self.peek() == "=":
                self.next()
                val = self.next()
                if tok == "label":
                    label = val
            elif self.peek() == "->":
                self.next()
                dst = self.next()
                self.edges.append((tok, dst, self.attrs()))
            else:
                assert tok not in self.nodes, f"node {tok} declared twice"
                self.nodes[tok] = (self.attrs(), tuple(path))
            if self.peek() == ";":
                self.next()
        self.next()
        return label


def _braces_balanced(text):
    depth = 0
    for ch in re.sub(r'"(?:[^"\\]|\\.)*"', '""', text):
        depth += ch == "{"
        depth -= ch == "}"
        if depth < 0:
            return False
    return depth == 0


def test_dot_braces_balance_and_clusters_per_path_component():
    graph, _ = _net()
    text = to_dot(graph)
    assert text.startswith('digraph "t" {') and text.endswith("}\n")
    assert _braces_balanced(text)
    # stage1, stage1.conv, stage2, stage2.pool: one cluster per distinct path component
    assert len(re.findall(r"\bsubgraph cluster_\d+ \{", text)) == 4
    assert len(set(re.findall(r"cluster_\d+", text))) == 4


def test_dot_parses_and_nodes_sit_in_their_layer_clusters():
    graph, _ = _net()
    dot = _Dot(to_dot(graph))
    assert dot.name == "t"
    assert sorted(dot.clusters) == [("stage1",), ("stage1", "conv"), ("stage2",), ("stage2", "pool")]
    by_label = {a["label"]: p for a, p in dot.nodes.values()}
    assert by_label["conv2d"] == ("stage1", "conv")
    assert by_label["weight"] == ("stage1", "conv")  # a param sits with the layer that owns it
    assert by_label["relu"] == ("stage1",)
    assert by_label["max_pool"] == ("stage2", "pool")
    assert by_label["global_avg_pool"] == () and by_label["x"] == ()
    assert {a["label"] for a, _ in dot.nodes.values()} >= {"y", "feat"}


def test_dot_edges_reference_declared_nodes_and_carry_shapes():
    graph, _ = _net()
    dot = _Dot(to_dot(graph))
    for src, dst, _ in dot.edges:
        assert src in dot.nodes and dst in dot.nodes
    labels = {a["label"] for _, _, a in dot.edges}
    assert "[N,3,H,W]" in labels
    assert "[32,3,3,3]" in labels
    assert "[N,32,ceil(H/2),ceil(W/2)]" in labels
    assert "[N,32,ceil(H/4),ceil(W/4)]" in labels
    assert "[N,32]" in labels
    # one edge per node operand, plus one per graph output
    assert len(dot.edges) == sum(len(n.inputs) for n in graph.nodes) + len(graph.outputs)


def test_dot_tooltips_carry_source_lines():
    graph, lines = _net()
    dot = _Dot(to_dot(graph))
    tips = {a["label"]: a.get("tooltip", "") for a, _ in dot.nodes.values()}
    assert tips["relu"].endswith(f"test_printer_dot.py:{lines['relu']}")
    assert tips["conv2d"].endswith(f"test_printer_dot.py:{lines['conv2d']}")


def test_dot_escapes_quotes_and_groups_adjoints():
    g = Graph('we"ird')
    x = g.add_input('x"1', TensorType((N, 4)), "data")
    e = g.add_node("exp", [x], None, [x.type], Loc("blk.act", "m.py", 3))
    adj = g.add_node("multiply", [e.out, x], None, [x.type], Loc("blk.act"), adjoint_of=e)
    g.set_output("dx", adj.out)
    text = to_dot(g)
    assert _braces_balanced(text)
    dot = _Dot(text)
    assert dot.name == 'we"ird'
    labels = {a["label"]: p for a, p in dot.nodes.values()}
    assert labels['x"1'] == ()
    assert labels["exp"] == ("blk", "act")
    assert labels["multiply"] == ("adjoint of exp blk.act",)
    fill = {a["label"]: a["fillcolor"] for a, _ in dot.nodes.values()}
    assert fill["multiply"] != fill["exp"]


def test_dot_parses_with_pydot_or_graphviz_when_available():
    graph, _ = _net()
    text = to_dot(graph)
    assert _braces_balanced(text)
    _Dot(text)  # our own parser always runs
    try:
        import pydot
    except ImportError:
        pydot = None
    if pydot is not None:
        parsed = pydot.graph_from_dot_data(text)
        assert parsed and len(parsed) == 1
        assert len(parsed[0].get_edges()) == sum(len(n.inputs) for n in graph.nodes) + len(graph.outputs)
        import networkx as nx
        g = nx.nx_pydot.from_pydot(parsed[0])
        assert g.number_of_edges() == len(parsed[0].get_edges())
    dot_bin = shutil.which("dot")
    if dot_bin is not None:
        res = subprocess.run([dot_bin, "-Tsvg"], input=text, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert "<svg" in res.stdout and "ceil(H/2)" in res.stdout
