"""The hand-out of a step's shares between threads (``numba_lstm._sync``)."""

import numba
import numpy as np
import pytest

import numba_lstm
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
        (6, 16, 40, 200, 200, None),  # 7 (float32) or 13 panels of units for 8 shares: uneven shares
        (5, 9, 33, 130, 70, [5, 1, 4, 5, 2, 3, 5, 0, 4]),  # projection: 3 or 5 panels; ended, empty rows
    ],
)
def test_splitting_a_step_between_threads_does_not_change_a_bit(dtype, T, B, I, H, P, lengths):
    """One thread computes each step whole; two split it into shares (four per
    thread in the forward, taken in whatever order the threads arrive).  Every
    unit's arithmetic is the same either way, so the results are equal bit for
    bit, forward and backward."""
    lengths = None if lengths is None else np.array(lengths)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _run(dtype, T, B, I, H, P, lengths)
        numba.set_num_threads(2)
        two = _run(dtype, T, B, I, H, P, lengths)
    finally:
        numba.set_num_threads(before)
    for k, (a, b) in enumerate(zip(one, two, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"output {k}")
