"""Streaming: layer.step and numba_lstm.jit, against whole-sequence forward and the reference."""

import tracemalloc

import numba
import numpy as np
import pytest
from conftest import COPIES, as64, assert_close, make_problem, numba_threads

import numba_lstm
from numba_lstm import jit, reference
from numba_lstm._kernels import SMALL_ROWS, STEP_SPLIT_MIN_BYTES, _split_step
from numba_lstm._sync import counters


def _assert_equal(got, want, dtype, what):
    np.testing.assert_array_equal(got, want, err_msg=what)


def assert_step_loop_equals_forward(layer, x, state=None, exact=False):
    """``layer.step`` over x, from ``state``, against one ``layer(x, state)``; returns the layer.

    exact: bit for bit.  A step of at most SMALL_ROWS rows in one call sums
    each product in the order of the sequence kernels' tiles; with more rows
    it calls BLAS, and a split step adds partial products: a few ulp.
    """
    dtype = layer.dtype
    check = _assert_equal if exact else assert_close
    y, (h_n, c_n) = layer(x, state)
    for t in range(x.shape[0]):
        y_t, state = layer.step(x[t], state)
        check(y_t, y[t], dtype, f"y[{t}]")
    check(state[0], h_n, dtype, "h_n")
    check(state[1], c_n, dtype, "c_n")
    return layer


