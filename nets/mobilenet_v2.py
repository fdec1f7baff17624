"""MobileNetV2 (Sandler et al. 2018) with a 10-class head, as in the reference system."""
from gir.nn import (N, H, W, Net, conv_bn, dense, global_avg_pool, inverted_residual)
from gir.train import TrainConfig

net = Net(
    "mobilenet_v2",
    [
        conv_bn(3, 32, k=3, stride=2, act="relu6", name="stem"),  # 224 -> 112
        inverted_residual(32, 16, t=1, stride=1, n=1),
        inverted_residual(16, 24, t=6, stride=2, n=2),
        inverted_residual(24, 32, t=6, stride=2, n=3),
        inverted_residual(32, 64, t=6, stride=2, n=4),
        inverted_residual(64, 96, t=6, stride=1, n=3),
        inverted_residual(96, 160, t=6, stride=2, n=3),
        inverted_residual(160, 320, t=6, stride=1, n=1),
        conv_bn(320, 1280, k=1, act="relu6", name="head"),
        global_avg_pool(),
        dense(1280, 10),
    ],
    input_shape=(N, 3, H, W),
    num_classes=10,
)

# The reference ImageNet recipe (SGD, wd 4e-5, cosine, warmup, label smoothing 0.1) scaled to batch 64, 32x32 images.
config = TrainConfig(learning_rate=0.05, batch_size=64, epochs=20, optimizer="sgd", momentum=0.9, weight_decay=4e-5,
                     cosine=True, warmup_epochs=1, label_smoothing=0.1, augment=True, image_size=32)
