"""Named pass pipelines, and the pass list lowering runs for a set of options."""
from __future__ import annotations

from gir import host
from gir.rewrite import bf16 as bf16_policy  # noqa: F401
from gir.rewrite import (  # noqa: F401  (importing registers them)
    bn_fold, conv_crop, conv_forms, cse, depthwise_spatial, dot_forms, fold, fusion, gpu_forms, layout, simplify)
from gir.rewrite.driver import PIPELINES, resolve

PIPELINES["default"] = ("cse", "bn_fold", "simplify", "fold", "fusion", "fold", "layout_cnhw_small", "conv_crop",
                        "nhwc_conv", "depthwise_spatial", "conv_forms", "pointwise_matmul", "dense_matmul",
                        "weight_grad_matmul", "large_rhs_matmul", "long_contraction_matmul", "cse", "simplify", "dce")
"""CSE first so equal BNs fold once; fold again after fusion builds constant products; the layout
before the convolution forms, which read it; simplify after the last CSE, which can make both arms
of a select the same value. conv_crop after the layout (which it keeps) and before the convolution forms, so they
see the cropped kernels. depthwise_spatial before conv_forms, which would take the same small-map depthwise
convolutions as per-tap slices. weight_grad_matmul after the convolution forms, whose matmuls it may also take;
large_rhs_matmul after both (their matmuls are already in the order it makes); long_contraction_matmul last, as it
splits the [M, K] x [N, K] matmuls the passes before write."""
PIPELINES["default_avx2"] = PIPELINES["default"][:-3] + ("nn_matmul",) + PIPELINES["default"][-3:]
"""What `default` means on IREE's CPU target on an AVX2 host (x86 without AVX-512, `gir.host.host_is_avx2`): the
matmul orders `default` writes for AVX-512, then nn_matmul's order for large products, which IREE runs there 2x
faster (mnist_cnn's and cifar_cnn's steps 1.4x faster on a Zen 3 pair; docs/performance.md)."""
PIPELINES["default_jax"] = tuple(p for p in PIPELINES["default"] if p not in ("layout_cnhw_small", "pointwise_matmul",
                                                                                  "nhwc_conv", "depthwise_spatial",
                                                                                  "dense_matmul", "weight_grad_matmul",
                                                                                  "large_rhs_matmul",
                                                                                  "long_contraction_matmul"))
"""What `default` means on the JAX backend: XLA:CPU runs the batched-matmul form of 1x1 convs
1.6x slower than convolutions (docs/performance.md), has its own fast KxK convolutions (the
NHWC and matmul forms and barriers of nhwc_conv, dense_matmul, weight_grad_matmul, large_rhs_matmul and
long_contraction_matmul are for IREE), and the layout and depthwise_spatial (which saves IREE's per-tap copy
dispatches) are measured on IREE only."""
PIPELINES["default_gpu"] = ("cse", "bn_fold", "simplify", "fold", "fusion", "fold", "conv_crop",
                            "depthwise_weight_grad_dots", "gpu_forms", "cse", "simplify", "dce")
"""What `default` means on IREE's GPU targets (rocm, cuda, vulkan): the activation layout and the CPU's convolution
forms were chosen by CPU measurements and GPU codegen tiles convolutions itself; but a depthwise weight gradient
becomes per-tap dot_generals. IREE 3.13's Vulkan code computes its batch-grouped convolution wrongly (MobileNetV2's
depthwise weight gradients on lavapipe, tests/lower/test_vulkan.py) and its SPIR-V pipeline crashes on the CPU's
multiply-reduce form at 960 channels. gpu_forms rewrites two more forms its GPU code generation rejects (a reversed
convolution kernel on cuda, a sum of negations on rocm and cuda)."""
PIPELINES["none"] = ()
CLEANUP_AFTER_BF16 = ("simplify", "cse", "dce")


def passes_for(spec: str = "default", bf16: bool = False, bf16_conv: bool = False) -> tuple[str, ...]:
    """The passes to run: a pipeline (or pass list) with, for a bf16 flag, the cast policy placed
    before depthwise_spatial or conv_forms (so depthwise convolutions become bf16 taps and matmuls under bf16_conv,
    and stay f32 under bf16) or at the end, and, unless the pipeline is empty, the cleanup that merges repeated
    casts."""
    names = resolve(spec)
    if not (bf16 or bf16_conv):
        return names
    policy = "bf16_conv" if bf16_conv else "bf16"
    forms = [names.index(p) for p in ("depthwise_spatial", "conv_forms") if p in names]
    if forms:
        i = min(forms)
        return names[:i] + (policy,) + names[i:] + CLEANUP_AFTER_BF16
    return names + (policy,) + (CLEANUP_AFTER_BF16 if names else ())


def pipeline_for_backend(spec: str, backend: str, target: str = "cpu") -> str:
    """The pipeline a backend runs for `spec`: `default` is `default_jax` on the JAX backend, `default_gpu` on
    IREE's GPU targets and, on IREE's CPU target, `default_avx2` where this machine is an AVX2 one."""
    if spec != "default":
        return spec
    if backend == "iree" and target == "cpu":
        return "default_avx2" if host.host_is_avx2() else spec
    return "default_jax" if backend == "jax" else "default_gpu"
