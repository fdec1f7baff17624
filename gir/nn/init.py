"""Initializer schemes by name, for a layer's `init=` argument: each maps a weight's fan-in and fan-out to an
`Init` (a kind and its scale), so a layer can be given torchvision's or timm's initialization instead of gir's."""
from __future__ import annotations

import math
from collections.abc import Callable

from gir.ir.graph import Init

SCHEMES: dict[str, Callable[[int, int], Init]] = {
    "kaiming_normal": lambda fi, fo: Init("normal", scale=math.sqrt(2.0 / fi), fan_in=fi, fan_out=fo),
    "kaiming_normal_fan_out": lambda fi, fo: Init("normal", scale=math.sqrt(2.0 / fo), fan_in=fi, fan_out=fo),
    "kaiming_uniform": lambda fi, fo: Init("uniform", scale=math.sqrt(6.0 / fi), fan_in=fi, fan_out=fo),
    "lecun_uniform": lambda fi, fo: Init("uniform", scale=1.0 / math.sqrt(fi), fan_in=fi, fan_out=fo),
    "xavier_normal": lambda fi, fo: Init("normal", scale=math.sqrt(2.0 / (fi + fo)), fan_in=fi, fan_out=fo),
    "xavier_uniform": lambda fi, fo: Init("uniform", scale=math.sqrt(6.0 / (fi + fo)), fan_in=fi, fan_out=fo),
    "normal_0.01": lambda fi, fo: Init("normal", scale=0.01, fan_in=fi, fan_out=fo),
    "trunc_normal_0.02": lambda fi, fo: Init("trunc_normal", scale=0.02, fan_in=fi, fan_out=fo),
    "zeros": lambda fi, fo: Init("zeros", fan_in=fi, fan_out=fo),
    "ones": lambda fi, fo: Init("ones", fan_in=fi, fan_out=fo),
}
"""kaiming_* are He et al.'s (std or bound sqrt(2 or 6 / fan)), torchvision's ResNet and MobileNetV2 convolutions use
kaiming_normal_fan_out; lecun_uniform is PyTorch's Linear default and gir's dense default; normal_0.01 is
torchvision's MobileNetV2 classifier; trunc_normal_0.02 is timm's ViT (cut at two standard deviations)."""


def resolve_init(init: str | Init | None, fan_in: int, fan_out: int, default: Init) -> Init:
    """The Init a layer's `init=` asks for: None keeps the layer's default, an Init is used as given, a name is
    looked up in SCHEMES."""
    if init is None:
        return default
    if isinstance(init, Init):
        return init
    if isinstance(init, str) and init in SCHEMES:
        return SCHEMES[init](fan_in, fan_out)
    raise ValueError(f"unknown initializer {init!r}; use an Init or one of: {', '.join(SCHEMES)}")
