"""The hand-out of a step's shares between threads (``numba_lstm._sync``)."""

import numba
import numpy as np
import pytest
from conftest import numba_threads

import numba_lstm
from numba_lstm._kernels import (
    FORWARD_SHARES_PER_THREAD,
    GRAD_SHARES_PER_THREAD,
    ONE_TILE_SHARES_PER_THREAD,
    PIPELINE_MAX_BYTES,
    SHARE_PANELS,
    _backward_shares,
    _forward_shares,
    _offsets,
    _pipelined,
    _row_block,
    _share_count,
    _share_rects,
    _shares_per_thread,
    _split_tiles,
    _step_blocks,
    _tile_row,
)
from numba_lstm._panels import TILE_ROWS
from numba_lstm._sync import MAX_SHARES, claim, counters, finish, home, wait_for


@numba.njit
def _claims(sync, phase, shares, workers):
    """Every claim of ``phase`` by the given workers, one after the other, until each gets -1."""
    out = []
    for worker in workers:
        q = claim(sync, phase, shares, worker)
        while q >= 0:
            out.append(q)
            q = claim(sync, phase, shares, worker)
    return out


def test_a_worker_takes_its_own_share_first_then_the_ones_after_it():
    sync = counters(2)
    # worker 1 alone: its share, then 2, then wraps to 0; worker 0 finds none.
    assert _claims(sync, 1, 3, np.array([1, 0])) == [1, 2, 0]
    assert sync[0] == 0, "phase 0 is untouched"


def test_each_worker_gets_its_own_share_when_it_arrives_in_time():
    sync = counters(1)
    got = [claim(sync, 0, 4, worker) for worker in (2, 0, 3, 1)]
    assert got == [2, 0, 3, 1]
    assert [claim(sync, 0, 4, worker) for worker in range(4)] == [-1] * 4


def test_a_worker_index_past_the_shares_wraps_around():
    sync = counters(1)
    assert claim(sync, 0, 3, 4) == 1


def test_the_largest_number_of_shares_uses_every_bit():
    sync = counters(1)
    got = _claims(sync, 0, MAX_SHARES, np.array([MAX_SHARES - 1]))
    assert got == [MAX_SHARES - 1, *range(MAX_SHARES - 1)]


@numba.njit
def _finish_all(sync, phase, shares):
    for _ in range(shares):
        finish(sync, phase)
    wait_for(sync, phase, shares)  # returns at once: all are done
    return sync[2 * phase + 1]


def test_done_counts_the_finished_shares():
    sync = counters(2)
    assert _finish_all(sync, 1, 5) == 5
    assert sync[2] == 0, "finishing does not mark shares taken"


@pytest.mark.parametrize(("workers", "shares"), [(1, 1), (2, 2), (2, 7), (2, 8), (3, 8), (16, MAX_SHARES)])
def test_each_worker_starts_its_own_contiguous_block(workers, shares):
    starts = [home(w, workers, shares) for w in range(workers)]
    assert starts[0] == 0
    assert (np.diff(starts) > 0).all(), starts
    assert starts[-1] < shares
    # Blocks as even as integer division allows: their sizes differ by at most 1.
    sizes = np.diff([*starts, shares])
    assert sizes.max() - sizes.min() <= 1, sizes


# The bound on a split by rows (ROW_SPLIT_MAX_BYTES, which depends on the
# host) is an argument of the kernels: these tests pass their own.
BOUND = np.int64(1 << 20)
SMALL, LARGE = BOUND, BOUND + 1


