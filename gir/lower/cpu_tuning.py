"""Tile sizes for IREE's NHWC convolutions and matmuls on AVX2 CPUs, given to iree-compile as a tuning spec.

IREE 3.13 tiles an NHWC/HWIO convolution for a 256-bit vector CPU (AVX2, no AVX-512) by 4 output pixels x 4 output
channels, which ran at 20-45 GFLOP/s on a Zen 3 core pair whose FMA peak is 181 (docs/performance.md). 4 pixels x 16
channels, reduced 4 input channels at a time, ran the same convolutions at 70-150 GFLOP/s. gir writes that
configuration for each of a module's convolutions into a transform-dialect library that iree-compile applies
(`--iree-codegen-tuning-spec-path`); on AVX-512 CPUs IREE's own tiles are left as they are. Matmuls get 4 rows x 16
columns, or 6 x 16 where 6 divides the rows (IREE's are 8 x 8), which made the train steps with large ones 5-10%
faster.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import NamedTuple

from gir import host

NHWC_DIMS = "[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]"
CONV_DIMS = r"#stablehlo\.conv<(?P<dims>\[[^]]*\]x\[[^]]*\]->\[[^]]*\])>"
"""A convolution's dimension numbers in the module text, as `dims`."""
_DOT = re.compile(r'"?stablehlo\.dot_general"?.*?#stablehlo\.dot<lhs_batching_dimensions = \[\], '
                  r'rhs_batching_dimensions = \[\], lhs_contracting_dimensions = \[(?P<c>\d)\], '
                  r'rhs_contracting_dimensions = \[(?P<rc>\d)\]>.*?'
                  r': \(tensor<(?P<a>\d+x\d+)xf32>, tensor<\d+x\d+xf32>\) -> tensor<(?P<y>\d+x\d+)xf32>')
_CONV = re.compile(r'"?stablehlo\.convolution"?.*?' + CONV_DIMS + r'.*?feature_group_count = (?P<g>\d+)'
                   r'.*?: \(tensor<[0-9x]+xf32>, tensor<(?P<w>[0-9x]+)xf32>\) -> tensor<(?P<y>[0-9x]+)xf32>')

AVX2_LANES = 8
"""float32 lanes of a 256-bit vector."""
CHANNEL_TILE = 2 * AVX2_LANES
"""Output channels a vector tile covers: two registers wide."""
PIXEL_TILES = (4, 7, 6, 5, 3, 2, 1)
"""Output pixels (along the row) a vector tile covers: 4 where it divides the row, else the largest of up to 7 that
does (7 pixels x 2 registers is 14 accumulators). Rows of 3, 5, 6, 7, 10 and 14 ran 1.5-3.5x faster that way than
at 1 or 2 pixels; where 4 divides the row (24, 28, 56), 4 ran 1.1-1.7x faster than 6 or 7."""
REDUCTION_TILE = 4
"""Input channels reduced per step (4 ran 5-15% faster than 8 or 1)."""
DISTRIBUTION = (8, 8)
"""A workgroup's tile of images and rows, each capped by the dim (a part-filled tile of them cost nothing); it covers
the whole row."""
CONV_CHANNELS = (32, CHANNEL_TILE)
"""A workgroup's tile of output channels: 32, else 16, the one `_workgroup` picks (32 of 48 channels ran 30x slower
than 16: 3.7 against 116 GFLOP/s)."""


MATMUL_ROWS = (6, 4)
"""Output rows a matmul's vector tile covers: 6 where they divide the rows (6 x 2 registers is 12 accumulators of
AVX2's 16; cifar_cnn's step 1.1x faster than with 4), else 4 (6 ran 2-3x slower where it does not divide them)."""
MATMUL_REDUCTIONS = (8, 4, 2, 1)
"""The contraction's step: 8, else the largest that divides it."""
MATMUL_ROW_TILES = (4, 2, 1)
MATMUL_COLUMNS = (128, 64, 32, 16)
"""A workgroup's tile: 4 vector tiles of rows (16 or 24), else 2 or 1, and 128 columns, else 64, 32 or 16, the ones
`_workgroup` picks. A workgroup tile that does not divide its dim ran 2-4x slower (ViT-Tiny's 768 x 192 x 784: 128
columns 41, 64 109 GFLOP/s; 1164 rows: 24 29, 12 129)."""


