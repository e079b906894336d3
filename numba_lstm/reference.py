"""Plain NumPy reference: the oracle every kernel is tested against.

Same signatures and results as ``numba_lstm.functional``, except that the
cache is the reference's own tuple (pass it to this module's backward only)
and nothing is validated: give it good input.  Written as the equations of the
README ("The native layout"), one sequence and one time step at a time, for
clarity rather than speed.  With ``z = [x_t, h_{t-1}] @ W + b`` split into
``z_i, z_f, z_g, z_o``::

    i = sigmoid(z_i)   f = sigmoid(z_f)   g = tanh(z_g)   o = sigmoid(z_o)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)            (h_t = (o * tanh(c_t)) @ W_hr with a projection)

Sequence ``n`` runs over its own steps ``0 .. lengths[n] - 1`` (backwards with
``reverse``); its outputs past that are zero.
"""

import numpy as np

from numba_lstm.functional import LSTMGrads, LSTMProjGrads

__all__ = ["lstm_backward", "lstm_forward", "sigmoid"]


def sigmoid(z):
    """Logistic function on exp(-|z|), which cannot overflow: accurate relative
    to its size in z's dtype, small values included (``0.5 * tanh(z / 2) +
    0.5`` lost them).  Subnormal results too, where the kernels give 0 (below
    z = -87 in float32 and -708 in float64: less than 1.7e-38 and 3.3e-308
    away)."""
    with np.errstate(under="ignore"):  # exp(-|z|) rounding to 0 is the right result
        e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1, e) / (1 + e)


def _time_order(length, reverse):
    return list(reversed(range(length))) if reverse else list(range(length))


def lstm_forward(x, W, b, h0=None, c0=None, *, W_hr=None, lengths=None, reverse=False, cache=True):
    """Reference forward pass; returns ``(y, h_n, c_n, cache)`` (cache None with ``cache=False``)."""
    T, B, _ = x.shape
    H = W.shape[1] // 4
    P = H if W_hr is None else W_hr.shape[1]
    # Copies, as numba_lstm's cache keeps: the caller may reuse its arrays
    # before the backward (the first step's states are rows of h0 and c0).
    h0 = np.zeros((B, P), W.dtype) if h0 is None else np.array(h0)
    c0 = np.zeros((B, H), W.dtype) if c0 is None else np.array(c0)
    lengths = np.full(B, T) if lengths is None else lengths
    y = np.zeros((T, B, P), W.dtype)
    h_n = np.zeros((B, P), W.dtype)
    c_n = np.zeros((B, H), W.dtype)
    steps = {}  # (t, n) -> what the backward needs
    for n in range(B):
        h, c = h0[n], c0[n]
        for t in _time_order(lengths[n], reverse):
            h_prev, c_prev = h, c
            z = np.concatenate([x[t, n], h_prev]) @ W + b
            i = sigmoid(z[0 * H : 1 * H])
            f = sigmoid(z[1 * H : 2 * H])
            g = np.tanh(z[2 * H : 3 * H])
            o = sigmoid(z[3 * H : 4 * H])
            c = f * c_prev + i * g
            m = o * np.tanh(c)
            h = m if W_hr is None else m @ W_hr
            y[t, n] = h
            steps[t, n] = (h_prev, c_prev, i, f, g, o, c, m)
        h_n[n], c_n[n] = h, c
    if not cache:
        return y, h_n, c_n, None
    W_hr = None if W_hr is None else np.array(W_hr)
    return y, h_n, c_n, (np.array(x), np.array(W), W_hr, np.array(lengths), reverse, steps)


def lstm_backward(dy, cache, dh_n=None, dc_n=None):
    """Reference backward pass; returns ``LSTMGrads`` (``LSTMProjGrads`` with ``W_hr``)."""
    x, W, W_hr, lengths, reverse, steps = cache
    T, B, I = x.shape
    H = W.shape[1] // 4
    P = W.shape[0] - I
    dx = np.zeros_like(x)
    dW = np.zeros_like(W)
    db = np.zeros(4 * H, W.dtype)
    dW_hr = None if W_hr is None else np.zeros_like(W_hr)
    dh0 = np.zeros((B, P), W.dtype)
    dc0 = np.zeros((B, H), W.dtype)
    for n in range(B):
        dh = np.zeros(P, W.dtype) if dh_n is None else dh_n[n].copy()
        dc = np.zeros(H, W.dtype) if dc_n is None else dc_n[n].copy()
        for t in reversed(_time_order(lengths[n], reverse)):
            h_prev, c_prev, i, f, g, o, c, m = steps[t, n]
            if dy is not None:
                dh = dh + dy[t, n]
            if W_hr is None:
                dm = dh
            else:
                dW_hr += np.outer(m, dh)
                dm = W_hr @ dh
            tanh_c = np.tanh(c)
            do = dm * tanh_c
            dc = dc + dm * o * (1 - tanh_c**2)
            di = dc * g
            df = dc * c_prev
            dg = dc * i
            dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g**2), do * o * (1 - o)])
            dW += np.outer(np.concatenate([x[t, n], h_prev]), dz)
            db += dz
            dxh = W @ dz
            dx[t, n] = dxh[:I]
            dh = dxh[I:]
            dc = dc * f
        dh0[n], dc0[n] = dh, dc
    if W_hr is None:
        return LSTMGrads(dx, dW, db, dh0, dc0)
    return LSTMProjGrads(dx, dW, db, dh0, dc0, dW_hr)
