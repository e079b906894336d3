"""The packed-panel product (``numba_lstm._panels``) and the threaded sequence kernels."""

import math
import tracemalloc

import numba
import numpy as np
import pytest
from conftest import as64, assert_close, make_problem, numba_threads

import numba_lstm
import numba_lstm._panels
import numba_lstm.functional
import numba_lstm.jit
from numba_lstm import reference
from numba_lstm._panels import (
    CACHE_LINE,
    TALL_ROWS,
    TILE_ROWS,
    _aligned_vector,
    _gate_panel_product,
    _panel_block,
    _panel_block_sums,
    _panel_product,
    _tail_joins,
    _tail_tiles,
    _unpacked_product,
    aligned_empty,
    aligned_zeros,
    pack_panels,
    pad_columns,
    padded,
    panel_width,
)


def _product_reference(out, a, W, groups):
    """out + a @ W in float64, with W's column groups padded as ``pack_panels`` pads them."""
    M, N = out.shape[0], W.shape[1]
    width = N // groups
    prod = (a.astype(np.float64) @ W.astype(np.float64)).reshape(M, groups, width)
    full = np.zeros((M, groups, padded(width, W.dtype)))
    full[:, :, :width] = prod
    return out.astype(np.float64) + full.reshape(M, groups * padded(width, W.dtype))


# A walk down a panel: full tiles, then tall tiles of TALL_ROWS (the tile
# shapes that exist), then fewer than TILE_ROWS rows for _few_rows; none
# left when the rows left over join the last tile, as a step's split counts
# them (_kernels._split_tiles).
@pytest.mark.parametrize("M", range(4 * TILE_ROWS + 2))
def test_tail_tiles_cover_the_rows(M):
    full, tall_1, tall_2 = _tail_tiles(M)
    assert full >= 0 and full % TILE_ROWS == 0
    assert tall_1 in (0, *TALL_ROWS) and tall_2 in (0, *TALL_ROWS)
    assert tall_1 > 0 or tall_2 == 0
    left = M - (full + tall_1 + tall_2)
    assert 0 <= left < TILE_ROWS
    if _tail_joins(M):
        assert left == 0


# Rows cover every tile size and remainder (8, 4, 2, 1) and every end of a
# walk down a panel (_tail_tiles), with AVX2 (5, 6, 4 + 3, 5 + 6 rows) and
# with AVX-512 (5 and 7 rows in one tile, 4 + 5, 5 + 6, 6 + 7, 8 + 7, and
# even rows left to _few_rows); K = 0 leaves out as it is.
@pytest.mark.parametrize("M", [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 19, 22, 23])
@pytest.mark.parametrize(
    "K, N, groups", [(0, 8, 1), (1, 33, 1), (5, 4 * 7, 4), (64, 4 * 40, 4), (37, 100, 1)]
)
def test_panel_product_matches_numpy(M, K, N, groups, dtype):
    rng = np.random.default_rng(M * 1000 + K)
    a = rng.standard_normal((M, K)).astype(dtype)
    W = rng.standard_normal((K, N)).astype(dtype)
    w = pack_panels(W, groups)
    out = rng.standard_normal((M, w.shape[0] * panel_width(dtype))).astype(dtype)
    expected = _product_reference(out, a, W, groups)
    _panel_product(out, a, w, 0, w.shape[0])
    assert_close(out, expected, dtype, "out")