class Tiles(NamedTuple):
    """One contraction's loop sizes and the tiles IREE is told to use: its workgroup's, its vector's, and its
    innermost reduction step."""
    dims: tuple[int, ...]
    distribution: tuple[int, ...]
    vector: tuple[int, ...]
    reduction: int


class ConvTiles(Tiles):
    """A convolution's tiles, its loop sizes (n, oh, ow, oc, kh, kw, ic)."""
    __slots__ = ()

    def config(self) -> str:
        """IREE's lowering configuration and pipeline for the tiles."""
        zeros = [0, 0, 0]
        return (f"lowering_config = #iree_cpu.lowering_config<distribution = {list(self.distribution) + zeros}, "
                f"vector_common_parallel = {list(self.vector) + zeros}, "
                f"vector_reduction = [0, 0, 0, 0, 1, 1, {self.reduction}]>,\n      translation_info = "
                "#iree_codegen.translation_info<pipeline = #iree_cpu.pipeline<ConvTileAndDecomposeExpert>>")


class MatmulTiles(Tiles):
    """A matmul's tiles, its loop sizes (m, n, k)."""
    __slots__ = ()

    def config(self) -> str:
        """IREE's lowering configuration and pipeline for the tiles (the workgroup's tile also cached)."""
        tile = list(self.distribution) + [0]
        return (f"lowering_config = #iree_cpu.lowering_config<cache_parallel = {tile}, distribution = {tile}, "
                f"vector_common_parallel = {list(self.vector) + [0]}, vector_reduction = [0, 0, {self.reduction}]>,"
                "\n      translation_info = #iree_codegen.translation_info<pipeline = "
                "#iree_cpu.pipeline<DoubleTilingExpert>>")


def nhwc_convolutions(text: str) -> list[tuple[int, ...]]:
    """The distinct loop sizes (n, oh, ow, oc, kh, kw, ic) of the module's float32 NHWC/HWIO convolutions without
    groups: the ones IREE tiles with its convolution pipeline."""
    found: dict[tuple[int, ...], None] = {}
    for m in _CONV.finditer(text):
        if m.group("dims") != NHWC_DIMS or m.group("g") != "1":
            continue
        (kh, kw, ic, _), (n, oh, ow, oc) = (tuple(map(int, m.group(k).split("x"))) for k in ("w", "y"))
        found[(n, oh, ow, oc, kh, kw, ic)] = None
    return list(found)


def matmuls(text: str) -> list[tuple[int, ...]]:
    """The distinct loop sizes (m, n, k) of the module's float32 products of two matrices (no batch dims) whose right
    operand is [k, n], the left one either way round. Products with a right operand [n, k] keep IREE's tiles (4 x 16
    ran 128 x 512 x 512 2x slower in the MLP's step), and so do those of the same sizes: a matcher sees only sizes."""
    kn: dict[tuple[int, ...], None] = {}
    nk: set[tuple[int, ...]] = set()
    for m in _DOT.finditer(text):
        (rows, cols), lhs = map(int, m.group("y").split("x")), m.group("a").split("x")
        dims = (rows, cols, int(lhs[int(m.group("c"))]))
        if m.group("rc") == "0":
            kn[dims] = None
        else:
            nk.add(dims)
    return [d for d in kn if d not in nk]


def _workgroup(dim: int, sizes: tuple[int, ...]) -> int:
    """A workgroup's tile of `dim`: the first of `sizes` (largest first) that divides it, or the whole dim where one
    is no smaller; IREE's code for a part-filled tile ran 2-30x slower."""
    return min(dim, next(s for s in sizes if dim <= s or dim % s == 0))


def conv_tiles(dims: tuple[int, ...]) -> ConvTiles | None:
    """The AVX2 tiles for one convolution, or None where its output channels are not a multiple of CHANNEL_TILE (a
    vector tile that does not divide a dim ran 20x slower)."""
    n, oh, ow, oc, _, _, ic = dims
    if oc % CHANNEL_TILE:
        return None
    pixels = next(t for t in PIXEL_TILES if ow % t == 0)
    images, rows = DISTRIBUTION
    distribution = (min(n, images), min(oh, rows), ow, _workgroup(oc, CONV_CHANNELS))
    reduction = REDUCTION_TILE if ic % REDUCTION_TILE == 0 else 1
    return ConvTiles(dims, distribution, (1, 1, pixels, CHANNEL_TILE), reduction)


