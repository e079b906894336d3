"""Numba kernels of one LSTM layer, one direction: forward and backward (BPTT).

Kernels only do arithmetic: the Python layer (``numba_lstm.functional``)
validates, allocates every buffer and passes C-contiguous views.  Outputs come
first in the argument lists, then inputs (llm.c style).  Shapes use the
paper's letters: T steps, B batch, I inputs, H hidden units, 4H gate
pre-activations in the order i, f, g, o.

Structure (DESIGN.md section 3): one GEMM for ``x @ W_x`` over all steps, then
per step one GEMM ``h_{t-1} @ W_h`` through BLAS into a preallocated buffer and
one fused gate pass; the backward does one fused pass and one GEMM per step and
the weight gradients as large GEMMs after the loop.

Threads: all parallelism comes from BLAS's thread pool.  The gate passes are
serial loops, which measured faster than ``prange`` at every benchmark shape
(a parallel region costs ~1.2 us to launch, more than the whole fused pass at
B = 1, and 2 threads did not speed it up at B = 64, H = 256; see
bench/NOTES.md).  So Numba's pool and BLAS's pool never compete.

Vectorisation: every inner loop indexes 1-D row views with the plain loop
variable.  An index such as ``gates[r, H + j]`` is not provably non-negative,
so Numba emits a wraparound select that stops LLVM from vectorising (measured
16 ns per element against 1.06 ns with views, float32).
"""

import numba
import numpy as np

from numba_lstm._math import sigmoid, tanh
from numba_lstm._options import SERIAL


@numba.njit(**SERIAL)
def _gates_forward(gates, c, tanh_c, h, hw, b, c_prev):
    """Fused gate pass of one step, in place on ``gates``.

    gates  (B, 4H)  in: x_t @ W_x; out: activations i, f, g, o
    c      (B, H)   out: c_t
    tanh_c (B, H)   out: tanh(c_t)
    h      (B, H)   out: h_t
    hw     (B, 4H)  in: h_{t-1} @ W_h
    b      (4H,)    in: bias
    c_prev (B, H)   in: c_{t-1}
    """
    B, H = c.shape
    b_i, b_f, b_g, b_o = b[:H], b[H : 2 * H], b[2 * H : 3 * H], b[3 * H :]
    for r in range(B):
        z_i, z_f = gates[r, :H], gates[r, H : 2 * H]
        z_g, z_o = gates[r, 2 * H : 3 * H], gates[r, 3 * H :]
        u_i, u_f = hw[r, :H], hw[r, H : 2 * H]
        u_g, u_o = hw[r, 2 * H : 3 * H], hw[r, 3 * H :]
        c_prev_r, c_r, tanh_c_r, h_r = c_prev[r], c[r], tanh_c[r], h[r]
        for j in range(H):
            i = sigmoid(z_i[j] + u_i[j] + b_i[j])
            f = sigmoid(z_f[j] + u_f[j] + b_f[j])
            g = tanh(z_g[j] + u_g[j] + b_g[j])
            o = sigmoid(z_o[j] + u_o[j] + b_o[j])
            c_t = f * c_prev_r[j] + i * g
            tc = tanh(c_t)
            z_i[j] = i
            z_f[j] = f
            z_g[j] = g
            z_o[j] = o
            c_r[j] = c_t
            tanh_c_r[j] = tc
            h_r[j] = o * tc


