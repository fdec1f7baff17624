"""What the machine gir runs on can do, where lowering for its CPU depends on it."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path


def avx2_without_avx512(cpuinfo: str) -> bool:
    """A /proc/cpuinfo text's CPU is x86 with AVX2 and FMA but no AVX-512."""
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), ()))
    return {"avx2", "fma"} <= flags and "avx512f" not in flags


@lru_cache(maxsize=1)
def host_is_avx2() -> bool:
    """This machine is an AVX2 one without AVX-512 (Linux; False where it cannot tell): IREE's CPU code picks other
    tiles there, and other matmul orders run fastest (docs/performance.md)."""
    try:
        return avx2_without_avx512(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False
