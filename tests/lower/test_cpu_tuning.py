"""AVX2 tiles for IREE's NHWC convolutions and matmuls: which ones get them, the tuning spec iree-compile is given,
that IREE applies it, and that what it tiles still computes what jax.lax and NumPy do."""
from __future__ import annotations

import jax
import numpy as np
import pytest
from iree.compiler import ir

from gir import host
from gir.lower import cpu_tuning
from gir.lower.cpu_tuning import (ConvTiles, MatmulTiles, conv_tiles, matmul_tiles, matmuls, nhwc_convolutions,
                                  tuning_flags, tuning_spec)
from gir.lower.iree_compile import compile_text
from gir.lower.iree_runtime import IreeSession


def conv_module(x: tuple[int, ...], w: tuple[int, ...], y: tuple[int, ...], dims: str = cpu_tuning.NHWC_DIMS,
                stride: int = 1, pad: int = 1, groups: int = 1) -> str:
    """A module whose function `f` is one float32 convolution."""
    t = lambda s: f"tensor<{'x'.join(map(str, s))}xf32>"  # noqa: E731
    attrs = (f"dimension_numbers = #stablehlo.conv<{dims}>, window_strides = array<i64: {stride}, {stride}>, "
             f"padding = dense<[[{pad}, {pad}], [{pad}, {pad}]]> : tensor<2x2xi64>, lhs_dilation = array<i64: 1, 1>, "
             f"rhs_dilation = array<i64: 1, 1>, feature_group_count = {groups} : i64, batch_group_count = 1 : i64")
    return (f"func.func @f(%x: {t(x)}, %w: {t(w)}) -> {t(y)} {{\n"
            f'  %0 = "stablehlo.convolution"(%x, %w) {{{attrs}}} : ({t(x)}, {t(w)}) -> {t(y)}\n'
            f"  return %0 : {t(y)}\n}}\n")


def dot_module(a: tuple[int, int], b: tuple[int, int], contract: tuple[int, int] = (1, 0),
               dtype: str = "f32") -> str:
    """A module whose function `f` is one product of two matrices, contracting dims `contract` of a and b."""
    t = lambda s: f"tensor<{s[0]}x{s[1]}x{dtype}>"  # noqa: E731
    y = (a[1 - contract[0]], b[1 - contract[1]])
    dims = ("#stablehlo.dot<lhs_batching_dimensions = [], rhs_batching_dimensions = [], "
            f"lhs_contracting_dimensions = [{contract[0]}], rhs_contracting_dimensions = [{contract[1]}]>")
    return (f"func.func @f(%a: {t(a)}, %b: {t(b)}) -> {t(y)} {{\n"
            f'  %0 = "stablehlo.dot_general"(%a, %b) {{dot_dimension_numbers = {dims}}} : ({t(a)}, {t(b)}) -> {t(y)}\n'
            f"  return %0 : {t(y)}\n}}\n")


def test_only_nhwc_convolutions_without_groups_are_found_each_shape_once():
    nhwc = conv_module((2, 8, 8, 16), (3, 3, 16, 32), (2, 8, 8, 32))
    nchw = conv_module((2, 16, 8, 8), (32, 16, 3, 3), (2, 32, 8, 8), dims="[b, f, 0, 1]x[o, i, 0, 1]->[b, f, 0, 1]")
    grouped = conv_module((2, 8, 8, 16), (3, 3, 1, 16), (2, 8, 8, 16), groups=16)
    strided = conv_module((2, 8, 8, 16), (3, 3, 16, 32), (2, 4, 4, 32), stride=2)
    assert nhwc_convolutions(nhwc + nhwc + nchw + grouped + strided) == [(2, 8, 8, 32, 3, 3, 16),
                                                                          (2, 4, 4, 32, 3, 3, 16)]


