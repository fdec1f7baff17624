"""TensorType: dim normalization, printing, dtype/shape helpers, symbols."""
import pytest
import sympy

from gir.ir import DType, TensorType, format_dim
from gir.ir.types import normalize_dim
from gir.shapes import H, N, W, ceildiv, sym


def test_sympy_integer_dims_become_python_ints():
    t = TensorType((sympy.Integer(3), N, sympy.Integer(0)))
    assert t.shape == (3, N, 0)
    assert type(t.shape[0]) is int and type(t.shape[2]) is int


def test_expressions_that_simplify_to_numbers_become_ints():
    t = TensorType((N - N + 5, sympy.ceiling(sympy.Rational(7, 2))))
    assert t.shape == (5, 4)
    assert all(type(d) is int for d in t.shape)
    assert t.is_static


def test_symbolic_dims_are_kept_and_type_is_not_static():
    t = TensorType((N, 3, H, W))
    assert t.shape[0] is N and t.rank == 4
    assert not t.is_static
    assert TensorType((2, 3)).is_static


def test_bool_dims_are_rejected():
    with pytest.raises(TypeError, match="bool"):
        TensorType((True, 3))
    with pytest.raises(TypeError, match="bool"):
        normalize_dim(False)


@pytest.mark.parametrize("bad", [3.0, "3", None, (3,)])
def test_non_int_non_sympy_dims_are_rejected(bad):
    with pytest.raises(TypeError, match="int or a sympy expression"):
        TensorType((bad,))


@pytest.mark.parametrize("bad", [sympy.Rational(1, 2), sympy.Float(2.5)])
def test_non_integer_sympy_numbers_are_rejected(bad):
    # A dim is a count of elements: 1/2 or 2.5 can never be one.
    with pytest.raises(TypeError):
        TensorType((bad, 4))


def test_str_form():
    assert str(TensorType((N, 3, H, W))) == "tensor<Nx3xHxWxf32>"
    assert str(TensorType((2, 5), DType.i32)) == "tensor<2x5xi32>"
    assert str(TensorType((), DType.f32)) == "tensor<f32>"
    assert repr(TensorType((4,), DType.i1)) == "tensor<4xi1>"


def test_str_form_of_derived_dims():
    t = TensorType((N, 32, ceildiv(H, 2), ceildiv(W, 2)))
    assert str(t) == "tensor<Nx32xceil(H/2)xceil(W/2)xf32>"


def test_short_form_drops_f32_and_keeps_other_dtypes():
    t = TensorType((N, 32, ceildiv(H, 2), ceildiv(W, 2)))
    assert t.short() == "[N,32,ceil(H/2),ceil(W/2)]"
    assert TensorType((N,), DType.i32).short() == "[N] i32"
    assert TensorType(()).short() == "[]"
    assert TensorType((2, 3), DType.bf16).short() == "[2,3] bf16"


def test_format_dim_ratio_forms():
    assert format_dim(7) == "7"
    assert format_dim(ceildiv(H, 4)) == "ceil(H/4)"
    assert format_dim(ceildiv(H - 3, 2)) == "ceil((H - 3)/2)"
    assert format_dim(sympy.floor((H - 3) / 4)) == "floor((H - 3)/4)"
    assert format_dim(N * H) == "H*N"


def test_with_dtype_keeps_shape_and_returns_a_new_type():
    t = TensorType((N, 4))
    u = t.with_dtype(DType.i32)
    assert u.shape == t.shape and u.dtype == DType.i32
    assert t.dtype == DType.f32  # frozen: the original is unchanged
    assert u != t and t.with_dtype(DType.f32) == t


def test_with_shape_normalizes():
    t = TensorType((N,), DType.bf16).with_shape([sympy.Integer(2), H])
    assert t.shape == (2, H) and type(t.shape[0]) is int and t.dtype == DType.bf16


def test_types_are_hashable_and_compare_by_value():
    a = TensorType((N, sympy.Integer(3)))
    b = TensorType((N, 3))
    assert a == b and hash(a) == hash(b)
    assert len({a, b, TensorType((N, 3), DType.i32)}) == 2


def test_num_elements_static():
    assert TensorType((2, 3, 4)).num_elements() == 24
    assert type(TensorType((2, 3, 4)).num_elements()) is int
    assert TensorType(()).num_elements() == 1
    assert TensorType((5, 0)).num_elements() == 0


def test_num_elements_symbolic():
    n = TensorType((N, 3, H, W)).num_elements()
    assert sympy.expand(n - 3 * N * H * W) == 0
    half = TensorType((ceildiv(H, 2), 2)).num_elements()
    assert [int(half.subs(H, h)) for h in (1, 2, 3, 4)] == [2, 2, 4, 4]


def test_free_symbols():
    assert TensorType((2, 3)).free_symbols == frozenset()
    assert TensorType((N, 3, ceildiv(H, 2), W * 2)).free_symbols == frozenset({N, H, W})
    t = TensorType((sym("T"), sym("T")))
    assert t.free_symbols == frozenset({sym("T")})
    assert isinstance(t.free_symbols, frozenset)


def test_default_dtype_is_f32_and_dtype_names():
    assert TensorType((1,)).dtype == DType.f32
    assert DType.bf16.numpy_name == "bfloat16" and DType.i1.numpy_name == "bool"
    assert DType.f64.is_float and not DType.i32.is_float
