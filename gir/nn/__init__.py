"""The builder and the layer API: what net files are written with."""
from gir.ir.dtypes import DType, bf16, f32, i32
from gir.ir.graph import Init
from gir.nn.builder import Builder
from gir.nn.layer import Layer, layer
from gir.nn.layers import (activate, avg_pool, batch_norm, bottleneck_block, class_token_pool, conv2d, conv_bn,
                           convnext_downsample, convnext_stage, dense, depthwise_conv, drop_path, dropout, flatten,
                           fused_mb_conv, gelu, global_avg_pool, hard_sigmoid, hard_swish, identity,
                           inverted_bottleneck, inverted_residual, layer_norm, layer_norm2d, make_divisible, max_pool,
                           mb_conv, patch_embed, position_embedding, relu, relu6, residual_block, residual_stage,
                           sequential, sigmoid, softmax_cross_entropy, squeeze_excite, swish, token_embedding,
                           transformer_encoder, uib)
from gir.nn.net import Net
from gir.shapes.dims import Constraints, H, N, T, W, sym

__all__ = ["DType", "bf16", "f32", "i32", "Init", "Builder", "Layer", "layer", "activate", "avg_pool", "batch_norm",
           "bottleneck_block", "class_token_pool", "conv2d", "conv_bn", "convnext_downsample", "convnext_stage",
           "dense", "depthwise_conv", "drop_path", "dropout", "flatten", "fused_mb_conv", "gelu", "global_avg_pool",
           "hard_sigmoid", "hard_swish", "identity", "inverted_bottleneck", "inverted_residual", "layer_norm",
           "layer_norm2d", "make_divisible", "max_pool", "mb_conv", "patch_embed", "position_embedding", "relu",
           "relu6", "residual_block", "residual_stage", "sequential", "sigmoid", "softmax_cross_entropy",
           "squeeze_excite", "swish", "token_embedding", "transformer_encoder", "uib", "Net", "Constraints", "H", "N", "T", "W", "sym"]
