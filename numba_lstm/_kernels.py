"""Numba kernels of one LSTM layer, one direction: forward and backward (BPTT).

Kernels only do arithmetic: the Python layer (``numba_lstm.functional``)
validates, allocates every buffer and passes C-contiguous arrays.  Outputs come
first in the argument lists, then inputs (llm.c style).  Letters: T steps,
B batch, I inputs, H hidden units (cell size), P the size of h (P = H without
projection), N = sum of the sequence lengths.

Packed layout (PyTorch's packed sequences): the batch is sorted by length,
longest first, and step t uses only its first ``batch_sizes[t]`` rows; the rows
of all steps are stored one step after the other, so a (N, ...) array holds
step t in rows ``offsets[t] : offsets[t] + batch_sizes[t]``.  Without
variable lengths every ``batch_sizes[t]`` is B and a (T, B, ...) array reshaped
to (T * B, ...) is already packed.  Finished sequences do no work.

Structure (DESIGN.md section 3): one GEMM for ``x @ W_x`` over all steps, then
per step one product ``h_{t-1} @ W_h`` into a preallocated buffer and one fused
gate pass (plus, with a projection, one product ``m_t @ W_hr``); the backward
does one fused pass and one or two products per step and the weight gradients
as large GEMMs after the loop.  Per-step products go to BLAS, except for steps
of at most ``SMALL_ROWS`` rows, which a plain loop computes faster.

Threads: all parallelism comes from BLAS's thread pool.  The gate passes are
serial loops, which measured faster than ``prange`` at every benchmark shape
(a parallel region costs ~1.2 us to launch, more than the whole fused pass at
B = 1, and 2 threads did not speed it up at B = 64, H = 256; bench/NOTES.md).
So Numba's pool and BLAS's pool never compete.

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
def _gates_forward(gates, c, tanh_c, m, hw, b, c_prev):
    """Fused gate pass of one step, in place on ``gates``.

    gates  (B, 4H)  in: x_t @ W_x; out: activations i, f, g, o
    c      (B, H)   out: c_t
    tanh_c (B, H)   out: tanh(c_t)
    m      (B, H)   out: o * tanh(c_t) (h_t itself without projection)
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
        c_prev_r, c_r, tanh_c_r, m_r = c_prev[r], c[r], tanh_c[r], m[r]
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
            m_r[j] = o * tc


