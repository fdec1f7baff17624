"""Training: the recipe (TrainConfig); optimizers, data, the loop and checkpoints build on it."""
from gir.train.config import TrainConfig

__all__ = ["TrainConfig"]
