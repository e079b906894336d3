"""LSTM functions for your own ``@njit`` code: no Python between the steps.

Every function here is compiled with Numba and can be called from other
jitted functions (or from Python).  Arrays are C-contiguous float32 or
float64, all of one dtype, in the native layout: ``W (I + H, 4H)`` with rows
for x then h, gates i, f, g, o, bias ``b (4H,)``.

``step_into`` allocates nothing: use it in tight loops.  Its ``work`` buffer is
a 1-D array of ``work_size(B, H) = 9 * B * H`` elements of the same dtype;
``h_out``/``c_out`` may be the same arrays as ``h``/``c`` (update in place).

Example::

    @numba.njit
    def simulate(W, b, steps):
        h = np.zeros((1, H), np.float32); c = np.zeros_like(h)
        work = np.empty(numba_lstm.jit.work_size(1, H), np.float32)
        for _ in range(steps):
            numba_lstm.jit.step_into(obs, h, c, W, b, h, c, work)
            ...
"""

import numba
import numpy as np

from numba_lstm._kernels import _gates_forward, _lstm_forward
from numba_lstm._options import SERIAL


@numba.njit(**SERIAL)
def work_size(B, H):
    """Length of the ``work`` buffer of ``step_into`` for batch B and H units."""
    return 9 * B * H


@numba.njit(**SERIAL)
def _check_step(x_t, h, c, W, b):
    B, I = x_t.shape
    H = h.shape[1]
    if h.shape[0] != B or c.shape[0] != B or c.shape[1] != H:
        raise ValueError("h and c must both have shape (B, H) with B = x_t.shape[0]")
    if W.shape[0] != I + H or W.shape[1] != 4 * H:
        raise ValueError("W must have shape (I + H, 4H) for x_t (B, I) and h (B, H)")
    if b.shape[0] != 4 * H:
        raise ValueError("b must have shape (4H,)")


@numba.njit(**SERIAL)
def step_into(x_t, h, c, W, b, h_out, c_out, work):
    """One LSTM step without allocating.

    x_t (B, I), h (B, H), c (B, H), W (I + H, 4H), b (4H,) in;
    h_out (B, H), c_out (B, H) out (may be ``h`` and ``c`` themselves);
    work (9 * B * H,) scratch.
    """
    _check_step(x_t, h, c, W, b)
    B, I = x_t.shape
    H = h.shape[1]
    if h_out.shape != h.shape or c_out.shape != c.shape:
        raise ValueError("h_out and c_out must have the shapes of h and c")
    if work.size < 9 * B * H:
        raise ValueError("work must have at least work_size(B, H) = 9 * B * H elements")
    G = 4 * H
    gates = work[: B * G].reshape(B, G)
    hw = work[B * G : 2 * B * G].reshape(B, G)
    tanh_c = work[2 * B * G : 2 * B * G + B * H].reshape(B, H)
    np.dot(x_t, W[:I], gates)
    np.dot(h, W[I:], hw)
    _gates_forward(gates, c_out, tanh_c, h_out, hw, b, c)


@numba.njit(**SERIAL)
def step(x_t, h, c, W, b):
    """One LSTM step; returns new arrays ``(h_new, c_new)``, each (B, H)."""
    h_new = np.empty_like(h)
    c_new = np.empty_like(c)
    step_into(x_t, h, c, W, b, h_new, c_new, np.empty(9 * h.shape[0] * h.shape[1], h.dtype))
    return h_new, c_new


@numba.njit(**SERIAL)
def forward(x, W, b, h0, c0):
    """A whole sequence: x (T, B, I) -> ``(y (T, B, H), h_n (B, H), c_n (B, H))``."""
    T, B, I = x.shape
    _check_step(x[0] if T > 0 else np.empty((B, I), x.dtype), h0, c0, W, b)
    H = h0.shape[1]
    N = T * B
    y = np.empty((N, H), x.dtype)
    c = np.empty((N, H), x.dtype)
    if N == 0:
        return y.reshape(T, B, H), h0.copy(), c0.copy()
    gates = np.empty((N, 4 * H), x.dtype)
    tanh_c = np.empty((N, H), x.dtype)
    batch_sizes = np.full(T, B, np.int64)
    _lstm_forward(
        y, y, c, gates, tanh_c, np.empty((B, 4 * H), x.dtype),
        x.reshape(N, I), W[:I], W[I:], b, np.empty((0, 0), x.dtype), h0, c0, batch_sizes,
    )  # fmt: skip
    return y.reshape(T, B, H), y[N - B :].copy(), c[N - B :].copy()
