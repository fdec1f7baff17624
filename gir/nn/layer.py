"""Layers as recorded calls: `conv_bn(3, 32, k=3)` remembers its arguments and call site; applying
it to a builder and a value builds it inside a named scope."""
from __future__ import annotations

import functools
import inspect
from typing import Callable

from gir.ir.graph import Loc, Value
from gir.nn.builder import Builder
from gir.nn.provenance import frame_depth, short_path, user_frame


class Layer:
    """One layer call: `fn(b, x, *args, **kwargs)` to be built under the scope `name`."""

    def __init__(self, fn: Callable[..., Value], prefix: str, args: tuple, kwargs: dict, name: str | None):
        self.fn = fn
        self.prefix = prefix
        self.args = args
        self.kwargs = kwargs
        self.name = name
        frame, self._depth = user_frame(3)
        self.site = Loc("", short_path(frame.f_code.co_filename), frame.f_lineno) if frame else Loc()

    @property
    def kind(self) -> str:
        return self.fn.__name__

    def __call__(self, b: Builder, x: Value, name: str | None = None) -> Value:
        """Builds the layer on `x` under `name` (or its own name, or the next free `prefix<k>`)."""
        scope = b.child_name(name or self.name, self.prefix)
        made_here = not b.sites or self._depth > b.sites[-1][1]
        site = self.site if made_here else b.sites[-1][0]
        with b.scope(scope, site, frame_depth()):
            return self.fn(b, x, *self.args, **self.kwargs)

    def __repr__(self) -> str:
        args = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.kind}({', '.join(args)})"


def layer(prefix: str) -> Callable[[Callable[..., Value]], Callable[..., Layer]]:
    """Turns a build function `fn(b, x, ...)` into a layer constructor `fn(...) -> Layer`; its
    instances are named `<prefix>1`, `<prefix>2`, ... among siblings unless given `name=`.
    Arguments are checked against the signature at the call site, not later at build time."""
    def deco(fn: Callable[..., Value]) -> Callable[..., Layer]:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def make(*args, name: str | None = None, **kwargs) -> Layer:
            try:
                sig.bind(None, None, *args, **kwargs)
            except TypeError as e:
                raise TypeError(f"{fn.__name__}(): {e}") from None
            return Layer(fn, prefix, args, kwargs, name)

        make.build = fn  # type: ignore[attr-defined]
        return make
    return deco
