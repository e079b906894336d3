"""Numba kernels against the NumPy reference, forward and every gradient."""

import numpy as np
import pytest
from conftest import as64, assert_close, make_problem

import numba_lstm
from numba_lstm import reference

# (T, B, I, H): includes T = 1, B = 1, I != H and H not a multiple of 8,
# batches that use every tile size of the panel product (8, 4, 2 and 1 rows),
# and H = 32, whole panels in both dtypes (no padding columns to drop).
SHAPES = [
    (1, 1, 1, 1), (1, 3, 4, 5), (7, 1, 3, 13), (5, 4, 6, 6), (12, 2, 9, 17), (3, 8, 16, 24), (4, 9, 5, 7),
    (3, 20, 8, 12), (3, 5, 7, 32),
]  # fmt: skip


def _upstream(T, B, H, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in ((T, B, H), (B, H), (B, H))]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
def test_forward_and_backward_match_reference(shape, dtype):
    T, B, I, H = shape
    p = make_problem(T, B, I, H, dtype)
    y, h_n, c_n, cache = numba_lstm.lstm_forward(**p)
    ry, rh, rc, rcache = reference.lstm_forward(**as64(p))
    for name, got, ref in (("y", y, ry), ("h_n", h_n, rh), ("c_n", c_n, rc)):
        assert got.dtype == dtype
        assert_close(got, ref, dtype, name)

    dy, dh_n, dc_n = _upstream(T, B, H, dtype)
    grads = numba_lstm.lstm_backward(dy, cache, dh_n, dc_n)
    ref_grads = reference.lstm_backward(
        dy.astype(np.float64), rcache, dh_n.astype(np.float64), dc_n.astype(np.float64)
    )
    for name in grads._fields:
        assert getattr(grads, name).dtype == dtype
        assert_close(getattr(grads, name), getattr(ref_grads, name), dtype, name)


def test_backward_without_dy_uses_final_state_gradients_only(dtype):
    T, B, I, H = 6, 3, 4, 5
    p = make_problem(T, B, I, H, dtype)
    _, _, _, cache = numba_lstm.lstm_forward(**p)
    _, _, _, rcache = reference.lstm_forward(**as64(p))
    _, dh_n, dc_n = _upstream(T, B, H, dtype)
    got = numba_lstm.lstm_backward(None, cache, dh_n=dh_n, dc_n=dc_n)
    ref = reference.lstm_backward(None, rcache, dh_n.astype(np.float64), dc_n.astype(np.float64))
    for name in got._fields:
        assert_close(getattr(got, name), getattr(ref, name), dtype, name)
    zero = numba_lstm.lstm_backward(None, cache)
    for name in zero._fields:
        assert not np.any(getattr(zero, name)), f"{name} must be zero with no upstream gradient"


def test_default_initial_state_is_zero(dtype):
    p = make_problem(4, 2, 3, 5, dtype)
    zeros = np.zeros((2, 5), dtype)
    got = numba_lstm.lstm_forward(p["x"], p["W"], p["b"])
    explicit = numba_lstm.lstm_forward(p["x"], p["W"], p["b"], zeros, zeros)
    for a, b in zip(got[:3], explicit[:3], strict=True):
        np.testing.assert_array_equal(a, b)


def test_whole_sequence_equals_single_steps(dtype):
    T, B, I, H = 9, 3, 4, 6
    p = make_problem(T, B, I, H, dtype)
    y, h_n, c_n, _ = numba_lstm.lstm_forward(**p)
    h, c = p["h0"], p["c0"]
    for t in range(T):
        y_t, h, c, _ = numba_lstm.lstm_forward(p["x"][t : t + 1], p["W"], p["b"], h, c)
        np.testing.assert_array_equal(y_t[0], y[t])
    np.testing.assert_array_equal(h, h_n)
    np.testing.assert_array_equal(c, c_n)


def test_split_sequence_with_carried_state_equals_whole(dtype):
    T, B, I, H = 10, 2, 3, 7
    p = make_problem(T, B, I, H, dtype)
    y, h_n, c_n, _ = numba_lstm.lstm_forward(**p)
    y1, h1, c1, _ = numba_lstm.lstm_forward(p["x"][:4], p["W"], p["b"], p["h0"], p["c0"])
    y2, h2, c2, _ = numba_lstm.lstm_forward(p["x"][4:], p["W"], p["b"], h1, c1)
    np.testing.assert_array_equal(np.concatenate([y1, y2]), y)
    np.testing.assert_array_equal(h2, h_n)
    np.testing.assert_array_equal(c2, c_n)


def test_split_sequence_backward_chains_to_whole(dtype):
    """Backward of the second half feeds dh0/dc0 into the first half's dh_n/dc_n."""
    T, B, I, H = 8, 2, 3, 4
    p = make_problem(T, B, I, H, dtype)
    dy, _, _ = _upstream(T, B, H, dtype)
    _, _, _, cache = numba_lstm.lstm_forward(**p)
    whole = numba_lstm.lstm_backward(dy, cache)
    _, h1, c1, cache1 = numba_lstm.lstm_forward(p["x"][:5], p["W"], p["b"], p["h0"], p["c0"])
    _, _, _, cache2 = numba_lstm.lstm_forward(p["x"][5:], p["W"], p["b"], h1, c1)
    g2 = numba_lstm.lstm_backward(dy[5:], cache2)
    g1 = numba_lstm.lstm_backward(dy[:5], cache1, g2.dh0, g2.dc0)
    assert_close(np.concatenate([g1.dx, g2.dx]), whole.dx, dtype, "dx")
    assert_close(g1.dW + g2.dW, whole.dW, dtype, "dW")
    assert_close(g1.db + g2.db, whole.db, dtype, "db")
    assert_close(g1.dh0, whole.dh0, dtype, "dh0")
    assert_close(g1.dc0, whole.dc0, dtype, "dc0")


def test_backward_can_run_twice_on_one_cache(dtype):
    p = make_problem(5, 2, 3, 4, dtype)
    dy, _, _ = _upstream(5, 2, 4, dtype)
    _, _, _, cache = numba_lstm.lstm_forward(**p)
    first = numba_lstm.lstm_backward(dy, cache)
    second = numba_lstm.lstm_backward(dy, cache)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