@numba.njit(**SERIAL)
def _gates_backward(dgates, dc, dh, dy, gates, tanh_c, c_prev):
    """Fused backward pass of one step through the gates and the cell.

    dgates (B, 4H)  out: dL/dz for the pre-activations of the four gates
    dc     (B, H)   in: dL/dc_t from step t+1; out: dL/dc_{t-1}
    dh     (B, H)   in: dL/dh_t from step t+1 (dy[t] is added here)
    dy     (B, H)   in: dL/dy_t
    gates  (B, 4H)  in: activations i, f, g, o saved by the forward
    tanh_c (B, H)   in: tanh(c_t)
    c_prev (B, H)   in: c_{t-1}
    """
    B, H = dc.shape
    one = gates.dtype.type(1.0)
    for r in range(B):
        a_i, a_f = gates[r, :H], gates[r, H : 2 * H]
        a_g, a_o = gates[r, 2 * H : 3 * H], gates[r, 3 * H :]
        d_i, d_f = dgates[r, :H], dgates[r, H : 2 * H]
        d_g, d_o = dgates[r, 2 * H : 3 * H], dgates[r, 3 * H :]
        dc_r, dh_r, dy_r = dc[r], dh[r], dy[r]
        tanh_c_r, c_prev_r = tanh_c[r], c_prev[r]
        for j in range(H):
            i, f, g, o = a_i[j], a_f[j], a_g[j], a_o[j]
            tc = tanh_c_r[j]
            dh_t = dy_r[j] + dh_r[j]
            dc_t = dc_r[j] + dh_t * o * (one - tc * tc)
            d_i[j] = dc_t * g * i * (one - i)
            d_f[j] = dc_t * c_prev_r[j] * f * (one - f)
            d_g[j] = dc_t * i * (one - g * g)
            d_o[j] = dh_t * tc * o * (one - o)
            dc_r[j] = dc_t * f


@numba.njit(**SERIAL)
def _lstm_forward(y, c, gates, tanh_c, hw, x, W_x, W_h, b, h_prev, c_prev):
    """Forward pass over a whole sequence.

    y      (T, B, H)   out: h_t for every step
    c      (T, B, H)   out: c_t for every step
    gates  (T, B, 4H)  out: activations i, f, g, o (saved for the backward)
    tanh_c (T, B, H)   out: tanh(c_t) (saved for the backward)
    hw     (B, 4H)     work: h_{t-1} @ W_h of the current step
    x      (T, B, I)   in
    W_x    (I, 4H)     in: input rows of W
    W_h    (H, 4H)     in: recurrent rows of W
    b      (4H,)       in
    h_prev (T, B, H)   in: h_{t-1} for every step; h_prev[0] is h0 and
                       h_prev[t] aliases y[t-1] (the caller's views of one buffer)
    c_prev (T, B, H)   in: c_{t-1}, aliasing c the same way
    """
    T, B, I = x.shape
    G = W_x.shape[1]
    # Input projection of every step in one GEMM, off the sequential path.
    np.dot(x.reshape(T * B, I), W_x, gates.reshape(T * B, G))
    for t in range(T):
        np.dot(h_prev[t], W_h, hw)
        _gates_forward(gates[t], c[t], tanh_c[t], y[t], hw, b, c_prev[t])


@numba.njit(**SERIAL)
def _lstm_backward(
    dx, dW_x, dW_h, db, dh0, dc0, dgates,
    dy, dh_n, dc_n, x, W_x, W_h, h_prev, c_prev, gates, tanh_c,
):  # fmt: skip
    """Backward pass (BPTT) over a whole sequence; overwrites every gradient.

    dx     (T, B, I)   out
    dW_x   (I, 4H)     out: gradient of the input rows of W
    dW_h   (H, 4H)     out: gradient of the recurrent rows of W
    db     (4H,)       out
    dh0    (B, H)      out: also the running dL/dh_t during the loop
    dc0    (B, H)      out: also the running dL/dc_t during the loop
    dgates (T, B, 4H)  work: dL/dz of every step
    dy     (T, B, H)   in
    dh_n   (B, H)      in: gradient arriving at h_T
    dc_n   (B, H)      in: gradient arriving at c_T
    x, W_x, W_h, h_prev, c_prev, gates, tanh_c: as in ``_lstm_forward``
    """
    T, B, I = x.shape
    H, G = W_h.shape
    dh0[:, :] = dh_n
    dc0[:, :] = dc_n
    for t in range(T - 1, -1, -1):
        _gates_backward(dgates[t], dc0, dh0, dy[t], gates[t], tanh_c[t], c_prev[t])
        np.dot(dgates[t], W_h.T, dh0)
    dg = dgates.reshape(T * B, G)
    np.dot(x.reshape(T * B, I).T, dg, dW_x)
    np.dot(h_prev.reshape(T * B, H).T, dg, dW_h)
    np.dot(dg, W_x.T, dx.reshape(T * B, I))
    db[:] = 0
    for r in range(T * B):
        dg_r = dg[r]
        for j in range(G):
            db[j] += dg_r[j]