@pytest.mark.parametrize("dims, want", [
    ((128, 28, 28, 64, 5, 5, 32), ConvTiles((128, 28, 28, 64, 5, 5, 32), (8, 8, 28, 32), (1, 1, 4, 16), 4)),
    ((8, 14, 14, 16, 3, 3, 3), ConvTiles((8, 14, 14, 16, 3, 3, 3), (8, 8, 14, 16), (1, 1, 7, 16), 1)),
    ((4, 7, 7, 512, 3, 3, 512), ConvTiles((4, 7, 7, 512, 3, 3, 512), (4, 7, 7, 32), (1, 1, 7, 16), 4)),
    ((8, 12, 12, 32, 3, 3, 16), ConvTiles((8, 12, 12, 32, 3, 3, 16), (8, 8, 12, 32), (1, 1, 4, 16), 4)),
    ((8, 10, 10, 32, 3, 3, 16), ConvTiles((8, 10, 10, 32, 3, 3, 16), (8, 8, 10, 32), (1, 1, 5, 16), 4)),
    ((8, 9, 9, 32, 3, 3, 16), ConvTiles((8, 9, 9, 32, 3, 3, 16), (8, 8, 9, 32), (1, 1, 3, 16), 4)),
    ((8, 22, 22, 32, 3, 3, 16), ConvTiles((8, 22, 22, 32, 3, 3, 16), (8, 8, 22, 32), (1, 1, 2, 16), 4)),
    ((8, 11, 11, 32, 3, 3, 16), ConvTiles((8, 11, 11, 32, 3, 3, 16), (8, 8, 11, 32), (1, 1, 1, 16), 4)),
    ((12, 16, 16, 48, 3, 3, 64), ConvTiles((12, 16, 16, 48, 3, 3, 64), (8, 8, 16, 16), (1, 1, 4, 16), 4)),  # 32 of 48
    ((12, 16, 16, 96, 3, 3, 64), ConvTiles((12, 16, 16, 96, 3, 3, 64), (8, 8, 16, 32), (1, 1, 4, 16), 4)),
    ((8, 8, 8, 24, 3, 3, 16), None),    # 24 output channels: no 16-wide tile divides them
])
def test_tiles_divide_every_dim_or_none(dims, want):
    assert conv_tiles(dims) == want


def test_matmuls_with_a_k_by_n_right_operand_are_found_unless_a_same_sized_one_has_it_n_by_k():
    nn = dot_module((128, 784), (784, 512))
    tn = dot_module((128, 784), (128, 512), contract=(0, 0))
    nt_twin = dot_module((128, 512), (512, 512), contract=(1, 1))   # its sizes (128, 512, 512) ...
    nn_twin = dot_module((128, 512), (512, 512))                    # ... shadow this one
    bf16 = dot_module((64, 64), (64, 64), dtype="bf16")
    assert matmuls(nn + tn + nn + nt_twin + nn_twin + bf16) == [(128, 512, 784), (784, 512, 128)]


@pytest.mark.parametrize("dims, want", [
    ((128, 512, 784), MatmulTiles((128, 512, 784), (16, 128), (4, 16), 8)),
    ((8, 32, 4), MatmulTiles((8, 32, 4), (8, 32), (4, 16), 4)),
    ((100352, 32, 25), MatmulTiles((100352, 32, 25), (16, 32), (4, 16), 1)),
    ((128, 128, 10), MatmulTiles((128, 128, 10), (16, 128), (4, 16), 2)),
    ((2304, 256, 2048), MatmulTiles((2304, 256, 2048), (24, 128), (6, 16), 8)),   # 6 divides the rows
    ((18, 32, 8), MatmulTiles((18, 32, 8), (18, 32), (6, 16), 8)),
    ((768, 192, 784), MatmulTiles((768, 192, 784), (24, 64), (6, 16), 8)),    # 128 columns do not divide 192
    ((1164, 128, 512), MatmulTiles((1164, 128, 512), (12, 128), (6, 16), 8)),  # 24 rows do not divide 1164
    ((1152, 48, 8), MatmulTiles((1152, 48, 8), (24, 48), (6, 16), 8)),
    ((130, 128, 64), None),     # 130 rows: neither a 6- nor a 4-row tile divides them
    ((128, 10, 512), None),     # 10 columns: no 16-wide tile divides them
])
def test_matmul_tiles_divide_every_dim_or_none(dims, want):
    assert matmul_tiles(dims) == want


def test_the_spec_parses_and_has_one_matcher_per_tiled_shape():
    text = (conv_module((2, 8, 8, 16), (3, 3, 16, 32), (2, 8, 8, 32))
            + conv_module((2, 8, 8, 16), (3, 3, 16, 24), (2, 8, 8, 24)))
    spec = tuning_spec(text + dot_module((128, 784), (784, 512)) + dot_module((128, 784), (784, 10)))
    ir.Module.parse(spec, ir.Context())
    assert spec.count("transform.named_sequence @match_conv_") == 1
    assert spec.count("transform.named_sequence @match_matmul_") == 1
    assert tuning_spec(conv_module((2, 8, 8, 16), (3, 3, 16, 24), (2, 8, 8, 24))) is None


