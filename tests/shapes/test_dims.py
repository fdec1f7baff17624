"""Symbolic dims: canonical floor/ceil division, deciding dim equality under constraints, min_value."""
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from gir.ir.types import format_dim, normalize_dim
from gir.shapes import Constraints, H, N, Undecidable, W, ceildiv, dims_equal, floordiv, min_value, sym
from gir.shapes.dims import T, max_value


def _cdiv(x: int, k: int) -> int:
    return -(-x // k)


def _eval(e, h: int) -> int:
    """Exact value of a dim at H=h (no floats)."""
    if isinstance(e, int):
        return e
    v = e.xreplace({H: sympy.Integer(h)})
    assert v.is_Integer, (e, h, v)
    return int(v)


def _count_rounding(e) -> int:
    return 0 if isinstance(e, int) else len(e.atoms(sympy.floor, sympy.ceiling))


# ---- canonical division --------------------------------------------------------------------

def test_nested_ceildiv_folds_to_one_ceil():
    e = ceildiv(ceildiv(H, 2), 2)
    assert e == ceildiv(H, 4)
    assert format_dim(e) == "ceil(H/4)"
    assert format_dim(ceildiv(ceildiv(ceildiv(H, 2), 2), 2)) == "ceil(H/8)"
    assert format_dim(ceildiv(ceildiv(H, 3), 5)) == "ceil(H/15)"


def test_nested_floordiv_folds_to_one_floor():
    assert floordiv(floordiv(H, 2), 3) == floordiv(H, 6)
    assert format_dim(floordiv(floordiv(H, 2), 3)) == "floor(H/6)"


def test_folding_keeps_one_rounding_atom():
    for e in (ceildiv(floordiv(H, 2), 3), floordiv(ceildiv(H, 2), 3), ceildiv(floordiv(H, 4) + 1, 2),
              floordiv(ceildiv(H, 2) - 3, 2), ceildiv(ceildiv(H - 1, 2) + 5, 3)):
        assert _count_rounding(e) == 1, e


def test_mixed_floor_ceil_forms():
    # floor(ceil(H/2)/3) == floor((H+1)/6); ceil(floor(H/2)/3) == ceil((H-1)/6)
    assert format_dim(floordiv(ceildiv(H, 2), 3)) == "floor((H + 1)/6)"
    assert format_dim(ceildiv(floordiv(H, 2), 3)) == "ceil((H - 1)/6)"


def test_ints_divide_like_python():
    assert ceildiv(7, 2) == 4 and floordiv(7, 2) == 3
    assert ceildiv(-3, 2) == -1 and floordiv(-3, 2) == -2
    assert ceildiv(0, 5) == 0
    assert type(ceildiv(8, 2)) is int


def test_divide_by_one_is_identity():
    assert ceildiv(H, 1) is H and floordiv(N * H, 1) == N * H


@pytest.mark.parametrize("k", [0, -2, 2.0, 1.5])
def test_bad_divisor_is_rejected(k):
    with pytest.raises(ValueError, match="positive int"):
        ceildiv(H, k)


def test_exact_divisions_lose_their_rounding():
    assert ceildiv(2 * H + 2, 2) == H + 1
    assert floordiv(4 * H, 2) == 2 * H
    assert type(floordiv(normalize_dim(H - H + 9), 2)) is int


CHAINS = {
    "ceil(ceil(H/2)/2)": (lambda h: _cdiv(_cdiv(h, 2), 2), lambda: ceildiv(ceildiv(H, 2), 2)),
    "floor(floor(H/2)/2)": (lambda h: h // 2 // 2, lambda: floordiv(floordiv(H, 2), 2)),
    "floor(ceil(H/2)/3)": (lambda h: _cdiv(h, 2) // 3, lambda: floordiv(ceildiv(H, 2), 3)),
    "ceil(floor(H/2)/3)": (lambda h: _cdiv(h // 2, 3), lambda: ceildiv(floordiv(H, 2), 3)),
    "ceil(floor(H/3)/2)+1": (lambda h: _cdiv(h // 3, 2) + 1, lambda: normalize_dim(ceildiv(floordiv(H, 3), 2) + 1)),
    "floor((ceil(H/2)-3)/2)+1 (valid 3x3 s2 conv)": (
        lambda h: (_cdiv(h, 2) - 3) // 2 + 1, lambda: floordiv(ceildiv(H, 2) - 3, 2) + 1),
    "ceil((floor((H-3)/2)+1)/2)": (
        lambda h: _cdiv((h - 3) // 2 + 1, 2), lambda: ceildiv(floordiv(H - 3, 2) + 1, 2)),
    "floor((floor((H+2-7)/2)+1+2-3)/2)+1 (resnet stem)": (
        lambda h: ((h + 2 * 3 - 7) // 2 + 1 + 2 - 3) // 2 + 1,
        lambda: floordiv(floordiv(H + 6 - 7, 2) + 1 + 2 - 3, 2) + 1),
    "ceil((ceil(H/4)+5)/3) then floor(/2)": (
        lambda h: _cdiv(_cdiv(h, 4) + 5, 3) // 2, lambda: floordiv(ceildiv(ceildiv(H, 4) + 5, 3), 2)),
    "floor((floor(H/5)-4)/7)": (lambda h: (h // 5 - 4) // 7, lambda: floordiv(floordiv(H, 5) - 4, 7)),
}


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_canonical_forms_match_integer_arithmetic(name):
    ref, make = CHAINS[name]
    e = make()
    for h in range(1, 201):
        assert _eval(e, h) == ref(h), f"{name} = {format_dim(e)} wrong at H={h}"


# a random chain of ceildiv/floordiv/add-constant applied to H
_step = st.one_of(
    st.tuples(st.just("ceil"), st.integers(1, 9)),
    st.tuples(st.just("floor"), st.integers(1, 9)),
    st.tuples(st.just("add"), st.integers(-6, 6)),
)


@settings(max_examples=150, deadline=None)
@given(chain=st.lists(_step, min_size=1, max_size=6), hs=st.lists(st.integers(1, 10_000), min_size=1, max_size=8))
def test_random_division_chains_equal_integer_arithmetic(chain, hs):
    e = H
    for kind, k in chain:
        e = ceildiv(e, k) if kind == "ceil" else floordiv(e, k) if kind == "floor" else normalize_dim(e + k)
    for h in hs:
        v = h
        for kind, k in chain:
            v = _cdiv(v, k) if kind == "ceil" else v // k if kind == "floor" else v + k
        assert _eval(e, h) == v, f"{chain}: {format_dim(e)} at H={h}"


# ---- dims_equal ----------------------------------------------------------------------------

def test_dims_equal_true_cases():
    assert dims_equal(ceildiv(ceildiv(H, 2), 2), ceildiv(H, 4)) is True
    assert dims_equal(N * H * W, W * (H * N)) is True
    assert dims_equal(3, 3) is True
    assert dims_equal(floordiv(H + 1, 2), ceildiv(H, 2)) is True  # different forms, same function
    assert dims_equal(floordiv(H + 3, 4), ceildiv(H, 4)) is True
    assert dims_equal(floordiv(ceildiv(H, 2) - 2, 2) + 1, floordiv(H + 1, 4)) is True


def test_dims_equal_false_cases():
    assert dims_equal(H, H + 1) is False
    assert dims_equal(3, 4) is False
    assert dims_equal(ceildiv(H, 2), H) is False
    assert dims_equal(2 * N, N) is False
    assert dims_equal(H, W) is False


def test_dims_equal_ceil_vs_floor_is_undecidable_and_names_the_fix():
    with pytest.raises(Undecidable) as info:
        dims_equal(ceildiv(H, 4), floordiv(H, 4))
    msg = str(info.value)
    assert "H divisible by 4" in msg
    assert "ceil(H/4)" in msg and "floor(H/4)" in msg


def test_dims_equal_ceil_times_stride_vs_h_names_the_fix():
    with pytest.raises(Undecidable, match="H divisible by 8"):
        dims_equal(8 * ceildiv(H, 8), H)


def test_divisibility_constraint_decides_it():
    c = Constraints().divisible_by(H, 4)
    assert dims_equal(ceildiv(H, 4), floordiv(H, 4), c) is True
    assert dims_equal(4 * ceildiv(H, 4), H, c) is True
    assert dims_equal(ceildiv(ceildiv(H, 2), 2) * 4, H, c) is True
    assert dims_equal(ceildiv(H, 4), floordiv(H, 4) + 1, c) is False


def test_weaker_divisibility_still_undecidable_and_hint_combines():
    c = Constraints().divisible_by(H, 2)
    with pytest.raises(Undecidable, match="H divisible by 4"):
        dims_equal(ceildiv(H, 4), floordiv(H, 4), c)


def test_divisibility_on_one_symbol_does_not_decide_another():
    c = Constraints().divisible_by(W, 4)
    with pytest.raises(Undecidable, match="H divisible by 4"):
        dims_equal(ceildiv(H, 4), floordiv(H, 4), c)


def test_bounded_range_that_is_fully_checked_decides_equality():
    # For 1 <= H <= 3, ceil(H/4) is 1 and floor(H/4) is 0 for every allowed H.
    c = Constraints().at_most(H, 3)
    assert dims_equal(ceildiv(H, 4), 1, c) is True
    assert dims_equal(floordiv(H, 4), 0, c) is True


def test_lower_bound_makes_a_difference_certain():
    c = Constraints().at_least(H, 5)
    assert dims_equal(ceildiv(H, 4), 1, c) is False


# ---- Constraints ---------------------------------------------------------------------------

def test_constraints_defaults():
    c = Constraints()
    assert c.range(H) == (1, None)
    assert c.divisor(H) == 1
    assert c.smallest(H) == 1
    assert c.describe() == "none"


def test_constraints_ranges():
    c = Constraints().at_least(H, 32).at_most(H, 512).at_least(W, 7)
    assert c.range(H) == (32, 512)
    assert c.range(W) == (7, None)
    assert c.range(N) == (1, None)
    assert c.at_least(H, 64).range(H) == (64, 512)  # replaces, keeps the upper bound
    assert "32 <= H <= 512" in c.describe() and "7 <= W" in c.describe()


def test_constraints_reject_empty_or_non_positive_ranges():
    with pytest.raises(ValueError, match="range"):
        Constraints().at_least(H, 0)
    with pytest.raises(ValueError, match="range"):
        Constraints().at_least(H, 10).at_most(H, 9)


def test_constraints_divisors_combine_by_lcm():
    c = Constraints().divisible_by(H, 4).divisible_by(H, 6)
    assert c.divisor(H) == 12
    assert c.divisor(W) == 1
    assert "H % 12 == 0" in c.describe()


def test_constraints_smallest_and_samples():
    c = Constraints().at_least(H, 30).divisible_by(H, 8).at_most(H, 60)
    assert c.smallest(H) == 32
    assert c.samples(H, 10) == [32, 40, 48, 56]
    assert Constraints().samples(N, 3) == [1, 2, 3]


def test_constraints_are_hashable_and_immutable():
    a = Constraints().at_least(H, 8)
    b = Constraints().at_least(H, 8)
    assert a == b and hash(a) == hash(b)
    a.at_least(H, 16)
    assert a.range(H) == (8, None)


def test_dims_equal_cache_keys_on_constraints():
    # same query, different constraints: the cache must not mix them up
    assert dims_equal(ceildiv(H, 4), floordiv(H, 4), Constraints().divisible_by(H, 4)) is True
    with pytest.raises(Undecidable):
        dims_equal(ceildiv(H, 4), floordiv(H, 4), Constraints())
    assert dims_equal(ceildiv(H, 4), floordiv(H, 4), Constraints().divisible_by(H, 8)) is True


# ---- min_value -----------------------------------------------------------------------------

def test_min_value():
    assert min_value(7) == 7
    assert min_value(H) == 1
    assert min_value(ceildiv(H, 4)) == 1
    assert min_value(floordiv(H, 4)) == 0
    assert min_value(floordiv(H - 3, 2) + 1) == 0
    assert min_value(N * H) == 1


def test_min_value_uses_ranges_and_divisors():
    c = Constraints().at_least(H, 9)
    assert min_value(ceildiv(H, 4), c) == 3
    c2 = Constraints().at_least(H, 9).divisible_by(H, 8)
    assert min_value(ceildiv(H, 4), c2) == 4
    assert min_value(N * ceildiv(H, 2), Constraints().at_least(N, 2).at_least(H, 6)) == 6


def test_sym_makes_positive_integer_symbols():
    t = sym("T")
    assert t.is_integer and t.is_positive
    assert sym("H") == H


def test_max_value_is_the_value_at_every_upper_bound_or_none():
    c = Constraints().at_most(T, 64).at_least(N, 2)
    assert max_value(5) == 5
    assert max_value(T, c) == 64 and max_value(2 * T + 1, c) == 129
    assert max_value(N * T, c) is None   # N has no upper bound
    assert max_value(T) is None
