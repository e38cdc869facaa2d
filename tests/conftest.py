"""Test configuration: 8 fake CPU devices, float32 parity defaults, shared-data helpers.

The device count must be set before JAX initialises its backend, so this runs first.
"""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The CLIs turn on JAX's persistent compilation cache (under $PEANUT_HOME); tests must neither write
# into the user's cache nor leave the process-wide setting on for later tests.
os.environ.setdefault("PEANUT_XLA_CACHE", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
_CACHE_DIR = jax.config.jax_compilation_cache_dir


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's in-memory compilation caches after every test module: the suite compiles hundreds
    of programs, and keeping all of them alive grows the single pytest process by gigabytes."""
    yield
    import gc

    jax.clear_caches()
    gc.collect()


@pytest.fixture(autouse=True)
def _no_persistent_compilation_cache_leak():
    """Restore the process-wide compilation-cache setting after every test."""
    yield
    if jax.config.jax_compilation_cache_dir != _CACHE_DIR:
        jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
        from jax._src import compilation_cache

        compilation_cache.reset_cache()


REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("PEANUT_SHARED", REPO.parent / "shared"))
# Dumps of the official PyTorch models (development aid, never in CI): $PEANUT_REFS/dumps
REFS = pathlib.Path(os.environ["PEANUT_REFS"]) if os.environ.get("PEANUT_REFS") else None


def shared_path(*parts) -> pathlib.Path:
    """Path under ../shared, or skip the test when the folder is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available: {p}")
    return p


def ref_dump(name: str):
    """(npz, checkpoint path) of an official-code dump, or skip when $PEANUT_REFS is unset."""
    if REFS is None:
        pytest.skip("PEANUT_REFS not set: official-code dumps are a local development aid")
    npz = REFS / "dumps" / f"{name}_io.npz"
    pth = REFS / "dumps" / f"{name}.pth"
    if not npz.exists():
        pytest.skip(f"no dump {npz}")
    import numpy as np

    return np.load(npz), pth


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: official sizes; run with -m slow")
    config.addinivalue_line("markers", "torch: needs PyTorch installed (parity with torch ops)")


@pytest.fixture(autouse=True)
def _default_sigint():
    """Every test starts with Python's default SIGINT handler.  In the full suite something imported
    or run earlier leaves SIGINT ignored in this process (subprocesses inherit an ignored SIGINT),
    which broke the Ctrl-C tests; the source is not found yet."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