@numba.njit(**SERIAL)
def _gates_backward(dgates, dc, dm, gates, tanh_c, c_prev):
    """Fused backward pass of one step through the gates and the cell.

    dgates (B, 4H)  out: dL/dz for the pre-activations of the four gates
    dc     (B, H)   in: dL/dc_t from step t+1; out: dL/dc_{t-1}
    dm     (B, H)   in: dL/dm_t, the whole gradient of o * tanh(c_t)
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
        dc_r, dm_r, tanh_c_r, c_prev_r = dc[r], dm[r], tanh_c[r], c_prev[r]
        for j in range(H):
            i, f, g, o = a_i[j], a_f[j], a_g[j], a_o[j]
            tc = tanh_c_r[j]
            dm_t = dm_r[j]
            dc_t = dc_r[j] + dm_t * o * (one - tc * tc)
            d_i[j] = dc_t * g * i * (one - i)
            d_f[j] = dc_t * c_prev_r[j] * f * (one - f)
            d_g[j] = dc_t * i * (one - g * g)
            d_o[j] = dm_t * tc * o * (one - o)
            dc_r[j] = dc_t * f


# Per-step products with at most this many rows run as plain loops instead of
# BLAS calls.  Measured (bench/NOTES.md, "small per-step products"): at B = 1
# to 8 the loop beat OpenBLAS at H = 32 to 512, which sends m = 1 products to a
# threaded GEMV and handles m = 2..8 slowly (H = 128, m = 2: 5.4 us against
# 31 us), and whose worker threads, waiting with sched_yield, collapsed when
# another process shared the cores.  From 16 rows BLAS wins.
SMALL_ROWS = 8


@numba.njit(**SERIAL)
def _matmul_rows(out, a, w):
    """out = a @ w as row updates, for a few rows: out (M, N), a (M, K), w (K, N).

    Four rows of w at a time, each used for every row of out before the next
    four: w is read once, the few rows of out stay in L1, and each store of
    out carries four multiply-adds (about 1.3x faster than one row of w at a
    time at M = 4 to 8, 2x at H = 32, bench/NOTES.md).
    """
    M, K = a.shape
    N = out.shape[1]
    zero = out.dtype.type(0.0)
    K4 = K - K % 4
    for r in range(M):
        out[r, :] = zero
    for k in range(0, K4, 4):
        w_0, w_1, w_2, w_3 = w[k], w[k + 1], w[k + 2], w[k + 3]
        for r in range(M):
            out_r, a_r = out[r], a[r]
            a_0, a_1, a_2, a_3 = a_r[k], a_r[k + 1], a_r[k + 2], a_r[k + 3]
            for j in range(N):
                out_r[j] += a_0 * w_0[j] + a_1 * w_1[j] + a_2 * w_2[j] + a_3 * w_3[j]
    for k in range(K4, K):
        w_k = w[k]
        for r in range(M):
            out_r, a_rk = out[r], a[r, k]
            for j in range(N):
                out_r[j] += a_rk * w_k[j]


@numba.njit(**SERIAL)
def _matmul(out, a, w):
    """out = a @ w; w C-contiguous.  BLAS, or a loop for a few rows."""
    if a.shape[0] <= SMALL_ROWS:
        _matmul_rows(out, a, w)
    else:
        np.dot(a, w, out)


@numba.njit(**SERIAL)
def _add_into(out, a):
    """out += a, for (B, P) blocks."""
    for r in range(out.shape[0]):
        out_r, a_r = out[r], a[r]
        for j in range(out.shape[1]):
            out_r[j] += a_r[j]


@numba.njit(**SERIAL)
def _offsets(batch_sizes):
    """offsets (T + 1,): where each step's rows start in the packed arrays."""
    offsets = np.zeros(batch_sizes.size + 1, np.int64)
    for t in range(batch_sizes.size):
        offsets[t + 1] = offsets[t] + batch_sizes[t]
    return offsets


@numba.njit(**SERIAL)
def _lstm_forward(y, m, c, gates, tanh_c, hw, x, W_x, W_h, b, W_hr, h0, c0, batch_sizes):
    """Forward pass over a whole packed sequence.

    y      (N, P)    out: h_t of every step
    m      (N, H)    out: o * tanh(c_t); pass ``y`` itself when there is no projection
    c      (N, H)    out: c_t
    gates  (N, 4H)   out: activations i, f, g, o (saved for the backward)
    tanh_c (N, H)    out: tanh(c_t) (saved for the backward)
    hw     (B, 4H)   work: h_{t-1} @ W_h of the current step
    x      (N, I)    in
    W_x    (I, 4H)   in: input rows of W
    W_h    (P, 4H)   in: recurrent rows of W
    b      (4H,)     in
    W_hr   (H, P)    in: projection; shape (0, 0) for none
    h0     (B, P)    in
    c0     (B, H)    in
    batch_sizes (T,) in: rows of each step, non-increasing
    """
    T = batch_sizes.size
    offsets = _offsets(batch_sizes)
    # Input projection of every step in one GEMM, off the sequential path.
    np.dot(x, W_x, gates)
    for t in range(T):
        Bt = batch_sizes[t]
        if Bt == 0:
            break
        lo, hi = offsets[t], offsets[t] + Bt
        if t == 0:
            h_prev, c_prev = h0[:Bt], c0[:Bt]
        else:
            h_prev, c_prev = y[offsets[t - 1] : offsets[t - 1] + Bt], c[offsets[t - 1] : offsets[t - 1] + Bt]
        _matmul(hw[:Bt], h_prev, W_h)
        _gates_forward(gates[lo:hi], c[lo:hi], tanh_c[lo:hi], m[lo:hi], hw[:Bt], b, c_prev)
        if W_hr.shape[0] > 0:
            _matmul(y[lo:hi], m[lo:hi], W_hr)


