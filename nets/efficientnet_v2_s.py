"""EfficientNetV2-S (Tan & Le 2021; torchvision efficientnet_v2_s) with a 10-class head: 20,190,298 parameters."""
from gir.nn import H, N, W, Net, conv_bn, dense, dropout, fused_mb_conv, global_avg_pool, mb_conv
from gir.train import TrainConfig

BLOCKS = (2, 4, 4, 6, 9, 15)


def drop_rates(stage: int, top: float = 0.2) -> list[float]:
    """torchvision's schedule: block i of all 40 (from 0) drops its branch with probability top * i / 40."""
    first = sum(BLOCKS[:stage])
    return [top * (first + i) / sum(BLOCKS) for i in range(BLOCKS[stage])]


# Fused-MBConv in the first three stages, MBConv with squeeze-excite after; stochastic depth rises linearly from
# 0 to 0.2 over the 40 blocks.
net = Net(
    "efficientnet_v2_s",
    [
        conv_bn(3, 24, k=3, stride=2, act="swish", name="stem"),
        fused_mb_conv(24, 24, t=1, k=3, stride=1, n=2, drop_path=drop_rates(0)),
        fused_mb_conv(24, 48, t=4, k=3, stride=2, n=4, drop_path=drop_rates(1)),
        fused_mb_conv(48, 64, t=4, k=3, stride=2, n=4, drop_path=drop_rates(2)),
        mb_conv(64, 128, t=4, k=3, stride=2, n=6, drop_path=drop_rates(3)),
        mb_conv(128, 160, t=6, k=3, stride=1, n=9, drop_path=drop_rates(4)),
        mb_conv(160, 256, t=6, k=3, stride=2, n=15, drop_path=drop_rates(5)),
        conv_bn(256, 1280, k=1, act="swish", name="head"),
        global_avg_pool(),
        dropout(0.2),
        dense(1280, 10, name="classifier"),
    ],
    input_shape=(N, 3, H, W),
    num_classes=10,
)

# The paper's RMSProp recipe (decay 0.9, momentum 0.9, wd 1e-5), its learning rate scaled to batch 64.
config = TrainConfig(learning_rate=0.004, batch_size=64, epochs=10, optimizer="rmsprop", momentum=0.9,
                     rms_decay=0.9, eps=1e-3, weight_decay=1e-5, cosine=True, warmup_epochs=1,
                     label_smoothing=0.1, augment=True, image_size=32)