# A row's values do not depend on the tile that computed it (a full, tall or
# few-row tile): each is one chain of FMAs in the order of k.  The forward of
# a whole sequence gives the bits of the same steps run one call at a time,
# and a step's bits do not depend on how the threads split its rows.
# The same for the product on an unpacked W (``jit.step_into``), whole panels.
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("K, N", [(37, 100), (64, 200)])
def test_panel_product_rows_equal_rows_computed_alone(K, N, packed, dtype):
    rng = np.random.default_rng(K)
    M = 23
    a = rng.standard_normal((M, K)).astype(dtype)
    W = rng.standard_normal((K, N)).astype(dtype)
    w = pack_panels(W)
    n_panels = w.shape[0] if packed else N // panel_width(dtype)

    def product(out, a):
        if packed:
            _panel_product(out, a, w, 0, n_panels)
        else:
            _unpacked_product(out, a, W, n_panels)

    start = rng.standard_normal((M, w.shape[0] * panel_width(dtype))).astype(dtype)
    alone = start.copy()
    for r in range(M):
        product(alone[r : r + 1], a[r : r + 1])
    for rows in range(1, M + 1):
        out = start[:rows].copy()
        product(out, a[:rows])
        np.testing.assert_array_equal(out, alone[:rows], err_msg=f"{rows} rows")
    expected = start.astype(np.float64)
    cols = slice(0, min(N, n_panels * panel_width(dtype)))
    expected[:, cols] += a.astype(np.float64) @ W[:, cols]
    assert_close(out, expected, dtype, "out")


# Panels 1..p_hi of 8: a sub-range that starts off the first panel, so the
# several-panel tiles of the left-over rows (M = 3: 2 + 1, and M = 1) start
# there too and end in one-panel tiles, as the one-panel tall tiles do (M =
# 11: 5 + 6 with AVX2 and AVX-512 alike; M = 7: 4 + 3, or one of 7).
@pytest.mark.parametrize("M, p_hi", [(11, 3), (11, 7), (7, 7), (3, 7), (1, 6)])
def test_panel_product_touches_only_its_panels_and_reads_k_columns_of_a(M, p_hi, dtype):
    rng = np.random.default_rng(3)
    NR = panel_width(dtype)
    K, N = 20, 8 * NR
    a_wide = rng.standard_normal((M, K + 3)).astype(dtype)  # ld_a > K: only the first K columns count
    W = rng.standard_normal((K, N)).astype(dtype)
    out = rng.standard_normal((M, N)).astype(dtype)
    before = out.copy()
    _panel_product(out, a_wide, pack_panels(W), 1, p_hi)
    expected = before.astype(np.float64)
    cols = slice(NR, p_hi * NR)
    expected[:, cols] += a_wide[:, :K].astype(np.float64) @ W[:, cols]
    np.testing.assert_array_equal(out[:, :NR], before[:, :NR])
    np.testing.assert_array_equal(out[:, p_hi * NR :], before[:, p_hi * NR :])
    assert_close(out, expected, dtype, "out")


# The weight gradient's product (``_kernels._dW_panels``): every tile of
# ``_panel_block_sums`` (full ones, then 4, 2 and 1 rows), on panels 1..p_hi
# and blocks of k that start past column 0.  Each call sums its block of k
# from zero and adds that to out once, so calls over consecutive blocks give
# the bits of out + (sum of block 1) + (sum of block 2), each sum a call on
# zeros; columns outside the panels keep their values.  With one chain over
# all of k (``_panel_block``) the bits differ.  An empty block of k leaves
# out as it is, -0.0 included.
@pytest.mark.parametrize("M", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14, 15, 16, 23])
@pytest.mark.parametrize("p_hi", [2, 4])
def test_panel_block_sums_add_each_block_summed_from_zero(M, p_hi, dtype):
    rng = np.random.default_rng(M)
    NR = panel_width(dtype)
    K, N, k_mid = 300, 4 * NR, 170
    a_wide = rng.standard_normal((M, K + 5)).astype(dtype)  # ld_a > K
    W = rng.standard_normal((K, N)).astype(dtype)
    w = pack_panels(W)
    start = rng.standard_normal((M, N)).astype(dtype)
    out = start.copy()
    _panel_block_sums(out, a_wide, w, 1, p_hi, 3, k_mid)
    _panel_block_sums(out, a_wide, w, 1, p_hi, k_mid, K)
    sums = []
    for k_lo, k_hi in [(3, k_mid), (k_mid, K)]:
        alone = np.zeros_like(start)
        _panel_block_sums(alone, a_wide, w, 1, p_hi, k_lo, k_hi)
        sums.append(alone)
    cols = slice(NR, p_hi * NR)
    expected = start.copy()
    expected[:, cols] = (start[:, cols] + sums[0][:, cols]) + sums[1][:, cols]
    np.testing.assert_array_equal(out, expected)
    exact = start.astype(np.float64)
    exact[:, cols] += a_wide[:, 3:K].astype(np.float64) @ W[3:, cols]
    assert_close(out, exact, dtype, "out")
    if M > 0:
        one_chain = start.copy()
        _panel_block(one_chain, a_wide, w, 1, p_hi, 3, K)
        assert not np.array_equal(one_chain, out)
    signed_zeros = np.full_like(start, -0.0)
    _panel_block_sums(signed_zeros, a_wide, w, 1, p_hi, 5, 5)  # an empty block of k: out as it was
    assert np.all(np.signbit(signed_zeros))


