"""TrainConfig: a training recipe as data. A net file's `config` is the default; flags override fields."""
from __future__ import annotations

import attrs
from attrs import validators as v

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


def _positive(inst, attr, value) -> None:
    if not value > 0:
        raise ValueError(f"{attr.name} must be > 0, got {value}")


def _non_negative(inst, attr, value) -> None:
    if not value >= 0:
        raise ValueError(f"{attr.name} must be >= 0, got {value}")


def _fraction(inst, attr, value) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{attr.name} must be in [0, 1), got {value}")


@attrs.frozen(kw_only=True)
class TrainConfig:
    """The reference system's TrainConfig fields, validated on construction."""

    learning_rate: float = attrs.field(default=0.1, validator=_positive)
    batch_size: int = attrs.field(default=32, validator=[v.instance_of(int), _positive])
    epochs: int = attrs.field(default=10, validator=[v.instance_of(int), _positive])
    seed: int = attrs.field(default=0, validator=v.instance_of(int))
    optimizer: str = attrs.field(default="sgd", validator=v.in_(OPTIMIZERS))
    momentum: float = attrs.field(default=0.9, validator=_fraction)
    weight_decay: float = attrs.field(default=0.0, validator=_non_negative)
    cosine: bool = True
    warmup_epochs: float = attrs.field(default=0.0, validator=_non_negative)
    label_smoothing: float = attrs.field(default=0.0, validator=_fraction)
    augment: bool = False
    clip_norm: float = attrs.field(default=0.0, validator=_non_negative)  # 0 disables clipping
    bf16: bool = False
    bf16_conv: bool = False
    image_size: int = attrs.field(default=224, validator=[v.instance_of(int), _positive])
    seq_len: int = attrs.field(default=64, validator=[v.instance_of(int), _positive])   # T, for sequence nets
    eval_every: int = attrs.field(default=1, validator=[v.instance_of(int), _positive])
    checkpoint_every: int = attrs.field(default=1, validator=[v.instance_of(int), _positive])
    beta1: float = attrs.field(default=0.9, validator=_fraction)
    beta2: float = attrs.field(default=0.999, validator=_fraction)
    rms_decay: float = attrs.field(default=0.9, validator=_fraction)
    eps: float = attrs.field(default=1e-8, validator=_positive)

    def replace(self, **changes) -> TrainConfig:
        """A copy with fields changed; unknown names and invalid values raise ValueError."""
        names = {f.name for f in attrs.fields(TrainConfig)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return attrs.evolve(self, **changes)

    def to_dict(self) -> dict:
        return attrs.asdict(self)


OPTIMIZER_FIELDS = {"momentum": ("sgd",), "beta1": ("adam", "adamw"), "beta2": ("adam", "adamw"),
                    "rms_decay": ("rmsprop",)}
"""The recipe fields each optimizer reads; a changed field that the chosen optimizer ignores is a mistake."""


def recipe_warnings(config: TrainConfig, net_classes: int | None, data_classes: int, data: str) -> list[str]:
    """One line for each combination that is legal but almost certainly not what was meant."""
    out = []
    if config.warmup_epochs >= config.epochs:
        reach = "never reaches" if config.warmup_epochs > config.epochs else "reaches only at the last step"
        out.append(f"--warmup-epochs {config.warmup_epochs:g} is not shorter than the {config.epochs}-epoch run: "
                   f"the learning rate {reach} its peak {config.learning_rate:g}")
    if net_classes == 1:
        smoothing = " (label smoothing cannot change that)" if config.label_smoothing > 0 else ""
        out.append(f"the net has one class: its softmax cross-entropy is 0 for every input and nothing "
                   f"trains{smoothing}")
    elif net_classes is not None and net_classes > data_classes:
        out.append(f"the net predicts {net_classes} classes but {data} has {data_classes}: "
                   f"{net_classes - data_classes} outputs never see a label")
    defaults = TrainConfig()
    for field, users in OPTIMIZER_FIELDS.items():
        if getattr(config, field) != getattr(defaults, field) and config.optimizer not in users:
            out.append(f"{field} = {getattr(config, field):g} has no effect with the {config.optimizer} optimizer "
                       f"(only {', '.join(users)} read it)")
    return out