@pytest.mark.parametrize("B", [1, 3, 8])
@pytest.mark.parametrize("config", [dict(), dict(num_layers=3), dict(num_layers=2, proj_size=2)], ids=str)
def test_step_loop_gives_the_bits_of_forward(config, B, dtype):
    # H = 37: whole panels and a rest of columns, in both dtypes.
    layer = numba_lstm.LSTM(4, 37, **config, dtype=dtype, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((6, B, 4)).astype(dtype)
    assert_step_loop_equals_forward(layer, x, exact=True)


# A projection: each layer's step in one jitted call (jit._layer_step_projected).
# B = 12 > SMALL_ROWS takes BLAS for both products; P = 9 is under one panel.
@pytest.mark.parametrize("B", [1, 3, 12])
def test_projected_step_loop_equals_forward(B, dtype):
    layer = numba_lstm.LSTM(5, 40, num_layers=2, proj_size=9, dtype=dtype, seed=0).eval()
    x = np.random.default_rng(4).standard_normal((5, B, 5)).astype(dtype)
    state = (
        np.random.default_rng(5).standard_normal((2, B, 9)).astype(dtype),
        np.random.default_rng(6).standard_normal((2, B, 40)).astype(dtype),
    )
    assert_step_loop_equals_forward(layer, x, state, exact=B <= SMALL_ROWS)


# A W_hr replaced by a strided view or a Fortran-order copy: the bits of the
# layer's own C-order W_hr, whether the projection runs in tiles (B <=
# SMALL_ROWS) or through BLAS (_blas_operand copies the operand first).  A
# guard of the bits: plain np.dot gave them too, with a compile-time warning
# that the test below catches.
@pytest.mark.parametrize("B", [3, 12])
@pytest.mark.parametrize("layout", ["strided", "F"])
def test_projected_step_reads_W_hr_of_any_layout(layout, B, dtype):
    layer = numba_lstm.LSTM(5, 40, proj_size=9, dtype=dtype, seed=0).eval()
    x = np.random.default_rng(4).standard_normal((B, 5)).astype(dtype)
    want_y, (want_h, want_c) = layer.step(x)
    W_hr = layer.params["W_hr_l0"]
    if layout == "F":
        replaced = np.asfortranarray(W_hr)
    else:
        wide = np.zeros((W_hr.shape[0], 2 * W_hr.shape[1]), dtype)
        wide[:, ::2] = W_hr
        replaced = wide[:, ::2]
    layer.params["W_hr_l0"] = replaced
    y, (h, c) = layer.step(x)
    for got, want, what in ((y, want_y, "y"), (h, want_h, "h"), (c, want_c, "c")):
        np.testing.assert_array_equal(got, want, err_msg=what)


# A small layer (one jitted call per layer) and a split one (_split_step):
# a replaced parameter is refused by its name on either path.
@pytest.mark.parametrize(
    ("split", "key", "value", "error", "message"),
    [
        (False, "W_hr_l1", np.zeros((9, 40), np.float32), ValueError, r"params\['W_hr_l1'\] must have shape \(40, 9\), got \(9, 40\)"),
        (False, "W_hr_l0", np.zeros((40, 9), np.float64), TypeError, r"params\['W_hr_l0'\] has dtype float64 but the layer has dtype float32"),
        (False, "W_l1", np.zeros((9, 160), np.float32), ValueError, r"params\['W_l1'\] must have shape \(18, 160\), got \(9, 160\)"),
        (False, "b_l0", np.zeros(40, np.float32), ValueError, r"params\['b_l0'\] must have shape \(160,\), got \(40,\)"),
        (True, "W_hr_l1", np.zeros((250, 768), np.float32), ValueError, r"params\['W_hr_l1'\] must have shape \(768, 250\), got \(250, 768\)"),
        (True, "W_hr_l0", np.zeros((768, 250), np.float64), TypeError, r"params\['W_hr_l0'\] has dtype float64 but the layer has dtype float32"),
        (True, "W_l1", np.zeros((400, 3072), np.float32), ValueError, r"params\['W_l1'\] must have shape \(500, 3072\), got \(400, 3072\)"),
        (True, "b_l0", np.zeros(768, np.float32), ValueError, r"params\['b_l0'\] must have shape \(3072,\), got \(768,\)"),
    ],
)  # fmt: skip
def test_projected_step_rejects_bad_parameters(split, key, value, error, message):
    if split:
        layer = _split_projected_layer(np.float32)
    else:
        layer = numba_lstm.LSTM(5, 40, num_layers=2, proj_size=9, seed=0).eval()
    x = np.zeros((1, layer.input_size), np.float32)
    layer.step(x)
    assert bool(layer._split_buffers) == split  # the path under test ran
    layer.params[key] = value
    with pytest.raises(error, match=message):
        layer.step(x)


# Without projection, a small layer (jit._layer_step_into): the first step
# compiles no message; a replaced parameter is refused by its name.
@pytest.mark.parametrize(
    ("key", "value", "error", "message"),
    [
        ("W_l1", np.zeros((10, 24), np.float32), ValueError, r"params\['W_l1'\] must have shape \(12, 24\), got \(10, 24\)"),
        ("W_l0", np.zeros((10, 24), np.float32), ValueError, r"params\['W_l0'\] must have shape \(11, 24\), got \(10, 24\)"),
        ("b_l1", np.zeros(23, np.float32), ValueError, r"params\['b_l1'\] must have shape \(24,\), got \(23,\)"),
        ("W_l0", np.zeros((11, 24), np.float64), TypeError, r"params\['W_l0'\] has dtype float64 but the layer has dtype float32"),
    ],
)  # fmt: skip
def test_step_rejects_bad_parameters(key, value, error, message):
    layer = numba_lstm.LSTM(5, 6, num_layers=2, seed=0).eval()
    x = np.zeros((2, 5), np.float32)
    y_t, state = layer.step(x)
    assert not layer._split_buffers  # one jitted call per layer
    original = layer.params[key]
    layer.params[key] = value
    with pytest.raises(error, match=message):
        layer.step(x, state)
    layer.params[key] = original
    np.testing.assert_array_equal(layer.step(x)[0], y_t)  # the layer still steps
    del layer.params[key]  # removed: named as forward names it, not a bare KeyError
    with pytest.raises(KeyError, match=rf"params\['{key}'\] is missing"):
        layer.step(x, state)


def test_step_refuses_bidirectional():
    with pytest.raises(ValueError, match="bidirectional"):
        numba_lstm.LSTM(2, 3, bidirectional=True).step(np.zeros((1, 2), np.float32))


def test_jit_step_and_forward_match_reference(dtype):
    p = make_problem(5, 2, 3, 4, dtype)
    ry, rh, rc, _ = reference.lstm_forward(**as64(p))
    y, h_n, c_n = jit.forward(p["x"], p["W"], p["b"], p["h0"], p["c0"])
    assert_close(y, ry, dtype, "y")
    assert_close(h_n, rh, dtype, "h_n")
    assert_close(c_n, rc, dtype, "c_n")
    h, c = p["h0"], p["c0"]
    for t in range(5):
        h, c = jit.step(p["x"][t], h, c, p["W"], p["b"])
    assert_close(h, rh, dtype, "step h")
    assert_close(c, rc, dtype, "step c")


# B: 1 row (row updates), the tiles' 2 + 1, 5, 6, 4 + 3 (AVX2) and 8 rows;
# 12 > SMALL_ROWS: BLAS.
# H = 7: 28 columns, under one float32 panel (row updates only; K = 5 and 7
# leave rows after groups of four), one float64 panel and a rest of 12;
# H = 36: 144 columns, whole panels and a rest in float32.
@pytest.mark.parametrize("B", [1, 3, 5, 6, 7, 8, 12])
@pytest.mark.parametrize("H", [7, 36])
def test_jit_step_into_in_place_matches_reference(B, H, dtype):
    T, I = 4, 5
    p = make_problem(T, B, I, H, dtype)
    ry, _, rc, _ = reference.lstm_forward(**as64(p))
    h, c = p["h0"].copy(), p["c0"].copy()
    work = np.empty(jit.work_size(B, H), dtype)
    for t in range(T):
        jit.step_into(p["x"][t], h, c, p["W"], p["b"], h, c, work)
        assert_close(h, ry[t], dtype, f"h after step {t}")
    assert_close(c, rc, dtype, "c")


# No filter of NumbaPerformanceWarning (an error in setup.cfg): compiling
# step_into for these views, Numba warned that np.dot, in the branch for B >
# SMALL_ROWS, "is faster on contiguous arrays" (see also the test below).
@pytest.mark.parametrize("B", [1, 2, 3, 8, 12])
@pytest.mark.parametrize("order", ["C", "F"])
def test_jit_step_loop_gives_lstm_forward_for_any_layout(B, order, dtype):
    # Views a user's jitted code may pass: x_t = x[:, t] of a batch-major
    # (B, T, I) array (rows I * T apart: the tiles follow the row stride), and
    # with "F" W and the state in Fortran order (rows not contiguous: the row
    # updates, whose chains of FMAs are the tiles'). Every element of every
    # product is one chain of FMAs over k in the order of lstm_forward's
    # tiles, so the results are its bits (before, one row, and 2 to 8 rows
    # in Fortran order, differed by an ulp or two).  B = 12 > SMALL_ROWS: the
    # products go through BLAS, a few ulp from the tiles.
    T, I, H = 3, 6, 40
    p = make_problem(T, B, I, H, dtype)
    y, h_n, c_n, _ = numba_lstm.lstm_forward(p["x"], p["W"], p["b"], p["h0"], p["c0"], cache=False)
    x_bm = np.ascontiguousarray(p["x"].transpose(1, 0, 2))
    W = np.asarray(p["W"], order=order)
    h, c = np.asarray(p["h0"].copy(), order=order), np.asarray(p["c0"].copy(), order=order)
    work = np.empty(jit.work_size(B, H), dtype)
    check = _assert_equal if B <= SMALL_ROWS else assert_close
    for t in range(T):
        jit.step_into(x_bm[:, t], h, c, W, p["b"], h, c, work)
        check(h, y[t], dtype, f"h after step {t}")
    check(c, c_n, dtype, "c")
    h_new, c_new = jit.step(p["x"][0], p["h0"], p["c0"], W, p["b"])
    check(h_new, y[0], dtype, "h of jit.step")


_BLAS_VIEWS_SCRIPT = """
import warnings
import numpy as np
from numba.core.errors import NumbaPerformanceWarning
from numba_lstm._kernels import _add_blas_matmul, _blas_matmul

warnings.simplefilter("error", NumbaPerformanceWarning)
rng = np.random.default_rng(0)
a = rng.standard_normal((12, 2, 5))[:, 0]  # rows apart: layout "A"
w = np.asfortranarray(rng.standard_normal((9, 8)))[:5]  # rows of an "F" array: "A"
for x, y in ((a, w), (a, np.ascontiguousarray(w)), (a.copy(), w), (a.copy(), np.asfortranarray(w))):
    out = rng.standard_normal((12, 8))
    want = out + x @ y
    _add_blas_matmul(out, x, y, np.empty_like(out))
    assert np.allclose(out, want, rtol=1e-13, atol=1e-13), np.abs(out - want).max()
    _blas_matmul(out, x, y)  # LSTM.step's projection, h = m @ W_hr
    assert np.allclose(out, x @ y, rtol=1e-13, atol=1e-13), np.abs(out - x @ y).max()
# LSTM.step itself with a strided W_hr past SMALL_ROWS rows (its projection
# called np.dot on it, which warned).
import numba_lstm
layer = numba_lstm.LSTM(5, 40, proj_size=9, seed=0).eval()
wide = np.zeros((40, 18), np.float32)
wide[:, ::2] = layer.params["W_hr_l0"]
layer.params["W_hr_l0"] = wide[:, ::2]
layer.step(rng.standard_normal((12, 5)).astype(np.float32))
"""


def test_blas_products_of_views_compile_without_a_performance_warning(tmp_path):
    # In a new cache, so that Numba compiles (and would warn) whatever the
    # project's cache holds.  Before, each of the first three pairs warned,
    # and LSTM.step's projection (np.dot, now _blas_matmul) warned for a
    # strided W_hr past SMALL_ROWS rows.
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, "-c", _BLAS_VIEWS_SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# Views a caller may pass to jit.forward, each with the values of the
# problem's own array: x of a batch-major array transposed (Fortran order
# here), a reversed view, read-only arrays, a state in Fortran order or
# every other column of a wider one, W in Fortran order.
_FORWARD_VIEWS = {
    "x Fortran order": ("x", np.asfortranarray),
    "x reversed view": ("x", lambda a: np.ascontiguousarray(a[:, ::-1])[:, ::-1]),
    "x read-only": ("x", _read_only),
    "h0 Fortran order": ("h0", np.asfortranarray),
    "h0 columns apart": ("h0", lambda a: np.repeat(a, 2, axis=1)[:, ::2]),
    "c0 read-only": ("c0", _read_only),
    "W Fortran order": ("W", np.asfortranarray),
}


@pytest.mark.parametrize("T", [1, 4])
@pytest.mark.parametrize("view", _FORWARD_VIEWS)
def test_jit_forward_reads_views_as_contiguous_arrays(view, T, dtype):
    # Before, the kernel read h0 in Fortran order or columns apart, and x in
    # Fortran order at T = 1, as if C-contiguous (wrong results), and x not
    # C-contiguous at T > 1 failed inside Numba (x.reshape).  The arithmetic
    # is that of contiguous arrays: the same bits.
    p = make_problem(T, 3, 5, 20, dtype)
    expected = jit.forward(p["x"], p["W"], p["b"], p["h0"], p["c0"])
    name, make = _FORWARD_VIEWS[view]
    given = make(p[name])
    assert np.array_equal(given, p[name]) and not (given.flags.c_contiguous and given.flags.writeable)
    before = given.copy()
    got = jit.forward(**{**p, name: given})
    for label, g, e in zip(("y", "h_n", "c_n"), got, expected, strict=True):
        np.testing.assert_array_equal(g, e, err_msg=label)
    np.testing.assert_array_equal(given, before)


# Above SMALL_ROWS rows the step's products go to BLAS, which takes its
# operands C-contiguous: views of any layout give the bits of contiguous
# arrays.  Before, a Fortran-order x_t or h went to BLAS as it was, through
# its transposed path, and changed the bits (B = 9 to 40).
_STEP_VIEWS = {
    "x_t Fortran order": (0, np.asfortranarray),
    "h Fortran order": (1, np.asfortranarray),
    "c Fortran order": (2, np.asfortranarray),
    "h columns apart": (1, lambda a: np.repeat(a, 2, axis=1)[:, ::2]),
    "W Fortran order": (3, np.asfortranarray),
}


def _step_arguments(B, I, H, dtype):
    """x_t, h, c, W, b of one step, drawn from a generator seeded by B."""
    rng = np.random.default_rng(B)
    return [
        rng.standard_normal((B, I)).astype(dtype),
        rng.standard_normal((B, H)).astype(dtype),
        rng.standard_normal((B, H)).astype(dtype),
        (rng.standard_normal((I + H, 4 * H)) * 0.3).astype(dtype),
        (rng.standard_normal(4 * H) * 0.1).astype(dtype),
    ]


def _assert_steps_give(args, expected, what):
    """``jit.step`` and ``jit.step_into`` of ``args`` give ``expected`` (h, c) bit for bit."""
    B, H = args[2].shape
    dtype = args[2].dtype
    for label, g, e in zip(("h", "c"), jit.step(*args), expected, strict=True):
        np.testing.assert_array_equal(g, e, err_msg=f"jit.step {label} {what}")
    h_out, c_out = np.empty((B, H), dtype), np.empty((B, H), dtype)
    jit.step_into(*args, h_out, c_out, np.empty(jit.work_size(B, H), dtype))
    np.testing.assert_array_equal(h_out, expected[0], err_msg=f"step_into h {what}")
    np.testing.assert_array_equal(c_out, expected[1], err_msg=f"step_into c {what}")


@pytest.mark.parametrize("B, I, H", [(9, 20, 33), (16, 7, 33), (40, 100, 50)])
@pytest.mark.parametrize("view", _STEP_VIEWS)
def test_jit_steps_read_views_with_the_bits_of_contiguous_arrays(view, B, I, H, dtype):
    args = _step_arguments(B, I, H, dtype)
    expected = jit.step(*args)
    k, make = _STEP_VIEWS[view]
    args[k] = make(args[k])
    assert not args[k].flags.c_contiguous
    _assert_steps_give(args, expected, f"with {view}")


def _record_field(a, reverse=False):
    """``a``'s values as a field of a packed record array: rows one byte more
    than a whole number of values apart (and in reverse order: a negative
    stride)."""
    records = np.zeros(a.shape[0], dtype=[("v", a.dtype, (a.shape[1],)), ("pad", "u1")])
    records["v"] = a[::-1] if reverse else a
    field = records["v"][::-1] if reverse else records["v"]
    assert np.array_equal(field, a) and field.strides[0] % a.itemsize != 0
    return field


@pytest.mark.parametrize("reverse", [False, True], ids=["rows apart", "rows apart, reversed"])
@pytest.mark.parametrize("k, name", [(0, "x_t"), (1, "h"), (3, "W")])
@pytest.mark.parametrize("B", [1, 4, 8])
def test_jit_steps_read_rows_apart_by_bytes_that_are_no_whole_value(B, k, name, reverse, dtype):
    """The tiles of up to SMALL_ROWS rows took a row stride of 129 bytes
    (float32) for 128: wrong results (0.98 off, NaN for W), and a segfault
    where a reversed h started after an unmapped page."""
    args = _step_arguments(B, 3, 32, dtype)
    expected = jit.step(*args)
    args[k] = _record_field(args[k], reverse)
    _assert_steps_give(args, expected, f"with {name} a record field")


@numba.njit
def simulate(W, b, x0, steps, gain):
    """A user's simulation: a scalar system driven by an LSTM controller.

    The controller sees the state s, its hidden state feeds back, and the
    action (mean of h) moves the state: s <- 0.9 s + gain * action.
    """
    H = W.shape[1] // 4
    h = np.zeros((1, H), W.dtype)
    c = np.zeros((1, H), W.dtype)
    work = np.empty(jit.work_size(1, H), W.dtype)
    obs = np.empty((1, 1), W.dtype)
    trajectory = np.empty(steps, W.dtype)
    s = x0
    for k in range(steps):
        obs[0, 0] = s
        jit.step_into(obs, h, c, W, b, h, c, work)  # in place
        s = 0.9 * s + gain * h[0].mean()
        trajectory[k] = s
    return trajectory


def test_user_njit_simulation_matches_reference(dtype):
    rng = np.random.default_rng(0)
    H = 8
    W = (rng.standard_normal((1 + H, 4 * H)) * 0.5).astype(dtype)
    b = (rng.standard_normal(4 * H) * 0.1).astype(dtype)
    got = simulate(W, b, dtype(1.0), 50, dtype(0.5))
    h = np.zeros((1, H))
    c = np.zeros((1, H))
    s = 1.0
    expected = []
    for _ in range(50):
        _, h, c, _ = reference.lstm_forward(
            np.full((1, 1, 1), s), W.astype(np.float64), b.astype(np.float64), h, c
        )
        s = 0.9 * s + 0.5 * h[0].mean()
        expected.append(s)
    assert_close(got, np.array(expected), dtype, "trajectory")


# _split_step (LSTM.step for a large W) against the reference, in place as
# step_into allows.  S shares: 1, one per thread, and more than the threads
# (each thread takes what is left).  K = I + H rows leave a rest after the
# blocks of four (5 + 7, 9 + 36); H = 7 and 40 are no multiples of the 16
# units of a gate share; B = 1, the tiles' 3 and SMALL_ROWS.
@pytest.mark.parametrize("S", [1, 2, 3, 5])
@pytest.mark.parametrize(("B", "I", "H"), [(1, 5, 7), (3, 9, 36), (8, 70, 40)])
def test_split_step_in_place_matches_reference(S, B, I, H, dtype):
    T = 3
    p = make_problem(T, B, I, H, dtype)
    ry, _, rc, _ = reference.lstm_forward(**as64(p))
    h, c = p["h0"].copy(), p["c0"].copy()
    z_parts, gates = np.empty((S, B, 4 * H), dtype), np.empty((B, 4 * H), dtype)
    tanh_c, c_prev = np.empty((B, H), dtype), np.empty((B, H), dtype)
    for t in range(T):
        _split_step(
            h, c, z_parts, gates, tanh_c, c_prev, p["x"][t], h, c, p["W"], p["b"], h, p["W"][:0], z_parts[:0],
            counters(3),
        )  # fmt: skip
        assert_close(h, ry[t], dtype, f"h after step {t}")
    assert_close(c, rc, dtype, "c")
    # One thread takes every share in order: the same bits as the threads.
    h1, c1 = p["h0"].copy(), p["c0"].copy()
    with numba_threads(1):
        for t in range(T):
            _split_step(
                h1, c1, z_parts, gates, tanh_c, c_prev, p["x"][t], h1, c1, p["W"], p["b"], h1, p["W"][:0],
                z_parts[:0], counters(3),
            )  # fmt: skip
    np.testing.assert_array_equal(h1, h)
    np.testing.assert_array_equal(c1, c)


# The same with a projection (phase 2 of _split_step): P = 5 and 9 leave
# shares of P without a column (multiples of 16), P = 20 one edge at 16.
@pytest.mark.parametrize("S", [1, 2, 3, 5])
@pytest.mark.parametrize(("B", "I", "H", "P"), [(1, 5, 7, 5), (3, 9, 36, 9), (8, 70, 40, 20)])
def test_projected_split_step_in_place_matches_reference(S, B, I, H, P, dtype):
    T = 3
    rng = np.random.default_rng(7)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    W = (rng.standard_normal((I + P, 4 * H)) * 0.5 / np.sqrt(H)).astype(dtype)
    b = (rng.standard_normal(4 * H) * 0.5).astype(dtype)
    W_hr = (rng.standard_normal((H, P)) / np.sqrt(H)).astype(dtype)
    h, c = (
        (rng.standard_normal((B, P)) * 0.5).astype(dtype),
        (rng.standard_normal((B, H)) * 0.5).astype(dtype),
    )
    ry, _, rc, _ = reference.lstm_forward(
        *(a.astype(np.float64) for a in (x, W, b, h, c)), W_hr=W_hr.astype(np.float64)
    )
    z_parts, gates, h_parts = (
        np.empty((S, B, 4 * H), dtype),
        np.empty((B, 4 * H), dtype),
        np.empty((S, B, P), dtype),
    )
    tanh_c, c_prev, m = np.empty((B, H), dtype), np.empty((B, H), dtype), np.empty((B, H), dtype)
    for t in range(T):
        _split_step(h, c, z_parts, gates, tanh_c, c_prev, x[t], h, c, W, b, m, W_hr, h_parts, counters(3))
        assert_close(h, ry[t], dtype, f"h after step {t}")
    assert_close(c, rc, dtype, "c")


def _split_layer(dtype, num_layers=2):
    """A layer whose every W has STEP_SPLIT_MIN_BYTES or more: LSTM.step splits its steps."""
    layer = numba_lstm.LSTM(300, 400, num_layers=num_layers, dtype=dtype, seed=0).eval()
    assert all(layer.params[f"W_l{k}"].nbytes >= STEP_SPLIT_MIN_BYTES for k in range(num_layers))
    return layer


def _split_projected_layer(dtype):
    """Two layers with a projection whose W and W_hr have STEP_SPLIT_MIN_BYTES or more."""
    layer = numba_lstm.LSTM(300, 768, num_layers=2, proj_size=250, dtype=dtype, seed=0).eval()
    for k in range(2):
        assert layer.params[f"W_l{k}"].nbytes + layer.params[f"W_hr_l{k}"].nbytes >= STEP_SPLIT_MIN_BYTES
    return layer


@pytest.mark.parametrize("projected", [False, True], ids=["", "projected"])
@pytest.mark.parametrize("B", [1, 8, 9])  # 9 > SMALL_ROWS: one thread
def test_split_step_loop_equals_forward(B, projected, dtype):
    x = np.random.default_rng(3).standard_normal((4, B, 300)).astype(dtype)
    layer = assert_step_loop_equals_forward(
        _split_projected_layer(dtype) if projected else _split_layer(dtype), x
    )
    split = [key for key in layer._split_buffers if key[0] == B]
    assert (len(split) > 0) == (B <= 8), layer._split_buffers.keys()


@pytest.mark.parametrize("projected", [False, True], ids=["", "projected"])
@pytest.mark.parametrize("B", [1, 5])
def test_split_step_gives_the_same_bits_for_any_thread_count(B, projected):
    """The split step's shares are fixed by the layer, not by the threads
    (README, "Determinism"): one thread and all of Numba's give the same bits.
    Shares that followed the thread count summed the partial products in
    another grouping, and differed by rounding."""
    threads = numba.get_num_threads()
    if threads < 2:
        pytest.skip("one Numba thread: nothing to compare it with")
    x = np.random.default_rng(8).standard_normal((3, B, 300)).astype(np.float32)
    runs = []
    for n in (1, threads):
        layer = _split_projected_layer(np.float32) if projected else _split_layer(np.float32)
        with numba_threads(n):
            state, ys = None, []
            for x_t in x:
                y_t, state = layer.step(x_t, state)
                ys.append(y_t)
        assert layer._split_buffers  # the split path ran
        runs.append((np.stack(ys), *state))
    for one, many in zip(*runs, strict=True):
        np.testing.assert_array_equal(one, many)


def test_split_step_rejects_bad_parameters():
    layer = _split_layer(np.float32, num_layers=1)
    x = np.zeros((1, 300), np.float32)
    layer.step(x)
    assert layer._split_buffers  # the split path ran
    layer.params["W_l0"] = np.zeros((600, 1600), np.float32)
    with pytest.raises(
        ValueError, match=r"params\['W_l0'\] must have shape \(700, 1600\), got \(600, 1600\)"
    ):
        layer.step(x)
    layer.params["W_l0"] = np.zeros((700, 1600), np.float64)
    with pytest.raises(
        TypeError, match=r"params\['W_l0'\] has dtype float64 but the layer has dtype float32"
    ):
        layer.step(x)


def test_jit_rejects_inconsistent_shapes():
    x = np.zeros((2, 3), np.float32)
    h = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"W must have shape \(I \+ H, 4H\)"):
        jit.step(x, h, h, np.zeros((6, 16), np.float32), np.zeros(16, np.float32))
    with pytest.raises(ValueError, match="work must have"):
        jit.step_into(
            x, h, h, np.zeros((7, 16), np.float32), np.zeros(16, np.float32), h, h, np.zeros(3, np.float32)
        )


