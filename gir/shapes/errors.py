"""ShapeError: what is wrong with a shape, on which op, at which layer and user source line."""
from __future__ import annotations

from gir.ir.graph import Loc
from gir.ir.types import TensorType


class ShapeError(Exception):
    """Raised by a shape rule with the problem and the shapes involved; the builder adds the op
    and provenance, so the message reads `file:line: shape error in OP at layer 'PATH': ...`."""

    def __init__(self, message: str, shapes: tuple[tuple[str, TensorType], ...] = (), op: str = "",
                 loc: Loc | None = None):
        super().__init__(message)
        self.message = message
        self.shapes = tuple(shapes)
        self.op = op
        self.loc = loc or Loc()

    def at(self, op: str, loc: Loc) -> "ShapeError":
        """The same error with its op and provenance filled in (the innermost wins)."""
        return ShapeError(self.message, self.shapes, self.op or op, loc if not self.loc.path and not self.loc.file else self.loc)

    def __str__(self) -> str:
        where = f"{self.loc.where()}: " if self.loc.file else ""
        what = f"shape error in {self.op}" if self.op else "shape error"
        layer = f" at layer '{self.loc.path}'" if self.loc.path else ""
        shapes = ", ".join(f"{name} {t.short()}" for name, t in self.shapes)
        return f"{where}{what}{layer}: {self.message}" + (f" ({shapes})" if shapes else "")
