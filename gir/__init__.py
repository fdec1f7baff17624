"""gir: a compiler front end for training deep networks (symbolic-shape graph IR -> StableHLO)."""
__version__ = "0.1.0"