def test_flags_only_for_the_host_on_avx2_written_once_by_content(tmp_path, monkeypatch):
    text = conv_module((2, 8, 8, 16), (3, 3, 16, 32), (2, 8, 8, 32))
    monkeypatch.setattr(host, "host_is_avx2", lambda: False)
    assert tuning_flags(text, "host", tmp_path) == []
    monkeypatch.setattr(host, "host_is_avx2", lambda: True)
    assert tuning_flags(text, "znver3", tmp_path) == []
    (flag,) = tuning_flags(text, "host", tmp_path)
    path = flag.split("=", 1)[1]
    assert open(path).read() == tuning_spec(text)
    assert tuning_flags(text, "host", tmp_path) == [flag]
    assert [p.name for p in tmp_path.iterdir()] == [path.rsplit("/", 1)[1]]


def run_with_spec(text: str, folder, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, str]:
    """`f(x, w)` compiled with the module's spec given by hand (gir's own flag is left out where the host is taken
    as not AVX2), and IREE's dumped configuration."""
    spec = folder / "spec.mlir"
    spec.write_text(tuning_spec(text))
    dumped = folder / "configs"
    vmfb = compile_text(text, "cpu", extra_flags=[f"--iree-codegen-tuning-spec-path={spec}",
                                                  f"--iree-hal-dump-executable-configurations-to={dumped}"],
                        use_cache=False)
    session = IreeSession(vmfb)
    got = session.to_host(session.function("f")(session.to_device(x), session.to_device(w)))
    return got, "".join(p.read_text() for p in dumped.iterdir())


@pytest.mark.parametrize("batch, size, cin, cout, k, stride", [
    (2, 8, 16, 32, 3, 1),    # pixel tile 4
    (2, 14, 8, 16, 3, 1),    # pixel tile 7
    (2, 10, 8, 16, 3, 1),    # pixel tile 5
    (2, 11, 3, 16, 5, 1),    # pixel tile 1, reduction tile 1
    (2, 16, 16, 32, 3, 2),   # strided
])
def test_iree_applies_the_tiles_and_the_convolution_matches_lax(tmp_path, monkeypatch, batch, size, cin, cout, k,
                                                               stride):
    """On any x86 host: IREE's dumped configuration holds the spec's tiles."""
    monkeypatch.setattr(host, "host_is_avx2", lambda: False)
    pad = k // 2
    out = (size + 2 * pad - k) // stride + 1
    text = conv_module((batch, size, size, cin), (k, k, cin, cout), (batch, out, out, cout), stride=stride, pad=pad)
    (tiles,) = [conv_tiles(d) for d in nhwc_convolutions(text)]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, cin)).astype(np.float32)
    w = rng.standard_normal((k, k, cin, cout)).astype(np.float32)
    got, configs = run_with_spec(text, tmp_path, x, w)
    assert f"vector_common_parallel = [{', '.join(map(str, tiles.vector))}, 0, 0, 0]" in configs
    want = jax.lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad)] * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("a, b, contract", [
    ((64, 48), (48, 32), (1, 0)),    # [m, k] x [k, n]: reduction tile 8
    ((20, 64), (20, 48), (0, 0)),    # [k, m] x [k, n], k = 20: reduction tile 4
    ((48, 24), (24, 32), (1, 0)),    # 48 rows: 6-row tiles
])
def test_iree_applies_the_matmul_tiles_and_the_product_matches_numpy(tmp_path, monkeypatch, a, b, contract):
    """As for convolutions: the spec by hand, IREE's dumped configuration holds its tiles, the product is right."""
    monkeypatch.setattr(host, "host_is_avx2", lambda: False)
    text = dot_module(a, b, contract)
    (tiles,) = [matmul_tiles(d) for d in matmuls(text)]
    rng = np.random.default_rng(0)
    x, w = (rng.standard_normal(s).astype(np.float32) for s in (a, b))
    got, configs = run_with_spec(text, tmp_path, x, w)
    assert (f"vector_common_parallel = [{tiles.vector[0]}, 16, 0], vector_reduction = [0, 0, {tiles.reduction}]"
            in configs)
    want = (x if contract[0] == 1 else x.T) @ w
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