# The tiles that sum from zero read out only at their exit and prefetch its
# lines at their entry (the weight gradient's dW comes from memory at large
# sizes, bench/NOTES.md "Session 41"); the tiles that start from out load it
# at once and have nothing to prefetch.  Compiled afresh (a function loaded
# from the compile cache keeps no LLVM IR); the tiles are intrinsics, so
# their IR is in the caller's.
def test_only_the_tiles_that_sum_from_zero_prefetch_out(dtype):
    sums = numba.njit(_panel_block_sums.py_func)
    full_tiles = numba.njit(numba_lstm._panels._full_tiles.py_func)
    NR = panel_width(dtype)
    a, w = np.ones((TILE_ROWS, 8), dtype), pack_panels(np.ones((8, NR), dtype))
    out = np.zeros((TILE_ROWS, NR), dtype)
    sums(out, a, w, 0, 1, 0, 8)
    full_tiles(out, a, w, 0, 1, 0, 8, TILE_ROWS)
    (sums_ir,) = sums.inspect_llvm().values()
    (full_ir,) = full_tiles.inspect_llvm().values()
    assert "llvm.prefetch" in sums_ir
    assert "llvm.prefetch" not in full_ir
    np.testing.assert_array_equal(out, 16 * np.ones_like(out))  # 8 from each call


# Rows on both sides of the full tile, unit panels 0..n of 3 or a middle range:
# the four gates of a unit panel in one tile give the bits of one product per
# gate, and columns outside the range keep their values.
@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 7, 9, 13, 14])
@pytest.mark.parametrize("u_lo, u_hi", [(0, 3), (1, 2), (1, 3)])
def test_gate_panel_product_gives_the_bits_of_a_product_per_gate(M, u_lo, u_hi, dtype):
    rng = np.random.default_rng(M + 10 * u_lo + 100 * u_hi)
    NR = panel_width(dtype)
    K, H = 19, 3 * NR - 5  # the last unit panel of each gate is padded
    W = rng.standard_normal((K, 4 * H)).astype(dtype)
    w = pack_panels(W, groups=4)
    n = w.shape[0] // 4
    # a and out are row views of wider arrays: rows further apart than their width.
    a = rng.standard_normal((M, K + 5)).astype(dtype)[:, :K]
    out_wide = rng.standard_normal((M, 4 * n * NR + 7)).astype(dtype)
    out = out_wide[:, : 4 * n * NR]
    expected = out.copy()
    for g in range(4):
        _panel_product(expected, np.ascontiguousarray(a), w, g * n + u_lo, g * n + u_hi)
    before = out_wide.copy()
    _gate_panel_product(out, a, w, u_lo, u_hi)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out_wide[:, 4 * n * NR :], before[:, 4 * n * NR :])
    for g in range(4):  # the product itself, against float64, in the range
        cols = slice((g * n + u_lo) * NR, (g * n + u_hi) * NR)
        assert not np.array_equal(out[:, cols], before[:, cols])
        unpadded = W[:, g * H : (g + 1) * H]
        ref = before[:, : 4 * n * NR].astype(np.float64)
        lo, hi = u_lo * NR, min(u_hi * NR, H)
        ref[:, g * n * NR + lo : g * n * NR + hi] += a.astype(np.float64) @ unpadded[:, lo:hi]
        assert_close(
            out[:, g * n * NR + lo : g * n * NR + hi], ref[:, g * n * NR + lo : g * n * NR + hi], dtype, "out"
        )


