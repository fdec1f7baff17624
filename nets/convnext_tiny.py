"""ConvNeXt-T (Liu et al. 2022; torchvision convnext_tiny) with a 10-class head: 27,827,818 parameters."""
from gir.nn import (H, N, W, Constraints, Net, conv2d, convnext_downsample, convnext_stage, dense, global_avg_pool, layer_norm,
                    layer_norm2d)
from gir.train import TrainConfig

DEPTHS, DIMS = (3, 3, 9, 3), (96, 192, 384, 768)


def drop_rates(stage: int, top: float = 0.1) -> list[float]:
    """torchvision's schedule: block i of all 18 (from 0) drops its branch with probability top * i / 17."""
    first = sum(DEPTHS[:stage])
    return [top * (first + i) / (sum(DEPTHS) - 1) for i in range(DEPTHS[stage])]


# The stem and the three 2x2 downsamplings divide the image by 32 without padding.
constraints = Constraints().at_least(H, 32).divisible_by(H, 32).at_least(W, 32).divisible_by(W, 32)


# A 4x4/4 stem, four stages of 7x7 depthwise blocks (channels-last LayerNorm, 4x MLP with GELU, layer scale from
# 1e-6), LayerNorm + 2x2/2 conv between stages; stochastic depth rises linearly from 0 to 0.1 over the 18 blocks.
# gir's GELU is the tanh approximation (torchvision's is erf's).
net = Net(
    "convnext_tiny",
    [
        conv2d(3, DIMS[0], k=4, stride=4, padding="valid", init="trunc_normal_0.02", name="stem"),
        layer_norm2d(DIMS[0], name="stem_norm"),
        convnext_stage(DIMS[0], n=DEPTHS[0], drop_path=drop_rates(0)),
        convnext_downsample(DIMS[0], DIMS[1]),
        convnext_stage(DIMS[1], n=DEPTHS[1], drop_path=drop_rates(1)),
        convnext_downsample(DIMS[1], DIMS[2]),
        convnext_stage(DIMS[2], n=DEPTHS[2], drop_path=drop_rates(2)),
        convnext_downsample(DIMS[2], DIMS[3]),
        convnext_stage(DIMS[3], n=DEPTHS[3], drop_path=drop_rates(3)),
        global_avg_pool(),
        layer_norm(DIMS[3], eps=1e-6, name="head_norm"),
        dense(DIMS[3], 10, init="trunc_normal_0.02", bias_init="zeros", name="classifier"),
    ],
    input_shape=(N, 3, H, W),
    num_classes=10,
    constraints=constraints,
)

# The paper's AdamW recipe (lr 4e-3 per 4096 images, wd 0.05, warmup, label smoothing 0.1), for batch 64.
config = TrainConfig(learning_rate=1e-3, batch_size=64, epochs=10, optimizer="adamw", weight_decay=0.05,
                     cosine=True, warmup_epochs=2, label_smoothing=0.1, augment=True, image_size=32)
