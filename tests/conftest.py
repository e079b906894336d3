"""Shared helpers: random problems and the comparison used by every test."""

import contextlib
import copy
import pickle

import numba
import numpy as np
import pytest

#: Tolerance of kernel results against the reference, relative to the largest
#: magnitude of the reference result (issue 2).  float32 kernels are compared
#: with the float64 reference evaluated on the same float32 inputs.
TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}

#: The three ways to copy a layer, by name: ``copy``, ``deepcopy`` and a
#: ``pickle`` round trip (as when a layer is sent to a worker process).
COPIES = {"copy": copy.copy, "deepcopy": copy.deepcopy, "pickle": lambda obj: pickle.loads(pickle.dumps(obj))}


def assert_close(got, ref, dtype, name=""):
    """Assert ``max|got - ref| <= tol * max(|ref|, 1)`` with the dtype's tolerance."""
    got = np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
    if ref.size == 0:
        return
    scale = max(float(np.max(np.abs(ref))), 1.0)
    err = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
    tol = TOLERANCE[np.dtype(dtype).type]
    assert err <= tol * scale, f"{name}: max abs error {err:.3g} > {tol:g} * {scale:.3g}"


def make_problem(T, B, I, H, dtype, seed=0, scale=0.5):
    """Random inputs, weights and initial state of one layer, in ``dtype``."""
    rng = np.random.default_rng(seed)

    def draw(*shape, s=1.0):
        return (rng.standard_normal(shape) * s).astype(dtype)

    return {
        "x": draw(T, B, I),
        "W": draw(I + H, 4 * H, s=scale / np.sqrt(H)),
        "b": draw(4 * H, s=scale),
        "h0": draw(B, H, s=0.5),
        "c0": draw(B, H, s=0.5),
    }


def as64(problem):
    """The same problem in float64 (exact: float32 values are float64 values)."""
    return {k: v.astype(np.float64) for k, v in problem.items()}


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


def import_or_skip(name):
    """Import a peer framework, or skip saying which package is missing."""
    return pytest.importorskip(name, reason=f"{name} is not installed (pip install -e '.[test]')")


@contextlib.contextmanager
def numba_threads(n):
    """Run the block with ``n`` of Numba's threads, then restore the count."""
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)
