"""Small MNIST CNN: two 5x5 convs (32, 64), 2x2 max-pool, dense 128, dense 10 (Keras mnist_cnn style)."""
from gir.nn import N, Net, conv2d, dense, flatten, max_pool
from gir.train import TrainConfig

net = Net(
    "mnist_cnn",
    [
        conv2d(1, 32, k=5, act="relu"),   # 28x28, 'same'
        conv2d(32, 64, k=5, act="relu"),
        max_pool(2),                      # -> 14x14
        flatten(),                        # 64 * 14 * 14 = 12544
        dense(64 * 14 * 14, 128, act="relu"),
        dense(128, 10),
    ],
    input_shape=(N, 1, 28, 28),
    num_classes=10,
)

config = TrainConfig(learning_rate=1e-3, batch_size=128, epochs=10, optimizer="adam", cosine=True,
                     image_size=28)
