"""Bad input to the functional API gets a clear error, never a cast or a crash."""

import numpy as np
import pytest
from conftest import make_problem

import numba_lstm


@pytest.fixture
def p():
    return make_problem(3, 2, 4, 5, np.float32)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda p: p.update(x=p["x"].astype(np.int32)), TypeError, "x must have dtype float32 or float64"),
        (lambda p: p.update(x=p["x"].astype(np.float64)), TypeError, "x has dtype float64"),
        (lambda p: p.update(x=p["x"][0]), ValueError, "x must be 3-D"),
        (lambda p: p.update(x=p["x"][:, :, :3]), ValueError, r"x must have shape \(3, 2, 4\)"),
        (lambda p: p.update(W=p["W"][:, :19]), ValueError, "W must have shape"),
        (lambda p: p.update(b=p["b"][:-4]), ValueError, r"b must have shape \(20,\)"),
        (lambda p: p.update(b=p["b"].astype(np.float64)), TypeError, "b has dtype float64"),
        (lambda p: p.update(h0=p["h0"][:1]), ValueError, r"h0 must have shape \(2, 5\)"),
        (lambda p: p.update(c0=p["c0"].astype(np.complex64)), TypeError, "c0 must have dtype"),
        (lambda p: p.update(x=p["x"].tolist()), TypeError, "x must be a numpy array"),
        (lambda p: p.update(W=p["W"].astype(bool)), TypeError, "W must have dtype"),
    ],
)
def test_forward_rejects_bad_arguments(p, change, error, message):
    change(p)
    with pytest.raises(error, match=message):
        numba_lstm.lstm_forward(**p)


def test_backward_rejects_bad_dy(p):
    _, _, _, cache = numba_lstm.lstm_forward(**p)
    with pytest.raises(ValueError, match=r"dy must have shape \(3, 2, 5\)"):
        numba_lstm.lstm_backward(np.zeros((3, 2, 4), np.float32), cache)
    with pytest.raises(TypeError, match="dy has dtype float64"):
        numba_lstm.lstm_backward(np.zeros((3, 2, 5)), cache)
    with pytest.raises(TypeError, match="cache must be the LSTMCache"):
        numba_lstm.lstm_backward(np.zeros((3, 2, 5), np.float32), (1, 2))


def test_inputs_are_not_modified(p):
    before = {k: v.copy() for k, v in p.items()}
    _, _, _, cache = numba_lstm.lstm_forward(**p)
    dy = np.ones((3, 2, 5), np.float32)
    dy_before = dy.copy()
    numba_lstm.lstm_backward(dy, cache, p["h0"], p["c0"])
    for k, v in p.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    np.testing.assert_array_equal(dy, dy_before)


def test_non_contiguous_and_read_only_inputs_give_the_same_result(p):
    expected = numba_lstm.lstm_forward(**p)[0]
    strided = {k: np.repeat(v, 2, axis=-1)[..., ::2] for k, v in p.items()}
    assert not strided["x"].flags.c_contiguous
    np.testing.assert_array_equal(numba_lstm.lstm_forward(**strided)[0], expected)
    frozen = {k: v.copy() for k, v in p.items()}
    for v in frozen.values():
        v.setflags(write=False)
    np.testing.assert_array_equal(numba_lstm.lstm_forward(**frozen)[0], expected)


def test_zero_length_sequence_returns_initial_state(p):
    x = p["x"][:0]
    y, h_n, c_n, cache = numba_lstm.lstm_forward(x, p["W"], p["b"], p["h0"], p["c0"])
    assert y.shape == (0, 2, 5)
    np.testing.assert_array_equal(h_n, p["h0"])
    np.testing.assert_array_equal(c_n, p["c0"])
    g = numba_lstm.lstm_backward(None, cache, p["h0"], p["c0"])
    assert g.dx.shape == (0, 2, 4) and not np.any(g.dW) and not np.any(g.db)
    np.testing.assert_array_equal(g.dh0, p["h0"])


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix itself
def test_lstm_backward_gives_plain_arrays_for_matrix_states_when_no_step_runs():
    """With no step (all lengths 0), dh0 and dc0 were dh_n.copy(): an
    np.matrix given came back as one, a plain array when any step ran."""
    x, W, b = np.zeros((3, 2, 1)), np.ones((1 + 2, 8)), np.zeros(8)
    d = np.asmatrix(np.ones((2, 2)))
    for lengths in ([3, 1], [0, 0]):
        grads = numba_lstm.lstm_backward(None, numba_lstm.lstm_forward(x, W, b, lengths=lengths)[3], d, d)
        assert type(grads.dh0) is np.ndarray and type(grads.dc0) is np.ndarray, lengths
        if lengths == [0, 0]:
            np.testing.assert_array_equal(grads.dh0, np.ones((2, 2)))
