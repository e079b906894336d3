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

Structure: weights are packed once per call into column panels
(``numba_lstm._panels``) and every product runs through one register-tiled
micro-kernel that accumulates into its output.  The forward fills a small
buffer ``z`` with ``b + x @ W_x`` for the next few steps (one product of many
rows, off the sequential path), then per step adds ``h_{t-1} @ W_h`` and runs
one fused gate pass (plus, with a projection, one product ``m_t @ W_hr``).
The backward does, per step, ``dh = dy_t + dG_{t+1} @ W_h.T`` and one fused
pass; after each block of steps ``_block_grads`` adds the block's share of
``dW`` and computes its ``dx`` through the same micro-kernel, while its gate
gradients are still in cache, in work arrays that do not grow with the
sequence.  The packed product
replaced BLAS because it ran the per-step shapes 1.4-3x faster than
``np.dot`` on one thread and up to 5x on two (bench/NOTES.md, "Packed
panels"; OpenBLAS packs both operands again at every call, and here runs
forced AVX2 kernels).  ``jit.step`` / ``jit.step_into`` (one step, weights not
packed) use BLAS, or for at most ``SMALL_ROWS`` rows ``_add_matmul_rows``:
the same tiles reading W in place (bench/NOTES.md, "Session 32").

Threads: a step with at least ``SPLIT_STEP_MIN_FLOP`` in its product is
split between Numba's threads by rows when it has a tile of rows per thread
and its weights fit ``ROW_SPLIT_MAX_BYTES``, which depends on the CPU (each
thread keeps the same sequences of the batch, ``_forward_shares``), else by
panels of hidden units: in the forward each thread computes the
input projection of its rows and units when a chunk is due, the
pre-activations of their four gates and then their gates.  The forward
opens one parallel region (``numba.prange``) for the whole sequence, the
backward one per block of steps, and the threads hand out each step's shares
through atomic counters (``numba_lstm._sync``) instead of opening a region
per step.  A backward of one tile of rows on two threads is pipelined
instead: one thread walks the steps, the other computes the weight
gradients of the blocks walked (``_pipelined``).  ``LSTM.step`` with a
large W (``STEP_SPLIT_MIN_BYTES``) opens one region per step:
``_split_step`` splits the rows of W, then the units, then a projection's
columns, into shares fixed by the layer.  The weight gradients of each
block split their column panels between the same threads, and so do a
projection's ``dW_hr`` after the loop (``_projection_grad``).  The sequence
kernels never call BLAS, whose threads stay busy for a while after a call:
only ``jit.step`` and ``jit.step_into`` above ``SMALL_ROWS`` rows do.

Vectorisation: every inner loop indexes 1-D row views with the plain loop
variable.  An index such as ``gates[r, H + j]`` is not provably non-negative,
so Numba emits a wraparound select that stops LLVM from vectorising (measured
16 ns per element against 1.06 ns with views, float32).

Compile time: a parallel kernel calls its worker function (``_forward_steps``,
``_backward_steps``, ``_block_grads_worker``, ``_projection_grad_share``,
``_split_step_shares``) from
its ``prange`` loop and, for one worker, from a serial branch.  Numba
compiles a callee once per signature, and the calls gave ``_forward_steps``
three (the loop variable typed int64 while the kernel is typed, uint64
inside the parallel region, and literal constants in the serial branch)
and the others two.  Both calls pass ``np.int64`` values, so each worker
function compiles once per dtype (``tests/test_cache.py`` counts it for the
first four; ``_split_step_shares`` needs a layer of 4 MiB): the first
float32 forward in an empty cache went from 27.6 to 21.7 s, forward +
backward from 56.8 to 44.4 s (bench/NOTES.md, "Session 22").  For the same
reason no jitted function here, in ``_panels``, ``_sync`` or ``jit`` passes
a literal number to another (``claim(sync, 0, ...)``, ``_panel_block(...,
0, K)``): Numba types a literal argument as its own type, ``Literal[int](0)``,
and compiles the callee once more for it.  Constant arguments are int64
values (``np.int64(0)``, ``_PHASES``), and ``tests/test_cache.py`` fails on
a literal signature.  Arrays copied by columns go through ``_copy_columns``,
not slice assignment, whose error path compiles string formatting.

