"""The CPU compile's flags: a module IREE rejects with every speed flag is compiled with the next set of
CPU_SPEED_FLAG_SETS, keeping im2col (without it a KxK convolution in NCHW runs naively), which only modules with
convolutions other than NHWC/HWIO ones get."""
from __future__ import annotations

from pathlib import Path

import iree.compiler as ireec

from gir.lower.iree_compile import CPU_SPEED_FLAG_SETS, IM2COL, _attempts, compile_text, explain
from gir.netfile import load_net_file
from gir.rewrite.pipelines import PIPELINES
from gir.train.step import lower_train_step

NETS = Path(__file__).resolve().parents[2] / "nets"


def test_a_module_o3_breaks_keeps_im2col_and_o3_without_aggressive_fusion(tmp_path, monkeypatch):
    """digits_cnn's step with its 3x3 convolutions left to IREE (no `nhwc_conv` or `dense_matmul`): IREE 3.13 rejects
    im2col + O3 (aggressive fusion puts a 3x3 conv's padding into the im2col matmul), so the second
    set compiles it; each try is a real iree-compile."""
    monkeypatch.setenv("GIR_CACHE_DIR", str(tmp_path))
    tried: list[list[str]] = []
    real = ireec.compile_str

    def recording(text, extra_args=()):
        tried.append([a for a in extra_args if not a.startswith(("--iree-hal-", "--iree-llvmcpu-target-cpu"))])
        return real(text, extra_args=extra_args)

    monkeypatch.setattr(ireec, "compile_str", recording)
    net, config = load_net_file(str(NETS / "digits_cnn.py"))
    passes = ",".join(p for p in PIPELINES["default"] if p not in ("nhwc_conv", "dense_matmul"))
    text = lower_train_step(net, config, batch=32, image=16, passes=passes).text
    assert compile_text(text, "cpu")
    assert tried == [list(CPU_SPEED_FLAG_SETS[0]), list(CPU_SPEED_FLAG_SETS[1])]
    assert IM2COL in tried[-1]
    tried.clear()
    assert compile_text(text, "cpu") and tried == []     # cached under the first set's key



def test_im2col_only_for_modules_with_convolutions_it_helps():
    """On the default pipeline cifar_cnn's convolutions are all NHWC/HWIO (nhwc_conv; dense_matmul made the rest
    matmuls), which IREE runs 1.4-7x slower with im2col: no attempt passes it. Left in NCHW (no nhwc_conv or
    dense_matmul), they keep it in every set that has it."""
    net, config = load_net_file(str(NETS / "cifar_cnn.py"))
    nhwc = lower_train_step(net, config, batch=8, image=32).text
    assert "#stablehlo.conv<[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]>" in nhwc
    attempts = _attempts(nhwc, "cpu", None, [])
    assert not any(IM2COL in a for a in attempts) and len(attempts) == len({tuple(a) for a in attempts}) == 3
    passes = ",".join(p for p in PIPELINES["default"] if p not in ("nhwc_conv", "dense_matmul"))
    nchw = lower_train_step(net, config, batch=8, image=32, passes=passes).text
    assert [IM2COL in a for a in _attempts(nchw, "cpu", None, [])] == [IM2COL in s for s in CPU_SPEED_FLAG_SETS]

CRASH = """Error invoking IREE compiler tool iree-compile
Error code: -6
Diagnostics:
LLVM ERROR: Cannot select: 0x1dd119a0: v2i16,v2i16 = umul_lohi 0x1dd0a7d0, 0x1dd11bd0
  0x1dd0a7d0: v2i16 = BUILD_VECTOR 0x1dd0a760, 0x1dd0a760
  0x1dd11bd0: v2i16 = bitcast Constant:i32<1431721302>
In function: train_step_dispatch_84_elementwise_broadcast_1179648_f32
Please report issues to https://github.com/iree-org/iree/issues and include the crash backtrace.
Stack dump:
"""
"""What iree-compile 3.13 printed when LLVM's NVPTX backend crashed on cifar_cnn's train step (before gpu_forms)."""


def test_a_backend_crash_is_one_line_naming_the_dispatch():
    assert explain(CRASH, "") == (
        "LLVM ERROR: Cannot select: 0x1dd119a0: v2i16,v2i16 = umul_lohi 0x1dd0a7d0, 0x1dd11bd0 "
        "(iree-compile crashed compiling train_step_dispatch_84_elementwise_broadcast_1179648_f32)")
