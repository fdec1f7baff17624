"""Small CNN for the built-in digits data: three 3x3 conv-BN-ReLU (16, 32, 64), two 2x2 max-pools, GAP, dense 10."""
from gir.nn import H, N, W, Constraints, Net, conv_bn, dense, global_avg_pool, max_pool
from gir.train import TrainConfig

constraints = Constraints().at_least(H, 4).divisible_by(H, 4).at_least(W, 4).divisible_by(W, 4)
net = Net(
    "digits_cnn",
    [
        conv_bn(1, 16, k=3, name="conv1"),
        max_pool(2, name="pool1"),
        conv_bn(16, 32, k=3, name="conv2"),
        max_pool(2, name="pool2"),
        conv_bn(32, 64, k=3, name="conv3"),
        global_avg_pool(name="gap"),
        dense(64, 10, name="head"),
    ],
    input_shape=(N, 1, H, W),
    num_classes=10,
    constraints=constraints,
    sizes={"H": 16, "W": 16},
)

config = TrainConfig(learning_rate=0.05, batch_size=32, epochs=8, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                     cosine=True, warmup_epochs=0.5, label_smoothing=0.0, augment=False, image_size=16)
