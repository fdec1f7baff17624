"""The builder and the layer API: what net files are written with."""
from gir.ir.dtypes import DType, bf16, f32, i32
from gir.ir.graph import Init
from gir.nn.builder import Builder
from gir.nn.layer import Layer, layer
from gir.nn.layers import (activate, avg_pool, batch_norm, bottleneck_block, class_token_pool, conv2d, conv_bn,
                           dense, depthwise_conv, drop_path, dropout, flatten, gelu, global_avg_pool, hard_swish, identity,
                           inverted_residual, layer_norm, max_pool, mb_conv, patch_embed, relu, relu6,
                           residual_block, residual_stage, sequential, sigmoid, softmax_cross_entropy,
                           squeeze_excite, swish, transformer_encoder)
from gir.nn.net import Net
from gir.shapes.dims import Constraints, H, N, W, sym

__all__ = ["DType", "bf16", "f32", "i32", "Init", "Builder", "Layer", "layer", "activate", "avg_pool", "batch_norm",
           "bottleneck_block", "class_token_pool", "conv2d", "conv_bn", "dense", "depthwise_conv", "drop_path", "dropout", "flatten",
           "gelu",
           "global_avg_pool", "hard_swish", "identity", "inverted_residual", "layer_norm", "max_pool", "mb_conv",
           "patch_embed", "relu", "relu6", "residual_block", "residual_stage", "sequential", "sigmoid",
           "softmax_cross_entropy", "squeeze_excite", "swish", "transformer_encoder", "Net", "Constraints", "H",
           "N", "W", "sym"]