@pytest.mark.parametrize(
    ("n_units", "B", "workers", "weight_bytes", "expected"),
    [
        (4, 1, 2, SMALL, (2, 1)),  # one tile of rows: units only, one share a worker
        (4, TILE_ROWS, 2, SMALL, (2, 1)),
        (16, 1, 2, SMALL, (2, 1)),
        (16, 1, 3, LARGE, (3, 1)),
        (1, 1, 2, SMALL, (1, 1)),  # fewer panels than workers
        (8, 8 * TILE_ROWS, 2, SMALL, (1, 4)),  # rows only, 2 shares of 4 panels a worker
        (4, 8 * TILE_ROWS, 2, SMALL, (1, 2)),  # rows only, 4 panels: one share a worker
        (1, 8 * TILE_ROWS, 2, SMALL, (1, 2)),
        (8, 2 * TILE_ROWS, 2, SMALL, (1, 2)),  # rows only: one tile a worker
        (8, 5 * TILE_ROWS, 2, SMALL, (1, 4)),  # rows alone, an odd number of tiles (_share_rects halves them)
        (8, 3 * TILE_ROWS - 1, 2, SMALL, (1, 3)),  # three tiles, the last one short
        (8, 2 * TILE_ROWS, 3, SMALL, (3, 1)),  # fewer tiles than workers: units, the rows whole
        (32, 16 * TILE_ROWS, 2, LARGE, (8, 1)),  # weights past the bound: units of 4 panels
        (8, 8 * TILE_ROWS, 2, LARGE, (2, 1)),  # ... a share a worker, the rows whole
        (12, 8 * TILE_ROWS, 2, LARGE, (2, 1)),  # 3 units shares of 4 panels: rounded down to 2 workers'
        (1, 8 * TILE_ROWS, 2, LARGE, (1, 2)),  # fewer panels than workers: a block of rows a worker
        (200, 64 * TILE_ROWS, 16, SMALL, (1, 63)),  # MAX_SHARES caps every split
        (200, 64 * TILE_ROWS, 16, LARGE, (48, 1)),
        (8, 8 * TILE_ROWS, 16, LARGE, (8, 2)),  # 8 unit shares for 16 workers: each in two row blocks
        (3, 8 * TILE_ROWS, 4, LARGE, (3, 2)),  # 3 unit shares for 4 workers
    ],
)
def test_forward_shares(n_units, B, workers, weight_bytes, expected):
    unit_shares, row_shares = _forward_shares(n_units, B, workers, weight_bytes, BOUND)
    assert (unit_shares, row_shares) == expected
    assert 1 <= unit_shares <= n_units and 1 <= row_shares <= -(-B // TILE_ROWS)
    per_thread = ONE_TILE_SHARES_PER_THREAD if B <= TILE_ROWS else FORWARD_SHARES_PER_THREAD
    assert _shares_per_thread(B) == per_thread  # the projection phase's count too
    assert unit_shares * row_shares <= min(MAX_SHARES, per_thread * workers)
    assert unit_shares * row_shares >= min(workers, unit_shares * -(-B // TILE_ROWS)), (
        "a share for each worker"
    )
    if unit_shares == 1 and B > TILE_ROWS:
        assert row_shares <= workers * max(1, n_units // SHARE_PANELS), (
            "shares of SHARE_PANELS panels at the least"
        )
    if unit_shares > 1 and B > TILE_ROWS:
        assert n_units // unit_shares >= min(SHARE_PANELS, n_units // workers)
        if n_units >= workers:
            assert unit_shares % workers == 0, "each worker's block of shares covers whole unit shares"
        assert unit_shares * (row_shares - 1) < workers, "rows split only to give each worker a share"


@pytest.mark.parametrize(
    ("n_h", "B", "workers", "weight_bytes", "projected", "expected"),
    [
        (4, 1, 2, SMALL, False, (2, 1)),  # one share per worker: by panels of h
        (4, 2 * TILE_ROWS, 2, SMALL, False, (1, 2)),  # by rows
        (4, 2 * TILE_ROWS, 3, SMALL, False, (3, 1)),  # fewer tiles than workers
        (4, 2 * TILE_ROWS, 2, LARGE, False, (2, 1)),  # weights past the bound
        (4, 2 * TILE_ROWS, 2, SMALL, True, (2, 1)),  # a projection needs all of dh_t per panel
        (4, 64 * TILE_ROWS, 1, SMALL, False, (1, 1)),
    ],
)
def test_backward_shares(n_h, B, workers, weight_bytes, projected, expected):
    assert _backward_shares(n_h, B, workers, weight_bytes, projected, BOUND) == expected


@pytest.mark.parametrize(
    ("B", "step_workers", "grad_workers", "weight_bytes", "expected"),
    [
        (1, 2, 2, PIPELINE_MAX_BYTES, True),  # B = 1 on two threads, weights that stay in cache
        (TILE_ROWS, 2, 2, 1024, True),  # one whole tile
        (TILE_ROWS + 1, 2, 2, 1024, False),  # two tiles: the steps split by rows
        (1, 2, 2, PIPELINE_MAX_BYTES + 1, False),  # one thread would stream the weights at every step
        (1, 1, 2, 1024, False),  # steps too small to split: the serial path
        (1, 2, 1, 1024, False),  # weight gradients too small to split
        (1, 3, 3, 1024, False),  # more threads than the two of the pipeline
    ],
)
def test_pipelined_backward(B, step_workers, grad_workers, weight_bytes, expected):
    assert _pipelined(B, step_workers, grad_workers, weight_bytes) == expected


@pytest.mark.parametrize(
    ("batch_sizes", "R", "expected"),
    [
        ([1] * 10, 4, [6, 2, 0]),  # whole steps, from the last
        ([3, 3, 2, 2, 1], 4, [3, 2, 1, 0]),  # at most R rows, one step at the least
        ([5, 5], 4, [1, 0]),  # a step of more than R rows: a block of its own
        ([3, 2, 0, 0], 4, [1, 0]),  # empty steps join the steps before them
    ],
)
def test_step_blocks(batch_sizes, R, expected):
    """t_lo of each block of the backward, from the last steps to the first."""
    offsets = _offsets(np.array(batch_sizes, np.int64))
    assert list(_step_blocks(offsets, np.int64(R))) == expected


@pytest.mark.parametrize(
    ("n", "workers", "expected"),
    [
        (64, 2, 2 * GRAD_SHARES_PER_THREAD),  # shares per thread
        (3, 2, 3),  # fewer panels than that: one share each
        (1000, 16, MAX_SHARES),  # the bits of one counter
        (5, 1, min(5, GRAD_SHARES_PER_THREAD)),
    ],
)
def test_share_count_of_the_weight_gradients(n, workers, expected):
    assert _share_count(n, GRAD_SHARES_PER_THREAD, workers) == expected


def _tile_bounds(rows):
    """The first row of each tile of a step's ``rows`` rows (``_split_tiles``), then ``rows``."""
    return [_tile_row(rows, t) for t in range(_split_tiles(rows) + 1)]


def _tiles_between(rows, lo, hi):
    """Tiles of a step's ``rows`` rows in rows lo..hi, two of their bounds."""
    bounds = _tile_bounds(rows)
    assert lo in bounds and hi in bounds, (lo, hi, bounds)
    return bounds.index(hi) - bounds.index(lo)


# _split_tiles: TILE_ROWS rows each; the rows left over join the last tile
# when the walk takes them with it (_panels._tail_joins): with AVX2 from
# TILE_ROWS rows on, with AVX-512 when 1, 3 or 5 rows are left over.
_SPLIT_TILES = {
    4: [(0, 0), (1, 1), (3, 1), (4, 1), (5, 1), (7, 1), (11, 2), (12, 3)],
    8: [(0, 0), (1, 1), (7, 1), (8, 1), (9, 1), (10, 2), (11, 1), (13, 1), (14, 2), (15, 2), (23, 3), (24, 3),
        (29, 3)],
}  # fmt: skip


@pytest.mark.parametrize(("rows", "expected"), _SPLIT_TILES[TILE_ROWS])
def test_split_tiles(rows, expected):
    assert _split_tiles(rows) == expected
    starts = [t * TILE_ROWS for t in range(expected)]
    assert [_tile_row(rows, t) for t in range(expected + 2)] == starts + [rows, rows]


@pytest.mark.parametrize("rows", [0, 1, TILE_ROWS, 5 * TILE_ROWS - 3, 9 * TILE_ROWS])
@pytest.mark.parametrize("row_shares", [1, 2, 4, 7])
def test_row_blocks_cover_the_rows_in_whole_tiles(rows, row_shares):
    blocks = [_row_block(rows, rb, row_shares) for rb in range(row_shares)]
    assert blocks[0][0] == 0 and blocks[-1][1] == rows
    for (lo, hi), (next_lo, _) in zip(blocks, blocks[1:], strict=False):
        assert lo <= hi == next_lo
        assert lo % TILE_ROWS == 0 and (hi % TILE_ROWS == 0 or hi == rows)
    sizes = [_tiles_between(rows, lo, hi) for lo, hi in blocks]
    assert max(sizes) - min(sizes) <= 1, sizes


@pytest.mark.parametrize(
    "rows", [1, TILE_ROWS, TILE_ROWS + 1, 3 * TILE_ROWS - 1, 5 * TILE_ROWS, 9 * TILE_ROWS + 2]
)
@pytest.mark.parametrize(
    ("n_units", "unit_shares", "row_shares", "workers"),
    [
        (n, 1, s, w)
        for n in (1, 3, 16)
        for s, w in ((1, 1), (2, 2), (3, 2), (5, 2), (7, 2), (8, 2), (7, 3), (2, 3))
    ]
    + [(3, 3, 2, 2), (16, 2, 4, 2)],
)
def test_share_rects_cover_each_panel_of_each_row_once(rows, n_units, unit_shares, row_shares, workers):
    """The shares of a step (``_share_rects``) compute every unit panel of
    every row exactly once.  Split by rows alone, each of the workers' blocks
    of shares (``home``) holds its even part of the rows times panels, give
    or take the rows of the tallest tile, however many tiles; each of a
    block's shares walks all of the block's whole tiles for some of the
    panels, none left without panels while there are enough; and only the
    block's first and last tiles, where it holds part of them, are
    computed apart."""
    count = np.zeros((rows, n_units), np.int64)
    shares = unit_shares * row_shares
    blocks = min(workers, shares)
    block_cells, split_tiles = [], []
    for w in range(blocks):
        cells, pieces, whole_rows, whole_shares = 0, {}, set(), 0
        first, end = home(w, blocks, shares), home(w + 1, blocks, shares)
        for q in range(first, end):
            rects = _share_rects(q, rows, n_units, unit_shares, row_shares, workers)
            for kind, (u_lo, u_hi, r_lo, r_hi) in enumerate(rects):
                if u_hi > u_lo and r_hi > r_lo:
                    assert 0 <= u_lo < u_hi <= n_units and 0 <= r_lo < r_hi <= rows
                    count[r_lo:r_hi, u_lo:u_hi] += 1
                    cells += (u_hi - u_lo) * (r_hi - r_lo)
                    if unit_shares == 1 and kind == 1:  # the block's whole tiles
                        whole_rows.add((r_lo, r_hi))
                        whole_shares += 1
                    elif unit_shares == 1:  # part of the block's first tile, or of its last
                        assert _tiles_between(rows, r_lo, r_hi) == 1 and u_hi - u_lo < n_units
                        pieces[r_lo] = pieces.get(r_lo, 0) + 1
        assert len(whole_rows) <= 1, f"block {w} splits its whole tiles by rows: {whole_rows}"
        assert whole_shares == (min(end - first, n_units) if whole_rows else 0)
        block_cells.append(cells)
        split_tiles.append(pieces)
    assert (count == 1).all()
    if unit_shares == 1:
        bounds = _tile_bounds(rows)
        tallest = max(hi - lo for lo, hi in zip(bounds, bounds[1:], strict=False))
        even = rows * n_units / blocks
        assert all(abs(cells - even) < tallest + 1 for cells in block_cells), (block_cells, even, tallest)
        for pieces in split_tiles:
            assert len(pieces) <= 2 and all(n == 1 for n in pieces.values()), pieces


def _run(dtype, T, B, I, H, P, lengths):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    W = (rng.standard_normal((I + P, 4 * H)) * 0.3 / np.sqrt(H)).astype(dtype)
    b = rng.standard_normal(4 * H).astype(dtype)
    W_hr = (rng.standard_normal((H, P)) * 0.3 / np.sqrt(H)).astype(dtype) if P != H else None
    y, h_n, c_n, cache = numba_lstm.lstm_forward(x, W, b, W_hr=W_hr, lengths=lengths)
    grads = numba_lstm.lstm_backward(rng.standard_normal(y.shape).astype(dtype), cache)
    return (y, h_n, c_n, *grads)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads to split a step")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("T", "B", "I", "H", "P", "lengths"),
    [
        (6, 5, 40, 200, 200, None),  # one tile with AVX-512: 7 (float32) or 13 panels of units, 8 shares
        (6, 16, 40, 200, 200, None),  # rows: two or four tiles
        (4, 20, 24, 100, 100, None),  # rows: three or five tiles, so shares that split a tile by units
        (3, 64, 24, 260, 260, None),  # 8 or 16 tiles, 9 or 17 panels: a thread's part in shares of panels
        (5, 37, 21, 50, 50, np.arange(37) % 6),  # rows: uneven blocks, the batch shrinks, empty sequences
        (5, 9, 33, 130, 70, [5, 1, 4, 5, 2, 3, 5, 0, 4]),  # projection: 3 or 5 panels; ended, empty rows
    ],
)
def test_splitting_a_step_between_threads_does_not_change_a_bit(dtype, T, B, I, H, P, lengths):
    """One thread computes each step whole; two split it into shares (up to
    four per thread in the forward, by units or by rows, taken in whatever
    order the threads arrive).  Every unit's arithmetic is the same either
    way, so the results are equal bit for bit, forward and backward."""
    lengths = None if lengths is None else np.array(lengths)
    with numba_threads(1):
        one = _run(dtype, T, B, I, H, P, lengths)
    with numba_threads(2):
        two = _run(dtype, T, B, I, H, P, lengths)
    for k, (a, b) in enumerate(zip(one, two, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {k}")