Per-step calls: the functions that the walk through the steps calls once a
share and a step (``_forward_share``, ``_forward_step``, ``_backward_share``)
take the step's arrays one by one, not in tuples, and Numba inlines them
(``inline="always"``) into the walk.  Called with tuples, they cost about
0.25 us a step at B = 1 (I = H = 128, float32): the two-thread forward took
2.79 ms against 2.55 for the same products and gate passes called from the
walk directly (bench/NOTES.md, "Session 31").
"""

import numba
import numpy as np
from numba.extending import overload

from numba_lstm import _host
from numba_lstm._math import fma, sigmoid, tanh
from numba_lstm._options import PARALLEL, SERIAL
from numba_lstm._panels import (
    PACK_ROWS,
    TILE_ROWS,
    _contiguous_rows,
    _gate_panel_product,
    _pack_panel_rows,
    _panel_block_sums,
    _panel_product,
    _panel_width_of,
    _tail_joins,
    _unpacked_product,
)
from numba_lstm._sync import MAX_SHARES, claim, finish, home, is_done, pause, reset, thread_count, wait_for


@numba.njit(**SERIAL, inline="always")
def _unit_forward(z_i, z_f, z_g, z_o, c_prev):
    """The activations i, f, g, o of one unit and its c_t, from its four
    pre-activations and c_{t-1}: the arithmetic of both gate passes."""
    i = sigmoid(z_i)
    f = sigmoid(z_f)
    g = tanh(z_g)
    return i, f, g, sigmoid(z_o), fma(f, c_prev, i * g)  # which product is fused: ours to say, not LLVM's


@numba.njit(**SERIAL)
def _gates_forward(gates, c, tanh_c, m, z, c_prev, j_lo, j_hi):
    """Fused gate pass of one step, for the hidden units j_lo <= j < j_hi.

    gates  (B, 4H)   out: activations i, f, g, o
    c      (B, H)    out: c_t
    tanh_c (B, H)    out: tanh(c_t)
    m      (B, >=H)  out: o * tanh(c_t) (h_t itself without projection)
    z      (B, 4Hz)  in: pre-activations, bias included; gate k of unit j in
                     column k * Hz + j (Hz >= H: blocks may be padded)
    c_prev (B, H)    in: c_{t-1}

    ``gates`` may be ``z`` itself when Hz = H (each element is read before it
    is written).
    """
    B, H = c.shape
    Hz = z.shape[1] // 4
    for r in range(B):
        z_r, a_r = z[r], gates[r]
        z_i, z_f = z_r[j_lo:j_hi], z_r[Hz + j_lo : Hz + j_hi]
        z_g, z_o = z_r[2 * Hz + j_lo : 2 * Hz + j_hi], z_r[3 * Hz + j_lo : 3 * Hz + j_hi]
        a_i, a_f = a_r[j_lo:j_hi], a_r[H + j_lo : H + j_hi]
        a_g, a_o = a_r[2 * H + j_lo : 2 * H + j_hi], a_r[3 * H + j_lo : 3 * H + j_hi]
        c_prev_r, c_r = c_prev[r, j_lo:j_hi], c[r, j_lo:j_hi]
        tanh_c_r, m_r = tanh_c[r, j_lo:j_hi], m[r, j_lo:j_hi]
        # tanh(c_t) in a second loop: in one, the four gates of a unit and
        # then tanh(c_t) made a dependency chain of two nonlinearities per
        # iteration, and the pass ran at the latency of that chain (float64
        # 7.39 -> 6.40 ns per unit when split, bench/NOTES.md "Session 10").
        for j in range(j_hi - j_lo):
            i, f, g, o, c_t = _unit_forward(z_i[j], z_f[j], z_g[j], z_o[j], c_prev_r[j])
            a_i[j] = i
            a_f[j] = f
            a_g[j] = g
            a_o[j] = o
            c_r[j] = c_t
        for j in range(j_hi - j_lo):
            tc = tanh(c_r[j])
            tanh_c_r[j] = tc
            m_r[j] = a_o[j] * tc


@numba.njit(**SERIAL)
def _gates_forward_unsaved(c, m, z, c_prev, j_lo, j_hi):
    """``_gates_forward`` when nothing is saved for a backward: c_t and m only, the same bits.

    c      (B, H)    out: c_t
    m      (B, >=H)  out: o * tanh(c_t)
    z      (B, 4Hz)  in: pre-activations, as in ``_gates_forward``; out: its
                     block of o holds the activation o (the step's z is
                     not read again)
    c_prev (B, H)    in: c_{t-1}

    Storing the activations i, f, g, o and tanh(c_t) in work arrays that
    nothing reads made the float32 inference forward 1.02x the time at 64 x
    100 x 256 x 256 and 64 x 50 x 512 x 512, 1.01-1.03x at 16 x 100 x 128 x
    256 and 1.01x at B = 1 (bench/NOTES.md, "Session 42").
    """
    B, H = c.shape
    Hz = z.shape[1] // 4
    for r in range(B):
        z_r = z[r]
        z_i, z_f = z_r[j_lo:j_hi], z_r[Hz + j_lo : Hz + j_hi]
        z_g, z_o = z_r[2 * Hz + j_lo : 2 * Hz + j_hi], z_r[3 * Hz + j_lo : 3 * Hz + j_hi]
        c_prev_r, c_r, m_r = c_prev[r, j_lo:j_hi], c[r, j_lo:j_hi], m[r, j_lo:j_hi]
        for j in range(j_hi - j_lo):  # two loops, as in _gates_forward
            _, _, _, o, c_t = _unit_forward(z_i[j], z_f[j], z_g[j], z_o[j], c_prev_r[j])
            z_o[j] = o
            c_r[j] = c_t
        for j in range(j_hi - j_lo):
            m_r[j] = z_o[j] * tanh(c_r[j])


@numba.njit(**SERIAL)
def _gates_backward(dgates, dc, dm, gates, tanh_c, c_prev, j_lo, j_hi):
    """Fused backward pass of one step through the gates and the cell, units j_lo <= j < j_hi.

    dgates (B, 4H)   out: dL/dz for the pre-activations of the four gates
    dc     (B, H)    in: dL/dc_t from step t+1; out: dL/dc_{t-1}
    dm     (B, >=H)  in: dL/dm_t, the whole gradient of o * tanh(c_t)
    gates  (B, 4H)   in: activations i, f, g, o saved by the forward
    tanh_c (B, H)    in: tanh(c_t)
    c_prev (B, H)    in: c_{t-1}
    """
    B, H = dc.shape
    one = gates.dtype.type(1.0)
    for r in range(B):
        # The views are built here as in _gates_forward, not by a shared helper:
        # views returned from one made both passes 1.4-3x slower in float32
        # (bench/NOTES.md, "Session 6").
        a_r, d_r = gates[r], dgates[r]
        a_i, a_f = a_r[j_lo:j_hi], a_r[H + j_lo : H + j_hi]
        a_g, a_o = a_r[2 * H + j_lo : 2 * H + j_hi], a_r[3 * H + j_lo : 3 * H + j_hi]
        d_i, d_f = d_r[j_lo:j_hi], d_r[H + j_lo : H + j_hi]
        d_g, d_o = d_r[2 * H + j_lo : 2 * H + j_hi], d_r[3 * H + j_lo : 3 * H + j_hi]
        dc_r, dm_r = dc[r, j_lo:j_hi], dm[r, j_lo:j_hi]
        tanh_c_r, c_prev_r = tanh_c[r, j_lo:j_hi], c_prev[r, j_lo:j_hi]
        for j in range(j_hi - j_lo):
            i, f, g, o = a_i[j], a_f[j], a_g[j], a_o[j]
            tc = tanh_c_r[j]
            dm_t = dm_r[j]
            dc_t = dc_r[j] + dm_t * o * (one - tc * tc)
            d_i[j] = dc_t * g * i * (one - i)
            d_f[j] = dc_t * c_prev_r[j] * f * (one - f)
            d_g[j] = dc_t * i * (one - g * g)
            d_o[j] = dm_t * tc * o * (one - o)
            dc_r[j] = dc_t * f


# Per-step products with at most this many rows run in our own loops
# (``_add_matmul_rows``) instead of BLAS calls.  Measured (bench/NOTES.md,
# "small per-step products"): at B = 1 to 8 the loop beat OpenBLAS at H = 32
# to 512, which sends m = 1 products to a threaded GEMV and handles m = 2..8
# slowly (H = 128, m = 2: 5.4 us against 31 us), and whose worker threads,
# waiting with sched_yield, collapsed when another process shared the cores.
# From 16 rows BLAS wins.
SMALL_ROWS = 8


@numba.njit(**SERIAL)
def _add_matmul_rows(out, a, w):
    """out += a @ w for a few rows: out (M, N), a (M, K), w (K, N).

    Each element of out is one chain of FMAs over k = 0, 1, ..., from its
    value in out: the order of the packed product's tiles, so a step gives
    the bits of the same step of the sequence kernels, whatever the number
    of rows or the layout of the operands.  Whole panels of NR columns go
    through those tiles reading w in place (``_unpacked_product``); the last
    N % NR columns, and operands whose rows are not contiguous or not a
    whole number of values apart (strided views from a user's jitted code,
    fields of record arrays), through ``_add_row_fmas``.  For one
    row the tiles also read w faster than row updates did while w fits in
    L2 (float32, K x N = 64 x 128: 0.19 against 0.32 us; 256 x 512: 4.68
    against 4.91), and about as fast past it (512 x 1024: 25.2 against
    24.2; bench/NOTES.md, "Session 32").
    """
    N = out.shape[1]
    NR = _panel_width_of(w)
    lo = N - N % NR
    # The tiles step from row to row by whole values (``_row_stride``): rows
    # of a field of a packed record array, 129 bytes apart in float32, were
    # read 128 apart (wrong results, or before the array with a negative
    # stride).  A mask, itemsize being 4 or 8; the same check inside
    # ``_contiguous_rows`` made a step of ``jit.step_into`` at H = 32 8-10%
    # slower, changing the code LLVM made around it (bench/NOTES.md "Session 45").
    mask = a.itemsize - 1
    whole = (out.strides[0] | a.strides[0] | w.strides[0]) & mask == 0 or (
        a.shape[0] <= 1 and w.strides[0] & mask == 0
    )
    if lo > 0 and whole and _contiguous_rows(out) and _contiguous_rows(a) and _contiguous_rows(w):
        _unpacked_product(out, a, w, lo // NR)
        if lo < N:
            _add_row_fmas(out[:, lo:], a, w[:, lo:])
    else:
        _add_row_fmas(out, a, w)


@numba.njit(**SERIAL)
def _add_row_fmas(out, a, w):
    """out += a @ w as row updates, ``out[r, j] = fma(a[r, k], w[k, j], out[r, j])``
    for k = 0, 1, ...: the tiles' chains, for out (M, N), a (M, K), w (K, N) of
    any strides.  Four rows of w at a time, each used for every row of out
    before the next four: each pass over out carries four FMAs (a W in Fortran
    order, read across its rows, took 3.1x the time one row at a time at
    H = 128; bench/NOTES.md, "Session 32")."""
    M, K = a.shape
    N = out.shape[1]
    K4 = K - K % 4
    for k in range(0, K4, 4):
        w_0, w_1, w_2, w_3 = w[k], w[k + 1], w[k + 2], w[k + 3]
        for r in range(M):
            out_r, a_r = out[r], a[r]
            a_0, a_1, a_2, a_3 = a_r[k], a_r[k + 1], a_r[k + 2], a_r[k + 3]
            for j in range(N):
                out_r[j] = fma(a_3, w_3[j], fma(a_2, w_2[j], fma(a_1, w_1[j], fma(a_0, w_0[j], out_r[j]))))
    for k in range(K4, K):
        w_k = w[k]
        for r in range(M):
            out_r, a_rk = out[r], a[r, k]
            for j in range(N):
                out_r[j] = fma(a_rk, w_k[j], out_r[j])


@numba.njit(**SERIAL)
def _blas_matmul(out, a, w):
    """out = a @ w through BLAS (``np.dot``), a and w of any layout (``_blas_operand``)."""
    np.dot(_blas_operand(a), _blas_operand(w), out)


@numba.njit(**SERIAL)
def _add_blas_matmul(out, a, w, work):
    """out += a @ w through BLAS: ``_blas_matmul`` into ``work`` (like ``out``), then one pass adding it."""
    _blas_matmul(work, a, w)
    for r in range(out.shape[0]):
        out_r, work_r = out[r], work[r]
        for j in range(out.shape[1]):
            out_r[j] += work_r[j]


def _blas_operand(a):
    """``a`` as ``np.dot`` takes it to BLAS: as it is when C-contiguous, else
    through ``np.ascontiguousarray``.

    A Fortran-order operand would take BLAS's transposed path, whose sums
    round differently (a Fortran-order ``h`` of 9 to 40 rows changed the
    bits of ``jit.step``); copied, the bits do not depend on the layout.
    ``np.dot`` copies an "A" array itself, even one that is contiguous, and
    warns at compile time that it "is faster on contiguous arrays" (a
    NumbaPerformanceWarning for a strided ``x_t`` or a W in Fortran order
    given to ``jit.step_into``, whose rows past ``SMALL_ROWS`` take BLAS,
    and for a strided ``W_hr`` in ``LSTM.step``'s projection).
    ``np.ascontiguousarray`` copies only an array that is not C-contiguous.
    """


@overload(_blas_operand)
def _blas_operand_overload(a):
    if a.layout == "C":
        return lambda a: a
    return lambda a: np.ascontiguousarray(a)


@numba.njit(**SERIAL)
def _offsets(batch_sizes):
    """offsets (T + 1,): where each step's rows start in the packed arrays."""
    offsets = np.zeros(batch_sizes.size + 1, np.int64)
    for t in range(batch_sizes.size):
        offsets[t + 1] = offsets[t] + batch_sizes[t]
    return offsets


@numba.njit(**SERIAL)
def _packing(lengths, T, reverse):
    """The packed order of sequences of ``lengths`` (B,), each in 0..T (``functional.Packing``).

    Returns ``batch_sizes`` (T,), the rows of each step; ``order`` (B,), the
    batch index of each sorted row, longest first and ties in batch order
    (a stable counting sort); the sorted lengths; and ``packed_row`` (T, B),
    the packed row of time t of sequence b, -1 past its length.  With
    ``reverse``, step t of a sequence reads its time ``length - 1 - t``.
    Step by step, the rows of the sequences still running, in sorted order.
    """
    B = lengths.size
    # Sorted by key T - length: starts[key + 1] counts the sequences of a key,
    # then (summed) starts[key] is the first sorted row of that key.
    starts = np.zeros(T + 2, np.int64)
    for b in range(B):
        starts[T - lengths[b] + 1] += 1
    batch_sizes = np.empty(T, np.int64)
    running = np.int64(0)
    for n in range(T, 0, -1):  # step n - 1 runs the sequences of lengths n..T
        running += starts[T - n + 1]
        batch_sizes[n - 1] = running
    for key in range(1, T + 2):
        starts[key] += starts[key - 1]
    order = np.empty(B, np.int64)
    for b in range(B):
        key = T - lengths[b]
        order[starts[key]] = b
        starts[key] += 1
    sorted_lengths = np.empty(B, np.int64)
    for r in range(B):
        sorted_lengths[r] = lengths[order[r]]
    packed_row = np.full((T, B), -1, np.int64)
    k = 0
    for t in range(T):
        for r in range(batch_sizes[t]):
            src_t = sorted_lengths[r] - 1 - t if reverse else t
            packed_row[src_t, order[r]] = k
            k += 1
    return batch_sizes, order, sorted_lengths, packed_row


@numba.njit(**SERIAL)
def _final_rows(out, packed, initial, order, sorted_lengths, batch_sizes, slots):
    """out[order[r]] = the row of ``packed`` at the last step of sorted row r,
    ``initial[order[r]]`` for a sequence of length 0 (``Packing.final_state``).

    ``packed`` (N, F) holds the rows of every step, one step after the
    other; with ``slots``, (2B, F), those of even steps in its first B rows
    and of odd steps in the next B.  ``out`` and ``initial``: (B, F).
    """
    B = order.size
    offsets = _offsets(batch_sizes)
    for r in range(B):
        n = sorted_lengths[r]
        if n == 0:
            src = initial[order[r]]
        else:
            src = packed[(n - 1) % 2 * B + r if slots else offsets[n - 1] + r]
        dst = out[order[r]]
        for j in range(dst.size):
            dst[j] = src[j]


@numba.njit(**PARALLEL)
def _pack_rows(out, a, packed_row):
    """out (N, F) = the rows of a (T, B, F) in packed order: out[packed_row[t, b]] = a[t, b].

    packed_row (T, B): the packed row of each (t, b), -1 past a sequence's
    length (not copied).  Steps are split between Numba's threads.
    """
    T, B = packed_row.shape
    for t in numba.prange(T):
        for r in range(B):
            k = packed_row[t, r]
            if k >= 0:
                src, dst = a[t, r], out[k]
                for j in range(dst.size):
                    dst[j] = src[j]


@numba.njit(**PARALLEL)
def _unpack_rows(out, packed, packed_row):
    """out (T, B, F) = the packed rows at their (t, b), zero where packed_row[t, b] < 0.

    packed (N, >= F): only the first F columns of each row are copied.  Every
    element of ``out`` is written once (``out`` may come from ``np.empty``).
    """
    T, B = packed_row.shape
    for t in numba.prange(T):
        for r in range(B):
            k = packed_row[t, r]
            dst = out[t, r]
            if k >= 0:
                src = packed[k]
                for j in range(dst.size):
                    dst[j] = src[j]
            else:
                for j in range(dst.size):
                    dst[j] = 0


@numba.njit(**SERIAL)
def _fill_columns(out, values, lo, hi):
    """out[r, lo:hi] = values[lo:hi] for every row r."""
    src = values[lo:hi]
    for r in range(out.shape[0]):
        out_r = out[r, lo:hi]
        for j in range(hi - lo):
            out_r[j] = src[j]


@numba.njit(**SERIAL)
def _copy_columns(out, src, lo, hi):
    """out[r, lo:hi] = src[r, lo:hi] for every row r of ``out``.

    A loop, not slice assignment: Numba's array-to-array setitem compiles
    an error path that formats both shapes as strings (the first
    ``LSTM.step`` of a small layer compiled in 12.0 s instead of 14.7 with
    this loop in ``jit._step_body``; bench/NOTES.md, "Session 23").
    """
    for r in range(out.shape[0]):
        out_r, src_r = out[r, lo:hi], src[r, lo:hi]
        for j in range(hi - lo):
            out_r[j] = src_r[j]


@numba.njit(**SERIAL)
def _zero_columns(out, lo, hi):
    """out[r, lo:hi] = 0 for every row r."""
    for r in range(out.shape[0]):
        out[r, lo:hi] = 0


#: A block's weight gradients with fewer floating-point operations run
#: without a parallel region, which costs a few microseconds to start
#: (bench/NOTES.md, "Packed panels").
PARALLEL_MIN_FLOP = 1_000_000

#: Steps whose product (``h_{t-1} @ W_h``, or the backward's
#: ``dG_{t+1} @ W_h.T``) has fewer run on one thread.  The sequence kernels
#: open one parallel region per call (forward) or per block of steps
#: (backward) and hand out each step's shares through counters
#: (``numba_lstm._sync``), so splitting a step pays from B = 1, I = H = 64
#: on (1000 steps: forward 1.88 -> 1.33 ms, training 4.77 -> 3.66 ms;
#: bench/NOTES.md, "Session 7").
SPLIT_STEP_MIN_FLOP = np.int64(32_768)  # int64, not a literal, in jitted code (see "Compile time")

#: Shares per Numba thread of a forward step of more than one tile of rows.
#: Each thread takes its own block of shares first
#: (``numba_lstm._sync.home``), so more shares than threads cost little and
#: let a thread that runs slower than the other give away the end of its
#: block (ratio 0.75-0.80 against one share per thread while the two-thread
#: forward ran slow).  The backward keeps one share per thread: four cost
#: 6-9% at B = 1 training (bench/NOTES.md, "Session 13" and "Session 14"),
#: and so does a forward step of one tile (``ONE_TILE_SHARES_PER_THREAD``).
#: An int64 value, as the other counts passed to ``_share_count``: a literal
#: compiled it once more.
FORWARD_SHARES_PER_THREAD = np.int64(4)

#: Shares per Numba thread of a forward step of one tile of rows (B = 1),
#: split by units.  Each share pays a gate pass and a product of its own
#: and a claim and a finish: with AVX2 at H = 128, four shares of 16 units
#: took 0.42 us of gate passes on one thread, as long as all 128 units in
#: one pass, and a step's claims and finishes 0.21 us a thread.
#: float32 forward, two threads, one share per thread against four: B = 1,
#: I = H = 128: 0.78-0.87 (3.26 against 4.16 ms), 0.75 with another
#: process busy on one core; H = 64 0.81, H = 256 0.92, H = 512 0.97;
#: B = 4, H = 128 0.89; float64 0.91.  The projection phase of such a step
#: too: B = 1, I = 128, H = 256, P = 128 0.88 (bench/NOTES.md, "Session 24").
ONE_TILE_SHARES_PER_THREAD = np.int64(1)

#: Packed input and recurrent weights up to this size let a step of at
#: least one tile of rows per worker be split by rows alone
#: (``_forward_shares``, ``_backward_shares``), wherever the host's CPU
#: gives no other bound (``row_split_bound``): each thread then streams
#: all the weights from L3 at every step, and above this they come from
#: memory (Zen 4, 128x50x1024x1024, 32 MB in float32: 1.12x the time of
#: the split by units).
DEFAULT_ROW_SPLIT_MAX_BYTES = 16 * 1024 * 1024

#: On an Intel CPU a split by rows pays only while the weights fit in this
#: fraction of one core's L2 (``row_split_bound``).
INTEL_ROW_SPLIT_L2_FRACTION = 0.875

#: The L2 a core that ``row_split_bound`` assumes of an Intel CPU whose L2
#: cannot be read: the least of Intel's server cores since 2017 (1 MB).
INTEL_ASSUMED_L2_BYTES = 1024 * 1024


def row_split_bound(vendor, l2_bytes):
    """The packed weight bytes up to which a step may be split by rows, on a
    CPU of ``vendor`` with ``l2_bytes`` of L2 a core (``numba_lstm._host``;
    None where unknown).

    A split by rows has each thread read all the weights at every step, a
    split by units only its own units' share of them.  On Zen 4 (1 MB of
    L2 a core, 32 MB of L3 per 8 cores) reading them all from L3 cost less
    than what the split by units adds, up to DEFAULT_ROW_SPLIT_MAX_BYTES
    (float32 forward, rows against units: 64x100x256x256, 2 MB, 0.82;
    64x50x512x512, 8 MB, ran by rows at 0.99x PyTorch; bench/NOTES.md
    "Session 15").  On an Intel Xeon with 2 MB of L2 a core (AVX-512 FP16,
    2 threads) the forward's split by rows paid only while the weights fit
    in L2.  Time by rows over time by units, float32 forward, B = 64,
    T = 50, I = H: 1.12 MB 0.80-0.83, 1.53 MB 0.89-1.00, 2.0 MB 1.07-1.09,
    2.53 MB 1.22-1.28, 4.5 MB 1.28-1.30; 16x100x128x256, 1.5 MB,
    0.79-0.83.  The backward alone was even there from 1.12 to 8 MB
    (0.89-1.07), so it follows the same bound (bench/NOTES.md
    "Session 39").  So on Intel the bound is INTEL_ROW_SPLIT_L2_FRACTION
    of one core's L2 (1.75 MB there, between the 1.53 and the 2.0 MB
    measured, and off the benchmark's shapes).  Those splits by rows cut a
    worker's rows into blocks, each reading the weights again; since its
    shares cut them by panels (``_share_rects``), rows over units came out
    0.93-1.05 from 2 to 8 MB there (bench/NOTES.md "Session 40"), so the
    bound still marks where rows stop paying.  Measured on that one Intel
    host only; other vendors keep the default.
    """
    if vendor == "GenuineIntel":
        return int(INTEL_ROW_SPLIT_L2_FRACTION * (INTEL_ASSUMED_L2_BYTES if l2_bytes is None else l2_bytes))
    return DEFAULT_ROW_SPLIT_MAX_BYTES


#: This host's bound (``row_split_bound``), read once at import.  The
#: Python layer passes it to the sequence kernels at every call rather than
#: compiling it in, so that a compile cache shared between hosts of one
#: LLVM CPU name (``NUMBA_CPU_NAME=generic``, say) keeps each host's bound.
#: ``jit.forward``, called from compiled code, compiles it in: there a
#: shared cache keeps the first host's, which changes its speed only (a
#: split changes which thread computes an element, not its sum).
ROW_SPLIT_MAX_BYTES = row_split_bound(_host.cpu_vendor(), _host.l2_cache_bytes())

#: Panels of units that a forward share keeps at the least when a step of
#: more than one tile of rows is split, by units or by rows, into more
#: shares than workers (``_forward_shares``).
SHARE_PANELS = 4


@numba.njit(**SERIAL)
def _tiles(rows):
    """Tiles of TILE_ROWS rows that ``rows`` rows make (the last one may be short)."""
    return -(-rows // TILE_ROWS)


@numba.njit(**SERIAL)
def _split_by_rows(B, workers, weight_bytes, row_split_max_bytes):
    """Whether ``workers`` split a step of B rows by rows alone (``_forward_shares``,
    ``_backward_shares``): a tile of rows per worker at the least, and packed
    W_x and W_h of ``weight_bytes`` <= ``row_split_max_bytes`` (ROW_SPLIT_MAX_BYTES)."""
    return _tiles(B) >= workers and weight_bytes <= row_split_max_bytes


@numba.njit(**SERIAL)
def _shares_per_thread(B):
    """Shares per worker of a forward step of B rows, in each of its phases
    (units, projection): ONE_TILE_SHARES_PER_THREAD for one tile of rows,
    else up to FORWARD_SHARES_PER_THREAD."""
    return ONE_TILE_SHARES_PER_THREAD if _tiles(B) <= 1 else FORWARD_SHARES_PER_THREAD


@numba.njit(**SERIAL)
def _forward_shares(n_units, B, workers, weight_bytes, row_split_max_bytes):
    """(unit_shares, row_shares): how ``_lstm_forward`` splits each step of B rows.

    Share q is what ``_share_rects`` makes of it: with ``unit_shares`` > 1,
    unit share q // row_shares and row block q % row_shares (``_row_block``:
    whole tiles, ``_split_tiles``), and where the workers divide the
    shares a worker's block covers whole unit shares, its panels; with one
    unit share, a worker's block holds its part of the step's rows times
    panels, cut at (tile, panel) pairs, and each of the block's shares all
    of the part's rows for some of its panels.  ``weight_bytes``: the
    packed W_x and W_h; ``row_split_max_bytes``: ROW_SPLIT_MAX_BYTES.

    A worker's shares do not split its rows into blocks, each of which
    would read the worker's panels of the weights again (a panel stays in
    L1 only while the tiles of one share walk down it); only where the
    workers do not divide the shares may a worker's block hold two blocks
    of rows (3 unit shares of 2 row blocks for 4 workers).  On the Intel
    host of bench/NOTES.md "Session 40", float32 forward, two threads, B =
    64, a worker's rows in four blocks against one: split by rows,
    64x100x256x256 1.13-1.32x the time, 64x50x512x512 1.33-1.37x; split by
    units, 64x50x384x384 1.19-1.28x (2 unit shares of 4 row blocks against
    2 of one).

    * One tile of rows: ONE_TILE_SHARES_PER_THREAD unit shares per worker
      (``_shares_per_thread``).
    * At least a tile per worker and weights up to ``row_split_max_bytes``: rows
      alone, up to FORWARD_SHARES_PER_THREAD shares per worker of at
      least SHARE_PANELS panels each, and no more shares than tiles (B =
      16, two threads, 16x100x128x256: 2 shares against 8, 0.95-0.96x the
      time).  A thread
      then keeps its rows, the same sequences, from step to step: it reads
      only the h_{t-1} it wrote, and writes only its own rows of ``z``.
      float32 forward against the split by units alone: 64x100x256x256
      0.82, 16x100x128x256 0.85 (bench/NOTES.md "Session 15").  The
      workers' blocks of shares hold even parts of the rows times panels
      (``_share_rects``), so that with tiles that the workers do not divide
      two workers compute part of a tile each: float32 forward, two
      threads, against whole tiles, B = 20 0.86-1.07, 36 0.93-1.02, 12
      0.85-1.02, the gains while the host ran fast (bench/NOTES.md
      "Session 26"); with the rows left over in a tall last tile, B = 5 to
      23 0.72-0.92, variable lengths 0.965-0.979 ("Session 27").
    * Otherwise unit shares of at least SHARE_PANELS panels, a multiple of
      ``workers`` of them (one each at the least): one panel of units left
      the gate pass 32 units per row, whose loop costs 2.53 ns a unit
      against 1.84 at 128 (float32).  The rows are split only where there
      are fewer unit shares than workers, into as few blocks as give each
      worker a share.
    """
    per_thread = _shares_per_thread(B)
    shares = per_thread * workers
    tiles = _tiles(B)
    if tiles <= 1:
        return _share_count(n_units, per_thread, workers), 1
    if _split_by_rows(B, workers, weight_bytes, row_split_max_bytes):
        return 1, min(tiles, workers * max(1, min(per_thread, n_units // SHARE_PANELS)), MAX_SHARES)
    wide = min(shares, n_units // SHARE_PANELS)
    unit_shares = max(1, min(n_units, max(workers, wide - wide % workers), MAX_SHARES))
    row_shares = min(tiles, -(-workers // unit_shares), max(1, MAX_SHARES // unit_shares))
    return unit_shares, row_shares


#: Bytes of the forward's buffer of pre-activations ``z``, which holds the
#: input projection of a few steps at a time so that it stays in cache
#: (bench/NOTES.md, "Packed panels").
Z_BYTES = 512 * 1024


@numba.njit(**SERIAL)
def _z_rows(B, Hp, itemsize):
    """Rows of ``z`` (R, 4Hp): at least one step's B, else as many as fit in Z_BYTES."""
    return max(B, Z_BYTES // (4 * Hp * itemsize))


@numba.njit(**SERIAL)
def _unsaved_c_rows(N, B):
    """Rows of ``c`` for ``_lstm_forward`` when nothing is saved: two slots of
    B rows, or all N when N <= 2B (the kernel tells the layouts apart by c's rows)."""
    return N if N <= 2 * B else 2 * B


@numba.njit(**SERIAL)
def _use_threads(B, K, N, min_flop):
    """Whether per-step products (B, K) @ (K, N) are worth splitting between threads."""
    return 2 * B * K * N >= min_flop


@numba.njit(**SERIAL)
def _share(n, q, shares):
    """Share q of ``shares`` nearly equal contiguous shares of range(n): (lo, hi)."""
    return q * n // shares, (q + 1) * n // shares


@numba.njit(**SERIAL)
def _share_count(n, per_worker, workers):
    """Shares of n items (panels, feature groups) for ``workers`` workers: up to
    ``per_worker`` each, one item each at the least, at most MAX_SHARES (the
    bits of a counter), and at least one."""
    return max(1, min(n, per_worker * workers, MAX_SHARES))


@numba.njit(**SERIAL)
def _forward_input(z, x, W_x, b, u_lo, u_hi):
    """z[:, unit panels u_lo..u_hi of each gate] = b + x @ W_x (all rows of x)."""
    NR = W_x.shape[2]
    n_units = W_x.shape[0] // 4
    for k in range(4):
        p_lo, p_hi = k * n_units + u_lo, k * n_units + u_hi
        _fill_columns(z, b, p_lo * NR, p_hi * NR)
    _gate_panel_product(z, x, W_x, u_lo, u_hi)


@numba.njit(**SERIAL)
def _split_tiles(rows):
    """Tiles of a step's ``rows`` rows as its shares split them (``_share_rects``):
    TILE_ROWS rows each, the last one short, or, when the products walk the
    rows left over with the last full tile (``numba_lstm._panels._tail_joins``),
    the last tile taller.  With AVX-512 that is so only for 1, 3 or 5 rows
    left over.  Counting every tail with the last tile, where each thread
    then takes half the units of that tile, made the two-thread forward
    slower for the others, float32 against tiles of 8 and a short one: B =
    12 (6 + 6) 1.09-1.13x, 14 (7 + 7) 1.35x, 15 (8 + 7) 1.18x in one run and
    0.87x in another; and faster for 9 (4 + 5) 0.80-0.82x, 11 0.80, 13
    0.89-0.91 (bench/NOTES.md "Session 28")."""
    if _tail_joins(rows):
        return rows // TILE_ROWS
    return _tiles(rows)


@numba.njit(**SERIAL)
def _tile_row(rows, t):
    """First row of tile t of ``_split_tiles(rows)`` (``rows`` from the end of the last tile on)."""
    return rows if t >= _split_tiles(rows) else t * TILE_ROWS


@numba.njit(**SERIAL)
def _row_block(rows, rb, row_shares):
    """Rows (lo, hi) of block rb of ``row_shares`` of a step's ``rows``: whole
    tiles (``_split_tiles``), as even as they divide (a block may be empty)."""
    lo, hi = _share(_split_tiles(rows), rb, row_shares)
    return _tile_row(rows, lo), _tile_row(rows, hi)


@numba.njit(**SERIAL)
def _pair_of_cell(x, rows, n_units):
    """The (tile, panel) pair ``t * n_units + u`` in which cell x of a step's
    rows times its ``n_units`` panels falls, the cells counted tile after
    tile (``_split_tiles``), in a tile panel after panel, a pair's cells
    being its tile's rows; ``rows * n_units`` falls past the last pair."""
    last = max(_split_tiles(rows) - 1, 0)
    before = _tile_row(rows, last) * n_units  # cells of the tiles before the last
    if x <= before:
        return x // TILE_ROWS
    return last * n_units + (x - before) // (rows - _tile_row(rows, last))


@numba.njit(**SERIAL)
def _share_rects(q, rows, n_units, unit_shares, row_shares, workers):
    """Share q of a step of ``rows`` rows (``_forward_shares``, ``_backward_shares``): three
    rectangles ``(u_lo, u_hi, r_lo, r_hi)`` of unit panels and rows, some of
    them empty.

    With ``unit_shares`` > 1, unit share q // row_shares of row block
    q % row_shares (``_row_block``), one rectangle.  With one unit share, the
    step's tiles (``_split_tiles``) times its ``n_units`` panels, tile after
    tile, are cut into parts of nearly equal rows times panels (at
    ``_pair_of_cell``), one for each of the ``workers``' blocks of shares
    (``numba_lstm._sync.home``), and each part into its block's shares: the
    part's whole tiles split by panels between them, the first share also
    taking the end of the tile the part starts in and the last the start of
    the tile it ends in (a cut by whole tiles had each share read all the
    panels of the weights once more, ``_forward_shares``).  Whole
    tiles alone gave one thread a tile more than the other whenever a step
    had an odd number of them, as the steps of variable lengths do; a part
    cut into equal shares split a tile at almost every share.  Parts of
    equal (tile, panel) pairs gave the worker with the last, taller tile up
    to 3 rows more.
    """
    empty = (np.int64(0), np.int64(0), np.int64(0), np.int64(0))
    if unit_shares > 1:
        u_lo, u_hi = _share(n_units, q // row_shares, unit_shares)
        r_lo, r_hi = _row_block(rows, q % row_shares, row_shares)
        return (u_lo, u_hi, r_lo, r_hi), empty, empty
    parts = min(workers, row_shares)  # blocks that hold a share at the least
    w = np.int64(0)  # not a literal: see "Compile time"
    while home(w + 1, parts, row_shares) <= q:
        w += 1
    first, end = home(w, parts, row_shares), home(w + 1, parts, row_shares)  # the block's shares
    lo_cell, hi_cell = _share(rows * n_units, w, parts)
    lo, hi = _pair_of_cell(lo_cell, rows, n_units), _pair_of_cell(hi_cell, rows, n_units)  # the part's pairs
    t_lo, t_hi = -(-lo // n_units), hi // n_units  # its whole tiles
    if t_lo > t_hi:  # the part lies within one tile
        if q > first:
            return empty, empty, empty
        return (lo % n_units, hi % n_units, _tile_row(rows, t_hi), _tile_row(rows, t_lo)), empty, empty
    u_a, u_b = _share(n_units, q - first, end - first)
    whole = (u_a, u_b, _tile_row(rows, t_lo), _tile_row(rows, t_hi))
    head = tail = empty
    if q == first and lo % n_units > 0:
        head = (lo % n_units, n_units, _tile_row(rows, t_lo - 1), _tile_row(rows, t_lo))
    if q == end - 1 and hi % n_units > 0:
        tail = (np.int64(0), hi % n_units, _tile_row(rows, t_hi), _tile_row(rows, t_hi + 1))
    return head, whole, tail


@numba.njit(**SERIAL)
def _forward_input_block(z_chunk, x_chunk, chunk_sizes, W_x, b, q, unit_shares, row_shares, workers):
    """``_forward_input`` of share q (``_share_rects``) of every step of a chunk.

    ``chunk_sizes``: the rows of the chunk's steps, one after the other in
    ``z_chunk`` / ``x_chunk``.  Rectangles of the same units whose rows
    follow each other (all of each step's rows, with one share) make one
    product.
    """
    n_units = W_x.shape[0] // 4
    # int64, not a literal 0: _forward_input would compile once more for it (see "Compile time")
    start = run_lo = run_hi = run_u_lo = run_u_hi = np.int64(0)
    for Bs in chunk_sizes:
        for u_lo, u_hi, r_lo, r_hi in _share_rects(q, Bs, n_units, unit_shares, row_shares, workers):
            if u_hi > u_lo and r_hi > r_lo:
                if start + r_lo != run_hi or u_lo != run_u_lo or u_hi != run_u_hi:
                    if run_hi > run_lo:
                        _forward_input(
                            z_chunk[run_lo:run_hi], x_chunk[run_lo:run_hi], W_x, b, run_u_lo, run_u_hi
                        )
                    run_lo, run_u_lo, run_u_hi = start + r_lo, u_lo, u_hi
                run_hi = start + r_hi
        start += Bs
    if run_hi > run_lo:
        _forward_input(z_chunk[run_lo:run_hi], x_chunk[run_lo:run_hi], W_x, b, run_u_lo, run_u_hi)


@numba.njit(**SERIAL, inline="always")  # see "Per-step calls" above
def _forward_step(gates, c, tanh_c, m, z, h_prev, c_prev, W_h, u_lo, u_hi, r_lo, r_hi):
    """One step for the unit panels u_lo..u_hi and the rows r_lo..r_hi: z += h_{t-1} @ W_h, then the gates
    (those of ``_gates_forward_unsaved`` when ``gates`` has no rows)."""
    NR = W_h.shape[2]
    z_rows = z[r_lo:r_hi]
    _gate_panel_product(z_rows, h_prev[r_lo:r_hi], W_h, u_lo, u_hi)
    j_lo, j_hi = u_lo * NR, min(u_hi * NR, c.shape[1])
    if gates.shape[0] == 0:
        _gates_forward_unsaved(c[r_lo:r_hi], m[r_lo:r_hi], z_rows, c_prev[r_lo:r_hi], j_lo, j_hi)
    else:
        _gates_forward(
            gates[r_lo:r_hi], c[r_lo:r_hi], tanh_c[r_lo:r_hi], m[r_lo:r_hi], z_rows, c_prev[r_lo:r_hi], j_lo, j_hi,
        )  # fmt: skip


@numba.njit(**SERIAL, inline="always")  # see "Per-step calls" above
def _forward_share(
    gates, c, tanh_c, m, z, h_prev, c_prev, z_chunk, x_chunk, chunk_sizes, W_x, b, W_h, q, unit_shares,
    row_shares, workers,
):  # fmt: skip
    """Share q of a step's work (``_share_rects``).

    gates .. c_prev: the step's rows of the arrays of ``_forward_step``;
    ``z_chunk``, ``x_chunk``, ``chunk_sizes``: the steps whose input
    projection is due before this one (none but at the first step of a
    chunk).  The projection of a share's rectangles is needed only by the
    same share of the chunk's steps, so both run in one parallel region.
    """
    if x_chunk.shape[0] > 0:
        _forward_input_block(z_chunk, x_chunk, chunk_sizes, W_x, b, q, unit_shares, row_shares, workers)
    rects = _share_rects(q, c.shape[0], W_h.shape[0] // 4, unit_shares, row_shares, workers)
    for u_lo, u_hi, r_lo, r_hi in rects:
        if u_hi > u_lo and r_hi > r_lo:
            _forward_step(gates, c, tanh_c, m, z, h_prev, c_prev, W_h, u_lo, u_hi, r_lo, r_hi)


@numba.njit(**SERIAL)
def _project(y, y_pad, m, W_hr, p_lo, p_hi):
    """y[:, panels p_lo..p_hi] = m @ W_hr, through the padded buffer y_pad."""
    NR = W_hr.shape[2]
    lo, hi = p_lo * NR, min(p_hi * NR, y.shape[1])
    _zero_columns(y_pad, p_lo * NR, p_hi * NR)
    _panel_product(y_pad, m, W_hr, p_lo, p_hi)
    _copy_columns(y, y_pad, lo, hi)


@numba.njit(**SERIAL)
def _forward_steps(
    y, m, c, gates, tanh_c, z, y_pad, x, W_x, W_h, b, W_hr, h0, c0, batch_sizes, unit_shares, row_shares,
    proj_shares, sync, worker, workers,
):  # fmt: skip
    """One thread's walk through the sequence of ``_lstm_forward``: at every
    step, the shares it can take (its own block of them first,
    ``numba_lstm._sync.home``), then a wait for the others'."""
    T = batch_sizes.size
    offsets = _offsets(batch_sizes)
    N = offsets[T]
    shares = unit_shares * row_shares  # share q: _share_rects
    unit_home, proj_home = home(worker, workers, shares), home(worker, workers, proj_shares)
    saved = gates.shape[0] == N  # else gates and tanh_c have no rows, or one step's
    c_saved = c.shape[0] == N  # else c holds two slots of c.shape[0] // 2 rows, for odd and even steps
    half = c.shape[0] // 2
    n_proj = W_hr.shape[0]
    R = z.shape[0]
    chunk_end = 0  # first step whose input projection is not yet in z
    z_base = 0  # packed row held by z's first row
    for t in range(T):
        Bt = batch_sizes[t]
        if Bt == 0:
            break
        rows = 0  # rows of x to project into z before this step
        if t == chunk_end:
            # The next steps that fit in z: their input projection is one
            # product of many rows, off the sequential path.
            while chunk_end < T and batch_sizes[chunk_end] > 0 and rows + batch_sizes[chunk_end] <= R:
                rows += batch_sizes[chunk_end]
                chunk_end += 1
            z_base = offsets[t]
        lo, hi = offsets[t], offsets[t] + Bt
        if t == 0:
            h_prev, c_prev = h0[:Bt], c0[:Bt]
        else:
            h_prev = y[offsets[t - 1] : offsets[t - 1] + Bt]
            prev_lo = offsets[t - 1] if c_saved else (t - 1) % 2 * half
            c_prev = c[prev_lo : prev_lo + Bt]
        g_lo = lo if saved else 0
        c_lo = lo if c_saved else t % 2 * half
        m_t = m[lo:hi] if m.shape[0] == N else m[:Bt]
        gates_t, c_t, tanh_c_t = gates[g_lo : g_lo + Bt], c[c_lo : c_lo + Bt], tanh_c[g_lo : g_lo + Bt]
        z_t = z[lo - z_base : hi - z_base]
        z_chunk, x_chunk = z[:rows], x[z_base : z_base + rows]
        chunk_sizes = batch_sizes[t : chunk_end if rows > 0 else t]
        units, projection = 2 * t, 2 * t + 1  # the step's phases in sync
        q = claim(sync, units, shares, unit_home)
        while q >= 0:
            _forward_share(
                gates_t, c_t, tanh_c_t, m_t, z_t, h_prev, c_prev, z_chunk, x_chunk, chunk_sizes, W_x, b, W_h, q,
                unit_shares, row_shares, workers,
            )  # fmt: skip
            finish(sync, units)
            q = claim(sync, units, shares, unit_home)
        wait_for(sync, units, shares)
        if n_proj > 0:
            q = claim(sync, projection, proj_shares, proj_home)
            while q >= 0:
                p_lo, p_hi = _share(n_proj, q, proj_shares)
                _project(y[lo:hi], y_pad[:Bt], m_t, W_hr, p_lo, p_hi)
                finish(sync, projection)
                q = claim(sync, projection, proj_shares, proj_home)
            wait_for(sync, projection, proj_shares)


@numba.njit(**PARALLEL)
def _lstm_forward(
    y, m, c, gates, tanh_c, z, y_pad, x, W_x, W_h, b, W_hr, h0, c0, batch_sizes, workers, row_split_max_bytes, sync,
):  # fmt: skip
    """Forward pass over a whole packed sequence.

    y      (N, P)     out: h_t of every step
    m      (N, H)     out: o * tanh(c_t); pass ``y`` itself when there is no
                      projection; with one, (B, H) work when nothing is saved
    c      (N, H)     out: c_t; or, when nothing is saved, (2B, H) with N > 2B:
                      two slots of B rows, c_t of even steps in the first and
                      of odd steps in the second (one slot, c_t written over
                      c_{t-1}, ran 4-11% slower, bench/NOTES.md "Session 21")
    gates  (N, 4H)    out: activations i, f, g, o (saved for the backward), or
                      (0, 4H) when nothing is saved (``_gates_forward_unsaved``;
                      (B, 4H) works too, as a step's work array)
    tanh_c (N, H)     out: tanh(c_t) (saved for the backward), or (0, H) or
                      (B, H) as gates
    z      (R, 4Hp)   work: pre-activations of R >= B rows, gate blocks padded to
                      Hp = padded(H); the input projection fills it a few steps
                      at a time, so that it stays in cache
    y_pad  (B, Pp)    work: one step of the projection (projection only)
    x      (N, I)     in
    W_x    (4Hp/NR, I, NR)  in: input rows of W, ``pack_panels(W_x, groups=4)``
    W_h    (4Hp/NR, P, NR)  in: recurrent rows of W, packed the same way
    b      (4Hp,)     in: bias, ``pad_columns(b, groups=4)``
    W_hr   (Pp/NR, H, NR)   in: projection, ``pack_panels(W_hr)``; (0, 0, 0) for none
    h0     (B, P)     in
    c0     (B, H)     in
    batch_sizes (T,)  in: rows of each step, non-increasing
    workers           iterations of the parallel region, one per Numba thread
                      (1: no parallel region); each step is split into
                      ``ONE_TILE_SHARES_PER_THREAD`` shares per worker (one
                      tile of rows) or up to ``FORWARD_SHARES_PER_THREAD``
                      (``_forward_shares``)
    row_split_max_bytes  ROW_SPLIT_MAX_BYTES (``_forward_shares``)
    sync   (4T,)      work: ``counters(2T)``, each step's taken shares and done counters
                      (``numba_lstm._sync``), for the units and the projection

    One parallel region runs the whole sequence: each thread walks every
    step, takes shares of it through the step's counters in ``sync`` and
    waits until all are done before the next step (a region per step cost
    more than the step at B = 1, bench/NOTES.md "Session 7").  A share is a
    contiguous range of the panels of hidden units (NR units each) and a
    block of the step's rows (``_forward_shares``).  Every worker walks the
    steps and asks first for the shares of its own block
    (``numba_lstm._sync``), so a thread keeps its panels in cache from step
    to step, while a thread that runs late leaves the end of its block to
    the others.  For its units and rows a thread computes the input
    projection when a chunk of z is due, the four gate blocks of ``z`` and
    then the gates; a projection is a second phase of the step, which needs
    all of m_t.
    """
    B = batch_sizes[0] if batch_sizes.size > 0 else 0
    weight_bytes = (W_x.size + W_h.size) * W_h.itemsize
    unit_shares, row_shares = _forward_shares(
        W_h.shape[0] // 4, B, workers, weight_bytes, row_split_max_bytes
    )
    proj_shares = _share_count(W_hr.shape[0], _shares_per_thread(B), workers)
    workers = min(workers, max(unit_shares * row_shares, proj_shares))
    if workers > 1:
        for worker in numba.prange(workers):
            _forward_steps(
                y, m, c, gates, tanh_c, z, y_pad, x, W_x, W_h, b, W_hr, h0, c0, batch_sizes,
                unit_shares, row_shares, proj_shares, sync, np.int64(worker), workers,
            )  # fmt: skip
    else:
        one = np.int64(1)
        _forward_steps(
            y, m, c, gates, tanh_c, z, y_pad, x, W_x, W_h, b, W_hr, h0, c0, batch_sizes, one, one, one, sync,
            np.int64(0), one,
        )  # fmt: skip


#: ``LSTM.step`` splits a step of at most SMALL_ROWS rows of a layer between
#: Numba's threads (``_split_step``) when its W and W_hr have at least this
#: many bytes.  One
#: thread streams W from L3 at about 60 GB/s; the split halves that on two
#: threads but costs about 20 us a call from Python (a parallel region, and
#: waking the other thread between calls).  LSTM.step, B = 1, I = H, split
#: against not split, 100-step loops with 0 / 200 us of Python between
#: steps: float32 H = 320 (3.3 MB) 1.11 / -, H = 384 (4.7 MB) 0.77 / 0.79,
#: H = 512 (8 MB) 0.60 / 0.64; float64 H = 192 (2.4 MB) 1.20 / -, H = 256
#: (4 MB) 0.91-0.95 / 0.75 (bench/NOTES.md, "Session 18").  With a
#: projection P = H / 2: float32 H = 420 (4.4 MB) 0.75 / 0.91, H = 512
#: (6.5 MB) 0.64 / 0.67; float64 H = 320 (5.1 MB) 0.71 / - ("Session 19").
STEP_SPLIT_MIN_BYTES = 4 * 1024 * 1024

#: Rows of W that a share of ``_split_step``'s product keeps at the least.
STEP_SPLIT_MIN_ROWS = 64

#: Shares of ``_split_step`` for a layer with enough rows: fixed by the
#: layer, not by the number of threads, so that the result is the same for
#: any thread count; the threads beyond it stay idle.  Measured against 2
#: and 4 (bench/NOTES.md, "Session 20").
STEP_SPLIT_SHARES = 8


@numba.njit(**SERIAL)
def _add_concat_rows(z, x_t, h, W, k_lo, k_hi):
    """z += [x_t, h][:, k_lo:k_hi] @ W[k_lo:k_hi]: rows k_lo..k_hi of the step's product."""
    I = x_t.shape[1]
    if k_lo < I:
        _add_matmul_rows(z, x_t[:, k_lo : min(k_hi, I)], W[k_lo : min(k_hi, I)])
    if k_hi > I:
        lo = max(k_lo, I)
        _add_matmul_rows(z, h[:, lo - I : k_hi - I], W[lo:k_hi])


#: Phase numbers 0, 1, 2 of a region's ``sync`` as int64 values, for the
#: workers that number their phases: a literal argument (``claim(sync, 0,
#: ...)``) made Numba compile ``claim``, ``finish`` and ``wait_for`` once
#: more for each literal (bench/NOTES.md, "Session 23").
_PHASES = (np.int64(0), np.int64(1), np.int64(2))


@numba.njit(**PARALLEL)
def _split_step(h_out, c_out, z_parts, gates, tanh_c, c_prev, x_t, h, c, W, b, m, W_hr, h_parts, sync):
    """One step of at most SMALL_ROWS rows (``jit.step_into``), split between threads.

    h_out (B, P), c_out (B, H) out (may be h and c: h is read only in phase 0)
    z_parts  (S, B, 4H)        work: one partial pre-activation per share
    gates    (B, 4H)           work
    tanh_c, c_prev (B, H)      work
    x_t (B, I), h (B, P), c (B, H), W (I + P, 4H), b (4H,)   in
    m        (B, H)            out: o * tanh(c_t), ``h_out`` itself without projection
    W_hr     (H, P)            in: projection; no rows (``W[:0]``) for none
    h_parts  (S, B, P)         work: partial projections; ``z_parts[:0]`` for none
    sync     (6,)              work: ``counters(3)``, zeroed

    S shares per phase, fixed by the caller (the shape of ``z_parts``), and
    one worker (``prange`` iteration) per Numba thread, S at the most.  The
    shares' bounds depend on S alone, and each share's sums run in an order
    fixed by S, so the result is the same for any number of threads, one
    included, and any timing.  Phase 0: share q adds its contiguous block
    of the rows of W, ``[x_t, h][:, block] @ W[block]``, into ``z_parts[q]``
    (the bias too for q = 0), reading whole rows of W in place, as
    ``step_into`` does; each worker asks first for the start of its own
    contiguous block of shares (``home``), so that while the threading
    layer gives each iteration the same thread from call to call, each core
    reads the same rows and keeps what fits of them in its cache.  Phase 1:
    share q sums the partial products of its units, in the order 0..S-1,
    and runs their gate pass; with a projection it then adds its units'
    part of ``m @ W_hr``, whole rows of W_hr, into ``h_parts[q]``.  Phase 2
    (projection only): share q sums its columns of the partial projections
    into h_out, in the order 0..S-1.
    """
    S = z_parts.shape[0]
    workers = min(thread_count(), S)
    if workers > 1:
        for worker in numba.prange(workers):
            _split_step_shares(
                h_out, c_out, z_parts, gates, tanh_c, c_prev, x_t, h, c, W, b, m, W_hr, h_parts, sync,
                home(np.int64(worker), workers, S),
            )  # fmt: skip
    else:  # the same shares, in order, without opening a parallel region
        _split_step_shares(
            h_out, c_out, z_parts, gates, tanh_c, c_prev, x_t, h, c, W, b, m, W_hr, h_parts, sync, np.int64(0)
        )


@numba.njit(**SERIAL)
def _split_step_shares(
    h_out, c_out, z_parts, gates, tanh_c, c_prev, x_t, h, c, W, b, m, W_hr, h_parts, sync, first
):
    """One worker of ``_split_step``: the shares it claims in each phase,
    asking first for share ``first``."""
    S = z_parts.shape[0]
    K = W.shape[0]
    H = c.shape[1]
    P = h_out.shape[1]
    projected = W_hr.shape[0] > 0
    products, gate_pass, projection = _PHASES  # int64 values, not literals (see "Compile time")
    q = claim(sync, products, S, first)
    while q >= 0:
        k_lo = q * K // S // 4 * 4
        k_hi = K if q == S - 1 else (q + 1) * K // S // 4 * 4
        z = z_parts[q]
        if q == 0:
            _fill_columns(z, b, np.int64(0), z.shape[1])
        else:
            _zero_columns(z, np.int64(0), z.shape[1])
        _add_concat_rows(z, x_t, h, W, k_lo, k_hi)
        finish(sync, products)
        q = claim(sync, products, S, first)
    wait_for(sync, products, S)
    q = claim(sync, gate_pass, S, first)
    while q >= 0:
        # Units in multiples of 16: each share's columns start on a
        # cache line (float32) in every gate block.
        j_lo, j_hi = _split_share(H, q, S)
        z = z_parts[0]
        for p in range(1, S):
            _add_parts(z, z_parts[p], j_lo, j_hi, H, np.int64(4))
        _copy_columns(c_prev, c, j_lo, j_hi)
        _gates_forward(gates, c_out, tanh_c, m, z, c_prev, j_lo, j_hi)
        if projected:
            _zero_columns(h_parts[q], np.int64(0), P)
            _add_matmul_rows(h_parts[q], m[:, j_lo:j_hi], W_hr[j_lo:j_hi])
        finish(sync, gate_pass)
        q = claim(sync, gate_pass, S, first)
    if projected:
        wait_for(sync, gate_pass, S)
        q = claim(sync, projection, S, first)
        while q >= 0:
            p_lo, p_hi = _split_share(P, q, S)
            _copy_columns(h_out, h_parts[0], p_lo, p_hi)
            for p in range(1, S):
                _add_parts(h_out, h_parts[p], p_lo, p_hi, P, np.int64(1))
            finish(sync, projection)
            q = claim(sync, projection, S, first)


@numba.njit(**SERIAL)
def _split_share(n, q, S):
    """Share q of S of range(n) for ``_split_step``'s phases by columns: (lo, hi),
    bounds in multiples of 16, so that a share's columns start on a cache
    line (float32); the last share takes the rest."""
    return q * n // S // 16 * 16, (n if q == S - 1 else (q + 1) * n // S // 16 * 16)


@numba.njit(**SERIAL)
def _add_parts(out, part, j_lo, j_hi, width, blocks):
    """out[:, columns j_lo..j_hi of each of ``blocks`` blocks of ``width``] += part[same]."""
    for r in range(out.shape[0]):
        out_r, part_r = out[r], part[r]
        for g in range(blocks):
            out_g, part_g = (
                out_r[g * width + j_lo : g * width + j_hi],
                part_r[g * width + j_lo : g * width + j_hi],
            )
            for j in range(j_hi - j_lo):
                out_g[j] += part_g[j]


@numba.njit(**SERIAL)
def _backward_dh(dh_pad, dh_all, dgates_next, dy, W_hT, p_lo, p_hi):
    """dL/dh_t for the columns of panels p_lo..p_hi.

    dh_pad[:B_{t+1}] = dgates_{t+1} @ W_h.T, then dh_pad[:B_t] += dy_t; rows
    past B_{t+1} keep the gradient of their sequence's last state.  With a
    projection, dh_all (B_t, P) receives a copy.
    """
    NR = W_hT.shape[2]
    P = dy.shape[1]
    lo, hi = p_lo * NR, min(p_hi * NR, P)
    B_next = dgates_next.shape[0]
    if B_next > 0:
        rows = dh_pad[:B_next]
        _zero_columns(rows, p_lo * NR, p_hi * NR)
        _panel_product(rows, dgates_next, W_hT, p_lo, p_hi)
    for r in range(dy.shape[0]):
        dh_r, dy_r = dh_pad[r, lo:hi], dy[r, lo:hi]
        for j in range(hi - lo):
            dh_r[j] += dy_r[j]
    _copy_columns(dh_all, dh_pad, lo, hi)  # no rows without a projection


@numba.njit(**SERIAL)
def _backward_shares(n_h, B, workers, weight_bytes, projected, row_split_max_bytes):
    """(h_shares, row_shares): how ``_lstm_backward`` splits each step of B rows, one share per worker.

    Share q is what ``_share_rects`` makes of it, with panels of dh's
    columns (and of the units without a projection) for units.  As in
    ``_forward_shares``, a step of at least a tile of rows per worker whose
    weights fit ``row_split_max_bytes`` is split by rows alone, so that a
    thread keeps its sequences from step to step, and its rows times
    panels in halves: whole tiles gave one thread a tile more whenever a
    step had an odd number.  Without that, and with a projection (whose
    second phase needs every column of dh), by panels.
    """
    if not projected and workers > 1 and _split_by_rows(B, workers, weight_bytes, row_split_max_bytes):
        return 1, min(workers, MAX_SHARES)
    return _share_count(n_h, np.int64(1), workers), 1


@numba.njit(**SERIAL, inline="always")  # see "Per-step calls" above
def _backward_share(
    dgates_t, dc_t, dm_t, dh_t, W_hrT, gates_t, tanh_c_t, c_prev, NR, dh_all_t, dgates_next, dy_t, W_hT, gates_too,
    p_lo, p_hi, r_lo, r_hi,
):  # fmt: skip
    """dL/dh_t and (``gates_too``) the gate gradients of one step, for panels p_lo..p_hi and rows r_lo..r_hi.

    dgates_t .. NR: the step's arrays, as ``_backward_gates`` takes them;
    its ``dh_t`` has the rows of the step or of the next one, whichever has
    more (t = -1: only the next).  Every slice stops at its array's rows.
    """
    _backward_dh(
        dh_t[r_lo:r_hi], dh_all_t[r_lo:r_hi], dgates_next[r_lo:r_hi], dy_t[r_lo:r_hi], W_hT, p_lo, p_hi
    )
    if gates_too:
        _backward_gates(
            dgates_t[r_lo:r_hi], dc_t[r_lo:r_hi], dm_t[r_lo:r_hi], dh_t[r_lo:r_hi], W_hrT, gates_t[r_lo:r_hi],
            tanh_c_t[r_lo:r_hi], c_prev[r_lo:r_hi], NR, p_lo, p_hi,
        )  # fmt: skip


@numba.njit(**SERIAL)
def _backward_gates(dgates, dc, dm_pad, dh_pad, W_hrT, gates, tanh_c, c_prev, NR, p_lo, p_hi):
    """Gate gradients of one step for the units of panels p_lo..p_hi (NR units each).

    With a projection (W_hrT non-empty) dm = dh @ W_hr.T first goes to dm_pad;
    without one dm is dh itself (``dh_pad``).
    """
    if W_hrT.shape[0] > 0:
        _zero_columns(dm_pad, p_lo * NR, p_hi * NR)
        _panel_product(dm_pad, dh_pad, W_hrT, p_lo, p_hi)
        dm = dm_pad
    else:
        dm = dh_pad
    _gates_backward(dgates, dc, dm, gates, tanh_c, c_prev, p_lo * NR, min(p_hi * NR, dc.shape[1]))


#: Rows of the sequence per block of the backward (more when one step has
#: more): each block's gate gradients, its rows of ``[x, h_{t-1}]``
#: (transposed) and its gate gradients packed into panels live in work arrays
#: of GRAD_ROWS rows / columns that stay in cache (a (I + P) x 512 block is
#: 1 MB at I = P = 256, float32), so the work arrays do not grow with the
#: sequence.  Each block reads and writes all of dW once: 512 rows instead
#: of 256 halve that traffic, which goes to L3 or memory when dW is larger
#: than L2 (backward 0.953 at 64×50×512×512, 0.960 at 128×50×1024×1024;
#: bench/NOTES.md, "Session 16").
GRAD_ROWS = 512

#: Rows of a block of the backward when a step is one tile of rows (B = 1):
#: a pipelined backward (``_pipelined``) starts its weight gradients once
#: the first block's steps are done, and shares out the last block's at the
#: end, so smaller blocks leave a thread idle for less time.
ONE_TILE_GRAD_ROWS = 128

#: Slots of the ring of gate gradients in a pipelined backward: how many
#: blocks of steps the thread walking them may run ahead of the weight
#: gradients before it helps with those.
PIPELINE_SLOTS = 4


#: Bytes of the packed weights that a step of the backward reads (W_h.T and
#: W_hr.T) up to which it may be pipelined (``_pipelined``): one thread
#: then walks every step, and reads all of them at each.  B = 1, backward,
#: pipelined against not, two threads, on a host with 512 KB of L2 a core:
#: float32 H = 64 (64 KB) 0.55-0.74, 128 (256 KB) 0.82-0.92, 192 (576 KB)
#: 1.00-1.11, 256 (1 MB) 1.19; float64 H = 96 (288 KB) 0.91-0.96, 128
#: (512 KB) 0.92-1.04, 256 (2 MB) 1.12 (bench/NOTES.md, "Session 25").
PIPELINE_MAX_BYTES = 384 * 1024


@numba.njit(**SERIAL)
def _pipelined(B, step_workers, grad_workers, step_weight_bytes):
    """Whether ``_lstm_backward`` pipelines its two workers: one of them walks
    the steps, the other computes the weight gradients of the blocks already
    walked (``_pipelined_worker``).  For steps of one tile of rows on two
    workers, whose packed weights (``step_weight_bytes``) stay in one core's
    cache (PIPELINE_MAX_BYTES): there splitting a step between the threads
    gains little (B = 1, I = H = 128, float32: 2.3-4.4 us a step on two
    threads, 3.8 on one), and the weight gradients scale little too (0.39
    against 0.60 ms for a block of 128 rows)."""
    return (
        _tiles(B) <= 1 and step_workers == 2 and grad_workers == 2 and step_weight_bytes <= PIPELINE_MAX_BYTES
    )


#: Rows of dW (features) per pass of the weight-gradient product over a
#: share's panels: GRAD_FEATURES x GRAD_ROWS of the transposed [x, h] (256 KB
#: in float32) stay in L2 while the panels go by.
GRAD_FEATURES = 128

#: Features (rows of the transposed ``[x, h_{t-1}]`` block) per unit of work
#: that the gather's shares are made of.
GATHER_FEATURES = 64


@numba.njit(**SERIAL)
def _prev_rows(prev, batch_sizes):
    """prev (N,) out: the row of y that holds h_{t-1} for each packed row, or -1 - r for row r of h0."""
    offsets = _offsets(batch_sizes)
    for t in range(batch_sizes.size):
        for r in range(batch_sizes[t]):
            prev[offsets[t] + r] = offsets[t - 1] + r if t > 0 else -1 - r


@numba.njit(**SERIAL)
def _transpose_into(out, a):
    """out (F, R) = a (R, F).T, 32 rows of a at a time (their lines stay in L1)."""
    R, F = a.shape
    for r_lo in range(0, R, 32):
        rows = a[r_lo : r_lo + 32]
        for j in range(F):
            out_j = out[j, r_lo : r_lo + 32]
            for r in range(rows.shape[0]):
                out_j[r] = rows[r, j]


@numba.njit(**SERIAL)
def _gather_transposed(AT, x, h0, y, prev, n_lo, n_hi, f_lo, f_hi):
    """AT[f, n - n_lo] = [x_n, h_{t-1}][f] for the rows n_lo <= n < n_hi and features f_lo <= f < f_hi.

    The h_{t-1} of consecutive rows are consecutive rows of y (or of h0)
    within a step, so they go over in runs.
    """
    I = x.shape[1]
    if f_lo < I:
        f_x = min(f_hi, I)
        _transpose_into(AT[f_lo:f_x, : n_hi - n_lo], x[n_lo:n_hi, f_lo:f_x])
    if f_hi > I:
        g_lo, g_hi = max(f_lo, I) - I, f_hi - I
        n = n_lo
        while n < n_hi:
            q = prev[n]
            step = 1 if q >= 0 else -1  # prev is -1 - r for row r of h0
            e = n + 1
            while e < n_hi and prev[e] == prev[e - 1] + step:
                e += 1
            src = y[q : q + e - n] if q >= 0 else h0[-1 - q : -1 - q + e - n]
            _transpose_into(AT[I + g_lo : I + g_hi, n - n_lo : e - n_lo], src[:, g_lo:g_hi])
            n = e


@numba.njit(**SERIAL)
def _add_packed_product(out, AT, panels, src, groups, n_lo, n_hi, p_lo, p_hi):
    """out panels p_lo..p_hi += AT[:, :n_hi - n_lo] @ rows n_lo..n_hi of src, each element's sum from zero.

    Packs those rows of src (K, N), in ``groups`` blocks of columns as
    ``pack_panels``, into panels p_lo..p_hi of ``panels`` (n_panels, R, NR)
    first (the thread that packs a panel is the one that uses it), then runs
    the product GRAD_FEATURES rows of AT at a time across all the panels:
    those rows stay in L2 while the panels go by.  Each element sums the
    rows from zero and adds that to out (``_panel_block_sums``).  The weight
    gradients: dW of a block (``_dW_panels``) and a projection's dW_hr
    (``_projection_grad_share``).
    """
    rows = n_hi - n_lo
    for k_lo in range(n_lo, n_hi, PACK_ROWS):
        # A few rows across all the panels, then the next: a panel at a time
        # would read each row of src from another page.
        k_hi = min(k_lo + PACK_ROWS, n_hi)
        for p in range(p_lo, p_hi):
            _pack_panel_rows(
                panels[p, k_lo - n_lo : k_hi - n_lo], src, panels.shape[0], groups, p, k_lo, k_hi
            )
    F = AT.shape[0]
    for f_lo in range(0, F, GRAD_FEATURES):
        f_hi = min(f_lo + GRAD_FEATURES, F)
        _panel_block_sums(out[f_lo:f_hi], AT[f_lo:f_hi], panels, p_lo, p_hi, np.int64(0), rows)


@numba.njit(**SERIAL)
def _dW_panels(dW_pad, db_pad, dG_block, AT, dgates, n_lo, n_hi, p_lo, p_hi):
    """dW panels p_lo..p_hi += [x, h].T @ dgates for the rows n_lo..n_hi (their bias gradient too).

    Through ``_add_packed_product``, so each element sums the block's rows
    from zero and adds that to dW.  Summed into dW directly, each element
    was one chain over all N rows, and float32 dW's error grew with N: 2.4x
    torch's at 1,600 rows, 11.7x at 16,000 and 15.2x at 80,000
    (bench/NOTES.md, "Session 37").
    """
    NR = dG_block.shape[2]
    _add_packed_product(dW_pad, AT, dG_block, dgates, np.int64(4), n_lo, n_hi, p_lo, p_hi)
    for p in range(p_lo, p_hi):
        block = dG_block[p, : n_hi - n_lo]
        db_p = db_pad[p * NR : (p + 1) * NR]
        for k in range(n_hi - n_lo):
            block_k = block[k]
            for j in range(NR):
                db_p[j] += block_k[j]


#: Shares per thread of each phase of ``_block_grads`` (the gather's groups
#: of features, dx's panels, dW's panels): a thread that falls behind leaves
#: the end of its block of them to the others.
GRAD_SHARES_PER_THREAD = np.int64(4)


@numba.njit(**SERIAL)
def _grads_share(
    dx_pad, dW_pad, db_pad, AT, dG_block, prev, dgates, x, h0, y, W_xT, n_lo, n_hi, sync, first_phase, worker,
    workers,
):  # fmt: skip
    """One share of the weight gradients and dx of the packed rows n_lo..n_hi, if one is free.

    The block's three phases are ``first_phase`` + 0, 1, 2 of ``sync``:
    gather shares, then dx shares, then (the gather done) dW shares, each
    phase's own block of shares first.  Returns 1 after computing a share, 0
    when none is free now (the others' shares are running, or dW waits for
    the gather) and -1 when every share of the block is done.
    """
    F = AT.shape[0]
    rows = n_hi - n_lo
    n_dW, n_dx = dG_block.shape[0], W_xT.shape[0]
    n_gather = -(-F // GATHER_FEATURES)
    gather_shares = _share_count(n_gather, GRAD_SHARES_PER_THREAD, workers)
    dx_shares = _share_count(n_dx, GRAD_SHARES_PER_THREAD, workers)
    dW_shares = _share_count(n_dW, GRAD_SHARES_PER_THREAD, workers)
    gather, dx, dW = first_phase, first_phase + 1, first_phase + 2
    q = claim(sync, gather, gather_shares, home(worker, workers, gather_shares))
    if q >= 0:
        g_lo, g_hi = _share(n_gather, q, gather_shares)
        f_lo, f_hi = g_lo * GATHER_FEATURES, min(g_hi * GATHER_FEATURES, F)
        _gather_transposed(AT, x, h0, y, prev, n_lo, n_hi, f_lo, f_hi)
        finish(sync, gather)
        return 1
    q = claim(sync, dx, dx_shares, home(worker, workers, dx_shares))
    if q >= 0:
        p_lo, p_hi = _share(n_dx, q, dx_shares)
        # All of k in one pass: blocks of 256 (a panel's block in L1) read and
        # wrote dx once per block; at I = H = 1024 the backward took 1.08-1.21x
        # the time on the Xeon of bench/NOTES.md "Session 41".  Same bits.
        _panel_product(dx_pad[n_lo:n_hi], dgates[:rows], W_xT, p_lo, p_hi)
        finish(sync, dx)
        return 1
    if not is_done(sync, gather, gather_shares):  # dW reads the whole of AT
        return 0
    q = claim(sync, dW, dW_shares, home(worker, workers, dW_shares))
    if q >= 0:
        p_lo, p_hi = _share(n_dW, q, dW_shares)
        _dW_panels(dW_pad, db_pad, dG_block, AT, dgates, np.int64(0), rows, p_lo, p_hi)
        finish(sync, dW)
        return 1
    return -1 if is_done(sync, dx, dx_shares) and is_done(sync, dW, dW_shares) else 0


@numba.njit(**SERIAL)
def _block_grads_worker(
    dx_pad, dW_pad, db_pad, AT, dG_block, prev, dgates, x, h0, y, W_xT, n_lo, n_hi, sync, worker, workers
):
    """One thread's part of ``_block_grads``: shares (``_grads_share``) until all are done."""
    spins = np.int64(0)  # not a literal: see "Compile time"
    while True:
        done = _grads_share(
            dx_pad, dW_pad, db_pad, AT, dG_block, prev, dgates, x, h0, y, W_xT, n_lo, n_hi, sync, _PHASES[0],
            worker, workers,
        )  # fmt: skip
        if done < 0:
            return
        spins = np.int64(0) if done > 0 else pause(spins)


@numba.njit(**PARALLEL)
def _block_grads(
    dx_pad, dW_pad, db_pad, AT, dG_block, prev, dgates, x, h0, y, W_xT, n_lo, n_hi, workers, sync
):
    """The weight gradients and dx of the packed rows n_lo..n_hi, whose gate gradients are dgates[:n_hi - n_lo].

    dx_pad, dW_pad, db_pad, AT, dG_block, prev, x, h0, y, W_xT: as in
    ``_lstm_backward``; sync: ``counters(3)``, zeroed here (all of it).  In one parallel
    region of ``workers`` threads, each takes shares (``numba_lstm._sync``)
    of three phases: gather ``[x, h_{t-1}]`` of the rows, transposed (groups
    of features); dx of the rows = dgates @ W_x.T (dx's panels); then, once
    the gather is done, dW += that @ the rows' gate gradients (dW's panels,
    each share packing its own panels' gradients).
    """
    reset(sync)
    arrays = (dx_pad, dW_pad, db_pad, AT, dG_block, prev, dgates, x, h0, y, W_xT)
    if workers > 1:
        for worker in numba.prange(workers):
            _block_grads_worker(*arrays, n_lo, n_hi, sync, np.int64(worker), workers)
    else:
        _block_grads_worker(*arrays, n_lo, n_hi, sync, np.int64(0), np.int64(1))


@numba.njit(**SERIAL)
def _projection_grad_share(dW_hrT_pad, dhT, m_panels, m, dh_all, p_lo, p_hi):
    """dW_hrT_pad panels p_lo..p_hi += dh_all.T @ m, in blocks of R rows, each summed apart.

    dhT (P, R) work of this share alone: a block of dh_all, transposed;
    m_panels (Hp/NR, R, NR) work: a block of m packed as panels, of which
    this share writes and reads its own panels p_lo..p_hi.  The blocks are
    the same for any number of shares, and so are the bits
    (``_panel_block_sums``, as dW).
    """
    N = dh_all.shape[0]
    R = dhT.shape[1]
    for n_lo in range(0, N, R):
        n_hi = min(n_lo + R, N)
        _transpose_into(dhT[:, : n_hi - n_lo], dh_all[n_lo:n_hi])
        _add_packed_product(dW_hrT_pad, dhT, m_panels, m, np.int64(1), n_lo, n_hi, p_lo, p_hi)


@numba.njit(**PARALLEL)
def _projection_grad(dW_hrT_pad, dhT, m_panels, m, dh_all, workers):
    """dW_hrT_pad (P, Hp) += dh_all.T @ m: the projection's weight gradient, transposed.

    dW_hrT_pad (P, Hp) zeros; out: dW_hr.T in the first H columns
    dhT (workers, P, R) work: each worker's block of dh_all, transposed
    m_panels (Hp/NR, R, NR) work: a block of m in panels
    m (N, H), dh_all (N, P)  in: the forward's o * tanh(c_t) and the
                       backward's dL/dh_t of every step
    workers            iterations of the parallel region (1: none); each
                       takes a contiguous share of the panels of H

    Transposed, so that the threads share the panels of H, wider than P,
    and each transposes the narrower dh_all.  On Numba's threads, not BLAS:
    BLAS's threads spin for a while after each call (OpenBLAS's
    ``OPENBLAS_THREAD_TIMEOUT``), so a product through ``np.dot`` here kept
    a core busy through the next forward and backward of a training loop,
    which then ran on one core (bench/NOTES.md, "Session 38").
    """
    n_panels = m_panels.shape[0]
    if workers > 1:
        for worker in numba.prange(workers):
            p_lo, p_hi = _share(n_panels, np.int64(worker), workers)
            _projection_grad_share(dW_hrT_pad, dhT[worker], m_panels, m, dh_all, p_lo, p_hi)
    else:
        _projection_grad_share(dW_hrT_pad, dhT[0], m_panels, m, dh_all, np.int64(0), n_panels)


@numba.njit(**SERIAL)
def _step_blocks(offsets, R):
    """t_lo of each block of the backward, from the last block of steps to the first.

    Block k holds the steps t_lo..t_hi - 1, t_hi the t_lo of block k - 1 (T
    for block 0): as many whole steps as fit in R rows, one at the least.
    """
    T = offsets.size - 1
    t_los = np.empty(T, np.int64)
    n, t_hi = 0, T
    while t_hi > 0:
        t_lo = t_hi - 1
        while t_lo > 0 and offsets[t_hi] - offsets[t_lo - 1] <= R:
            t_lo -= 1
        t_los[n] = t_lo
        n += 1
        t_hi = t_lo
    return t_los[:n]


@numba.njit(**SERIAL)
def _block_bounds(k, t_los, offsets):
    """Block k of ``_step_blocks`` as ``(t_hi, t_lo, n_lo, n_hi)``: its steps
    t_lo..t_hi - 1 and their packed rows n_lo..n_hi - 1."""
    t_hi = offsets.size - 1 if k == 0 else t_los[k - 1]
    t_lo = t_los[k]
    return t_hi, t_lo, offsets[t_lo], offsets[t_hi]


@numba.njit(**SERIAL)
def _backward_steps(
    dh_pad, dc, dh_all, dm_pad, dG_slot, dgates_next, dy, c0, c, gates, tanh_c, W_hT, W_hrT,
    offsets, batch_sizes, t_hi, t_end, n_lo, h_shares, row_shares, m_shares, sync, worker, workers,
):  # fmt: skip
    """One thread's walk through the steps t_hi - 1 down to t_end of one block of ``_lstm_backward``.

    ``dG_slot``: the block's slot of the ring (row 0 is packed row n_lo);
    ``dgates_next``: the gate gradients of step t_hi (no rows after the last
    step).  At every step, the shares the thread can take (its own block of
    them first), then a wait for the others' (``numba_lstm._sync``).
    t = -1 only finishes dh0.
    """
    n_h, n_m = W_hT.shape[0], W_hrT.shape[0]
    projected = n_m > 0
    shares = h_shares * row_shares  # share q: _share_rects, panels of dh's columns for units
    h_home, m_home = home(worker, workers, shares), home(worker, workers, m_shares)
    NR = W_hT.shape[2]
    for t in range(t_hi - 1, t_end - 1, -1):
        B_next = dgates_next.shape[0]
        Bt = batch_sizes[t] if t >= 0 else 0
        lo = offsets[t] if t >= 0 else n_lo
        hi = lo + Bt
        dgates_t = dG_slot[lo - n_lo : hi - n_lo]
        if B_next == 0 and Bt == 0:
            dgates_next = dgates_t
            continue
        dy_t = dy[lo:hi]
        dh_all_t = dh_all[lo:hi] if projected else dh_all
        if t <= 0:
            c_prev = c0[:Bt]
        else:
            c_prev = c[offsets[t - 1] : offsets[t - 1] + Bt]
        # One step's arrays, the same for every share; dh_pad has the rows
        # that dL/dh_t reaches (B_next <= Bt but at t = -1).
        rows = max(Bt, B_next)
        dc_t, dm_t, dh_t, gates_t, tanh_c_t = dc[:Bt], dm_pad[:Bt], dh_pad[:rows], gates[lo:hi], tanh_c[lo:hi]
        gates_too = Bt > 0 and not projected
        h_phase, m_phase = 2 * (t + 1), 2 * (t + 1) + 1  # the step's phases in sync
        q = claim(sync, h_phase, shares, h_home)
        while q >= 0:
            for p_lo, p_hi, r_lo, r_hi in _share_rects(q, rows, n_h, h_shares, row_shares, workers):
                if p_hi > p_lo and r_hi > r_lo:
                    _backward_share(
                        dgates_t, dc_t, dm_t, dh_t, W_hrT, gates_t, tanh_c_t, c_prev, NR, dh_all_t, dgates_next,
                        dy_t, W_hT, gates_too, p_lo, p_hi, r_lo, r_hi,
                    )  # fmt: skip
            finish(sync, h_phase)
            q = claim(sync, h_phase, shares, h_home)
        wait_for(sync, h_phase, shares)
        if projected and Bt > 0:
            q = claim(sync, m_phase, m_shares, m_home)
            while q >= 0:
                p_lo, p_hi = _share(n_m, q, m_shares)
                _backward_gates(dgates_t, dc_t, dm_t, dh_t, W_hrT, gates_t, tanh_c_t, c_prev, NR, p_lo, p_hi)
                finish(sync, m_phase)
                q = claim(sync, m_phase, m_shares, m_home)
            wait_for(sync, m_phase, m_shares)
        dgates_next = dgates_t


@numba.njit(**SERIAL)
def _backward_blocks(
    grads, walk, dG_ring, x, h0, y, W_xT, offsets, batch_sizes, t_los, h_shares, row_shares, m_shares, sync,
    grad_sync, worker, step_workers, grad_workers,
):  # fmt: skip
    """One thread's part of ``_lstm_backward`` in one parallel region: each
    block's steps (``_backward_steps``, as ``step_workers`` of them share
    them out), then its weight gradients (``_block_grads_worker``, as
    ``grad_workers``), block after block.  Both return when every share is
    done, so a block's gradients are summed into dW before the next block's
    and its slot of the ring is read before another block writes it: the
    bits of the loop over blocks.  ``grad_sync``: ``counters(3)`` for each
    block, all zero.  ``walk``: dh_pad, dc, dh_all, dm_pad, dy, c0, c, gates,
    tanh_c, W_hT, W_hrT."""
    dh_pad, dc, dh_all, dm_pad, dy, c0, c, gates, tanh_c, W_hT, W_hrT = walk
    S = dG_ring.shape[0]
    dgates_next = dG_ring[0, :0]  # the gate gradients of the step after the current one
    for k in range(t_los.size):
        t_hi, t_lo, n_lo, n_hi = _block_bounds(k, t_los, offsets)
        slot = dG_ring[k % S]
        _backward_steps(
            dh_pad, dc, dh_all, dm_pad, slot, dgates_next, dy, c0, c, gates, tanh_c, W_hT, W_hrT, offsets,
            batch_sizes, t_hi, t_lo if t_lo > 0 else -1, n_lo, h_shares, row_shares, m_shares, sync, worker,
            step_workers,
        )  # fmt: skip
        dgates_next = slot[: batch_sizes[t_lo]]
        if n_hi > n_lo:
            _block_grads_worker(
                *grads, slot, x, h0, y, W_xT, n_lo, n_hi, grad_sync[6 * k : 6 * k + 6], worker, grad_workers
            )


@numba.njit(**SERIAL)
def _pipelined_worker(
    grads, walk, dG_ring, x, h0, y, W_xT, offsets, batch_sizes, t_los, sync, block_sync, worker, workers
):
    """One thread of a pipelined ``_lstm_backward``: blocks of steps, and the weight gradients of blocks walked.

    grads: (dx_pad, dW_pad, db_pad, AT, dG_block, prev); walk: (dh_pad, dc,
    dh_all, dm_pad, dy, c0, c, gates, tanh_c, W_hT, W_hrT); block_sync:
    ``counters(4 * n_blocks)``, block k's weight gradients in phases 4k to
    4k + 2 (``_grads_share``) and its steps in phase 4k + 3, one share.

    A thread takes the next block's steps, whole, when the block before is
    walked and its slot of the ring is free (the weight gradients of the
    block S slots back done); else a share of the oldest block's weight
    gradients once that block is walked; else it waits for a share that
    another thread is computing.  So one thread walks the steps while the
    other computes weight gradients, and walks on as soon as it can; each
    thread waits only for work another has taken, and one thread alone runs
    everything.  Blocks' weight gradients go in order, each after the one
    before, so that dW adds the blocks' sums in the order of the other paths.
    """
    dh_pad, dc, dh_all, dm_pad, dy, c0, c, gates, tanh_c, W_hT, W_hrT = walk
    n_blocks, S = t_los.size, dG_ring.shape[0]
    one, zero = np.int64(1), np.int64(0)
    s = np.int64(0)  # the next block whose steps this thread may take (not a literal: see "Compile time")
    g = np.int64(0)  # the oldest block whose weight gradients this thread has not seen done
    spins = np.int64(0)  # not a literal: see "Compile time"
    while g < n_blocks:
        walked = s == 0 or is_done(block_sync, 4 * s - 1, one)  # the steps of block s - 1
        gradients = is_done(block_sync, 4 * g + 3, one)  # the steps of block g: its gradients may start
        if s < n_blocks and walked and s < g + S and (worker == 0 or not gradients):
            if claim(block_sync, 4 * s + 3, one, zero) >= 0:
                t_hi, t_lo, n_lo, _ = _block_bounds(s, t_los, offsets)
                dgates_next = dG_ring[(s - 1) % S, : batch_sizes[t_hi]] if s > 0 else dG_ring[0, :0]
                _backward_steps(
                    dh_pad, dc, dh_all, dm_pad, dG_ring[s % S], dgates_next, dy, c0, c, gates, tanh_c, W_hT, W_hrT,
                    offsets, batch_sizes, t_hi, t_lo if t_lo > 0 else -1, n_lo, one, one, one, sync, zero,
                    one,
                )  # fmt: skip
                finish(block_sync, 4 * s + 3)
            s += 1
            spins = np.int64(0)
            continue
        if gradients:
            _, _, n_lo, n_hi = _block_bounds(g, t_los, offsets)
            done = -1
            if n_hi > n_lo:
                done = _grads_share(
                    *grads, dG_ring[g % S], x, h0, y, W_xT, n_lo, n_hi, block_sync, 4 * g, worker, workers
                )
            if done != 0:
                g += 1 if done < 0 else 0
                spins = np.int64(0)
                continue
        spins = pause(spins)


@numba.njit(**PARALLEL)
def _lstm_backward(
    dx_pad, dW_pad, db_pad, dh_pad, dc, dh_all, dm_pad, dG_ring, AT, dG_block, prev,
    dy, x, h0, y, m, c0, c, gates, tanh_c, W_hT, W_hrT, W_xT, batch_sizes, step_shares, grad_shares, pipelined,
    row_split_max_bytes, sync, grad_sync,
):  # fmt: skip
    """Backward pass (BPTT) through the steps of a packed sequence, with the weight gradients.

    dx_pad (N, Ip)   zeros; out: dx in the first I columns (Ip = padded(I))
    dW_pad (I + P, 4Hp) zeros; out: dW with each gate block padded to Hp
    db_pad (4Hp,)    zeros; out: db, padded the same way
    dh_pad (B, Pp)   in: dh_n in the first P columns; out: dh0 there; work
    dc     (B, H)    in: dc_n; out: dc0
    dh_all (N, P)    out: dL/dh_t of every step, for the projection's weight
                     gradient (``_projection_grad``); (0, 0) without one
    dm_pad (B, Hp)   work: dL/dm_t of one step (projection only)
    dG_ring (S, R, 4H) work: the gate gradients of S blocks of steps (2, or PIPELINE_SLOTS
                     when pipelined), R >= B rows each
    AT (I + P, R)    work: [x, h_{t-1}] of a block's rows, transposed
    dG_block (4Hp/NR, R, NR) work: a block's gate gradients packed as panels
    prev (N,)        in: ``_prev_rows``
    dy     (N, P)    in
    x, h0, y, m, c0, c, gates, tanh_c, batch_sizes: as in ``_lstm_forward``
    W_hT   (Pp/NR, 4H, NR)  in: ``pack_panels(W_h.T)``
    W_hrT  (Hp/NR, P, NR)   in: ``pack_panels(W_hr.T)``; (0, 0, 0) for none
    W_xT   (Ip/NR, 4H, NR)  in: ``pack_panels(W_x.T)``
    step_shares       workers of the steps' parallel regions, one share of each
                      step per worker (``_backward_shares``)
    grad_shares       workers of each block's weight gradients (``_block_grads``)
    pipelined         ``_pipelined`` of the first step's rows and these workers,
                      decided by the caller, which sized ``dG_ring`` and
                      ``grad_sync`` for it
    row_split_max_bytes  ROW_SPLIT_MAX_BYTES (``_backward_shares``)
    sync   (4(T + 1),) work: ``counters(2(T + 1))``, the taken shares and done counters of each step
                     (``numba_lstm._sync``), t = -1 included
    grad_sync (8T,)  work: ``counters(4T)``, all zero: the same for the weight
                     gradients, ``counters(3)`` a block in one region
                     (``_backward_blocks``), else its first six entries for
                     every block's ``_block_grads``, which zeroes them, or
                     the phases of ``_pipelined_worker``

    The steps run from the last to the first in blocks of whole steps of at
    most R rows (``_backward_steps``), all in one parallel region when the
    steps and the weight gradients have the same number of workers, more
    than one (``_backward_blocks``), else each block's steps in a region of
    their own.  Per step, threads take shares through the step's
    counters: blocks of rows, or panels of columns of h (of c and m too
    without a projection).  Each finishes dL/dh_t for its rows and columns
    (the product with the next step's gate gradients plus dy_t), then their
    gate gradients; a projection needs all of dL/dh_t first, so its gates
    are a second phase.
    When a block's steps are done, ``_block_grads`` adds its
    rows' share of dW and db and computes their dx, while the gate gradients
    are still in cache; the next block fills the other half of the ring (its
    first step still reads the gradients of the step after it).  So no
    (N, 4H) array of gate gradients exists, and dW adds the blocks from the
    last to the first, each block's rows summed in order from zero.  A
    sequence that has ended is not touched by the steps after its end, so
    dh_pad/dc still hold its dh_n/dc_n when the loop reaches its last step.

    Pipelined (``_pipelined``: one tile of rows on two workers, small
    weights) there is one parallel region for the whole backward instead:
    one thread walks the blocks of steps, unsplit, while the other computes
    the weight gradients of the blocks already walked, through S slots of
    the ring (``_pipelined_worker``).  The blocks and the order of dW's sums
    are the same as above, so are the bits.
    """
    T = batch_sizes.size
    offsets = _offsets(batch_sizes)
    n_h, n_m = W_hT.shape[0], W_hrT.shape[0]
    B = batch_sizes[0] if T > 0 else 0
    t_los = _step_blocks(offsets, dG_ring.shape[1])
    grads, inputs = (dx_pad, dW_pad, db_pad, AT, dG_block, prev), (x, h0, y, W_xT)
    if pipelined:
        walk = (dh_pad, dc, dh_all, dm_pad, dy, c0, c, gates, tanh_c, W_hT, W_hrT)
        for worker in numba.prange(2):
            _pipelined_worker(
                grads, walk, dG_ring, *inputs, offsets, batch_sizes, t_los, sync, grad_sync, np.int64(worker),
                np.int64(2),
            )  # fmt: skip
    else:
        weight_bytes = (W_xT.size + W_hT.size) * W_hT.itemsize
        h_shares, row_shares = _backward_shares(
            n_h, B, step_shares, weight_bytes, n_m > 0, row_split_max_bytes
        )
        m_shares = _share_count(n_m, np.int64(1), step_shares)
        workers = max(h_shares * row_shares, m_shares)
        S = dG_ring.shape[0]
        if workers > 1 and workers == grad_shares:
            # One parallel region for every block: Numba's launcher takes the
            # GIL at the start and the end of each region, and with two
            # regions a block a Python thread running beside the backward
            # made it 4.5x as slow (bench/NOTES.md, "Session 45").  Only
            # when the steps and the gradients have as many workers: a worker
            # with no share of the steps would spin through every step.
            walk = (dh_pad, dc, dh_all, dm_pad, dy, c0, c, gates, tanh_c, W_hT, W_hrT)
            for worker in numba.prange(workers):
                _backward_blocks(
                    grads, walk, dG_ring, *inputs, offsets, batch_sizes, t_los, h_shares, row_shares, m_shares,
                    sync, grad_sync, np.int64(worker), workers, grad_shares,
                )  # fmt: skip
            return
        dgates_next = dG_ring[0, :0]  # the gate gradients of the step after the current one
        for k in range(t_los.size):
            # Block k: steps t_lo..t_hi - 1 in slot k % S of the ring (its
            # first step reads the gradients of the step after it from the
            # slot before).  The block of step 0 also finishes dh0 (t = -1).
            t_hi, t_lo, n_lo, n_hi = _block_bounds(k, t_los, offsets)
            t_end = t_lo if t_lo > 0 else -1
            slot = dG_ring[k % S]
            walk = (dh_pad, dc, dh_all, dm_pad, slot, dgates_next, dy, c0, c, gates, tanh_c, W_hT, W_hrT)
            if workers > 1:
                for worker in numba.prange(workers):
                    _backward_steps(
                        *walk, offsets, batch_sizes, t_hi, t_end, n_lo, h_shares, row_shares, m_shares, sync,
                        np.int64(worker), workers,
                    )  # fmt: skip
            else:
                one = np.int64(1)
                _backward_steps(
                    *walk, offsets, batch_sizes, t_hi, t_end, n_lo, one, one, one, sync, np.int64(0), one
                )
            dgates_next = slot[: batch_sizes[t_lo]]
            # The block's weight gradients, while its gate gradients are in cache.
            if n_hi > n_lo:
                _block_grads(*grads, slot, *inputs, n_lo, n_hi, grad_shares, grad_sync[:6])
