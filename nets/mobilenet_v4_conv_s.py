"""MobileNetV4-Conv-S (Qin et al. 2024; timm mobilenetv4_conv_small) with a 10-class head: 2,505,834 parameters."""
from gir.nn import H, N, W, Net, batch_norm, conv_bn, dense, global_avg_pool, relu, uib
from gir.train import TrainConfig

# The count is timm 1.0.15's create_model("mobilenetv4_conv_small", num_classes=10). Plain convolutions first, then
# universal inverted bottlenecks (`uib`) in three of their four forms: ExtraDW (start_k and mid_k), IB (mid_k only)
# and ConvNeXt-like (start_k only). The head is a 1x1 conv to 1280 after pooling (a dense layer here), BN, ReLU.
net = Net(
    "mobilenet_v4_conv_s",
    [
        conv_bn(3, 32, k=3, stride=2, name="stem"),
        conv_bn(32, 32, k=3, stride=2, name="conv1"),
        conv_bn(32, 32, k=1, name="conv2"),
        conv_bn(32, 96, k=3, stride=2, name="conv3"),
        conv_bn(96, 64, k=1, name="conv4"),
        uib(64, 96, t=3, start_k=5, mid_k=5, stride=2),          # ExtraDW
        uib(96, 96, t=2, start_k=0, mid_k=3, n=4),               # IB
        uib(96, 96, t=4, start_k=3, mid_k=0),                    # ConvNeXt-like
        uib(96, 128, t=6, start_k=3, mid_k=3, stride=2),         # ExtraDW
        uib(128, 128, t=4, start_k=5, mid_k=5),                  # ExtraDW
        uib(128, 128, t=4, start_k=0, mid_k=5),                  # IB
        uib(128, 128, t=3, start_k=0, mid_k=5),                  # IB
        uib(128, 128, t=4, start_k=0, mid_k=3, n=2),             # IB
        conv_bn(128, 960, k=1, name="conv5"),
        global_avg_pool(),
        dense(960, 1280, bias=False, name="head"),
        batch_norm(1280, name="head_bn"),
        relu(),
        dense(1280, 10, name="classifier"),
    ],
    input_shape=(N, 3, H, W),
    num_classes=10,
)

# The paper's AdamW recipe (wd 0.1 for the small model at 9,600 epochs' scale; 0.01 here), cosine with warmup.
config = TrainConfig(learning_rate=2e-3, batch_size=64, epochs=10, optimizer="adamw", weight_decay=0.01,
                     cosine=True, warmup_epochs=1, label_smoothing=0.1, augment=True, image_size=32)