def test_step_reads_the_returned_state_as_it_is_now(dtype):
    """The state that step returned is passed back without re-validation (its
    fast path); edits made to it in place in the meantime must still count."""
    layer = numba_lstm.LSTM(3, 4, num_layers=2, dtype=dtype, seed=0).eval()
    x = np.random.default_rng(1).standard_normal((3, 2, 3)).astype(dtype)
    _, state = layer.step(x[0])
    _, state = layer.step(x[1], state)
    state[0][...] = 0  # reset in place
    state[1][...] = 0
    y_reset, _ = layer.step(x[2], state)
    y_fresh, _ = layer.step(x[2])
    np.testing.assert_array_equal(y_reset, y_fresh)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_of_a_layer_and_its_state_reads_the_state_as_it_is_now(how, dtype):
    """A streaming agent copied whole (its layer and the state step returned):
    the copy keeps the tuple's identity but not that its arrays are views of
    the layer's stacked state.  Before, the copy's step read the stacked array
    and ignored an in-place reset of the copied state."""
    layer = numba_lstm.LSTM(3, 4, num_layers=2, dtype=dtype, seed=0).eval()
    x = np.random.default_rng(1).standard_normal((3, 2, 3)).astype(dtype)
    _, state = layer.step(x[0])
    _, state = layer.step(x[1], state)
    copied_layer, copied_state = COPIES[how]((layer, state))
    for s in (state, copied_state):
        s[0][:, 1] = 0  # sequence 1 starts again
        s[1][:, 1] = 0
    y, _ = layer.step(x[2], state)
    y_copy, _ = copied_layer.step(x[2], copied_state)
    np.testing.assert_array_equal(y_copy, y)


