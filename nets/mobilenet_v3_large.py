"""MobileNetV3-Large (Howard et al. 2019; torchvision mobilenet_v3_large) with a 10-class head: 4,214,842 parameters."""
from gir.nn import H, N, W, Net, conv_bn, dense, dropout, global_avg_pool
from gir.nn import inverted_bottleneck as block
from gir.train import TrainConfig

RE, HS = "relu", "hard_swish"

# Each block lists its expanded width as the paper's table does; squeeze-excite (se=0.25) squeezes to a quarter
# of it, rounded to a multiple of 8, with a hard-sigmoid gate.
net = Net(
    "mobilenet_v3_large",
    [
        conv_bn(3, 16, k=3, stride=2, act=HS, name="stem"),
        block(16, 16, hidden=16, k=3, act=RE),
        block(16, 24, hidden=64, k=3, stride=2, act=RE),
        block(24, 24, hidden=72, k=3, act=RE),
        block(24, 40, hidden=72, k=5, stride=2, act=RE, se=0.25),
        block(40, 40, hidden=120, k=5, act=RE, se=0.25),
        block(40, 40, hidden=120, k=5, act=RE, se=0.25),
        block(40, 80, hidden=240, k=3, stride=2, act=HS),
        block(80, 80, hidden=200, k=3, act=HS),
        block(80, 80, hidden=184, k=3, act=HS),
        block(80, 80, hidden=184, k=3, act=HS),
        block(80, 112, hidden=480, k=3, act=HS, se=0.25),
        block(112, 112, hidden=672, k=3, act=HS, se=0.25),
        block(112, 160, hidden=672, k=5, stride=2, act=HS, se=0.25),
        block(160, 160, hidden=960, k=5, act=HS, se=0.25),
        block(160, 160, hidden=960, k=5, act=HS, se=0.25),
        conv_bn(160, 960, k=1, act=HS, name="head"),
        global_avg_pool(),
        dense(960, 1280, act=HS, name="fc1"),
        dropout(0.2),
        dense(1280, 10, name="classifier"),
    ],
    input_shape=(N, 3, H, W),
    num_classes=10,
)

# The paper's RMSProp recipe (momentum 0.9, wd 1e-5), its learning rate scaled to batch 64, cosine with warmup.
config = TrainConfig(learning_rate=0.004, batch_size=64, epochs=10, optimizer="rmsprop", momentum=0.9,
                     rms_decay=0.9, eps=1e-3, weight_decay=1e-5, cosine=True, warmup_epochs=1,
                     label_smoothing=0.1, augment=True, image_size=32)
