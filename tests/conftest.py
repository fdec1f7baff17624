"""Suite-wide pytest options.

`--slow` raises the example counts of the hypothesis fuzz tests (tests/*/test_fuzz_*.py): the same tests
run in CI with a few derandomized examples and, under `--slow`, with many examples from a fresh random
seed each run (and hypothesis' example database, so a failure found once is replayed first next time).
It also cross-compiles every net's train step and eval module for both GPU targets, where CI takes one target for
each (tests/lower/test_lower_nets.py). Nothing is skipped either way.

    python -m pytest -q -n 2                       # CI: bounded example counts
    python -m pytest -q -n 2 --slow tests/*/test_fuzz_*.py

The choice travels as the environment variable GIR_SLOW_TESTS (set here, so xdist workers and any
subprocess see it too); the `examples` and `fuzz_settings` fixtures read it.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

SLOW_ENV = "GIR_SLOW_TESTS"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="run the hypothesis fuzz tests with many more examples (random seeds)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--slow", default=False):
        os.environ[SLOW_ENV] = "1"
    # unpacked .gz and deflated .npz data go to a throwaway cache, not the user's ~/.cache/gir/data
    os.environ.setdefault("GIR_DATA_CACHE_DIR", tempfile.mkdtemp(prefix="gir-test-data-cache-"))


def slow_run() -> bool:
    """Whether this is a `--slow` run."""
    return os.environ.get(SLOW_ENV) == "1"


def examples(ci: int, slow: int) -> int:
    """The hypothesis example count: `ci` normally, `slow` under `--slow`."""
    return slow if slow_run() else ci


def fuzz_settings(ci: int, slow: int, **overrides) -> settings:
    """Hypothesis settings for a fuzz test: `examples(ci, slow)` examples, no deadline (first calls
    compile through JAX or IREE), derandomized with no example database in CI (the same examples every
    run), random seeds and the database under `--slow`."""
    kw = {"max_examples": examples(ci, slow), "deadline": None, "derandomize": not slow_run(),
          "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                    HealthCheck.function_scoped_fixture]}
    if not slow_run():
        kw["database"] = None
    kw.update(overrides)
    return settings(**kw)


@pytest.fixture(name="slow")
def slow_fixture() -> bool:
    """Whether this is a `--slow` run (tests/test_docs.py runs its slow sessions then)."""
    return slow_run()


@pytest.fixture(name="examples")
def examples_fixture():
    """`examples(ci, slow)` as a fixture (conftest modules are not importable by a stable name)."""
    return examples


@pytest.fixture(name="fuzz_settings")
def fuzz_settings_fixture():
    """`fuzz_settings(ci, slow, **overrides)` as a fixture; use it on a `@given` function defined inside
    the test: `fuzz_settings(10, 500)(given(...)(check))()`."""
    return fuzz_settings


def assert_close_to_scale(have, want, rtol: float, atol: float, msg: str) -> float:
    """assert_allclose with `atol` relative to the reference's largest magnitude (at least 1);
    returns the largest difference in those units (for measuring a fuzz test's tolerance)."""
    have, want = np.asarray(have), np.asarray(want)
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(have, want, rtol=rtol, atol=atol * scale, err_msg=msg)
    return float(np.max(np.abs(have - want), initial=0.0)) / scale


@pytest.fixture(name="close_to_scale")
def close_to_scale_fixture():
    """`assert_close_to_scale(have, want, rtol, atol, msg)` as a fixture (see `examples`)."""
    return assert_close_to_scale
