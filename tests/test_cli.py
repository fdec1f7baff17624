"""`gir show` and `gir lower --dump-dot` as a user runs them."""
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gir.cli import main

MNV2 = "nets/mobilenet_v2.py"
ROOT = Path(__file__).resolve().parent.parent


def test_show_table_has_paths_ops_symbolic_shapes_params_and_macs(capsys):
    assert main(["show", MNV2]) == 0
    out = capsys.readouterr().out
    assert "stage3.block1.dw.conv" in out and "depthwise_conv2d" in out
    assert "[N,144,ceil(H/8),ceil(W/8)]" in out
    assert "params: 2,236,682" in out and "BN layers: 52" in out
    assert "MACs: 16*N*(" in out and "ceil(H/32)" in out


def test_show_json_is_data(capsys):
    assert main(["show", MNV2, "--image", "224", "--batch", "32", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "mobilenet_v2" and info["params"] == 2236682 and info["bn_layers"] == 52
    assert "ceil(H/32)" in info["macs"]  # still a formula
    per_image = info["macs_value"] / 32
    assert 290e6 < per_image < 310e6  # MobileNetV2 is ~300 M MACs per 224x224 image
    first = info["layers"][0]
    assert set(first) >= {"path", "op", "shape", "params"}
    assert first["shape"] == "[32,32,112,112]"  # --image/--batch bind the shapes
    assert sum(r["params"] for r in info["layers"]) == info["params"]


def test_show_rejects_bad_flag_values():
    r = subprocess.run([sys.executable, "-m", "gir", "show", MNV2, "--image", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "--image wants a positive integer" in r.stderr
    r = subprocess.run([sys.executable, "-m", "gir", "show", MNV2, "--nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "unrecognized arguments: --nope" in r.stderr
    r = subprocess.run([sys.executable, "-m", "gir", "train", MNV2, "--workers", "-1"], capture_output=True, text=True)
    assert r.returncode == 2 and "--workers wants an integer >= 0, got -1" in r.stderr


def test_lower_dump_dot_writes_clustered_graph(tmp_path, capsys):
    dot = tmp_path / "mnv2.dot"
    assert main(["lower", MNV2, "--dump-dot", str(dot), "-o", str(tmp_path / "o"), "--no-compile"]) == 0
    text = dot.read_text()
    assert text.startswith('digraph "mobilenet_v2"') and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    assert 'label="stage3"' in text and 'label="block1"' in text
    assert '[N,32,ceil(H/2),ceil(W/2)]' in text


def test_lower_reports_unwritable_output(tmp_path, capsys):
    assert main(["lower", MNV2, "--dump-dot", str(tmp_path / "no" / "such" / "g.dot"), "-o", str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_show_eval_mode_builds_the_same_layers(capsys):
    assert main(["show", MNV2, "--json"]) == 0
    train = json.loads(capsys.readouterr().out)
    assert main(["show", MNV2, "--eval", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in ev["layers"]] == [r["path"] for r in train["layers"]]
    assert ev["params"] == train["params"] and ev["bn_layers"] == 52


def test_lower_writes_a_train_step_module_that_runs(tmp_path, capsys):
    import numpy as np

    from gir.lower.iree_runtime import IreeSession
    from gir.nn.params import init_params

    assert main(["lower", "nets/mlp.py", "-o", str(tmp_path), "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "train_step.mlir" in out and "train_step.vmfb" in out
    sig = json.loads((tmp_path / "train_step.json").read_text())
    names = [i["name"] for i in sig["inputs"]]
    assert {"lr", "step", "labels", "adam_m:dense1.weight", "adam_v:dense1.weight"} <= set(names)  # mlp uses adam
    outs = [o["name"] for o in sig["outputs"]]
    assert {"loss", "dense1.weight", "adam_m:dense1.weight"} <= set(outs)
    from gir.netfile import load_net_file
    from gir.train.step import build_train_step
    net, cfg = load_net_file("nets/mlp.py")
    vals = init_params(build_train_step(net, cfg).graph)
    rng = np.random.default_rng(0)
    vals["images"] = rng.standard_normal([i["shape"] for i in sig["inputs"] if i["name"] == "images"][0]).astype(np.float32)
    vals["labels"] = rng.integers(0, 10, 4).astype(np.int32)
    vals["lr"], vals["step"] = np.float32(0.1), np.int32(1)
    session = IreeSession((tmp_path / "train_step.vmfb").read_bytes())
    got = dict(zip(outs, session.call_numpy("train_step", *[vals[n] for n in names])))
    assert 0 < got["loss"] < 10 and not np.allclose(got["dense1.weight"], vals["dense1.weight"])


def _reported_files(out: str) -> list[str]:
    """Every path a `gir lower` run says it wrote (`wrote A (...), B, C (...)` lines)."""
    paths = []
    for line in out.splitlines():
        if line.startswith("wrote "):
            paths += [re.sub(r" \(.*", "", part) for part in re.split(r"\), |, (?![^(]*\))", line[6:])]
    return paths


def test_design_card_command_as_written_writes_every_file_it_reports(tmp_path):
    """`gir lower nets/mobilenet_v2.py --dump-dot`, typed as the design card has it, in a folder
    holding a copy of nets/: modules, signatures, compiled modules and the picture, each checked."""
    from gir.lower.iree_runtime import IreeSession
    shutil.copytree(ROOT / "nets", tmp_path / "nets")
    r = subprocess.run("gir lower nets/mobilenet_v2.py --dump-dot", shell=True, cwd=tmp_path, capture_output=True,
                       text=True, env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("gir lower mobilenet_v2: forward, eval and train_step at N=32, H=224, W=224, "
                               "compiled for cpu, into lowered/mobilenet_v2/")
    files = _reported_files(r.stdout)
    folder = tmp_path / "lowered" / "mobilenet_v2"
    expected = {"lowered.json", "mobilenet_v2.dot"} | {f"{m}.{e}" for m in ("forward", "eval", "train_step")
                                                      for e in ("mlir", "json", "vmfb")}
    if shutil.which("dot"):
        expected.add("mobilenet_v2.svg")
    assert sorted(files) == sorted(f"lowered/mobilenet_v2/{f}" for f in expected)
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)
    assert json.loads((folder / "lowered.json").read_text())["net"] == "mobilenet_v2"
    assert (folder / "mobilenet_v2.dot").read_text().startswith('digraph "mobilenet_v2"')
    if shutil.which("dot"):
        assert ET.parse(folder / "mobilenet_v2.svg").getroot().tag.endswith("svg")
        assert "(rendered by Graphviz dot)" in r.stdout
    for name in ("forward", "eval", "train_step"):
        assert (folder / f"{name}.mlir").read_text().startswith(f"module @mobilenet_v2_{name}")
        sig = json.loads((folder / f"{name}.json").read_text())
        assert sig["function"] == name and sig["inputs"][0] == {"name": "images", "role": "data",
                                                                 "shape": [32, 3, 224, 224], "dtype": "f32"}
        session = IreeSession((folder / f"{name}.vmfb").read_bytes())   # IREE loads what was written
        assert session.function(name) is not None


def test_lower_bare_dumps_go_beside_the_modules_and_say_how_to_render_without_graphviz(tmp_path, capsys,
                                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)      # no Graphviz on this PATH
    assert main(["lower", str(ROOT / "nets" / "mlp.py"), "--dump-dot", "--dump-graph", "--dump", "train_step",
                 "--no-compile"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "lowered" / "mlp"
    assert "wrote lowered/mlp/mlp.train_step.dot (train_step graph, symbolic" in out
    assert "render it with: dot -Tsvg lowered/mlp/mlp.train_step.dot -o lowered/mlp/mlp.train_step.svg" in out
    assert "wrote lowered/mlp/mlp.train_step.gir (train_step graph" in out
    assert "# adjoint of dense" in (folder / "mlp.train_step.gir").read_text()
    assert not (folder / "mlp.train_step.svg").exists()
    assert {p.name for p in folder.iterdir()} >= {"forward.mlir", "eval.json", "train_step.mlir", "lowered.json"}
    assert not any(p.suffix == ".vmfb" for p in folder.iterdir())                # --no-compile


def test_lower_renders_small_graphs_only(tmp_path, capsys, monkeypatch):
    """Graphs above RENDER_MAX_NODES get the command instead of minutes of Graphviz (the limit set
    between the MLP's forward graph and its train step here)."""
    import gir.cli
    monkeypatch.setattr(gir.cli, "RENDER_MAX_NODES", 100)
    rendered = []
    monkeypatch.setattr(gir.cli.subprocess, "run", lambda cmd, **kw: rendered.append(cmd))
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/dot")
    out = str(tmp_path / "o")
    assert main(["lower", "nets/mlp.py", "-o", out, "--no-compile", "--dump-dot"]) == 0   # 9 nodes
    assert len(rendered) == 1 and rendered[0][1:] == ["-Tsvg", f"{out}/mlp.dot", "-o", f"{out}/mlp.svg"]
    assert f"wrote {out}/mlp.svg (rendered by Graphviz dot)" in capsys.readouterr().out
    assert main(["lower", "nets/mlp.py", "-o", out, "--no-compile", "--dump-dot", "--dump", "train_step"]) == 0
    assert len(rendered) == 1                                                                # 215 nodes: not run
    assert (f"render it with: dot -Tsvg {out}/mlp.train_step.dot -o {out}/mlp.train_step.svg (not rendered here: "
            "215 nodes take Graphviz minutes)") in capsys.readouterr().out


def test_lower_refuses_a_folder_holding_another_nets_modules(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["lower", "nets/mlp.py", "-o", out, "--no-compile"]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    assert main(["lower", MNV2, "-o", out, "--no-compile"]) == 1
    assert f"gir: error: {out} holds the lowered modules of net 'mlp', not 'mobilenet_v2'" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()} == before      # nothing overwritten
    assert main(["lower", "nets/mlp.py", "-o", out, "--no-compile", "--batch", "4"]) == 0   # the same net may
    (tmp_path / "o" / "lowered.json").unlink()
    assert main(["lower", "nets/mlp.py", "-o", out, "--no-compile"]) == 1
    assert "from an unknown net (no lowered.json)" in capsys.readouterr().err
    (tmp_path / "o" / "lowered.json").write_text("{not json")
    assert main(["lower", "nets/mlp.py", "-o", out, "--no-compile"]) == 1
    assert "lowered.json is unreadable" in capsys.readouterr().err


def test_lower_dumps_the_train_step_with_a_cluster_per_adjoint(tmp_path, capsys):
    dot, txt = tmp_path / "ts.dot", tmp_path / "ts.txt"
    assert main(["lower", "nets/mlp.py", "--dump", "train_step", "--dump-dot", str(dot), "--dump-graph", str(txt),
                 "-o", str(tmp_path), "--no-compile"]) == 0
    assert 'label="adjoint of dense dense1"' in dot.read_text()
    assert "# adjoint of softmax_cross_entropy" in txt.read_text() and "nets/mlp.py:" in txt.read_text()


def test_check_reports_every_invariant(capsys):
    assert main(["check", "nets/mnist_cnn.py"]) == 0
    out = capsys.readouterr().out
    for name in ("cotangent types", "adjoint completeness", "fan-in sums", "conv transposes", "op count",
                 "numerics (float64)", "linearity"):
        assert any(line.strip().startswith(name) and " ok " in line for line in out.splitlines()), name
    assert "7 of 7 checks passed" in out


def test_check_fails_naming_the_op_and_layer(monkeypatch, capsys):
    from gir.autodiff import ADJOINTS
    monkeypatch.setitem(ADJOINTS, "relu", lambda e, node, cts: (cts[0],))   # forgot the mask
    assert main(["check", "nets/mnist_cnn.py"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "adjoint of relu at conv1 at nets/mnist_cnn.py:8: jax.vjp relative error" in out


def test_passes_lists_passes_rules_and_pipelines(capsys):
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    for name in ("dce", "cse", "fold", "simplify", "bn_fold", "fusion", "bf16", "bf16_conv"):
        assert f"\n  {name} " in out
    assert "transpose_of_transpose" in out and "fold_bn_into_conv" in out
    pipelines = {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines() if line.startswith("  default")}
    assert pipelines["default"] == ("cse, bn_fold, simplify, fold, fusion, fold, layout_cnhw_small, conv_crop, "
                                    "nhwc_conv, depthwise_spatial, conv_forms, pointwise_matmul, dense_matmul, "
                                    "weight_grad_matmul, large_rhs_matmul, long_contraction_matmul, cse, simplify, dce")
    assert pipelines["default_avx2"] == pipelines["default"].replace("long_contraction_matmul,",
                                                                    "long_contraction_matmul, nn_matmul,")
    assert pipelines["default_jax"] == ("cse, bn_fold, simplify, fold, fusion, fold, conv_crop, conv_forms, cse, "
                                        "simplify, dce")


def test_lower_traces_rewrites_and_no_opt_turns_them_off(tmp_path, capsys):
    assert main(["lower", MNV2, "-o", str(tmp_path / "opt"), "--batch", "2", "--image", "32", "--no-compile",
                 "--trace-rewrites"]) == 0
    out = capsys.readouterr().out
    # which rule fired where: pass/rule, op and node, layer path, file:line
    assert "rewrite eval: bn_fold/fold_bn_into_conv: batch_norm #" in out
    assert " at stage3.block1.dw.bn (nets/mobilenet_v2.py:" in out
    assert "rewrite train_step: cse/duplicate: " in out and "rewrites: " in out
    assert main(["lower", MNV2, "-o", str(tmp_path / "none"), "--batch", "2", "--image", "32", "--no-compile",
                 "--no-opt", "--trace-rewrites"]) == 0
    assert "rewrite " not in capsys.readouterr().out.replace("rewrites: 0", "")
    # conv_forms, pointwise_matmul, dense_matmul: no convolution is left (depthwise ones became taps,
    # the others matmuls)
    for name in ("forward", "eval", "train_step"):
        opt, none = ((tmp_path / d / f"{name}.mlir").read_text() for d in ("opt", "none"))
        assert '"stablehlo.convolution"' not in opt and '"stablehlo.dot_general"' in opt
        assert re.search(r"feature_group_count = [1-9][0-9]+", none), name

    # eval BN folded into the convs: BN multiplies no activation (batch 2, NCHW) any more, only weights
    def bn_activation_multiplies(d):
        text = (tmp_path / d / "eval.mlir").read_text()
        return len(re.findall(r'"stablehlo.multiply".* -> tensor<2x\d+x\d+x\d+xf32> loc\("[^"]*\.bn"', text))
    assert bn_activation_multiplies("opt") == 0 and bn_activation_multiplies("none") == 52


def test_lower_bf16_conv_casts_survive_to_the_text(tmp_path, capsys):
    assert main(["lower", MNV2, "-o", str(tmp_path), "--batch", "2", "--image", "32", "--no-compile",
                 "--bf16-conv"]) == 0
    for name in ("forward", "eval", "train_step"):
        text = (tmp_path / f"{name}.mlir").read_text()
        # the convolutions, now matmuls (dense_matmul, pointwise_matmul) or bf16 taps (conv_forms)
        convs = [ln for ln in text.splitlines() if '"stablehlo.convolution"' in ln or '"stablehlo.dot_general"' in ln]
        assert convs and all("xbf16>, tensor<" in ln and ln.count("xbf16>") == 3 for ln in convs), name
        assert text.count("xbf16> loc(") >= len(convs)     # converts to bf16
    sig = json.loads((tmp_path / "train_step.json").read_text())
    assert {i["dtype"] for i in sig["inputs"]} == {"f32", "i32"}   # master weights and state stay f32


def test_lower_rejects_an_unknown_pass(tmp_path, capsys):
    assert main(["lower", MNV2, "-o", str(tmp_path), "--no-compile", "--passes", "cse,nope"]) == 1
    assert "gir: error: --passes: unknown pass 'nope'; passes: " in capsys.readouterr().err


def test_bench_prints_timings_and_json(capsys):
    net = "nets/digits_cnn.py"
    assert main(["bench", net, "--batch", "8", "--image", "16", "--steps", "3", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "gir bench digits_cnn: train step at batch 8, 16x16 on iree cpu" in out
    assert re.search(r"3 steps after 1 warm-up: median [\d.]+ ms \(min [\d.]+, max [\d.]+\); \d+ images/s; "
                     r"0\.03 GFLOP per step, [\d.]+ GFLOP/s", out), out
    assert main(["bench", net, "--batch", "8", "--image", "16", "--steps", "3", "--backend", "jax", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["steps"] == 3 and r["backend"] == "jax" and 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
    assert r["images_per_s"] == pytest.approx(8 / (r["median_ms"] / 1e3)) and r["gflop_per_step"] > 0
