"""Running compiled modules with the IREE runtime. Outputs stay on the device as DeviceArrays
and can be passed back in without host copies (the train loop keeps its state this way)."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

import iree.runtime as ireert
import numpy as np

from gir.lower.iree_compile import DRIVERS


class DeviceUnavailable(RuntimeError):
    """The target's driver or device is not present on this machine."""


@functools.cache
def device_config(target: str) -> ireert.Config:
    """The IREE runtime config of `target`'s device, created once per process (checking for the
    device before compiling and then running on it share one device); DeviceUnavailable when this
    machine has none."""
    driver = DRIVERS[target]
    try:
        return ireert.Config(driver)
    except (RuntimeError, ValueError):
        raise DeviceUnavailable(f"no {target} device is available on this machine (IREE's {driver!r} driver could "
                                f"not create one); modules for {target} still compile (gir lower --target {target}) "
                                f"but cannot run here") from None


@functools.cache
def retain_host_heap() -> bool:
    """Makes glibc keep freed memory for reuse instead of unmapping it. IREE's CPU device allocates
    each call's transient buffers (~320 MB for MobileNetV2's train step at b32@64) with malloc;
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


class IreeSession:
    """One device and one loaded module: `call(fn, *args)` returns device-resident outputs."""

    def __init__(self, vmfb: bytes, target: str = "cpu"):
        self.config = device_config(target)
        if target == "cpu":
            retain_host_heap()
        self.context = ireert.SystemContext(config=self.config)
        vm_module = ireert.VmModule.copy_buffer(self.context.instance, vmfb)
        self.context.add_vm_module(vm_module)
        self.module = self.context.modules[vm_module.name]
        self._funcs: dict[str, Any] = {}

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
        """A device copy of `a`; scalars stay rank 0 (np.ascontiguousarray would make them rank 1)."""
        return ireert.asdevicearray(self.device, np.asarray(a, order="C"))

    def call(self, name: str, *args: Any) -> list[ireert.DeviceArray]:
        """Calls function `name` on NumPy arrays or DeviceArrays; always returns a list."""
        out = self.function(name)(*args)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    def call_numpy(self, name: str, *args: Any) -> list[np.ndarray]:
        return [np.array(o.to_host()) for o in self.call(name, *args)]  # copies: host views may alias reused buffers