@pytest.mark.parametrize("threaded", [False, True], ids=["serial", "threaded"])
def test_pack_panels_layout(threaded, dtype, monkeypatch):
    if threaded:  # split between Numba's threads, as large matrices are
        monkeypatch.setattr(numba_lstm._panels, "PACK_THREADED_MIN", 0)
    NR = panel_width(dtype)
    K, H = 3, NR + 5  # each gate block padded to 2 panels
    W = np.arange(K * 4 * H, dtype=dtype).reshape(K, 4 * H) + 1
    w = pack_panels(W, groups=4)
    assert w.shape == (8, K, NR)
    for gate in range(4):
        for j in range(2 * NR):
            panel, col = divmod(gate * 2 * NR + j, NR)
            expected = W[:, gate * H + j] if j < H else np.zeros(K, dtype)
            np.testing.assert_array_equal(w[panel, :, col], expected)
    b = np.arange(4 * H, dtype=dtype) + 1
    b_pad = pad_columns(b, groups=4).reshape(4, 2 * NR)
    np.testing.assert_array_equal(b_pad[:, :H], b.reshape(4, H))
    assert not b_pad[:, H:].any()


# (1025, 1024): past NUMPY_HUGE_PAGE_BYTES in both dtypes, allocated by NumPy
# rather than in jitted code.
@pytest.mark.parametrize("shape", [(0,), (1,), (3, 5), (7, 33, 16), (2, 0, 4), (1025, 1024)])
def test_aligned_empty(shape, dtype):
    # Allocated many times, so that NumPy's own 16-byte alignment gives
    # misaligned starts among them.
    for _ in range(20):
        a = aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.size == 0 or a.ctypes.data % CACHE_LINE == 0  # (NumPy may move an empty one's pointer)
        a[...] = 1  # the whole array is writable memory


