"""Variable lengths, reverse direction and projection: kernels against the reference."""

import numpy as np
import pytest
from conftest import as64, assert_close, make_problem

import numba_lstm
from numba_lstm import reference

CONFIGS = {
    "lengths": dict(lengths=[5, 0, 3, 5, 1]),
    "reverse": dict(reverse=True),
    "reverse+lengths": dict(reverse=True, lengths=[2, 5, 0, 4, 5]),
    "projection": dict(P=3),
    "projection+reverse+lengths": dict(P=2, reverse=True, lengths=[1, 5, 3, 3, 0]),
    # 12 rows: the first steps' products go to BLAS, the later ones (at most
    # SMALL_ROWS = 8 sequences still running) to the plain loop.
    "12 rows, projection+lengths": dict(B=12, P=3, lengths=[5, 5, 4, 5, 2, 5, 1, 3, 5, 0, 4, 5]),
    "12 rows, reverse": dict(B=12, reverse=True),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_features_match_reference(name, dtype):
    cfg = dict(CONFIGS[name])
    T, I, H = 5, 4, 6
    B = cfg.pop("B", 5)
    P = cfg.pop("P", None)
    p = make_problem(T, B, I, H, dtype)
    rng = np.random.default_rng(5)
    if P is not None:
        p["W"] = p["W"][: I + P].copy()
        p["h0"] = p["h0"][:, :P].copy()
        p["W_hr"] = (rng.standard_normal((H, P)) * 0.5).astype(dtype)
    if "lengths" in cfg:
        cfg["lengths"] = np.array(cfg["lengths"])
    y, h_n, c_n, cache = numba_lstm.lstm_forward(**p, **cfg)
    ry, rh, rc, rcache = reference.lstm_forward(**as64(p), **cfg)
    assert_close(y, ry, dtype, "y")
    assert_close(h_n, rh, dtype, "h_n")
    assert_close(c_n, rc, dtype, "c_n")
    if "lengths" in cfg:
        past_end = np.arange(T)[:, None] >= cfg["lengths"][None, :]
        assert not np.any(y[past_end]), "outputs past a sequence's length must be zero"

    Pn = y.shape[2]
    dy = rng.standard_normal((T, B, Pn)).astype(dtype)
    dh_n = rng.standard_normal((B, Pn)).astype(dtype)
    dc_n = rng.standard_normal((B, H)).astype(dtype)
    got = numba_lstm.lstm_backward(dy, cache, dh_n, dc_n)
    ref = reference.lstm_backward(
        *(a.astype(np.float64) for a in (dy,)), rcache, dh_n.astype(np.float64), dc_n.astype(np.float64)
    )
    assert type(got).__name__ == ("LSTMProjGrads" if P else "LSTMGrads")
    for field in got._fields:
        assert_close(getattr(got, field), getattr(ref, field), dtype, field)
    # dy = None: only the final state's gradients flow.
    got = numba_lstm.lstm_backward(None, cache, dh_n, dc_n)
    ref = reference.lstm_backward(None, rcache, dh_n.astype(np.float64), dc_n.astype(np.float64))
    for field in got._fields:
        assert_close(getattr(got, field), getattr(ref, field), dtype, f"{field} with dy = None")


def test_zero_length_sequences_keep_their_state_and_gradients(dtype):
    p = make_problem(4, 3, 2, 3, dtype)
    lengths = np.array([0, 4, 0])
    y, h_n, c_n, cache = numba_lstm.lstm_forward(**p, lengths=lengths)
    np.testing.assert_array_equal(h_n[[0, 2]], p["h0"][[0, 2]])
    np.testing.assert_array_equal(c_n[[0, 2]], p["c0"][[0, 2]])
    dh_n = np.ones((3, 3), dtype)
    g = numba_lstm.lstm_backward(None, cache, dh_n, dh_n)
    np.testing.assert_array_equal(g.dh0[[0, 2]], dh_n[[0, 2]])
    all_zero = numba_lstm.lstm_forward(**p, lengths=np.zeros(3, np.int64))
    assert not np.any(all_zero[0])


def test_full_lengths_equal_no_lengths(dtype):
    p = make_problem(6, 3, 2, 4, dtype)
    plain = numba_lstm.lstm_forward(**p)
    full = numba_lstm.lstm_forward(**p, lengths=np.full(3, 6))
    for a, b in zip(plain[:3], full[:3], strict=True):
        np.testing.assert_array_equal(a, b)


def test_reverse_equals_forward_on_flipped_sequence(dtype):
    p = make_problem(6, 2, 3, 4, dtype)
    y_rev, h_rev, _, _ = numba_lstm.lstm_forward(**p, reverse=True)
    flipped = dict(p, x=p["x"][::-1].copy())
    y_flip, h_flip, _, _ = numba_lstm.lstm_forward(**flipped)
    np.testing.assert_array_equal(y_rev, y_flip[::-1])
    np.testing.assert_array_equal(h_rev, h_flip)


@pytest.mark.parametrize("reverse", [False, True])
def test_packing_puts_each_step_of_the_sorted_batch_in_its_row(reverse, dtype):
    # The packed order of numba_lstm._kernels, written out as a loop: step by
    # step, the sequences still running, longest first (ties in batch order);
    # with reverse, step t of a sequence reads its time length - 1 - t.
    from numba_lstm.functional import Packing

    T, B, F = 7, 9, 5
    rng = np.random.default_rng(3)
    lengths = np.array([3, 7, 0, 7, 1, 5, 3, 6, 2])
    a = rng.standard_normal((T, B, F)).astype(dtype)
    packing = Packing.build(T, B, lengths, reverse)
    order = sorted(range(B), key=lambda b: -lengths[b])
    expected = [a[lengths[b] - 1 - t if reverse else t, b] for t in range(T) for b in order if t < lengths[b]]
    packed = packing.pack(a)
    np.testing.assert_array_equal(packed, np.array(expected))
    assert packing.batch_sizes.tolist() == [sum(t < n for n in lengths) for t in range(T)]
    # Unpacking puts every row back and zeros the rest; extra columns of the
    # packed array (the kernels' padding) are left out when a width is given.
    valid = np.arange(T)[:, None] < lengths[None, :]
    wide = np.concatenate([packed, np.full((packed.shape[0], 3), np.nan, dtype)], axis=1)
    np.testing.assert_array_equal(packing.unpack(wide, F), np.where(valid[..., None], a, 0))
    np.testing.assert_array_equal(packing.unpack(packed), np.where(valid[..., None], a, 0))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("T, B", [(7, 9), (40, 300), (1, 4), (0, 3)])
def test_packing_sorts_longest_first_with_ties_in_batch_order(T, B, reverse):
    # Packing.build sorts by counting (numba_lstm._kernels._packing): many
    # ties, lengths 0 and T included, against Python's stable sort.
    from numba_lstm.functional import Packing

    lengths = np.random.default_rng(T + B).integers(0, T + 1, size=B)
    packing = Packing.build(T, B, lengths, reverse)
    order = sorted(range(B), key=lambda b: -lengths[b])
    assert packing.order.tolist() == order
    assert packing.lengths.tolist() == [lengths[b] for b in order]
    assert packing.batch_sizes.tolist() == [sum(t < n for n in lengths) for t in range(T)]
    assert packing.N == lengths.sum()


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [[3, 7, 0, 7, 1, 5, 3, 6, 2], None], ids=["lengths", "all T"])
def test_final_state_is_the_row_of_each_sequences_last_step(lengths, reverse, dtype):
    # The last step of a sequence reads its time length - 1, or time 0 when
    # reversed; a sequence of length 0 keeps the initial state.  The same
    # rows come from two slots of B rows that steps t % 2 overwrite (the
    # forward without a cache keeps c so).
    from numba_lstm.functional import Packing

    T, B, F = 7, 9, 4
    rng = np.random.default_rng(5)
    a = rng.standard_normal((T, B, F)).astype(dtype)
    initial = rng.standard_normal((B, F)).astype(dtype)
    n = np.full(B, T) if lengths is None else np.array(lengths)
    packing = Packing.build(T, B, None if lengths is None else n, reverse)
    packed = packing.pack(a)
    expected = np.array([initial[b] if n[b] == 0 else a[0 if reverse else n[b] - 1, b] for b in range(B)])
    np.testing.assert_array_equal(packing.final_state(packed, initial), expected)
    slots = np.full((2 * B, F), np.nan, dtype)
    row = 0
    for t, rows in enumerate(packing.batch_sizes):
        slots[t % 2 * B : t % 2 * B + rows] = packed[row : row + rows]
        row += rows
    np.testing.assert_array_equal(packing.final_state(slots, initial, slots=True), expected)
