"""The hand-out of a step's shares between threads (``numba_lstm._sync``)."""

import numba
import numpy as np

from numba_lstm._sync import MAX_SHARES, claim, counters, finish, wait_for


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
