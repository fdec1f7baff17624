"""A network: a layer list, its input signature and the constraints on its symbols."""
from __future__ import annotations

import copy

from typing import Mapping, Sequence

import sympy

from gir.ir.dtypes import DType
from gir.ir.graph import Graph
from gir.ir.types import Dim, TensorType
from gir.nn.builder import Builder
from gir.nn.layer import Layer
from gir.nn.layers import softmax_cross_entropy
from gir.nn.provenance import frame_depth, short_path, user_frame
from gir.shapes.dims import Constraints, H, N, T, W
from gir.shapes.specialize import BindingError


def _float_dtype(dtype: str, who: str) -> DType:
    """A net's float type from its name, "f32" or "f64"."""
    if dtype not in ("f32", "f64"):
        raise ValueError(f"{who} dtype must be 'f32' or 'f64', got {dtype!r}")
    return DType(dtype)


class Net:
    """`layers` applied in order to an input of `input_shape` (dims are ints or symbols).

    `input_dtype` "i32" makes the input integer token ids (graph input `tokens`, e.g. [N, T]); by default it is
    float images in the net's `dtype` (graph input `images`). `sizes` gives the default value of each symbol
    (batch, image size, sequence length) used when a concrete size is needed, e.g. for lowering or a MAC count."""

    def __init__(self, name: str, layers: Sequence[Layer], input_shape: Sequence[Dim] = (N, 3, H, W),
                 num_classes: int | None = None, constraints: Constraints = Constraints(),
                 sizes: Mapping[str, int] | None = None, dtype: str = "f32", input_dtype: str | None = None):
        frame, _ = user_frame(2)
        self.file = short_path(frame.f_code.co_filename) if frame else ""
        self.name = name
        self.layers = list(layers)
        for i, lay in enumerate(self.layers):
            if not isinstance(lay, Layer):
                raise TypeError(f"{self.file}: Net {name!r} layer {i} is {lay!r}, not a layer (did you forget "
                                f"the parentheses, as in relu()?)")
        self.dtype = _float_dtype(dtype, f"{self.file}: Net {name!r}")
        if input_dtype not in (None, "i32"):
            raise ValueError(f"{self.file}: Net {name!r} input_dtype must be 'i32' (token ids) or left out (float "
                             f"images), got {input_dtype!r}")
        self.input_type = TensorType(tuple(input_shape), DType(input_dtype) if input_dtype else self.dtype)
        self.num_classes = num_classes
        self.constraints = constraints
        defaults = {"N": 32, "H": 224, "W": 224}
        defaults.update(sizes or {})
        self.symbols = sorted(self.input_type.free_symbols, key=str)
        unsized = [str(s) for s in self.symbols if str(s) not in defaults]
        if unsized:
            raise ValueError(f"{self.file}: Net {name!r} has no default size for symbol(s) {', '.join(unsized)}; "
                             f"pass sizes={{{', '.join(repr(u) + ': ...' for u in unsized)}}}")
        self.sizes = {s: int(defaults[str(s)]) for s in self.symbols}

    @property
    def image_sized(self) -> bool:
        """Whether an image size binds this net's input (H and W are symbols), as opposed to a
        fixed-size input such as MNIST's 28x28."""
        return H in self.symbols

    @property
    def input_name(self) -> str:
        """The graph's data input: `tokens` (integer ids) or `images`."""
        return "images" if self.input_type.dtype.is_float else "tokens"

    def with_dtype(self, dtype: str) -> Net:
        """The same layers computing in `dtype` ("f32" or "f64"): a float64 copy checks a whole net's gradient
        without float32 rounding moving inputs across ReLU6's kinks."""
        other = copy.copy(self)
        other.dtype = _float_dtype(dtype, f"Net {self.name!r}")
        if self.input_type.dtype.is_float:
            other.input_type = self.input_type.with_dtype(other.dtype)
        return other

    def binding(self, batch: int | None = None, image: int | None = None,
                seq: int | None = None) -> dict[sympy.Symbol, int]:
        """Symbol values: the defaults, with N set to `batch`, H, W to `image` and T to `seq` when given."""
        fixed = [d for d in self.input_type.shape[2:] if isinstance(d, int)]
        if image is not None and len(self.input_type.shape) == 4 and fixed == list(self.input_type.shape[2:]) \
                and fixed != [image, image]:
            raise BindingError(f"image size {image} (--image, or the config's image_size): net {self.name!r} "
                               f"takes a fixed {'x'.join(map(str, fixed))} input")
        out = dict(self.sizes)
        for s in self.symbols:
            if batch is not None and s == N:
                out[s] = batch
            if image is not None and s in (H, W):
                out[s] = image
            if seq is not None and s == T:
                out[s] = seq
        return out

    def build(self, mode: str = "train", loss: bool = False, label_smoothing: float = 0.0, seed: int = 0) -> Graph:
        """The forward graph: output `logits`; in train mode also `bn_mean:<path>` and
        `bn_var:<path>` per BN layer; with `loss`, an i32 `labels` input (one label per logits row: [N], or [N, T]
        for per-token logits [N, T, V]) and a `loss` output, the mean cross-entropy over all of them. Random layers
        (dropout) take their numbers from `seed` and the graph's `step` input."""
        b = Builder(self.name, self.constraints, mode, seed, self.dtype)
        x = b.input(self.input_name, self.input_type.shape, self.input_type.dtype)
        for lay in self.layers:
            x = lay(b, x)
        g = b.graph
        classes = x.type.shape[-1] if x.type.rank else None
        if self.num_classes and isinstance(classes, int) and classes != self.num_classes:
            raise ValueError(f"the last layer gives {classes} logits per example ({x.type.short()}) but the net "
                             f"declares num_classes={self.num_classes}")
        g.set_output("logits", x)
        for path, mean, var in b.bn_stats:
            g.set_output(f"bn_mean:{path}", mean)
            g.set_output(f"bn_var:{path}", var)
        if loss:
            labels = b.input("labels", x.type.shape[:-1], DType.i32)
            last = getattr(self.layers[-1], "site", None) if self.layers else None
            with b.scope("loss", last, frame_depth()):  # the loss is placed at the net's last layer line
                g.set_output("loss", softmax_cross_entropy(b, x, labels, label_smoothing))
        return g

    def __repr__(self) -> str:
        return f"<Net {self.name}: {len(self.layers)} layers, input {self.input_type.short()}>"