def matmul_tiles(dims: tuple[int, ...]) -> MatmulTiles | None:
    """The AVX2 tiles for one matmul, or None where no MATMUL_ROWS divides its rows or CHANNEL_TILE its columns (the
    vector tile must divide both)."""
    m, n, k = dims
    rows = next((r for r in MATMUL_ROWS if m % r == 0), None)
    if rows is None or n % CHANNEL_TILE:
        return None
    distribution = (_workgroup(m, tuple(rows * t for t in MATMUL_ROW_TILES)), _workgroup(n, MATMUL_COLUMNS))
    reduction = next(t for t in MATMUL_REDUCTIONS if k % t == 0)
    return MatmulTiles(dims, distribution, (rows, CHANNEL_TILE), reduction)


def _matcher(name: str, t: ConvTiles | MatmulTiles) -> str:
    """A transform sequence matching the contraction with t.dims (a mul-add linalg op with those loop sizes) and
    yielding its configuration."""
    params = ", ".join(["!transform.param<i64>"] * len(t.dims))
    got = ", ".join(f"%d{k}" for k in range(len(t.dims)))
    dims = "\n".join(f"      %e{k} = transform.match.structured.dim %s[{k}] : (!transform.any_op) -> "
                     "!transform.param<i64>" for k in range(len(t.dims)))
    checks = "\n".join(f"    %c{k} = transform.param.constant {v} : i64 -> !transform.param<i64>\n"
                       f"    transform.match.param.cmpi eq %d{k}, %c{k} : !transform.param<i64>"
                       for k, v in enumerate(t.dims))
    return f"""  transform.named_sequence @{name}(%op: !transform.any_op {{transform.readonly}})
      -> (!transform.any_op, !transform.any_param) {{
    transform.match.operation_name %op ["linalg.generic", "linalg.matmul"] : !transform.any_op
    {got} = transform.match.structured failures(propagate) %op : (!transform.any_op) -> ({params}) {{
    ^bb0(%s: !transform.any_op):
      transform.match.structured.body %s contraction = ["arith.mulf", "arith.addf"] : !transform.any_op
{dims}
      transform.match.structured.yield {got.replace("%d", "%e")} : {params}
    }}
{checks}
    %config = transform.param.constant #iree_codegen.compilation_info<
      {t.config()}> -> !transform.any_param
    transform.yield %op, %config : !transform.any_op, !transform.any_param
  }}
"""


def tuning_spec(text: str) -> str | None:
    """The transform library setting AVX2 tiles for the module's convolutions and matmuls, or None when it has none to
    set."""
    tiles = {**{f"match_conv_{i}": t for i, t in enumerate(filter(None, map(conv_tiles, nhwc_convolutions(text))))},
             **{f"match_matmul_{i}": t for i, t in enumerate(filter(None, map(matmul_tiles, matmuls(text))))}}
    if not tiles:
        return None
    pairs = ", ".join(f"@{name} -> @apply_op_config" for name in tiles)
    return ("module @gir_cpu_tiles attributes {transform.with_named_sequence, "
            "iree_codegen.tuning_spec_with_default_entrypoint} {\n"
            "  transform.named_sequence @apply_op_config(%op: !transform.any_op {transform.readonly},\n"
            "      %config: !transform.any_param {transform.readonly}) {\n"
            '    transform.annotate %op "compilation_info" = %config : !transform.any_op, !transform.any_param\n'
            "    transform.yield\n  }\n"
            + "".join(_matcher(name, t) for name, t in tiles.items())
            + "  transform.named_sequence @__kernel_config(%variant: !transform.any_op {transform.consumed})\n"
            "      -> !transform.any_op attributes {iree_codegen.tuning_spec_entrypoint} {\n"
            f"    %res = transform.foreach_match in %variant {pairs} : (!transform.any_op) -> !transform.any_op\n"
            "    transform.yield %res : !transform.any_op\n  }\n}\n")


def tuning_flags(text: str, chip: str, folder: Path) -> list[str]:
    """The iree-compile flag giving the module's AVX2 tiles (the spec written to `folder`, named by its content so that
    the flag names it in the compile cache's key), or none: not the host CPU, not an AVX2 one, or nothing to tile."""
    if chip != "host" or not host.host_is_avx2() or (spec := tuning_spec(text)) is None:
        return []
    path = folder / f"{hashlib.sha256(spec.encode()).hexdigest()[:24]}.mlir"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(spec)
        tmp.replace(path)
    return [f"--iree-codegen-tuning-spec-path={path}"]
