"""Products with weights packed once into column panels: ``out += a @ W``.

An LSTM multiplies by the same weights at every step, so numba_lstm packs each
weight matrix once per call into panels of ``NR`` columns, ``(n_panels, K,
NR)``, each contiguous, and runs every product through one register-tiled
micro-kernel: a tile of ``MR`` rows by ``NR`` columns of ``out`` stays in
vector registers while ``k`` runs over ``K``, each step loading ``NR`` values of
the panel and one value of each row of ``a``.  A panel (K x NR) stays in L1
while the tile walks down the rows (float32 with AVX-512: K up to 256 in a
32 KB L1, 384 in 48 KB; a longer panel, such as dx's of K = 4H, stays in
L2).  BLAS packs both operands again at every call; at the per-step shapes
the packed product ran 1.4-3x faster than ``np.dot`` on one thread
(bench/NOTES.md, "Packed panels").

Numba has no vector types, so the micro-kernel is written in LLVM IR through
``numba.extending.intrinsic``: ``<L x float>`` loads, broadcasts and
``llvm.fma`` calls, with ``L`` the vector width of the machine (512 bits with
AVX-512, else 256), so the tile is ``MR x 2L``: 8 x 32 float32 values with
AVX-512 (16 of the 32 registers), 4 x 16 without.

Columns are partitioned between threads by panel, so two threads never write
the same element; ``out`` must be padded to whole panels (the last panel of a
matrix whose width is not a multiple of NR is zero-filled, and the matching
columns of ``out`` receive zeros plus whatever they held).
"""

import math

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from numba_lstm._options import PARALLEL, SERIAL


def _has_avx512():
    if numba.config.CPU_NAME:  # the user chose a target CPU: assume no AVX-512
        return False
    return bool(llvm.get_host_cpu_features().get("avx512f", False))


#: Bytes in one vector register, 64 with AVX-512 and 32 otherwise.
VECTOR_BYTES = 64 if _has_avx512() else 32
#: Bytes of a cache line: packed panels start on one, so that no vector load
#: of a panel row spans two lines.
CACHE_LINE = 64
#: Rows of one full tile: 8 x 2 vectors use 16 of AVX-512's 32 registers, 4 x 2
#: use 8 of AVX2's 16 (the rest hold the panel values and the broadcasts).
TILE_ROWS = 8 if VECTOR_BYTES == 64 else 4


def panel_width(dtype):
    """NR: columns of one panel, two vector registers of ``dtype``."""
    return 2 * VECTOR_BYTES // np.dtype(dtype).itemsize


@numba.njit(**SERIAL)
def _panel_width_of(a):
    """``panel_width(a.dtype)``, inside jitted code."""
    return 2 * VECTOR_BYTES // a.itemsize


