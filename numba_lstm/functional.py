"""Drop-in functional API: ``lstm_forward`` and ``lstm_backward``.

Time-major, one layer, one direction, native layout (DESIGN.md section 2):
``x (T, B, I)``, ``W (I + H, 4H)`` with rows for x first then h, gate order
i, f, g, o, one bias ``b (4H,)``.  These functions validate, allocate and call
the Numba kernels in ``numba_lstm._kernels``.
"""

from typing import NamedTuple

import numpy as np

from numba_lstm._kernels import _lstm_backward, _lstm_forward
from numba_lstm._validation import as_float_array, check_ndim, check_shape, check_weights


class LSTMCache(NamedTuple):
    """What ``lstm_forward`` saves for ``lstm_backward``.

    x      (T, B, I)     the input
    W      (I + H, 4H)   the weights used (a reference, not a copy)
    hs     (T + 1, B, H) h0 followed by h_1 .. h_T (y is ``hs[1:]``)
    cs     (T + 1, B, H) c0 followed by c_1 .. c_T
    gates  (T, B, 4H)    activations i, f, g, o of every step
    tanh_c (T, B, H)     tanh(c_t) of every step
    """

    x: np.ndarray
    W: np.ndarray
    hs: np.ndarray
    cs: np.ndarray
    gates: np.ndarray
    tanh_c: np.ndarray


class LSTMGrads(NamedTuple):
    """Gradients returned by ``lstm_backward``, shaped like the forward's inputs."""

    dx: np.ndarray
    dW: np.ndarray
    db: np.ndarray
    dh0: np.ndarray
    dc0: np.ndarray


def _initial_state(name, value, B, H, dtype):
    if value is None:
        return np.zeros((B, H), dtype)
    value = as_float_array(name, value, dtype)
    check_shape(name, value, (B, H), "(B, H)")
    return value


def lstm_forward(x, W, b, h0=None, c0=None):
    """Run one LSTM layer over a time-major sequence.

    Parameters
    ----------
    x : ndarray, shape (T, B, I), float32 or float64
    W : ndarray, shape (I + H, 4H), same dtype
        Rows 0..I-1 multiply x_t, rows I.. multiply h_{t-1}; columns are the
        gates i, f, g, o.
    b : ndarray, shape (4H,), same dtype
    h0, c0 : ndarray, shape (B, H), optional
        Initial state (zeros when omitted).

    Returns
    -------
    y : ndarray, shape (T, B, H)
        h_t of every step.
    h_n, c_n : ndarray, shape (B, H)
        Final state (the initial state when T = 0).
    cache : LSTMCache
        What ``lstm_backward`` needs.
    """
    W, b, I, H = check_weights(W, b)
    x = as_float_array("x", x, W.dtype)
    check_ndim("x", x, 3, "(T, B, I)")
    T, B = x.shape[:2]
    check_shape("x", x, (T, B, I), f"(T, B, I) with I = {I} from W (I + H, 4H) = {W.shape}")
    dtype = W.dtype
    h0 = _initial_state("h0", h0, B, H, dtype)
    c0 = _initial_state("c0", c0, B, H, dtype)

    hs = np.empty((T + 1, B, H), dtype)
    cs = np.empty((T + 1, B, H), dtype)
    hs[0] = h0
    cs[0] = c0
    gates = np.empty((T, B, 4 * H), dtype)
    tanh_c = np.empty((T, B, H), dtype)
    if T > 0 and B > 0:
        hw = np.empty((B, 4 * H), dtype)
        _lstm_forward(hs[1:], cs[1:], gates, tanh_c, hw, x, W[:I], W[I:], b, hs[:T], cs[:T])
    cache = LSTMCache(x, W, hs, cs, gates, tanh_c)
    return hs[1:], hs[T].copy(), cs[T].copy(), cache


def lstm_backward(dy, cache, dh_n=None, dc_n=None):
    """Backpropagate through the sequence run by ``lstm_forward``.

    Parameters
    ----------
    dy : ndarray, shape (T, B, H), or None
        Gradient of the loss with respect to ``y``; None means zero (only the
        final-state gradients flow).
    cache : LSTMCache
        The fourth result of ``lstm_forward``.
    dh_n, dc_n : ndarray, shape (B, H), optional
        Gradients with respect to the final state ``h_n``, ``c_n``.

    Returns
    -------
    LSTMGrads
        ``(dx, dW, db, dh0, dc0)`` with the shapes of ``x, W, b, h0, c0``.
    """
    if not isinstance(cache, LSTMCache):
        raise TypeError(f"cache must be the LSTMCache returned by lstm_forward, got {type(cache).__name__}")
    x, W = cache.x, cache.W
    T, B, I = x.shape
    H = W.shape[1] // 4
    dtype = W.dtype
    if dy is None:
        dy = np.zeros((T, B, H), dtype)
    else:
        dy = as_float_array("dy", dy, dtype)
        check_shape("dy", dy, (T, B, H), "(T, B, H), the shape of y")
    dh_n = _initial_state("dh_n", dh_n, B, H, dtype)
    dc_n = _initial_state("dc_n", dc_n, B, H, dtype)

    dx = np.zeros((T, B, I), dtype)
    dW = np.zeros(W.shape, dtype)
    db = np.zeros(4 * H, dtype)
    if T == 0 or B == 0:
        return LSTMGrads(dx, dW, db, dh_n.copy(), dc_n.copy())
    dh0 = np.empty((B, H), dtype)
    dc0 = np.empty((B, H), dtype)
    dgates = np.empty((T, B, 4 * H), dtype)
    _lstm_backward(
        dx, dW[:I], dW[I:], db, dh0, dc0, dgates,
        dy, dh_n, dc_n, x, W[:I], W[I:], cache.hs[:T], cache.cs[:T], cache.gates, cache.tanh_c,
    )  # fmt: skip
    return LSTMGrads(dx, dW, db, dh0, dc0)
