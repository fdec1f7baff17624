"""Rewriting: (pattern, replacement) rules grouped into named passes, one driver to a fixed point,
pipelines by name. Importing this package registers every pass."""
from gir.rewrite.driver import (PASSES, PIPELINES, Context, Firing, Pass, RewriteError, Rule, apply_rules,
                                dead_code_elimination, get_pass, rebuild, register_pass, resolve, run_pass,
                                run_pipeline)
from gir.rewrite.pattern import Const, Match, Op, Var, match
from gir.rewrite.pipelines import passes_for

__all__ = ["PASSES", "PIPELINES", "Context", "Firing", "Pass", "RewriteError", "Rule", "apply_rules",
           "dead_code_elimination", "get_pass", "rebuild", "register_pass", "resolve", "run_pass", "run_pipeline",
           "Const", "Match", "Op", "Var", "match", "passes_for"]
