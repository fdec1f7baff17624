"""The IREE session keeps outputs on the device: they feed the next call without host copies. A thread calling
into the CPU device drops its own priority below the workers'."""
import os
import sys
import threading

import iree.runtime as ireert
import numpy as np
import pytest

from gir.ir import Graph, TensorType
from gir.ir import opdefs as od
from gir.shapes.emit import Emitter
from gir.lower.iree_compile import CPU_STACK_LIMIT, CPU_WORKER_STACK, compile_text, target_flags
from gir.lower.iree_runtime import (CALLER_NICE, DeviceUnavailable, IreeSession, RuntimeSettingError, caller_nice,
                                    device_config)
from gir.lower.stablehlo import print_module


def _step_module() -> bytes:
    """step(x, v) = (x + v, v * 2): state in, state out, like a train step."""
    g = Graph("state")
    x = g.add_input("x", TensorType((4,)), "param")
    v = g.add_input("v", TensorType((4,)), "state")
    e = Emitter(g)
    g.set_output("x", e.op("add", x, v))
    g.set_output("v", e.mul_scalar(v, 2.0))
    return compile_text(print_module({"step": g}, "state"), "cpu")


def test_outputs_stay_on_device_and_feed_back():
    s = IreeSession(_step_module())
    x, v = s.to_device(np.zeros(4, np.float32)), s.to_device(np.ones(4, np.float32))
    for _ in range(5):
        x, v = s.call("step", x, v)
        assert isinstance(x, ireert.DeviceArray) and isinstance(v, ireert.DeviceArray)
    np.testing.assert_array_equal(x.to_host(), np.full(4, 1 + 2 + 4 + 8 + 16, np.float32))
    np.testing.assert_array_equal(v.to_host(), np.full(4, 32, np.float32))


def _nice_after_a_call(session: IreeSession) -> int:
    """The nice value of a fresh thread after it called into `session` (pytest's own thread stays as it was)."""
    seen = []

    def call() -> None:
        session.call("step", np.zeros(4, np.float32), np.ones(4, np.float32))
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    t = threading.Thread(target=call)
    t.start()
    t.join()
    return seen[0]


def _worker_nices() -> list[int]:
    """The nice values of IREE's CPU worker threads in this process (field 19 of /proc's stat), in id order;
    threads that end while this reads are left out."""
    nices = []
    for t in sorted(os.listdir("/proc/self/task"), key=int):
        try:
            with open(f"/proc/self/task/{t}/comm") as comm, open(f"/proc/self/task/{t}/stat") as stat:
                if comm.read().startswith("iree-worker"):
                    nices.append(int(stat.read().rsplit(")", 1)[1].split()[16]))
        except FileNotFoundError:
            continue
    return nices


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice is per thread on Linux only")
def test_a_thread_calling_the_cpu_device_yields_the_cpus_to_its_workers(monkeypatch):
    monkeypatch.delenv("GIR_IREE_CALLER_NICE", raising=False)
    s = IreeSession(_step_module())
    workers_before = _worker_nices()
    assert _nice_after_a_call(s) >= CALLER_NICE
    assert workers_before and _worker_nices() == workers_before   # the workers keep theirs
    monkeypatch.setenv("GIR_IREE_CALLER_NICE", "0")
    assert _nice_after_a_call(s) == os.getpriority(os.PRIO_PROCESS, 0)   # as the process started it


@pytest.mark.parametrize("value", ["-3", "20", "ten", "1.5"])
def test_a_bad_caller_nice_is_one_clear_error(monkeypatch, value):
    monkeypatch.setenv("GIR_IREE_CALLER_NICE", value)
    with pytest.raises(RuntimeSettingError, match=f"GIR_IREE_CALLER_NICE must be a whole number .* got '{value}'"):
        caller_nice()