@numba.njit(**SERIAL)
def _lstm_backward(
    dx, dW_x, dW_h, db, dW_hr, dh0, dc0, dgates, dh_all, dm, h_prev_all,
    dy, dh_n, dc_n, x, W_x, W_hT, W_hrT, h0, c0, y, m, c, gates, tanh_c, batch_sizes,
):  # fmt: skip
    """Backward pass (BPTT) over a whole packed sequence; overwrites every gradient.

    dx     (N, I)   out
    dW_x   (I, 4H)  out: gradient of the input rows of W
    dW_h   (P, 4H)  out: gradient of the recurrent rows of W
    db     (4H,)    out
    dW_hr  (H, P)   out: gradient of the projection; (0, 0) for none
    dh0    (B, P)   out: also the running dL/dh_t during the loop
    dc0    (B, H)   out: also the running dL/dc_t during the loop
    dgates (N, 4H)  work: dL/dz of every step
    dh_all (N, P)   work: dL/dh_t of every step (projection only, else (0, 0))
    dm     (B, H)   work: dL/dm_t of one step (projection only, else (0, 0))
    h_prev_all (N, P) work: h_{t-1} of every row, for the dW_h GEMM
    dy     (N, P)   in
    dh_n   (B, P)   in: gradient arriving at each sequence's last h
    dc_n   (B, H)   in: gradient arriving at each sequence's last c
    W_hT   (4H, P)  in: W_h transposed, C-contiguous
    W_hrT  (P, H)   in: W_hr transposed, C-contiguous; (0, 0) for none
    x, W_x, h0 .. batch_sizes: as in ``_lstm_forward``

    A sequence that has ended is not touched by the steps after its end, so
    dh0/dc0 still hold its dh_n/dc_n when the loop reaches its last step.
    """
    T = batch_sizes.size
    offsets = _offsets(batch_sizes)
    projected = W_hrT.shape[0] > 0
    dh0[:, :] = dh_n
    dc0[:, :] = dc_n
    for t in range(T - 1, -1, -1):
        Bt = batch_sizes[t]
        if Bt == 0:
            continue
        lo, hi = offsets[t], offsets[t] + Bt
        dh = dh0[:Bt]
        _add_into(dh, dy[lo:hi])  # dh is now the whole dL/dh_t
        if projected:
            dh_all[lo:hi] = dh
            _matmul(dm[:Bt], dh, W_hrT)
            dm_t = dm[:Bt]
        else:
            dm_t = dh
        if t == 0:
            c_prev = c0[:Bt]
            h_prev_all[lo:hi] = h0[:Bt]
        else:
            c_prev = c[offsets[t - 1] : offsets[t - 1] + Bt]
            h_prev_all[lo:hi] = y[offsets[t - 1] : offsets[t - 1] + Bt]
        _gates_backward(dgates[lo:hi], dc0[:Bt], dm_t, gates[lo:hi], tanh_c[lo:hi], c_prev)
        _matmul(dh, dgates[lo:hi], W_hT)
    np.dot(x.T, dgates, dW_x)
    np.dot(h_prev_all.T, dgates, dW_h)
    np.dot(dgates, W_x.T, dx)
    if projected:
        np.dot(m.T, dh_all, dW_hr)
    G = dgates.shape[1]
    db[:] = 0
    for r in range(dgates.shape[0]):
        dg_r = dgates[r]
        for j in range(G):
            db[j] += dg_r[j]
