"""Element types a tensor can hold; the StableHLO and NumPy names live beside each one."""
from __future__ import annotations

import enum


class DType(enum.Enum):
    """An element type; `value` is the StableHLO spelling."""

    f32 = "f32"
    f64 = "f64"
    bf16 = "bf16"
    i32 = "i32"
    i1 = "i1"

    @property
    def is_float(self) -> bool:
        return self in (DType.f32, DType.f64, DType.bf16)

    @property
    def numpy_name(self) -> str:
        """NumPy dtype name; bf16 has none in NumPy, so it maps to the ml_dtypes name."""
        return {"f32": "float32", "f64": "float64", "bf16": "bfloat16", "i32": "int32", "i1": "bool"}[self.value]

    @property
    def numpy(self):
        """The NumPy dtype (bf16 is ml_dtypes' bfloat16, which JAX uses too)."""
        import ml_dtypes
        import numpy as np
        return np.dtype(ml_dtypes.bfloat16) if self is DType.bf16 else np.dtype(self.numpy_name)

    def __str__(self) -> str:
        return self.value


f32, f64, bf16, i32, i1 = DType.f32, DType.f64, DType.bf16, DType.i32, DType.i1