def test_step_keeps_one_work_buffer_whatever_the_batch_sizes():
    """A stream whose batch size changes at every step (B = 1..40, H = 256):
    the buffer of one step takes 10 * B * H floats, 0.4 MB at B = 40 and
    8.4 MB for all 40.  Before, the layer kept every batch size's."""
    layer = numba_lstm.LSTM(8, 256, seed=0).eval()
    rng = np.random.default_rng(0)
    layer.step(rng.standard_normal((40, 8)).astype(np.float32))  # compiled before tracing
    tracemalloc.start()
    try:
        held = tracemalloc.get_traced_memory()[0]
        for B in range(1, 41):
            layer.step(rng.standard_normal((B, 8)).astype(np.float32))
        held = tracemalloc.get_traced_memory()[0] - held
    finally:
        tracemalloc.stop()
    assert held < 1_000_000, f"{held} bytes still held after the steps"


def test_step_never_writes_a_state_it_returned(dtype):
    """Each call returns new arrays: a state kept from earlier (to branch from
    it, as a beam search does) stays as it was, and branching from it gives
    the same result as the first time."""
    layer = numba_lstm.LSTM(3, 4, num_layers=2, dtype=dtype, seed=0).eval()
    x = np.random.default_rng(2).standard_normal((3, 2, 3)).astype(dtype)
    _, kept = layer.step(x[0])
    kept_copy = (kept[0].copy(), kept[1].copy())
    y_first, state = layer.step(x[1], kept)
    y_next, _ = layer.step(x[2], state)
    np.testing.assert_array_equal(kept[0], kept_copy[0])
    np.testing.assert_array_equal(kept[1], kept_copy[1])
    assert not np.shares_memory(y_next, state[0]) and not np.shares_memory(state[0], kept[0])
    y_again, _ = layer.step(x[1], kept)
    np.testing.assert_array_equal(y_again, y_first)
