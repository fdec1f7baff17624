"""MNIST MLP 784-512-512-10 (the Keras mnist_mlp example)."""
from gir.nn import N, Net, dense, flatten
from gir.train import TrainConfig

net = Net(
    "mlp",
    [
        flatten(),
        dense(784, 512, act="relu"),
        dense(512, 512, act="relu"),
        dense(512, 10),
    ],
    input_shape=(N, 1, 28, 28),
    num_classes=10,
)

config = TrainConfig(learning_rate=1e-3, batch_size=128, epochs=10, optimizer="adam", cosine=True,
                     image_size=28)
