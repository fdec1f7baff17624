"""EfficientNet-B0 (Tan & Le 2019; torchvision efficientnet_b0) with a 10-class head."""
from gir.nn import H, N, W, Net, conv_bn, dense, global_avg_pool, mb_conv
from gir.train import TrainConfig

net = Net(
    "efficientnet_b0",
    [
        conv_bn(3, 32, k=3, stride=2, act="swish", name="stem"),
        mb_conv(32, 16, t=1, k=3, stride=1, n=1),
        mb_conv(16, 24, t=6, k=3, stride=2, n=2),
        mb_conv(24, 40, t=6, k=5, stride=2, n=2),
        mb_conv(40, 80, t=6, k=3, stride=2, n=3),
        mb_conv(80, 112, t=6, k=5, stride=1, n=3),
        mb_conv(112, 192, t=6, k=5, stride=2, n=4),
        mb_conv(192, 320, t=6, k=3, stride=1, n=1),
        conv_bn(320, 1280, k=1, act="swish", name="head"),
        global_avg_pool(),
        dense(1280, 10),
    ],
    input_shape=(N, 3, H, W),
    num_classes=10,
)

# The paper's RMSProp recipe (lr 0.016 per 256 images, decay 0.9, eps 1e-3, wd 1e-5), scaled to batch 64.
config = TrainConfig(learning_rate=0.004, batch_size=64, epochs=10, optimizer="rmsprop", momentum=0.9,
                     rms_decay=0.9, eps=1e-3, weight_decay=1e-5, cosine=True, warmup_epochs=1,
                     label_smoothing=0.1, augment=True, image_size=32)
