"""Running compiled modules with the IREE runtime. Outputs stay on the device as DeviceArrays
and can be passed back in without host copies (the train loop keeps its state this way)."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
import threading
from typing import Any

import iree.runtime as ireert
import numpy as np
from iree.runtime.function import Invocation, InvokeContext, _extract_vm_sequence_to_python

from gir.lower.iree_compile import CPU_WORKER_STACK, DRIVERS


class DeviceUnavailable(RuntimeError):
    """The target's driver or device is not present on this machine."""


class RuntimeSettingError(RuntimeError):
    """An environment variable that tunes IREE's runtime holds a value it cannot take."""


@functools.cache
def device_config(target: str) -> ireert.Config:
    """The IREE runtime config of `target`'s device, created once per process (checking for the
    device before compiling and then running on it share one device); DeviceUnavailable when this
    machine has none."""
    driver = DRIVERS[target]
    if target == "cpu":  # before the driver exists: its executor reads the flag once, when it is created
        ireert.flags.parse_flags(f"--task_worker_stack_size={CPU_WORKER_STACK}")
    try:
        return ireert.Config(driver)
    except (RuntimeError, ValueError):
        raise DeviceUnavailable(f"no {target} device is available on this machine (IREE's {driver!r} driver could "
                                f"not create one); modules for {target} still compile (gir lower --target {target}) "
                                f"but cannot run here") from None


@functools.cache
def retain_host_heap() -> bool:
    """Makes glibc keep freed memory for reuse instead of unmapping it. IREE's CPU device allocates
    each call's outputs, and the transient buffers of a function without caller-kept storage
    (~320 MB for MobileNetV2's train step at b32@64), with malloc;
    glibc serves sizes that large with fresh mmaps, so every step paid page faults on all of it
    (0.8 s of system time per second of training; steps 1.13-1.22x slower, docs/performance.md). The
    process keeps its peak host memory in exchange. False where the C library has no mallopt."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


CALLER_NICE = 10
"""The scheduling priority (nice value) a thread calling into IREE's CPU device drops to, unless
$GIR_IREE_CALLER_NICE says otherwise (0 leaves it). During a call that thread busies itself in IREE's runtime while
the two workers run the dispatches; on a 2-core machine the three then share two CPUs, and one step in three of the
MLP took 4 ms longer (mean 5.0 ms against a 3.8 ms median; at nice 10 the mean is 3.9, digits_cnn 2.9 -> 2.5 ms,
mnist_cnn b8 19.0 -> 17.1; docs/performance.md)."""
_calling = threading.local()


def caller_nice() -> int:
    """$GIR_IREE_CALLER_NICE, else CALLER_NICE: a whole number from 0 (leave the thread as it is) to 19."""
    value = os.environ.get("GIR_IREE_CALLER_NICE") or str(CALLER_NICE)
    if not value.isdigit() or int(value) > 19:
        raise RuntimeSettingError(f"GIR_IREE_CALLER_NICE must be a whole number from 0 (leave the calling thread's "
                                  f"priority) to 19, got {value!r}")
    return int(value)


def yield_cpus_to_workers() -> int | None:
    """Lowers the calling thread's priority to `caller_nice()` once (never raises it; Linux only, where nice is per
    thread); the thread's nice value then, or None where nothing was set."""
    if getattr(_calling, "done", False):
        return None
    nice = caller_nice()
    _calling.done = True
    if not nice or not sys.platform.startswith("linux"):
        return None
    tid = threading.get_native_id()
    try:
        nice = max(os.getpriority(os.PRIO_PROCESS, tid), nice)
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:
        return None
    return nice


HOST_STAGING = ireert.MemoryType.HOST_LOCAL | ireert.MemoryType.DEVICE_VISIBLE
"""Memory both sides reach: GPU drivers stage host reads and writes through it."""