def _make_tile(MR, NP, from_zero=False):
    """Intrinsic ``tile(out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K)``.

    On arrays of one float dtype, indexed in elements from their first one
    (whatever their shape: the caller's offsets and strides locate every
    value), for r < MR, q < NP panels and c < NR:
    ``out[out_off + r*ld_out + q*out_step + c] += sum_k a[a_off + r*ld_a + k] * w[w_off + q*w_step + k*ld_w + c]``,
    summed in the order k = 0, 1, ..., one FMA each, for every MR and NP: a
    row's result does not depend on which tile computed it, so a whole
    sequence equals the same steps run one call at a time, bit for bit.
    (Splitting k over several accumulators made one-row tiles 10% faster and
    broke that; several panels per tile give a few rows the same number of
    independent FMA chains instead.)

    ``from_zero``: the chain starts from 0 instead of from ``out``, and the
    sum is added to ``out`` at the end, ``out += (sum_k ...)``: calls over
    consecutive blocks of k sum each block apart (``_panel_block_sums``).
    Such a tile reads out only at its exit, so it prefetches out's lines
    (for writing) at its entry: the weight gradient's dW, 32 MB at I = H =
    1024 in float32, comes from memory, and its product ran 1.06-1.08x as
    fast on one core with the prefetch (bench/NOTES.md, "Session 41").
    """

    @intrinsic
    def tile(typingctx, out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K):
        arrays = (out, a, w)
        if not all(isinstance(t, types.Array) and t.dtype in (types.float32, types.float64) for t in arrays):
            return None
        if not (out.dtype == a.dtype == w.dtype):
            return None
        intp = types.intp
        sig = types.void(out, intp, intp, intp, a, intp, intp, w, intp, intp, intp, intp)

        def codegen(context, builder, signature, args):
            out_arr, out_off, ld_out, out_step, a_arr, a_off, ld_a, w_arr, w_off, w_step, ld_w, K = args
            dtype = signature.args[0].dtype
            elt = context.get_data_type(dtype)
            L = VECTOR_BYTES // (4 if dtype == types.float32 else 8)
            vec = ir.VectorType(elt, L)
            vec_ptr = vec.as_pointer()
            i64 = ir.IntType(64)
            align = 4 if dtype == types.float32 else 8
            out_p = context.make_array(signature.args[0])(context, builder, out_arr).data
            a_p = context.make_array(signature.args[4])(context, builder, a_arr).data
            w_p = context.make_array(signature.args[7])(context, builder, w_arr).data
            name = f"llvm.fma.v{L}{'f32' if dtype == types.float32 else 'f64'}"
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]), name)
            undef = ir.Constant(vec, ir.Undefined)
            i32 = ir.IntType(32)
            splat_mask = ir.Constant(ir.VectorType(i32, L), [0] * L)

            def const(v):
                return ir.Constant(i64, v)

            def const32(v):
                return ir.Constant(i32, v)

            def out_ptr(r, j):  # vector j of row r: panel j // 2, half j % 2
                row = builder.add(out_off, builder.mul(ld_out, const(r)))
                panel = builder.add(row, builder.mul(out_step, const(j // 2)))
                idx = builder.add(panel, const((j % 2) * L))
                return builder.bitcast(builder.gep(out_p, [idx]), vec_ptr)

            # Entry: load the tile of out into the accumulators (or start from 0).
            V = 2 * NP  # vectors per row of the tile
            if from_zero:
                init = [[ir.Constant(vec, [0.0] * L) for _ in range(V)] for _ in range(MR)]
                # out is read only at the exit: ask for its lines now, for
                # writing, so that they arrive while the loop runs.
                # llvm.prefetch(address, rw 1: write, locality 3: all levels, 1: data);
                # one per cache line (two AVX2 vectors share one: rows of out
                # start on a line, ``aligned_empty``).
                i8_ptr = ir.IntType(8).as_pointer()
                prefetch_type = ir.FunctionType(ir.VoidType(), [i8_ptr, i32, i32, i32])
                prefetch = cgutils.get_or_insert_function(builder.module, prefetch_type, "llvm.prefetch.p0")
                per_line = max(1, CACHE_LINE // VECTOR_BYTES)
                for r in range(MR):
                    for j in range(0, V, per_line):
                        byte = builder.bitcast(out_ptr(r, j), i8_ptr)
                        builder.call(prefetch, [byte, const32(1), const32(3), const32(1)])
            else:
                init = [[builder.load(out_ptr(r, j), align=align) for j in range(V)] for r in range(MR)]
            a_rows = [builder.add(a_off, builder.mul(ld_a, const(r))) for r in range(MR)]
            entry = builder.block
            loop = builder.append_basic_block("tile.loop")
            done = builder.append_basic_block("tile.done")
            builder.cbranch(builder.icmp_signed(">", K, const(0)), loop, done)

            # Loop over k: two vectors of each panel, one broadcast per row,
            # 2 * NP * MR FMAs.
            builder.position_at_end(loop)
            k = builder.phi(i64)
            acc = [[builder.phi(vec) for _ in range(V)] for _ in range(MR)]
            w_row = builder.add(w_off, builder.mul(k, ld_w))
            w_vec = []
            for q in range(NP):
                w_q = builder.add(w_row, builder.mul(w_step, const(q)))
                for j in range(2):
                    ptr = builder.bitcast(builder.gep(w_p, [builder.add(w_q, const(j * L))]), vec_ptr)
                    w_vec.append(builder.load(ptr, align=align))
            new = []
            for r in range(MR):
                a_rk = builder.load(builder.gep(a_p, [builder.add(a_rows[r], k)]))
                a_vec = builder.shuffle_vector(
                    builder.insert_element(undef, a_rk, const32(0)), undef, splat_mask
                )
                new.append([builder.call(fma, [a_vec, w_vec[j], acc[r][j]]) for j in range(V)])
            k_next = builder.add(k, const(1))
            k.add_incoming(const(0), entry)
            k.add_incoming(k_next, loop)
            for r in range(MR):
                for j in range(V):
                    acc[r][j].add_incoming(init[r][j], entry)
                    acc[r][j].add_incoming(new[r][j], loop)
            builder.cbranch(builder.icmp_signed("<", k_next, K), loop, done)

            # Exit: store the accumulators back (phis first, as LLVM requires).
            builder.position_at_end(done)
            final = []
            for r in range(MR):
                for j in range(V):
                    phi = builder.phi(vec)
                    phi.add_incoming(init[r][j], entry)
                    phi.add_incoming(new[r][j], loop)
                    final.append((r, j, phi))
            for r, j, value in final:
                if from_zero:
                    value = builder.fadd(builder.load(out_ptr(r, j), align=align), value)
                builder.store(value, out_ptr(r, j), align=align)
            return context.get_dummy_value()

        return sig, codegen

    return tile


#: Panels per tile for the rows left after the full tiles: a few rows take
#: several panels at a time, so that even one row has 2 * NP independent FMA
#: chains, while accumulators plus panel vectors stay within the registers.
#: Measured (float32, 1 core, bench/NOTES.md "Wide tiles"): the B = 1
#: backward's (1, 512) @ (512, 128) 2.16 -> 1.41 us, 3 and 7 rows of
#: (256, 1024) 1.2x faster; the forward's (1, 128) @ (128, 512) stays at
#: about 2 us, bound by streaming the 256 KB of weights from L2.
WIDE_4, WIDE_2, WIDE_1 = 2, (4 if VECTOR_BYTES == 64 else 2), 4

_tile_8 = _make_tile(8, 1)
_tile_4 = _make_tile(4, 1)
_tile_2 = _make_tile(2, 1)
_tile_1 = _make_tile(1, 1)
_tile_4_wide = _make_tile(4, WIDE_4)
_tile_2_wide = _make_tile(2, WIDE_2)
_tile_2_half = _make_tile(2, WIDE_2 // 2)
_tile_1_wide = _make_tile(1, WIDE_1)
_tile_1_half = _make_tile(1, WIDE_1 // 2)
#: Tall tiles (one panel) that end a walk down a panel when its rows are not
#: a multiple of TILE_ROWS (``_tail_tiles``): the rows left over share the
#: panel's vectors already loaded, where ``_few_rows`` streamed every panel
#: once more.  A tile of MR rows holds 2 * MR accumulators, the two panel
#: vectors and the broadcasts of a[r, k].  With AVX2 (16 registers) up to 6
#: rows: 7 spilled (float32, one core, (7, 256) @ (256, 1024): 113 us in
#: one tile, 46 in tiles of 4 and 3).  With AVX-512 (32 registers) up to 7:
#: tiles of 9 to 14 rows ran at the full tile's rate in a loop of their
#: own, but inside the products those of 10 to 12 rows spilled or not
#: depending on the code around them (up to 2.5x the time), and 9 took
#: 1.05x the time of 8 + 1 in float64, against 0.86-0.88 for 4 + 5
#: (bench/NOTES.md "Session 28").
TALL_ROWS = (4, 5, 6, 7) if TILE_ROWS == 8 else (3, 5, 6)
_tile_3, _tile_5, _tile_6, _tile_7 = (_make_tile(MR, 1) for MR in (3, 5, 6, 7))
#: The full tile (TILE_ROWS rows, one panel), called as itself: through
#: ``_tile(TILE_ROWS, 1, ...)`` Numba compiled ``_tile`` once more for those
#: literal arguments.  Likewise the callers pass int64 values, not literals,
#: where a function is also called with variables (bench/NOTES.md, "Session 23").
_full_tile = _tile_8 if TILE_ROWS == 8 else _tile_4
#: The tiles of ``_panel_block_sums``: full ones, then 4 (AVX-512), 2 and 1 rows.
_full_sum_tile = _make_tile(TILE_ROWS, 1, from_zero=True)
_sum_tile_4, _sum_tile_2, _sum_tile_1 = (_make_tile(MR, 1, from_zero=True) for MR in (4, 2, 1))


@numba.njit(**SERIAL)
def _row_stride(a):
    """Elements from one row of ``a`` to the next (its first axis); rows must be contiguous."""
    return a.strides[0] // a.itemsize


@numba.njit(**SERIAL)
def _contiguous_rows(a):
    """Whether the values of each row of the 2-D ``a`` are adjacent, as the tiles read them."""
    return a.shape[1] <= 1 or a.strides[1] == a.itemsize


@numba.njit(**SERIAL)
def _widest(MR, n):
    """Panels per tile for MR (< TILE_ROWS) rows with n panels left: WIDE_<MR>, its half, or 1."""
    wide = WIDE_4 if MR == 4 else (WIDE_2 if MR == 2 else WIDE_1)
    while wide > 1 and wide > n:
        wide //= 2
    return wide


@numba.njit(**SERIAL)
def _tile(MR, NP, out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K):
    """The tile of MR rows and NP panels (a shape ``_widest`` or the full tile chose)."""
    if MR == TILE_ROWS:
        if TILE_ROWS == 8:
            _tile_8(out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K)
        else:
            _tile_4(out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K)
    elif MR == 4:
        if NP == WIDE_4:
            _tile_4_wide(out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K)
        else:
            _tile_4(out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K)
    elif MR == 2:
        if NP == WIDE_2:
            _tile_2_wide(out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K)
        elif NP == WIDE_2 // 2:
            _tile_2_half(out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K)
        else:
            _tile_2(out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K)
    else:
        if NP == WIDE_1:
            _tile_1_wide(out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K)
        elif NP == WIDE_1 // 2:
            _tile_1_half(out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K)
        else:
            _tile_1(out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K)


@numba.njit(**SERIAL)
def _few_rows(out, out_off, ld_out, a, a_off, ld_a, w, w_base, step, ld_w, K, NR, MR, p_lo, p_hi):
    """MR rows (4, 2 or 1) of ``_panel_block``: the widest tiles that the panels left allow.

    Panel p of w starts at ``w_base + p * step`` and its rows are ``ld_w`` apart
    (NR when packed, the row length of an unpacked matrix).
    """
    p = p_lo
    while p < p_hi:
        NP = _widest(MR, p_hi - p)
        _tile(MR, NP, out, out_off + p * NR, ld_out, NR, a, a_off, ld_a, w, w_base + p * step, step, ld_w, K)
        p += NP


@numba.njit(**SERIAL)
def _tail_joins(M):
    """Whether the rows of M left after its full tiles join the last full
    tile, to be walked with it in tall tiles (``_tail_tiles``) and to go
    with it in a step's split (``numba_lstm._kernels._split_tiles``)."""
    left = M % TILE_ROWS
    if TILE_ROWS == 8:
        return M > TILE_ROWS and left % 2 == 1 and left < 7
    return M > TILE_ROWS and left > 0


@numba.njit(**SERIAL)
def _tail_tiles(M):
    """How a walk down a panel covers M rows: ``(full, tall_1, tall_2)``, full
    tiles over rows 0..full, then tiles of tall_1 and tall_2 rows (0: none,
    else one of TALL_ROWS); ``_few_rows`` takes the rows left after them.

    AVX2 (tiles of 4 rows): from 4 rows on, 4k + 1 rows end in a tile of 5,
    4k + 2 in one of 6, 4k + 3 in 5 and 6 (in 4 and 3 when k = 1); fewer
    than 4 rows go to ``_few_rows``.  One core, (M, 256) @ (256, 1024)
    against the full tiles and ``_few_rows``, same bits, float32 (two runs):
    M = 5 0.73-0.77, 7 0.79-0.87, 9 0.81-0.86, 11 0.77-0.86, 15 0.80-0.87,
    31 0.88-0.93, multiples of 4 0.98-1.02; float64: 5 0.70, 7 0.74, 9
    0.81, 11 0.76, 15 0.80 (bench/NOTES.md "Session 27").

    AVX-512 (tiles of 8 rows): an odd number of rows left over ends the walk
    in tiles of 4 to 7 rows: 8k + 1, 3 and 5 rows in two of them in place
    of the last full tile (4 + 5, 5 + 6, 6 + 7), 8k + 7 rows in a tile of 7
    after the full ones, 5 and 7 rows in one tile.  An even number left
    over goes to ``_few_rows``, whose tiles of 4 and 2 rows are several
    panels wide.  One core, (M, 256) @ (256, 1024) against the full tiles
    and ``_few_rows``, same bits: float32 M = 5 0.85, 7 0.83, 9 0.91, 11
    0.88, 13 0.93, 15 0.92, 23 0.93-0.96; float64 5 0.83, 7 0.80, 9 0.87, 11
    0.85, 13 0.89.  In the two-thread forward, tiles for an even number of
    rows left over were slower: B = 6 in one tile 1.03-1.06, B = 12 as 6 + 6
    1.09-1.13 (bench/NOTES.md "Session 28").
    """
    full = M - M % TILE_ROWS
    left = M - full
    if TILE_ROWS == 8:
        if _tail_joins(M):
            tall = TILE_ROWS + left  # 9, 11 or 13 rows: 4 + 5, 5 + 6, 6 + 7
            return full - TILE_ROWS, tall // 2, tall - tall // 2
        if left == 7 or (full == 0 and left == 5):
            return full, left, 0
        return full, 0, 0
    if not _tail_joins(M):
        return full, 0, 0
    if left < 3:
        return full - TILE_ROWS, TILE_ROWS + left, 0
    if full == TILE_ROWS:
        return full, left, 0
    return full - 2 * TILE_ROWS, TILE_ROWS + 1, TILE_ROWS + 2


@numba.njit(**SERIAL)
def _tall_tiles(tall_1, tall_2, out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K):
    """The one-panel tiles of tall_1 and tall_2 rows (TALL_ROWS; 0: none) that
    ``_tail_tiles`` chose, one after the other down a panel from the row at
    ``out_off`` / ``a_off``.  Numba drops the branches guarded by the other
    vector width (a global constant): each machine compiles only its own tiles."""
    for MR in (tall_1, tall_2):
        args = (out, out_off, ld_out, out_step, a, a_off, ld_a, w, w_off, w_step, ld_w, K)
        if MR == 5:
            _tile_5(*args)
        elif MR == 6:
            _tile_6(*args)
        elif TILE_ROWS == 8 and MR == 4:
            _tile_4(*args)
        elif TILE_ROWS == 8 and MR == 7:
            _tile_7(*args)
        elif TILE_ROWS == 4 and MR == 3:
            _tile_3(*args)
        out_off += MR * ld_out
        a_off += MR * ld_a


@numba.njit(**SERIAL)
def _full_tiles(out, a, w, p_lo, p_hi, k_lo, k_hi, M):
    """The rows of M that ``_tail_tiles`` walks down each panel, for
    ``_panel_block``; returns the first row left for ``_few_rows``."""
    NR, step = w.shape[2], _row_stride(w)
    ld_out, ld_a = _row_stride(out), _row_stride(a)
    full, tall_1, tall_2 = _tail_tiles(M)
    for p in range(p_lo, p_hi):
        w_off = k_lo * NR + p * step
        for r in range(0, full, TILE_ROWS):
            o, a_off = r * ld_out + p * NR, r * ld_a + k_lo
            _full_tile(out, o, ld_out, NR, a, a_off, ld_a, w, w_off, step, NR, k_hi - k_lo)
        if tall_1 > 0:
            o, a_off = full * ld_out + p * NR, full * ld_a + k_lo
            _tall_tiles(tall_1, tall_2, out, o, ld_out, NR, a, a_off, ld_a, w, w_off, step, NR, k_hi - k_lo)
    return full + tall_1 + tall_2


@numba.njit(**SERIAL)
def _panel_block(out, a, w, p_lo, p_hi, k_lo, k_hi):
    """out[:, p*NR : (p+1)*NR] += a[:, k_lo:k_hi] @ (rows k_lo..k_hi of panel p of w), p_lo <= p < p_hi.

    out (M, >= p_hi*NR) C-contiguous   a (M, >= k_hi) C-contiguous
    w   (n_panels, K, NR) C-contiguous, from ``pack_panels``

    Full tiles of TILE_ROWS rows walk down each panel (the panel's rows stay
    in L1, or in L2 for a long panel), ending in taller tiles for the rows
    left over (``_tail_tiles``) or followed by ``_few_rows``.  Blocks of k
    run one after the other give the same bits as one block: each element
    is still one chain of FMAs in the order of k.
    """
    M = a.shape[0]
    NR, step = w.shape[2], _row_stride(w)
    ld_out, ld_a = _row_stride(out), _row_stride(a)
    r = _full_tiles(out, a, w, p_lo, p_hi, k_lo, k_hi, M)
    for MR in (4, 2, 1):
        if MR < TILE_ROWS and r + MR <= M:
            _few_rows(
                out, r * ld_out, ld_out, a, r * ld_a + k_lo, ld_a, w, k_lo * NR, step, NR, k_hi - k_lo, NR, MR,
                p_lo, p_hi,
            )  # fmt: skip
            r += MR


@numba.njit(**SERIAL)
def _panel_block_sums(out, a, w, p_lo, p_hi, k_lo, k_hi):
    """out[:, p*NR : (p+1)*NR] += (a[:, k_lo:k_hi] @ rows k_lo..k_hi of panel p of w), p_lo <= p < p_hi.

    Arrays as in ``_panel_block``, but each element's product is summed from
    0 and then added to out: one addition per element and call, so that
    calls over consecutive blocks of k sum each block apart.  One chain over
    all of k (``_panel_block``) has an error that grows with K, which is the
    number of rows of a sequence in the weight gradient.  Full tiles walk
    down each panel, then tiles of 4, 2 and 1 rows of one panel take the rows
    left (the weight gradient's rows are features: at most TILE_ROWS - 1 are
    left, once a product).
    """
    M = a.shape[0]
    NR, step = w.shape[2], _row_stride(w)
    ld_out, ld_a = _row_stride(out), _row_stride(a)
    K = k_hi - k_lo
    if K <= 0:  # the tiles would add +0.0, which turns a -0.0 of out into +0.0
        return
    full = M - M % TILE_ROWS
    for p in range(p_lo, p_hi):
        w_off = k_lo * NR + p * step
        for r in range(0, full, TILE_ROWS):
            _full_sum_tile(
                out, r * ld_out + p * NR, ld_out, NR, a, r * ld_a + k_lo, ld_a, w, w_off, step, NR, K
            )
        r = full
        for MR in (4, 2, 1):
            if MR < TILE_ROWS and r + MR <= M:
                args = (out, r * ld_out + p * NR, ld_out, NR, a, r * ld_a + k_lo, ld_a, w, w_off, step, NR, K)
                if TILE_ROWS == 8 and MR == 4:  # with AVX2, 4 rows are a full tile: not compiled
                    _sum_tile_4(*args)
                elif MR == 2:
                    _sum_tile_2(*args)
                else:
                    _sum_tile_1(*args)
                r += MR


@numba.njit(**SERIAL)
def _panel_product(out, a, w, p_lo, p_hi):
    """out[:, p*NR : (p+1)*NR] += a @ (panel p of w), for panels p_lo <= p < p_hi.

    out (M, >= p_hi*NR) C-contiguous   a (M, >= K) C-contiguous, first K columns used
    w   (n_panels, K, NR) C-contiguous, from ``pack_panels``
    """
    _panel_block(out, a, w, p_lo, p_hi, np.int64(0), w.shape[1])  # int64: see _full_tile


@numba.njit(**SERIAL)
def _gate_panel_product(out, a, w, u_lo, u_hi):
    """``_panel_product`` for panels u_lo..u_hi of each of the four gate blocks of w.

    w from ``pack_panels(W, groups=4)``: gate g's panel u is panel g*n + u, with
    n = w.shape[0] // 4.  The rows left after ``_full_tiles`` take the four
    gates of one unit panel in one tile (panels n apart in w and n*NR columns
    apart in out), so that one row of a share of one or two unit panels (B = 1
    split between threads) still runs 8 independent FMA chains; the bits are
    those of ``_panel_product``.
    """
    M = a.shape[0]
    NR, K, step = w.shape[2], w.shape[1], _row_stride(w)
    n = w.shape[0] // 4
    full, tall_1, tall_2 = _tail_tiles(M)
    r = full + tall_1 + tall_2  # the first row left for the tiles below
    if r > 0:
        for g in range(4):
            _full_tiles(out, a, w, g * n + u_lo, g * n + u_hi, np.int64(0), K, M)
    ld_out, ld_a = _row_stride(out), _row_stride(a)
    for MR in (4, 2, 1):
        if MR < TILE_ROWS and r + MR <= M:
            NP = _widest(MR, np.int64(4))
            for u in range(u_lo, u_hi):
                for g in range(0, 4, NP):
                    p = g * n + u
                    _tile(
                        MR, NP, out, r * ld_out + p * NR, ld_out, n * NR, a, r * ld_a, ld_a, w, p * step, n * step,
                        NR, K,
                    )  # fmt: skip
            r += MR


@numba.njit(**SERIAL)
def _unpacked_product(out, a, w, n_panels):
    """out[:, :n_panels*NR] += a @ w[:, :n_panels*NR], with w (K, N) not packed.

    out (M, >= n_panels*NR), a (M, >= K), w (K, >= n_panels*NR): rows contiguous.
    The tiles of the packed product (``_tail_tiles``, then ``_few_rows``),
    reading each panel of NR columns from the rows of w (a few rows: a
    packed copy would cost more than the product).
    """
    M, K = a.shape[0], w.shape[0]
    NR = _panel_width_of(w)
    ld_out, ld_a, ld_w = _row_stride(out), _row_stride(a), _row_stride(w)
    full, tall_1, tall_2 = _tail_tiles(M)
    for r in range(0, full, TILE_ROWS):
        for p in range(n_panels):
            _full_tile(out, r * ld_out + p * NR, ld_out, NR, a, r * ld_a, ld_a, w, p * NR, NR, ld_w, K)
    for p in range(n_panels if tall_1 > 0 else 0):
        o = full * ld_out + p * NR
        _tall_tiles(tall_1, tall_2, out, o, ld_out, NR, a, full * ld_a, ld_a, w, p * NR, NR, ld_w, K)
    r = full + tall_1 + tall_2
    for MR in (4, 2, 1):
        if MR < TILE_ROWS and r + MR <= M:
            zero = np.int64(0)  # not a literal: see _full_tile
            _few_rows(
                out, r * ld_out, ld_out, a, r * ld_a, ld_a, w, zero, NR, ld_w, K, NR, MR, zero, n_panels
            )
            r += MR


def padded(n, dtype):
    """n rounded up to whole panels of ``dtype``."""
    NR = panel_width(dtype)
    return -(-n // NR) * NR


#: Rows of W packed per pass over the panels: each pass reads PACK_ROWS rows
#: of W and writes PACK_ROWS * NR contiguous values to every panel (2.5x
#: faster than a whole panel at a time at (2048, 4096) float32, whose row
#: stride defeated the TLB, bench/NOTES.md "Packing").
PACK_ROWS = 8


@numba.njit(**SERIAL)
def _pack_panel_rows(out, W, n_panels, groups, p, k_lo, k_hi):
    """out (k_hi - k_lo, NR) = rows k_lo..k_hi of panel p of W (K, N), zero-padded; see ``pack_panels``."""
    NR = out.shape[1]
    width = W.shape[1] // groups
    per_group = n_panels // groups
    g = p // per_group
    q = p - g * per_group
    lo = g * width + q * NR
    n = min(NR, width - q * NR)
    for k in range(k_lo, k_hi):
        src, dst = W[k, lo : lo + n], out[k - k_lo]
        for j in range(n):  # src[j], not W[k, lo + j]: see _kernels on vectorisation
            dst[j] = src[j]
        dst[n:] = 0


@numba.njit(**SERIAL)
def _pack_range(out, W, groups, p_lo, p_hi):
    """Panels p_lo..p_hi of out (n_panels, K, NR) = W (K, N) in panels; see ``pack_panels``."""
    n_panels, K = out.shape[0], out.shape[1]
    for k_lo in range(0, K, PACK_ROWS):
        k_hi = min(k_lo + PACK_ROWS, K)
        for p in range(p_lo, p_hi):
            _pack_panel_rows(out[p, k_lo:k_hi], W, n_panels, groups, p, k_lo, k_hi)


@numba.njit(**SERIAL)
def _pack_into(out, W, groups):
    """out (n_panels, K, NR) = W (K, N) in panels; see ``pack_panels``."""
    _pack_range(out, W, groups, np.int64(0), out.shape[0])


@numba.njit(**SERIAL)
def _pad_into(out, v, groups):
    """out (groups * padded(N / groups),) = v (N,) with each group zero-padded."""
    width = v.size // groups
    width_padded = out.size // groups
    for g in range(groups):
        for j in range(width):  # a loop, not slice assignment: see _kernels._copy_columns
            out[g * width_padded + j] = v[g * width + j]
        out[g * width_padded + width : (g + 1) * width_padded] = 0


#: Rows of the source read together by the transposed packing: each pass
#: writes TRANSPOSE_ROWS adjacent values of every row of a panel.
TRANSPOSE_ROWS = 8


@numba.njit(**SERIAL)
def _pack_transposed_range(out, WT, groups, p_lo, p_hi):
    """Panels p_lo..p_hi of out (n_panels, K, NR) = WT (N, K).T, WT C-contiguous; see ``pack_panels``.

    Panel p is the transpose of NR rows of WT: TRANSPOSE_ROWS of them are
    read together along k, and each step of k writes their values side by
    side in row k of the panel (2.4x faster at (1024, 4096) float32 than the
    old blocks of 64 values of one row at a time, which wrote one value per
    row of the panel, bench/NOTES.md "Session 12").
    """
    n_panels, K, NR = out.shape
    width = WT.shape[0] // groups
    per_group = n_panels // groups
    for p in range(p_lo, p_hi):
        g = p // per_group
        q = p - g * per_group
        lo = g * width + q * NR
        n = min(NR, width - q * NR)
        panel = out[p]
        c = 0
        while c + TRANSPOSE_ROWS <= n:
            r0, r1, r2, r3 = WT[lo + c], WT[lo + c + 1], WT[lo + c + 2], WT[lo + c + 3]
            r4, r5, r6, r7 = WT[lo + c + 4], WT[lo + c + 5], WT[lo + c + 6], WT[lo + c + 7]
            for k in range(K):
                row = panel[k, c : c + TRANSPOSE_ROWS]
                row[0], row[1], row[2], row[3] = r0[k], r1[k], r2[k], r3[k]
                row[4], row[5], row[6], row[7] = r4[k], r5[k], r6[k], r7[k]
            c += TRANSPOSE_ROWS
        for j in range(c, n):
            source = WT[lo + j]
            for k in range(K):
                panel[k, j] = source[k]
        for k in range(K):
            row = panel[k]
            for j in range(n, NR):
                row[j] = 0


@numba.njit(**PARALLEL)
def _pack_threaded(out, source, groups, transposed, shares):
    """``_pack_range`` (or ``_pack_transposed_range`` of source = W.T) in ``shares`` shares of the panels."""
    n_panels = out.shape[0]
    for q in numba.prange(shares):
        p_lo, p_hi = q * n_panels // shares, (q + 1) * n_panels // shares
        if transposed:
            _pack_transposed_range(out, source, groups, p_lo, p_hi)
        else:
            _pack_range(out, source, groups, p_lo, p_hi)


#: Values of a packed matrix from which ``pack_panels`` splits the panels
#: between Numba's threads: a parallel region costs a few microseconds, and
#: at (128, 512) float32 two threads took 17 us against 13 for one; at
#: (1024, 4096) 1.4 against 3.4 ms (transposed: 2.2 against 3.0).
PACK_THREADED_MIN = 1 << 18


#: Bytes from which NumPy asks the kernel for transparent huge pages for an
#: array (``madvise``, NumPy >= 1.20 on Linux).  Arrays that Numba allocates
#: inside jitted code get ordinary 4 KB pages.
NUMPY_HUGE_PAGE_BYTES = 1 << 22


@numba.njit(**SERIAL)
def _cache_line_view(buffer, size):
    """The first ``size`` values of ``buffer`` from its first cache line (buffer has a line to spare)."""
    start = (CACHE_LINE - buffer.ctypes.data % CACHE_LINE) % CACHE_LINE // buffer.itemsize
    return buffer[start : start + size]


@numba.njit(**SERIAL)
def _aligned_vector(size, like):
    """An empty vector of ``size`` values of ``like.dtype`` whose data starts on
    a cache line; reshape it to the shape wanted.  Callable from jitted code
    (Numba aligns its own arrays to 32 bytes) and behind ``aligned_empty``."""
    return _cache_line_view(np.empty(size + CACHE_LINE // like.itemsize, like.dtype), size)


def aligned_empty(shape, dtype):
    """``np.empty(shape, dtype)`` whose data starts on a cache line.

    NumPy aligns its data to 16 bytes, so a 64-byte AVX-512 load of a panel
    row usually reads two cache lines.  Aligned panels and ``z`` made the
    B = 1 float32 forward 11-13% faster and 64x100x256x256 4% faster
    (bench/NOTES.md, "Session 13").  Arrays that several threads write, by
    panels of columns or by units, start on a line too, so that two threads
    never write one line at a share's edge (whole rows of a multiple of 64
    bytes stay aligned): the B = 1 float32 forward 0.93-0.97 of the time
    with its outputs aligned (bench/NOTES.md, "Session 17").  Small arrays
    go through the jitted ``_aligned_vector`` (about 1 us a call).  From
    NUMPY_HUGE_PAGE_BYTES up the buffer comes from NumPy, which gets it huge
    pages: packing the two 16 MB weights of H = 1024 faulted 8161 pages and
    took 11-12.6 ms with Numba's buffer, 1007 pages and 5.4-9.5 ms with
    NumPy's (bench/NOTES.md, "Session 16").
    """
    return _aligned(shape, dtype, zeroed=False)


def aligned_zeros(shape, dtype):
    """``np.zeros(shape, dtype)`` whose data starts on a cache line (see ``aligned_empty``).

    From NUMPY_HUGE_PAGE_BYTES up the buffer is NumPy's ``zeros``, whose
    pages the system zeroes when they are first touched, as for
    ``np.zeros`` itself.
    """
    return _aligned(shape, dtype, zeroed=True)


def aligned_copy(a):
    """A C-contiguous copy of ``a`` whose data starts on a cache line (see ``aligned_empty``)."""
    out = aligned_empty(a.shape, a.dtype)
    np.copyto(out, a)
    return out


def _aligned(shape, dtype, zeroed):
    """``aligned_empty`` (``zeroed`` False) or ``aligned_zeros`` (True)."""
    size, dtype = math.prod(shape), np.dtype(dtype)
    if size * dtype.itemsize < NUMPY_HUGE_PAGE_BYTES:
        out = _aligned_vector(size, np.empty(0, dtype))
        if zeroed:
            out.fill(0)
    else:
        allocate = np.zeros if zeroed else np.empty
        out = _cache_line_view(allocate(size + CACHE_LINE // dtype.itemsize, dtype), size)
    return out.reshape(shape)


def pack_panels(W, groups=1):
    """Pack W (K, N) into panels (n_panels, K, NR) of its columns.

    With ``groups = g``, the columns are g blocks of N / g (the four gates of
    an LSTM weight); each block is padded with zero columns to
    ``padded(N / g)`` and packed after the previous one, so block k starts at
    panel ``k * padded(N / g) / NR``.
    """
    K, N = W.shape
    NR = panel_width(W.dtype)
    out = aligned_empty((groups * padded(N // groups, W.dtype) // NR, K, NR), W.dtype)
    transposed = W.T.flags.c_contiguous and not W.flags.c_contiguous  # such as W[I:].T
    source = W.T if transposed else W
    shares = min(numba.get_num_threads(), out.shape[0]) if out.size >= PACK_THREADED_MIN else 1
    if shares > 1:
        _pack_threaded(out, source, groups, transposed, shares)
    elif transposed:
        _pack_transposed_range(out, source, groups, 0, out.shape[0])
    else:
        _pack_range(out, source, groups, 0, out.shape[0])
    return out


def pad_columns(v, groups=1):
    """A (N,) vector as ``groups`` blocks, each zero-padded to ``padded(N / groups)``."""
    out = np.empty(groups * padded(v.shape[0] // groups, v.dtype), v.dtype)
    _pad_into(out, v, groups)
    return out
