"""The host's CPU class from /proc/cpuinfo text: AVX2 without AVX-512, or not."""
from __future__ import annotations

import pytest

from gir.host import avx2_without_avx512

ZEN3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 avx fma avx2 bmi2\n"
ICELAKE = "processor\t: 0\nflags\t\t: fpu sse avx fma avx2 avx512f avx512vl\n"


@pytest.mark.parametrize("cpuinfo, want", [
    (ZEN3, True),
    (ICELAKE, False),
    ("processor\t: 0\nflags\t\t: fpu sse sse2 avx\n", False),      # no AVX2
    ("processor\t: 0\nFeatures\t: fp asimd sve\n", False),         # Arm: no flags line
    ("", False),
])
def test_avx2_without_avx512(cpuinfo, want):
    assert avx2_without_avx512(cpuinfo) is want