@pytest.mark.parametrize("shape", [(0,), (1,), (3, 5), (7, 33, 16), (1025, 1024)])
def test_aligned_zeros(shape, dtype):
    for _ in range(20):
        # Dirty the allocator first, so that a reused block is not zero by chance.
        np.full(max(1, math.prod(shape)) + 64, 7.0, dtype)
        a = aligned_zeros(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.size == 0 or a.ctypes.data % CACHE_LINE == 0
        assert not a.any()


def test_forward_arrays_start_on_a_cache_line(dtype):
    # Threads write these by shares of columns or units: on a line, two
    # threads never write one line at a share's edge when rows are whole lines.
    T, B, I, H = 3, 2, 5, 32
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    W = rng.standard_normal((I + H, 4 * H)).astype(dtype)
    b = rng.standard_normal(4 * H).astype(dtype)
    for _ in range(10):
        y, _, _, cache = numba_lstm.lstm_forward(x, W, b)
        for name in ("y", "c", "gates", "tanh_c"):
            assert getattr(cache, name).ctypes.data % CACHE_LINE == 0, name
        assert y.ctypes.data % CACHE_LINE == 0
        # jit.forward allocates its outputs in jitted code.
        assert numba_lstm.jit.forward(x, W, b, cache.h0, cache.c0)[0].ctypes.data % CACHE_LINE == 0


def test_packed_panels_start_on_a_cache_line(dtype):
    W = np.ones((5, 4 * 3), dtype)
    assert all(pack_panels(W, groups=4).ctypes.data % CACHE_LINE == 0 for _ in range(20))
    # jit.forward allocates its panels in jitted code, where Numba's own
    # arrays start on 32 bytes only.
    like = np.zeros(1, dtype)
    for size in range(1, 60, 3):
        v = _aligned_vector(size, like)
        assert v.shape == (size,) and v.dtype == dtype and v.ctypes.data % CACHE_LINE == 0


# A transposed matrix (W[I:].T in the backward) goes through its own packing
# loop, TRANSPOSE_ROWS source rows at a time: panels of 37 - NR, 33 - NR and 5
# columns leave rows after the groups of 8 (and panels with none).  Large
# matrices are packed by several threads (PACK_THREADED_MIN); ``threaded``
# lowers the threshold so that these small ones are too.
@pytest.mark.parametrize("threaded", [False, True], ids=["serial", "threaded"])
@pytest.mark.parametrize("K, N, groups", [(70, 4 * 37, 4), (130, 33, 1), (2, 5, 1)])
def test_pack_panels_of_a_transposed_matrix(K, N, groups, threaded, dtype, monkeypatch):
    if threaded:
        monkeypatch.setattr(numba_lstm._panels, "PACK_THREADED_MIN", 0)
    WT = np.random.default_rng(K).standard_normal((N, K)).astype(dtype)
    W = WT.T
    assert W.flags.f_contiguous and not W.flags.c_contiguous
    np.testing.assert_array_equal(pack_panels(W, groups), pack_panels(np.ascontiguousarray(W), groups))
    w = pack_panels(W, groups)
    width, NR = N // groups, panel_width(dtype)
    per_group = padded(width, dtype) // NR
    for gate in range(groups):  # the layout itself, not only agreement between the two loops
        for j in range(per_group * NR):
            panel, col = divmod(gate * per_group * NR + j, NR)
            expected = W[:, gate * width + j] if j < width else np.zeros(K, dtype)
            np.testing.assert_array_equal(w[panel, :, col], expected)


def test_tile_rows_match_the_vector_width():
    assert TILE_ROWS in (4, 8)


# Shapes: H both a multiple of the panel width and not; lengths, reverse and a
# projection; batches on both sides of the tile sizes.
CASES = [
    dict(T=5, B=9, I=7, H=40),
    dict(T=6, B=13, I=8, H=64, lengths=[6, 3, 0, 5, 1, 6, 2, 2, 6, 4, 6, 6, 1]),
    dict(T=4, B=11, I=5, H=36, reverse=True, lengths=[4, 1, 2, 3, 4, 4, 0, 1, 2, 3, 4]),
    dict(T=4, B=10, I=6, H=48, P=20),
    dict(T=5, B=3, I=4, H=33, P=7, reverse=True, lengths=[5, 2, 4]),
    # N = 600 rows: two blocks of GRAD_ROWS = 512 (51 and 9 steps); I + P =
    # 140 features: three shares of the gather and two passes of GRAD_FEATURES.
    dict(T=60, B=10, I=70, H=70),
    # H = 80: three panels of the projection's gradient in float32, five in
    # float64 with AVX-512 (five and ten with AVX2), so that each of the three
    # workers takes some (``_projection_grad``).
    dict(T=6, B=10, I=8, H=80, P=70),
    # 32 MB of float32 weights, past ROW_SPLIT_MAX_BYTES on every host, and
    # a tile of rows or more per worker: the steps split by units, with rows
    # (``_forward_shares``), and the backward's by panels of h.
    dict(T=3, B=3 * TILE_ROWS, I=1024, H=1024),
]


def _run(case, dtype, threaded, monkeypatch, workers=3):
    monkeypatch.setattr(numba_lstm.functional, "_use_threads", lambda *shape: threaded)
    # Three workers whatever the machine's thread count (3 shares of a
    # backward step, up to 12 of a forward one; with AVX-512 B < 3 tiles, so the
    # steps are split by units, and by rows too from two tiles): uneven
    # ranges of panels, and more shares than panels for the small gate blocks.
    # Two for the pipelined backward.
    monkeypatch.setattr(numba_lstm.functional, "_threads", lambda threaded: workers if threaded else 1)
    T, B, I, H = case["T"], case["B"], case["I"], case["H"]
    P = case.get("P")
    p = make_problem(T, B, I, H, dtype)
    rng = np.random.default_rng(7)
    if P is not None:
        p["W"] = (rng.standard_normal((I + P, 4 * H)) * 0.3).astype(dtype)
        p["h0"] = rng.standard_normal((B, P)).astype(dtype)
        p["W_hr"] = (rng.standard_normal((H, P)) * 0.3).astype(dtype)
    if "lengths" in case:
        p["lengths"] = np.array(case["lengths"])
    p["reverse"] = case.get("reverse", False)
    y, h_n, c_n, cache = numba_lstm.lstm_forward(**p)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dh_n = rng.standard_normal(h_n.shape).astype(dtype)
    dc_n = rng.standard_normal(c_n.shape).astype(dtype)
    grads = numba_lstm.lstm_backward(dy, cache, dh_n, dc_n)
    return p, (y, h_n, c_n, *grads), (dy, dh_n, dc_n)


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: "-".join(f"{k}{v if k != 'lengths' else ''}" for k, v in c.items())
)
def test_threaded_kernels_match_serial_bit_for_bit_and_the_reference(case, dtype, monkeypatch):
    p, threaded, upstream = _run(case, dtype, True, monkeypatch)
    _, serial, _ = _run(case, dtype, False, monkeypatch)
    for got, ser in zip(threaded, serial, strict=True):
        np.testing.assert_array_equal(got, ser)
    _assert_matches_the_reference(p, threaded, upstream, dtype)