class IreeSession:
    """One device and one loaded module: `call(fn, *args)` returns device-resident outputs; `to_device` and `to_host`
    move arrays in and out on any device."""

    def __init__(self, vmfb: bytes, target: str = "cpu"):
        self.target = target
        self.config = device_config(target)
        if target == "cpu":
            retain_host_heap()
        self.context = ireert.SystemContext(config=self.config)
        vm_module = ireert.VmModule.copy_buffer(self.context.instance, vmfb)
        self.context.add_vm_module(vm_module)
        self.module = self.context.modules[vm_module.name]
        self._funcs: dict[str, Any] = {}
        self._transients: dict[str, ireert.HalBuffer | None] = {}

    @property
    def device(self) -> ireert.HalDevice:
        return self.config.device

    def function(self, name: str) -> Any:
        if name not in self._funcs:
            try:
                self._funcs[name] = self.module[name]
            except (KeyError, AttributeError):
                raise KeyError(f"module {self.module.name!r} has no function {name!r}") from None
        return self._funcs[name]

    def to_device(self, a: np.ndarray) -> ireert.DeviceArray:
        """A device copy of `a`; scalars stay rank 0 (np.ascontiguousarray would make them rank 1). On a GPU the
        bytes go through a host-visible staging buffer and a device copy into device-local memory, which a discrete
        GPU's host cannot write directly."""
        a = np.asarray(a, order="C")
        if self.target == "cpu":
            return ireert.asdevicearray(self.device, a)
        staging = self.device.allocator.allocate_host_staging_buffer_copy(device=self.device, initial_contents=a)
        buffer = self.device.allocator.allocate_buffer(
            memory_type=ireert.MemoryType.DEVICE_LOCAL, allowed_usage=ireert.BufferUsage.DEFAULT,
            allocation_size=max(a.nbytes, 1))
        self._copy(staging, buffer)
        view = ireert.HalBufferView(buffer, a.shape, ireert.array_interop.map_dtype_to_element_type(a.dtype))
        return ireert.DeviceArray(self.device, view, override_dtype=a.dtype)

    def to_host(self, x: ireert.DeviceArray) -> np.ndarray:
        """A host copy of `x`. The CPU's memory is mapped and copied. On a GPU the device copies into a host-visible
        staging buffer first: IREE's own `DeviceArray.to_host` imports the NumPy array's memory instead, which
        Vulkan refuses unless it is page-aligned (minImportedHostPointerAlignment)."""
        if self.target == "cpu":
            return np.array(x.to_host())   # a copy: host views may alias buffers IREE reuses
        view = x._buffer_view   # DeviceArray keeps its view private (iree-base-runtime is pinned)
        staging = self.device.allocator.allocate_buffer(
            memory_type=HOST_STAGING,
            allowed_usage=ireert.BufferUsage.TRANSFER_TARGET | ireert.BufferUsage.MAPPING_SCOPED,
            allocation_size=max(view.byte_length, 1))
        self._copy(view.get_buffer(), staging)
        return np.array(staging.map().asarray(tuple(view.shape), x.dtype))

    def _copy(self, source: ireert.HalBuffer, target: ireert.HalBuffer) -> None:
        """A device-queue copy of `source` into `target`, waited for."""
        sem = self.device.create_semaphore(0)
        self.device.queue_copy(source, target, wait_semaphores=ireert.HalFence.create_at(sem, 0),
                               signal_semaphores=ireert.HalFence.create_at(sem, 1))
        ireert.HalFence.create_at(sem, 1).wait()

    def transient_storage(self, name: str) -> ireert.HalBuffer | None:
        """The buffer function `name` takes for its intermediates (gir.lower.stablehlo's
        TRANSIENT_STORAGE argument), allocated on the first call and reused by every later one
        (calls are synchronous); None for a function without that argument."""
        if name not in self._transients:
            size = self.function(name).vm_function.reflection.get("iree.abi.transients.size.constant")
            self._transients[name] = None if size is None else self.device.allocator.allocate_buffer(
                memory_type=ireert.MemoryType.DEVICE_LOCAL, allowed_usage=ireert.BufferUsage.DEFAULT,
                allocation_size=max(int(size), 1))
        return self._transients[name]

    def call(self, name: str, *args: Any) -> list[ireert.DeviceArray]:
        """Calls function `name` on NumPy arrays or DeviceArrays; always returns a list. On the CPU the calling
        thread first yields the CPUs to IREE's workers (`yield_cpus_to_workers`)."""
        if self.target == "cpu":
            yield_cpus_to_workers()
        fn, storage = self.function(name), self.transient_storage(name)
        if storage is None:
            out = fn(*args)
            return list(out) if isinstance(out, (tuple, list)) else [out]
        # iree.runtime's FunctionInvoker packs only arrays: pack those with it, append the storage
        # buffer by hand and invoke the VM function directly (iree-base-runtime is pinned)
        packed = fn._arg_packer.pack(InvokeContext(self.device), args, {})
        packed.push_ref(storage)
        results = ireert.VmVariantList(len(fn._ret_descs) if fn._ret_descs is not None else 1)
        fn._vm_context.invoke(fn.vm_function, packed, results)
        return list(_extract_vm_sequence_to_python(Invocation(self.device), results, fn._ret_descs))

    def call_numpy(self, name: str, *args: Any) -> list[np.ndarray]:
        return [self.to_host(o) for o in self.call(name, *args)]
