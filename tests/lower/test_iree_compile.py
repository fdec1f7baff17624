"""The CPU compile's flags: a module IREE rejects with every speed flag is compiled with the next set of
CPU_SPEED_FLAG_SETS, keeping im2col (without it a KxK convolution in NCHW runs naively), which only modules with
convolutions other than NHWC/HWIO ones get."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from gir.lower import iree_compile
from gir.lower.iree_compile import CPU_SPEED_FLAG_SETS, IM2COL, _attempts, compile_text, explain
from gir.lower.iree_runtime import IreeSession
from gir.netfile import load_net_file
from gir.rewrite.pipelines import PIPELINES
from gir.train.step import lower_train_step

NETS = Path(__file__).resolve().parents[2] / "nets"


def _recording_launches(monkeypatch) -> list[tuple[list[str], object, bool]]:
    """Every iree-compile gir starts, as (its speed flags, its process, whether it started as a spare)."""
    launched: list[tuple[list[str], object, bool]] = []
    real, device = iree_compile.launch, set(iree_compile.target_flags("cpu"))

    def recording(source, output, errors, args, spare=False):
        proc = real(source, output, errors, args, spare)
        launched.append(([a for a in args if a not in device], proc, spare))
        return proc

    monkeypatch.setattr(iree_compile, "launch", recording)
    return launched


def _digits_step_iree_rejects_first() -> str:
    """digits_cnn's step with its 3x3 convolutions left to IREE (no `nhwc_conv` or `dense_matmul`): IREE 3.13 rejects
    im2col + O3 (aggressive fusion puts a 3x3 conv's padding into the im2col matmul)."""
    net, config = load_net_file(str(NETS / "digits_cnn.py"))
    passes = ",".join(p for p in PIPELINES["default"] if p not in ("nhwc_conv", "dense_matmul"))
    return lower_train_step(net, config, batch=32, image=16, passes=passes).text


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_module_o3_breaks_keeps_im2col_and_o3_without_aggressive_fusion(tmp_path, monkeypatch, jobs):
    """The second set compiles it, whether the sets run in turn or side by side; each try is a real iree-compile,
    and none is left running."""
    monkeypatch.setenv("GIR_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GIR_COMPILE_JOBS", jobs)
    launched = _recording_launches(monkeypatch)
    text = _digits_step_iree_rejects_first()
    assert compile_text(text, "cpu")
    first, second = list(CPU_SPEED_FLAG_SETS[0]), list(CPU_SPEED_FLAG_SETS[1])
    if jobs == "1":
        # in turn, the set without speed flags is tried right after the first (it fails otherwise, or not at all)
        assert [flags for flags, _, _ in launched] == [first, [], second]
    else:
        assert [flags for flags, _, _ in launched][:2] == [first, second]
    # side by side, the later sets start as spares, and the third is killed once the second compiles
    assert [spare for _, _, spare in launched] == ([False] * 3 if jobs == "1" else [False, True, True])
    assert all(proc.poll() is not None for _, proc, _ in launched)
    launched.clear()
    assert compile_text(text, "cpu") and launched == []     # cached under the first set's key


def test_a_failure_without_the_speed_flags_too_is_reported_after_two_compiles(tmp_path, monkeypatch):
    """A user's flag that every set fails on (a 16-byte stack limit): in turn, the first set and the one without
    speed flags fail the same way, and gir reports it without trying the three sets between."""
    monkeypatch.setenv("GIR_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GIR_COMPILE_JOBS", raising=False)
    launched = _recording_launches(monkeypatch)
    text = _digits_step_iree_rejects_first()
    assert len(_attempts(text, "cpu", None, ())) == len(CPU_SPEED_FLAG_SETS)
    limit = "--iree-llvmcpu-stack-allocation-limit=16"
    with pytest.raises(iree_compile.CompileError, match="exceeded stack allocation limit of 16 bytes"):
        compile_text(text, "cpu", extra_flags=[limit])
    assert [[f for f in flags if f != limit] for flags, _, _ in launched] == [list(CPU_SPEED_FLAG_SETS[0]), []]


def test_an_error_kind_leaves_out_sizes_and_places():
    """The same stack overflow in two dispatches is one kind of error; O3's rejected fusion is another."""
    stack = "<stdin>:{}:5: error: 'func.func' op exceeded stack allocation limit of 16 bytes for function. Got {} bytes"
    fusion = ("<stdin>:9:5: error: write affecting operations on global resources are restricted to workgroup "
              "distributed contexts")
    assert iree_compile.error_kind(stack.format(9, 128)) == iree_compile.error_kind(stack.format(15, 64))
    assert iree_compile.error_kind(stack.format(9, 128)) != iree_compile.error_kind(fusion)


def test_side_by_side_the_answer_is_the_first_set_in_order_iree_accepts():
    """A set IREE rejects is passed over for the next that compiles (a later one is not taken); when none does, the
    diagnostics are the last set's."""
    text = """func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {
  %0 = stablehlo.add %a, %a : tensor<4xf32>
  return %0 : tensor<4xf32>
}"""
    accepted, vmfb = iree_compile.first_accepted(text, [["--iree-hal-target-device=local",
                                                   "--iree-hal-local-target-device-backends=llvm-cpu", "--no-such"],
                                                  iree_compile.target_flags("cpu"), ["--also-no-such"]], 2)
    assert accepted == 1
    np.testing.assert_array_equal(IreeSession(vmfb, "cpu").call_numpy("f", np.ones(4, np.float32)), 2)
    accepted, diagnostics = iree_compile.first_accepted(text, [["--no-such"], ["--also-no-such"]], 2)
    assert accepted is None and "also-no-such" in diagnostics


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


def test_a_spare_compile_runs_at_the_lowest_priority_until_promoted():
    """A spare starts at niceness 19; promoted (it is the one awaited), every thread is back at 0 where the process
    may raise priorities (root here), else it stays low."""
    proc = subprocess.Popen(["nice", "-n", "19", "sleep", "30"])   # how `launch` starts a spare
    try:
        deadline = time.monotonic() + 10
        while os.getpriority(os.PRIO_PROCESS, proc.pid) != 19 and time.monotonic() < deadline:
            time.sleep(0.01)   # until `nice` has lowered itself and become `sleep`
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == 19
        iree_compile.promote(proc)
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == (0 if os.geteuid() == 0 else 19)
    finally:
        proc.kill()
        proc.wait()


def test_flag_sets_compile_in_turn_unless_gir_compile_jobs_says_otherwise(monkeypatch):
    monkeypatch.delenv("GIR_COMPILE_JOBS", raising=False)
    assert iree_compile.parallel_attempts() == 1
    monkeypatch.setenv("GIR_COMPILE_JOBS", "2")
    assert iree_compile.parallel_attempts() == 2
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv("GIR_COMPILE_JOBS", bad)
        with pytest.raises(iree_compile.CompileError, match=f"GIR_COMPILE_JOBS must be .* got '{bad}'"):
            iree_compile.parallel_attempts()


ADD = """func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {
  %0 = stablehlo.add %a, %a : tensor<4xf32>
  return %0 : tensor<4xf32>
}"""


def _stalling_launches(monkeypatch, stalls: int) -> list[subprocess.Popen]:
    """The first `stalls` launches start a process that uses no CPU (as a deadlocked iree-compile does), the rest
    real compiles; STALL_S is cut to 1 s."""
    monkeypatch.setattr(iree_compile, "STALL_S", 1.0)
    monkeypatch.setattr(iree_compile, "POLL_S", 0.1)
    started, real = [], iree_compile.launch

    def launch(source, output, errors, args, spare=False):
        proc = subprocess.Popen(["sleep", "60"]) if len(started) < stalls else real(source, output, errors, args, spare)
        started.append(proc)
        return proc

    monkeypatch.setattr(iree_compile, "launch", launch)
    return started


def test_cpu_seconds_reads_a_process_cpu_time_or_none():
    assert iree_compile.cpu_seconds(os.getpid()) > 0
    assert iree_compile.cpu_seconds(2**22 + 1) is None   # no such process


@pytest.mark.parametrize("stalls, accepted", [(1, 0), (2, 1)])
def test_a_deadlocked_compile_runs_once_more_then_its_set_counts_as_failed(monkeypatch, stalls, accepted):
    """One stall: the same set again, which compiles. Two: that set failed, the next one compiles."""
    started = _stalling_launches(monkeypatch, stalls)
    got, vmfb = iree_compile.first_accepted(ADD, [iree_compile.target_flags("cpu")] * 2, 1)
    assert got == accepted and len(started) == stalls + 1
    assert [p.returncode for p in started[:stalls]] == [-9] * stalls
    np.testing.assert_array_equal(IreeSession(vmfb, "cpu").call_numpy("f", np.ones(4, np.float32)), 2)


def test_two_stalls_of_the_only_set_say_so(monkeypatch):
    _stalling_launches(monkeypatch, 2)
    got, diagnostics = iree_compile.first_accepted(ADD, [iree_compile.target_flags("cpu")], 1)
    assert got is None and "used no CPU for 1 s, twice (deadlocked)" in diagnostics
