"""Defines layers but forgets `net`."""
from gir.nn import dense

layers = [dense(4, 2)]
