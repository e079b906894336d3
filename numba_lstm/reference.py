"""Plain NumPy reference: the oracle every kernel is tested against.

Same signatures and results as ``numba_lstm.functional``; written as the
equations of DESIGN.md section 2, one time step at a time, for clarity rather
than speed.  With ``z = [x_t, h_{t-1}] @ W + b`` split into ``z_i, z_f, z_g,
z_o``::

    i = sigmoid(z_i)   f = sigmoid(z_f)   g = tanh(z_g)   o = sigmoid(z_o)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)
"""

import numpy as np

from numba_lstm.functional import LSTMGrads


def sigmoid(z):
    """Logistic function, written with tanh so that it cannot overflow."""
    return 0.5 * np.tanh(0.5 * z) + 0.5


def lstm_forward(x, W, b, h0=None, c0=None):
    """Reference forward pass; returns ``(y, h_n, c_n, cache)``."""
    T, B, _ = x.shape
    H = W.shape[1] // 4
    h = np.zeros((B, H), W.dtype) if h0 is None else h0.copy()
    c = np.zeros((B, H), W.dtype) if c0 is None else c0.copy()
    steps = []
    y = np.zeros((T, B, H), W.dtype)
    for t in range(T):
        h_prev, c_prev = h, c
        z = np.concatenate([x[t], h_prev], axis=1) @ W + b
        i = sigmoid(z[:, 0 * H : 1 * H])
        f = sigmoid(z[:, 1 * H : 2 * H])
        g = np.tanh(z[:, 2 * H : 3 * H])
        o = sigmoid(z[:, 3 * H : 4 * H])
        c = f * c_prev + i * g
        h = o * np.tanh(c)
        y[t] = h
        steps.append((h_prev, c_prev, i, f, g, o, c))
    cache = (x, W, steps)
    return y, h, c, cache


def lstm_backward(dy, cache, dh_n=None, dc_n=None):
    """Reference backward pass; returns ``LSTMGrads(dx, dW, db, dh0, dc0)``."""
    x, W, steps = cache
    T, B, I = x.shape
    H = W.shape[1] // 4
    dx = np.zeros_like(x)
    dW = np.zeros_like(W)
    db = np.zeros(4 * H, W.dtype)
    dh = np.zeros((B, H), W.dtype) if dh_n is None else dh_n.copy()
    dc = np.zeros((B, H), W.dtype) if dc_n is None else dc_n.copy()
    for t in reversed(range(T)):
        h_prev, c_prev, i, f, g, o, c = steps[t]
        if dy is not None:
            dh = dh + dy[t]
        tanh_c = np.tanh(c)
        do = dh * tanh_c
        dc = dc + dh * o * (1 - tanh_c**2)
        di = dc * g
        df = dc * c_prev
        dg = dc * i
        dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g**2), do * o * (1 - o)], axis=1)
        xh = np.concatenate([x[t], h_prev], axis=1)
        dW += xh.T @ dz
        db += dz.sum(axis=0)
        dxh = dz @ W.T
        dx[t] = dxh[:, :I]
        dh = dxh[:, I:]
        dc = dc * f
    return LSTMGrads(dx, dW, db, dh, dc)