def _chain_module(transient_storage: bool) -> bytes:
    """f(a, b) = sum over rows of (a @ b) * a, in dispatches whose intermediates IREE keeps in
    transient buffers."""
    g = Graph("chain")
    a = g.add_input("a", TensorType((64, 64)), "param")
    b = g.add_input("b", TensorType((64, 64)), "state")
    e = Emitter(g)
    prod = e.op("dot_general", a, b, attrs=od.DotGeneralAttrs(lhs_contract=(1,), rhs_contract=(0,)))
    g.set_output("y", e.reduce(e.op("multiply", prod, a), "sum", (1,)))
    g.set_output("b", e.op("multiply", prod, b))
    return compile_text(print_module({"f": g}, "chain", transient_storage), "cpu")


def test_caller_kept_transient_storage_is_allocated_once_and_changes_no_value():
    """A function printed with TRANSIENT_STORAGE gets one buffer for its intermediates, reused by
    every call; its results are the plain function's."""
    plain, kept = IreeSession(_chain_module(False)), IreeSession(_chain_module(True))
    assert plain.transient_storage("f") is None
    storage = kept.transient_storage("f")
    assert isinstance(storage, ireert.HalBuffer) and storage.byte_length() > 0
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((64, 64)).astype(np.float32) for _ in range(2))
    b1 = b2 = b
    for _ in range(3):
        (y1, b1), (y2, b2) = plain.call("f", a, b1), kept.call("f", a, b2)
        np.testing.assert_array_equal(y1.to_host(), y2.to_host())
        np.testing.assert_array_equal(b1.to_host(), b2.to_host())
    assert kept.transient_storage("f") is storage


def test_unknown_function_is_a_clear_error():
    s = IreeSession(_step_module())
    with pytest.raises(KeyError, match="no function 'nope'"):
        s.call("nope")


def test_missing_gpu_driver_or_device_is_reported():
    try:
        IreeSession(_step_module(), target="rocm")
    except DeviceUnavailable as e:
        assert "no rocm device is available" in str(e)
    except Exception as e:  # a rocm device exists but cannot run a cpu module: also not a crash of ours
        assert "rocm" in str(e).lower() or "hip" in str(e).lower()


def test_cpu_workers_get_a_stack_for_the_dispatch_stack_limit_the_compiler_allows(monkeypatch):
    """Modules are compiled allowing CPU_STACK_LIMIT bytes of stack per dispatch (IREE's default 32 KiB rejected
    ConvNeXt-T's O3 module); the workers' stacks must be set larger before the CPU driver is created."""
    calls = []
    monkeypatch.setattr(ireert.flags, "parse_flags", lambda *f: calls.append(("flags", *f)))
    monkeypatch.setattr(ireert, "Config", lambda driver: calls.append(("driver", driver)))
    device_config.cache_clear()
    try:
        device_config("cpu")
    finally:
        device_config.cache_clear()
    assert calls[-1] == ("driver", "local-task")
    flags = [f for c in calls[:-1] for f in c[1:]]
    assert flags == [f"--task_worker_stack_size={CPU_WORKER_STACK}"]
    assert CPU_WORKER_STACK >= 2 * CPU_STACK_LIMIT
    assert f"--iree-llvmcpu-stack-allocation-limit={CPU_STACK_LIMIT}" in target_flags("cpu")


_KEPT = """
import os, sys
import numpy as np

def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

if sys.argv[1] == "session":
    from tests.lower.test_iree_runtime import _step_module
    from gir.lower.iree_runtime import IreeSession
    IreeSession(_step_module())
before = resident_mb()
a = np.empty(256 << 20, np.uint8)
a.fill(1)
del a
print(resident_mb() - before)
"""


def test_cpu_session_keeps_freed_host_memory_for_reuse():
    """IREE's per-call transient buffers are large mallocs. Once a CPU session exists a freed
    256 MB block stays mapped for the next call; without one, glibc unmaps it (and the next call
    faults every page in again)."""
    import subprocess
    import sys
    from pathlib import Path

    def kept_mb(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", _KEPT, mode], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[2])
        return float(out.stdout.split()[-1])

    assert kept_mb("plain") < 32
    assert kept_mb("session") > 224