def _assert_matches_the_reference(p, results, upstream, dtype):
    """``_run``'s results (y, h_n, c_n and the gradients) against the float64 reference."""
    floats = {k: v for k, v in p.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"}
    ry, rh, rc, rcache = reference.lstm_forward(**{**p, **as64(floats)})
    dy, dh_n, dc_n = (u.astype(np.float64) for u in upstream)
    ref = (ry, rh, rc, *reference.lstm_backward(dy, rcache, dh_n, dc_n))
    names = ["y", "h_n", "c_n", "dx", "dW", "db", "dh0", "dc0", "dW_hr"][: len(ref)]
    for name, got, r in zip(names, results, ref, strict=True):
        assert_close(got, r, dtype, name)


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: "-".join(f"{k}{v if k != 'lengths' else ''}" for k, v in c.items())
)
def test_forward_without_cache_equals_the_forward_with_one(case, threaded, dtype, monkeypatch):
    """cache=False stores no gates nor tanh(c_t) (``_gates_forward_unsaved``),
    and c_t of even and odd steps in two slots instead of every step's: the
    same arithmetic, so the same bits.  Every case has N > 2B rows (the
    slots are used), and the cases with lengths end sequences on even and
    odd steps and at length 0 (c_n = c0)."""
    p, with_cache, _ = _run(case, dtype, threaded, monkeypatch)
    rows = sum(case.get("lengths", [case["T"]] * case["B"]))
    assert rows > 2 * case["B"]
    y, h_n, c_n, cache = numba_lstm.lstm_forward(**p, cache=False)
    assert cache is None
    for got, expected in zip((y, h_n, c_n), with_cache[:3], strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("T", [1, 2, 3, 4, 5])
def test_jit_forward_equals_lstm_forward_bit_for_bit(T, dtype):
    """``jit.forward`` keeps c_t in two slots from T = 3 on (all N rows below,
    as the kernel reads them): c_n comes from the slot of the last step for
    either parity of T."""
    p = make_problem(T, 3, 5, 20, dtype)
    expected = numba_lstm.lstm_forward(**p)[:3]
    got = numba_lstm.jit.forward(p["x"], p["W"], p["b"], p["h0"], p["c0"])
    for name, g, e in zip(("y", "h_n", "c_n"), got, expected, strict=True):
        np.testing.assert_array_equal(g, e, err_msg=name)


def test_forward_without_cache_does_not_store_every_step_of_c():
    """Inference allocates y (N, H) and nothing else of that size: c keeps two
    steps.  Arrays from 4 MiB come from NumPy (``aligned_empty``), which
    tracemalloc sees; the lower bound checks that it saw y."""
    p = make_problem(1000, 8, 16, 256, np.float32)  # y: 8.2 MB
    numba_lstm.lstm_forward(**p, cache=False)  # compiled before tracing
    tracemalloc.start()
    try:
        y = numba_lstm.lstm_forward(**p, cache=False)[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert y.nbytes <= peak < 1.5 * y.nbytes, (peak, y.nbytes)


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: "-".join(f"{k}{v if k != 'lengths' else ''}" for k, v in c.items())
)
def test_backward_in_blocks_of_a_step_matches_serial_and_the_reference(case, dtype, monkeypatch):
    """GRAD_ROWS = ONE_TILE_GRAD_ROWS = 5: every block of the backward holds one step (or a few short ones).

    The ring of gate gradients then changes slot at almost every step, the
    first step of each block reads the step after it from the other slot, and
    dW sums many blocks from the last to the first.  The block size changes
    that order of summation, so the check is threaded against serial (bit
    for bit) and both against the reference.
    """
    monkeypatch.setattr(numba_lstm.functional, "GRAD_ROWS", 5)
    monkeypatch.setattr(numba_lstm.functional, "ONE_TILE_GRAD_ROWS", 5)  # B = 3 is one tile
    test_threaded_kernels_match_serial_bit_for_bit_and_the_reference(case, dtype, monkeypatch)
    rows = sum(case.get("lengths", [case["T"]] * case["B"]))
    assert rows > 5, "the case must span more than one block of 5 rows"


@pytest.mark.parametrize("case", [CASES[1], CASES[4]], ids=["lengths", "projection"])
def test_one_thread_running_every_share_takes_them_all(case, dtype, monkeypatch):
    """Three shares on one Numba thread: the prange iterations of the forward
    (and of each block of the backward) run one after the other, so the first
    must take every share of every step and the others find them done
    (``numba_lstm._sync``), with the bits of the serial run.  Waiting for a
    share that no running thread took would hang here instead."""
    with numba_threads(1):
        _, one_thread, _ = _run(case, dtype, True, monkeypatch)
    _, serial, _ = _run(case, dtype, False, monkeypatch)
    for got, expected in zip(one_thread, serial, strict=True):
        np.testing.assert_array_equal(got, expected)


# Steps of one tile of rows on two workers: the pipelined backward
# (``_kernels._pipelined``).  Lengths with a sequence of length 0 and steps
# past every length (empty blocks), a projection, reverse.
PIPELINED_CASES = [
    dict(T=40, B=1, I=7, H=40),
    dict(T=20, B=3, I=8, H=64, lengths=[20, 5, 0]),
    dict(T=30, B=3, I=6, H=48, lengths=[25, 7, 19]),
    dict(T=14, B=2, I=5, H=36, P=7, reverse=True),
]


@pytest.mark.parametrize("slots", [2, 4])
@pytest.mark.parametrize(
    "case", PIPELINED_CASES, ids=lambda c: "-".join(f"{k}{v if k != 'lengths' else ''}" for k, v in c.items())
)
def test_pipelined_backward_matches_serial_bit_for_bit_and_the_reference(case, slots, dtype, monkeypatch):
    """Blocks of 5 rows: one thread walks many blocks of steps while the other
    computes the weight gradients of the blocks walked, and the ring's slots
    come round again (the walk of block k waits for the gradients of block
    k - 2 with two slots, of block k - 4 with four).  The serial run sums dW
    over the same blocks, so the bits are the same."""
    assert numba_lstm._kernels._pipelined(case["B"], 2, 2, 64 * 1024)  # its packed weights are under 64 KB
    monkeypatch.setattr(numba_lstm.functional, "ONE_TILE_GRAD_ROWS", 5)
    monkeypatch.setattr(numba_lstm.functional, "PIPELINE_SLOTS", slots)
    lengths = np.array(case.get("lengths", [case["T"]] * case["B"]))
    batch_sizes = np.array([(lengths > t).sum() for t in range(case["T"])], np.int64)
    blocks = numba_lstm._kernels._step_blocks(numba_lstm._kernels._offsets(batch_sizes), np.int64(5))
    assert blocks.size > slots + 1, "the walk must come round the ring"
    p, pipelined, upstream = _run(case, dtype, True, monkeypatch, workers=2)
    _, serial, _ = _run(case, dtype, False, monkeypatch)
    for got, ser in zip(pipelined, serial, strict=True):
        np.testing.assert_array_equal(got, ser)
    _assert_matches_the_reference(p, pipelined, upstream, dtype)


# A sequence of length 0 leaves every step a row fewer than the batch: with
# B = TILE_ROWS + 1 the steps are one tile of rows, pipelined on two workers,
# while the batch is two tiles.  The Python layer once sized the ring and the
# counters by the batch while the kernel chose the pipelined walk by the
# steps' rows, and wrote past its counters: results changed from run to run
# (found on AVX-512 by the test of splitting a step of 9 rows).
def test_backward_with_an_empty_sequence_goes_by_the_rows_of_the_steps(dtype, monkeypatch):
    B = TILE_ROWS + 1
    case = dict(T=12, B=B, I=6, H=40, lengths=[12, 0] + [2 + r for r in range(B - 2)])
    assert numba_lstm._kernels._pipelined(B - 1, 2, 2, 64 * 1024)  # its packed weights are under 64 KB
    assert not numba_lstm._kernels._pipelined(B, 2, 2, 64 * 1024)
    monkeypatch.setattr(numba_lstm.functional, "GRAD_ROWS", 5)
    monkeypatch.setattr(numba_lstm.functional, "ONE_TILE_GRAD_ROWS", 5)
    p, serial, upstream = _run(case, dtype, False, monkeypatch)
    for _ in range(3):
        _, pipelined, _ = _run(case, dtype, True, monkeypatch, workers=2)
        for got, expected in zip(pipelined, serial, strict=True):
            np.testing.assert_array_equal(got, expected)
    _assert_matches_the_reference(p, serial, upstream, dtype)


@pytest.mark.parametrize("case", [PIPELINED_CASES[2], PIPELINED_CASES[3]], ids=["lengths", "projection"])
def test_one_thread_running_a_pipelined_backward_takes_every_share(case, dtype, monkeypatch):
    """Both workers of a pipelined backward on one Numba thread, one after the
    other: the first to run walks every block and computes every weight
    gradient (it must, once the ring is full), the other finds them done."""
    monkeypatch.setattr(numba_lstm.functional, "ONE_TILE_GRAD_ROWS", 5)
    monkeypatch.setattr(numba_lstm.functional, "PIPELINE_SLOTS", 2)
    with numba_threads(1):
        _, one_thread, _ = _run(case, dtype, True, monkeypatch, workers=2)
    _, serial, _ = _run(case, dtype, False, monkeypatch)
    for got, expected in zip(one_thread, serial, strict=True):
        np.testing.assert_array_equal(got, expected)
