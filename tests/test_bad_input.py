"""Bad input on every public entry point: a TypeError or ValueError naming the
argument, what was expected and what was given; never a silent cast or a crash.

tests/test_validation.py covers the basic functional cases; this file adds the
rest of the functional API, the layer (forward, backward, step) and
``numba_lstm.jit`` called from Python and from the user's ``@njit`` code.  (Load
is covered in tests/test_io.py.)
"""

import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from conftest import make_problem

import numba_lstm
from numba_lstm import jit

T, B, I, H = 3, 2, 4, 5


@pytest.fixture
def p():
    return make_problem(T, B, I, H, np.float32)


# --- functional API ---------------------------------------------------------

FORWARD_CASES = [
    # (change, error, regex that must name the argument, the expectation and what was given)
    (lambda p: p.update(x=p["x"].astype(np.complex64)), TypeError, r"x must have dtype float32 or float64, got complex64"),
    (lambda p: p.update(x=p["x"].astype(object)), TypeError, r"x must have dtype float32 or float64, got object"),
    (lambda p: p.update(x=p["x"].astype(np.float16)), TypeError, r"x must have dtype float32 or float64, got float16"),
    (lambda p: p.update(x=p["x"].astype(bool)), TypeError, r"x must have dtype float32 or float64, got bool"),
    (lambda p: p.update(x=p["x"][None]), ValueError, r"x must be 3-D \(T, B, I\), got 4-D shape \(1, 3, 2, 4\)"),
    (lambda p: p.update(x=3.0), TypeError, r"x must be a numpy array of float32 or float64, got float"),
    (lambda p: p.update(x=None), TypeError, r"x must be a numpy array"),
    (lambda p: p.update(W=p["W"][0]), ValueError, r"W must be 2-D \(I \+ P, 4H\), got 1-D shape \(20,\)"),
    (lambda p: p.update(W=p["W"][None]), ValueError, r"W must be 2-D .*got 3-D"),
    (lambda p: p.update(W=p["W"].astype(np.int64)), TypeError, r"W must have dtype float32 or float64, got int64"),
    (lambda p: p.update(W=p["W"][:, :0]), ValueError, r"W must have shape .*got \(9, 0\)"),
    (lambda p: p.update(W=p["W"][:-1]), ValueError, r"x must have shape \(3, 2, 3\).*W .*\(8, 20\).*got \(3, 2, 4\)"),
    # A projection's W without its W_hr: the message says where a W_hr goes.
    (lambda p: p.update(W=p["W"][:-2]), ValueError, r"with I = 2 from W \(I \+ H, 4H\) = \(7, 20\) \(a W \(I \+ P, 4H\) of a projection goes with its W_hr \(H, P\)\), got \(3, 2, 4\)"),
    # No hint where x has as many features as W has rows: no projection would fit.
    (lambda p: p.update(x=np.concatenate([p["x"]] * 3, axis=2)), ValueError, r"with I = 4 from W \(I \+ H, 4H\) = \(9, 20\), got \(3, 2, 12\)$"),
    (lambda p: p.update(W=p["W"][:5]), ValueError, r"W must have shape \(I \+ P, 4H\) with I >= 1 inputs, so more than P = 5 rows, got \(5, 20\)"),
    (lambda p: p.update(W=p["W"][:3]), ValueError, r"more than P = 5 rows, got \(3, 20\)"),  # not "(-2 + 5, 20)"
    (lambda p: p.update(b=p["b"][None]), ValueError, r"b must have shape \(20,\).*got \(1, 20\)"),
    (lambda p: p.update(b=p["b"].astype(np.int32)), TypeError, r"b must have dtype float32 or float64, got int32"),
    (lambda p: p.update(h0=p["h0"].astype(np.float64)), TypeError, r"h0 has dtype float64 but W has dtype float32"),
    # W sets the dtype: the message said "b ... but the other arrays are float64" with x float32 too.
    (lambda p: p.update(W=p["W"].astype(np.float64)), TypeError, r"b has dtype float32 but W has dtype float64"),
    (lambda p: p.update(h0=p["h0"][None]), ValueError, r"h0 must have shape \(2, 5\).*got \(1, 2, 5\)"),
    (lambda p: p.update(c0=p["c0"][:, :4]), ValueError, r"c0 must have shape \(2, 5\) \(B, H\), got \(2, 4\)"),
    (lambda p: p.update(c0=[[0.0] * 5] * 2), TypeError, r"c0 must be a numpy array .* got a list"),
    (lambda p: p.update(W_hr=np.zeros((5, 3), np.float64)), TypeError, r"W_hr has dtype float64"),
    (lambda p: p.update(W_hr=np.zeros((4, 3), np.float32)), ValueError, r"W_hr must have shape \(H, P\) with H = 5 from W, got \(4, 3\)"),
    (lambda p: p.update(W_hr=np.zeros(5, np.float32)), ValueError, r"W_hr must be 2-D \(H, P\), got 1-D"),
    (lambda p: p.update(W_hr=np.zeros((5, 3), np.float32)), ValueError, r"x, W and W_hr do not agree: x \(T, B, I\) = \(3, 2, 4\) has I = 4 and W_hr \(H, P\) = \(5, 3\) has P = 3, so W \(I \+ P, 4H\) must have 7 rows; got \(9, 20\)"),
    (lambda p: p.update(cache="no"), TypeError, r"cache must be True or False, got 'no'"),
    (lambda p: p.update(cache=None), TypeError, r"cache must be True or False, got None"),
    # A string was read as true: reverse="False" ran the sequences backwards.
    (lambda p: p.update(reverse="False"), TypeError, r"reverse must be True or False, got 'False'"),
    (lambda p: p.update(reverse=1), TypeError, r"reverse must be True or False, got 1"),
    (lambda p: p.update(lengths=np.array([1.0, 2.0])), TypeError, r"lengths must be an integer array of shape \(B,\), got dtype float64"),
    (lambda p: p.update(lengths=np.array([True, False])), TypeError, r"lengths must be an integer array.*got dtype bool"),
    (lambda p: p.update(lengths=np.array([1, 2], dtype=object)), TypeError, r"lengths must be an integer array.*got dtype object"),
    (lambda p: p.update(lengths=np.array([1, 2, 3])), ValueError, r"lengths must have shape \(2,\).*got \(3,\)"),
    (lambda p: p.update(lengths=np.array([[1, 2]])), ValueError, r"lengths must have shape \(2,\).*got \(1, 2\)"),
    (lambda p: p.update(lengths=3), ValueError, r"lengths must have shape \(2,\).*got \(\)"),
    (lambda p: p.update(lengths=np.array([-1, 2])), ValueError, r"lengths must be between 0 and T = 3, got values from -1 to 2"),
    (lambda p: p.update(lengths=np.array([4, 2])), ValueError, r"lengths must be between 0 and T = 3, got values from 2 to 4"),
    (lambda p: p.update(lengths=np.array([2**40, 1], np.uint64)), ValueError, r"lengths must be between 0 and T = 3"),
    # A list holding a bool is int64 to NumPy: True was read as a length of 1.
    (lambda p: p.update(lengths=[True, 3]), TypeError, r"lengths must hold integers, not bools, got \[True, 3\]"),
]  # fmt: skip


def test_lengths_as_an_empty_list_for_an_empty_batch():
    # [] is float64 to NumPy: it was refused as "got dtype float64", where an
    # empty integer array was taken.
    x = np.zeros((T, 0, I), np.float32)
    problem = make_problem(T, B, I, H, np.float32)
    y, h_n, c_n, _ = numba_lstm.lstm_forward(x, problem["W"], problem["b"], lengths=[])
    assert y.shape == (T, 0, H) and h_n.shape == c_n.shape == (0, H)
    y, (h_n, c_n) = numba_lstm.LSTM(I, H).forward(x, lengths=[])
    assert y.shape == (T, 0, H) and h_n.shape == c_n.shape == (1, 0, H)


@pytest.mark.parametrize("lengths", [None, []], ids=["no lengths", "lengths"])
@pytest.mark.parametrize("reverse", [False, True])
def test_an_empty_batch_of_any_length_allocates_nothing_per_step(lengths, reverse):
    """x of shape (T, 0, I) holds no values whatever T: at T = 10**8 the
    forward built arrays of T entries (1.7 GB, 2.9 s), and at 10**12 it
    could not run.  Forward and backward, functional and layer, give their
    empty results at once."""
    T_huge = 10**12
    x = np.zeros((T_huge, 0, I), np.float32)
    problem = make_problem(T, B, I, H, np.float32)
    y, h_n, c_n, cache = numba_lstm.lstm_forward(
        x, problem["W"], problem["b"], lengths=lengths, reverse=reverse
    )
    assert y.shape == (T_huge, 0, H) and h_n.shape == c_n.shape == (0, H)
    grads = numba_lstm.lstm_backward(np.zeros((T_huge, 0, H), np.float32), cache)
    assert grads.dx.shape == (T_huge, 0, I) and grads.dh0.shape == grads.dc0.shape == (0, H)
    assert not grads.dW.any() and not grads.db.any()
    layer = numba_lstm.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, dropout=0.5, seed=0)
    y, (h_n, c_n) = layer.forward(x, lengths=lengths)
    assert y.shape == (T_huge, 0, 4) and h_n.shape == (4, 0, 2) and c_n.shape == (4, 0, H)
    assert layer.backward(np.zeros(y.shape, np.float32)).shape == (T_huge, 0, I)
    assert not any(grad.any() for grad in layer.grads.values())


@pytest.mark.parametrize(("change", "error", "message"), FORWARD_CASES)
def test_functional_forward_rejects(p, change, error, message):
    before = {k: v.copy() for k, v in p.items()}
    change(p)
    with pytest.raises(error, match=message):
        numba_lstm.lstm_forward(**p)
    for k, v in before.items():  # a failed call leaves the caller's arrays alone
        if isinstance(p.get(k), np.ndarray) and p[k].shape == v.shape and p[k].dtype == v.dtype:
            np.testing.assert_array_equal(p[k], v)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(dy=np.zeros((T, B), np.float32)), ValueError, r"dy must have shape \(3, 2, 5\).*got \(3, 2\)"),
        (
            dict(dy=np.zeros((T, B, H), np.int16)),
            TypeError,
            r"dy must have dtype float32 or float64, got int16",
        ),
        (dict(dy=np.zeros((T, B, H), np.complex128)), TypeError, r"dy must have dtype .* got complex128"),
        (
            dict(dh_n=np.zeros((B, H + 1), np.float32)),
            ValueError,
            r"dh_n must have shape \(2, 5\).*got \(2, 6\)",
        ),
        (
            dict(dc_n=np.zeros((B, H), np.float64)),
            TypeError,
            r"dc_n has dtype float64 but the forward's x has dtype float32",
        ),
        (
            dict(dc_n=np.zeros((B + 1, H), np.float32)),
            ValueError,
            r"dc_n must have shape \(2, 5\).*got \(3, 5\)",
        ),
        (dict(cache=None), ValueError, r"cache is None: the forward ran with cache=False"),
        (dict(cache=(1, 2)), TypeError, r"cache must be the LSTMCache returned by lstm_forward, got tuple"),
    ],
)
def test_functional_backward_rejects(p, kwargs, error, message):
    _, _, _, cache = numba_lstm.lstm_forward(**p)
    args = dict(dy=np.zeros((T, B, H), np.float32), cache=cache) | kwargs
    with pytest.raises(error, match=message):
        numba_lstm.lstm_backward(**args)


def test_functional_backward_refuses_a_cache_of_another_dtype(p):
    """The cache fixes the dtype: float64 gradients into a float32 cache are refused."""
    _, _, _, cache = numba_lstm.lstm_forward(**p)
    with pytest.raises(TypeError, match="dy has dtype float64 but the forward's x has dtype float32"):
        numba_lstm.lstm_backward(np.zeros((T, B, H)), cache)


# --- layer --------------------------------------------------------------------


@pytest.fixture
def layer():
    return numba_lstm.LSTM(I, H, num_layers=2, seed=0)


def _x(*shape, dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


LAYER_FORWARD_CASES = [
    (dict(x=_x(T, B, I, dtype=np.float64)), TypeError, r"x has dtype float64 but the layer has dtype float32"),
    (dict(x=_x(T, B, I).astype(np.int32)), TypeError, r"x must have dtype float32 or float64, got int32"),
    (dict(x=_x(T, B, I).astype(np.complex64)), TypeError, r"x must have dtype .*got complex64"),
    (dict(x=_x(T, B, I).astype(object)), TypeError, r"x must have dtype .*got object"),
    (dict(x=_x(T, B, I).tolist()), TypeError, r"x must be a numpy array"),
    (dict(x=_x(B, I)), ValueError, r"x must be 3-D \(T, B, I\), got 2-D shape \(2, 4\)"),
    (dict(x=_x(T, B, I + 1)), ValueError, r"x must have 4 features .*input_size.*got shape \(3, 2, 5\)"),
    (dict(state=(np.zeros((2, B, H), np.float32),)), TypeError, r"state must be a tuple of 2 arrays \(h0, c0\), got a tuple of 1$"),
    (dict(state=[np.zeros((2, B, H), np.float32)] * 2), TypeError, r"state must be a tuple of 2 arrays \(h0, c0\), got list"),
    (dict(state=(np.zeros((2, B + 1, H), np.float32), np.zeros((2, B + 1, H), np.float32))), ValueError, r"h0 must have shape \(2, 2, 5\).*got \(2, 3, 5\)"),
    (dict(state=(np.zeros((1, B, H), np.float32), np.zeros((2, B, H), np.float32))), ValueError, r"h0 must have shape \(2, 2, 5\).*got \(1, 2, 5\)"),
    (dict(state=(np.zeros((2, B, H), np.float32), np.zeros((2, B, H), np.float64))), TypeError, r"c0 has dtype float64"),
    (dict(state=(np.zeros((2, B, H), np.float32), np.zeros((2, B, H), np.int8))), TypeError, r"c0 must have dtype float32 or float64, got int8"),
    (dict(lengths=np.array([1, 4])), ValueError, r"lengths must be between 0 and T = 3, got values from 1 to 4"),
    (dict(lengths=np.array([1])), ValueError, r"lengths must have shape \(2,\).*got \(1,\)"),
    (dict(lengths=np.array([1.5, 2.0])), TypeError, r"lengths must be an integer array.*float64"),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "error", "message"), LAYER_FORWARD_CASES)
def test_layer_forward_rejects(layer, kwargs, error, message):
    args = dict(x=_x(T, B, I)) | kwargs
    before = {k: v.copy() for k, v in layer.params.items()}
    with pytest.raises(error, match=message):
        layer.forward(**args)
    for k, v in before.items():
        np.testing.assert_array_equal(layer.params[k], v)


def test_layer_batch_first_names_the_batch_first_layout():
    layer = numba_lstm.LSTM(I, H, batch_first=True)
    with pytest.raises(ValueError, match=r"x must be 3-D \(B, T, I\)"):
        layer.forward(_x(B, I))


def test_layer_backward_before_forward(layer):
    with pytest.raises((ValueError, TypeError), match="before forward"):
        layer.backward(np.zeros((T, B, H), np.float32))


def test_layer_backward_before_forward_is_an_error_naming_forward(layer):
    """Whatever its class, it is a clear Python exception, not a crash."""
    with pytest.raises(Exception, match=r"backward called before forward"):
        layer.backward(np.zeros((T, B, H), np.float32))


def test_layer_backward_after_a_forward_without_cache(layer):
    x = _x(T, B, I)
    layer.forward(x)
    layer.forward(x, cache=False)  # the earlier cache must not be used
    with pytest.raises((ValueError, TypeError), match=r"the last forward ran with cache=False"):
        layer.backward(np.zeros((T, B, H), np.float32))
    layer.forward(x)
    layer.backward(np.zeros((T, B, H), np.float32))  # a cached forward makes it ready again
    with pytest.raises(TypeError, match=r"cache must be True or False, got 0"):
        layer.forward(x, cache=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(dy=np.zeros((T, B, H + 1), np.float32)), ValueError, r"dy must have shape \(3, 2, 5\).*got \(3, 2, 6\)"),
        (dict(dy=np.zeros((T + 1, B, H), np.float32)), ValueError, r"dy must have shape \(3, 2, 5\).*got \(4, 2, 5\)"),
        (dict(dy=np.zeros((T, B, H))), TypeError, r"dy has dtype float64 but the layer has dtype float32"),
        (dict(dy=np.zeros((T, B, H), np.int64)), TypeError, r"dy must have dtype .*got int64"),
        (dict(dh_n=np.zeros((1, B, H), np.float32)), ValueError, r"dh_n must have shape \(2, 2, 5\).*got \(1, 2, 5\)"),
        (dict(dc_n=np.zeros((2, B + 1, H), np.float32)), ValueError, r"dc_n must have shape \(2, 2, 5\).*got \(2, 3, 5\)"),
        (dict(dc_n=np.zeros((2, B, H), np.float64)), TypeError, r"dc_n has dtype float64"),
    ],
)  # fmt: skip
def test_layer_backward_rejects(layer, kwargs, error, message):
    layer.forward(_x(T, B, I))
    args = dict(dy=np.zeros((T, B, H), np.float32)) | kwargs
    with pytest.raises(error, match=message):
        layer.backward(**args)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(x_t=_x(T, B, I)), ValueError, r"x_t must be 2-D \(B, I\), got 3-D shape \(3, 2, 4\)"),
        (dict(x_t=_x(B, I + 2)), ValueError, r"x_t must have shape \(2, 4\).*got \(2, 6\)"),
        (dict(x_t=_x(B, I, dtype=np.float64)), TypeError, r"x_t has dtype float64 but the layer has dtype float32"),
        (dict(x_t=_x(B, I).astype(np.uint8)), TypeError, r"x_t must have dtype .*got uint8"),
        (dict(state=(np.zeros((2, B + 1, H), np.float32), np.zeros((2, B + 1, H), np.float32))), ValueError, r"^h must have shape \(2, 2, 5\).*got \(2, 3, 5\)"),
        (dict(state=(np.zeros((2, B, H), np.float32), np.zeros((2, B, H + 1), np.float32))), ValueError, r"^c must have shape \(2, 2, 5\).*got \(2, 2, 6\)"),
        (dict(state=[np.zeros((2, B, H), np.float32)] * 2), TypeError, r"state must be a tuple of 2 arrays \(h, c\), got list"),
        (dict(state=(np.zeros((2, B, H), np.float32),) * 3), TypeError, r"state must be a tuple of 2 arrays \(h, c\), got a tuple of 3$"),
    ],
)  # fmt: skip
def test_layer_step_rejects(layer, kwargs, error, message):
    args = dict(x_t=_x(B, I)) | kwargs
    with pytest.raises(error, match=message):
        layer.step(**args)


def test_layer_step_state_from_another_batch_size_after_streaming(layer):
    """Carrying a state from a batch of 2 into a batch of 3 is refused."""
    layer.eval()
    _, state = layer.step(_x(B, I))
    with pytest.raises(ValueError, match=r"^h must have shape \(2, 3, 5\).*got \(2, 2, 5\)"):
        layer.step(_x(B + 1, I), state)
    _, (h_n, c_n) = layer.forward(_x(T, B, I))
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 3, 5\).*got \(2, 2, 5\)"):
        layer.forward(_x(T, B + 1, I), (h_n, c_n))


def test_layer_step_refuses_bidirectional():
    layer = numba_lstm.LSTM(I, H, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        layer.step(_x(B, I))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(input_size=0, hidden_size=H), ValueError, r"input_size must be a positive integer, got 0"),
        # A wrong type is a TypeError, as in PyTorch's LSTM(2, 2.0).
        (dict(input_size=2.0, hidden_size=H), TypeError, r"input_size must be a positive integer, got 2.0 \(float\)"),
        (dict(input_size=I, hidden_size=True), TypeError, r"hidden_size must be a positive integer, got True \(bool\)"),
        (dict(input_size=I, hidden_size="4"), TypeError, r"hidden_size must be a positive integer, got '4' \(str\)"),
        (dict(input_size=I, hidden_size=H, num_layers=None), TypeError, r"num_layers must be a positive integer, got None"),
        (dict(input_size=I, hidden_size=H, proj_size=-1), ValueError, r"proj_size must be an integer >= 0, got -1"),
        (dict(input_size=I, hidden_size=H, proj_size=1.0), TypeError, r"proj_size must be an integer >= 0, got 1.0 \(float\)"),
        (dict(input_size=I, hidden_size=H, proj_size=H), ValueError, r"proj_size must be smaller than hidden_size"),
        (dict(input_size=I, hidden_size=H, dropout=1.0), ValueError, r"dropout must be in \[0, 1\), got 1.0"),
        # Strings were read by their truth or converted: "False" built a
        # bidirectional layer, "no" a batch-first one, "0.5" a dropout.
        (dict(input_size=I, hidden_size=H, dropout="0.5"), TypeError, r"dropout must be a number in \[0, 1\), got '0.5'"),
        (dict(input_size=I, hidden_size=H, dropout=True), TypeError, r"dropout must be a number in \[0, 1\), got True"),
        (dict(input_size=I, hidden_size=H, bidirectional="False"), TypeError, r"bidirectional must be True or False, got 'False'"),
        (dict(input_size=I, hidden_size=H, batch_first="no"), TypeError, r"batch_first must be True or False, got 'no'"),
        (dict(input_size=I, hidden_size=H, dtype=np.int32), TypeError, r"dtype must be float32 or float64, got int32"),
        (dict(input_size=I, hidden_size=H, dtype=np.float16), TypeError, r"dtype must be float32 or float64, got float16"),
    ],
)  # fmt: skip
def test_layer_constructor_rejects(kwargs, error, message):
    with pytest.raises(error, match=message):
        numba_lstm.LSTM(**kwargs)


def test_layer_train_mode_must_be_a_bool(layer):
    with pytest.raises(TypeError, match=r"mode must be True or False, got 'no'"):
        layer.train(mode="no")
    assert layer.eval().train(np.bool_(False)).training is False


def test_from_params_takes_dropout_and_batch_first_from_config_or_refuses_two_values():
    # They were left out silently: a (B, T, I) input was then read as (T, B, I).
    source = numba_lstm.LSTM(I, H, num_layers=2, seed=0)
    config = {**source.config, "batch_first": True, "dropout": 0.5}
    layer = numba_lstm.LSTM.from_params(config, source.params)
    assert (layer.batch_first, layer.dropout) == (True, 0.5)
    assert numba_lstm.LSTM.from_params(config, source.params, batch_first=True).batch_first
    with pytest.raises(
        ValueError, match=r"batch_first is True in config but False in the options; give one value"
    ):
        numba_lstm.LSTM.from_params(config, source.params, batch_first=False)


# --- numba_lstm.jit called from Python ----------------------------------------


@pytest.fixture
def j():
    q = make_problem(1, B, I, H, np.float32)
    return dict(x_t=q["x"][0], h=q["h0"], c=q["c0"], W=q["W"], b=q["b"])


# Each case with its message from jit.step, then from jit.forward, which names
# its own arguments (x (T, B, I), h0, c0).
@pytest.mark.parametrize(
    ("change", "step_message", "forward_message"),
    [
        (
            lambda a: a.update(W=a["W"][:-1]),
            rf"W must have shape \(I \+ H, 4H\) = \({I + H}, {4 * H}\) for x_t \(B, I\) = \({B}, {I}\) "
            rf"and h \(B, H\) = \({B}, {H}\); got \({I + H - 1}, {4 * H}\)",
            rf"W must have shape \(I \+ H, 4H\) = \({I + H}, {4 * H}\) for x \(T, B, I\) = \(1, {B}, {I}\) "
            rf"and h0 \(B, H\) = \({B}, {H}\); got \({I + H - 1}, {4 * H}\)",
        ),
        (
            lambda a: a.update(W=np.ascontiguousarray(a["W"][:, :-4])),
            rf"W must have shape \(I \+ H, 4H\) = \({I + H}, {4 * H}\) .*; got \({I + H}, {4 * H - 4}\)",
            rf"W must have shape \(I \+ H, 4H\) = \({I + H}, {4 * H}\) .*; got \({I + H}, {4 * H - 4}\)",
        ),
        (
            lambda a: a.update(b=a["b"][:-1].copy()),
            rf"b must have shape \(4H,\) = \({4 * H},\); got \({4 * H - 1},\)",
            rf"b must have shape \(4H,\) = \({4 * H},\); got \({4 * H - 1},\)",
        ),
        (
            lambda a: a.update(h=a["h"][:1].copy()),
            rf"h and c must both have shape \(B, H\) with B = x_t.shape\[0\] = {B}; got h \(1, {H}\), c \({B}, {H}\)",
            rf"h0 and c0 must both have shape \(B, H\) with B = x.shape\[1\] = {B}; got h0 \(1, {H}\), c0 \({B}, {H}\)",
        ),
        (
            lambda a: a.update(c=a["c"][:, :-1].copy()),
            rf"h and c must both have shape \(B, H\) .*; got h \({B}, {H}\), c \({B}, {H - 1}\)",
            rf"h0 and c0 must both have shape \(B, H\) .*; got h0 \({B}, {H}\), c0 \({B}, {H - 1}\)",
        ),
    ],
)
def test_jit_step_rejects_bad_shapes(j, change, step_message, forward_message):
    # Each message starts with the function called: from a user's @njit
    # code, Numba's traceback names neither it nor the line.
    outputs = dict(
        h_out=np.empty_like(j["h"]), c_out=np.empty_like(j["c"]), work=np.empty(10 * B * H, np.float32)
    )
    change(j)
    with pytest.raises(ValueError, match=r"^numba_lstm\.jit\.step: " + step_message):
        jit.step(**j)
    with pytest.raises(ValueError, match=r"^numba_lstm\.jit\.step_into: " + step_message):
        jit.step_into(**j, **outputs)
    with pytest.raises(ValueError, match=r"^numba_lstm\.jit\.forward: " + forward_message):
        jit.forward(j["x_t"][None], j["W"], j["b"], j["h"], j["c"])


def test_layer_step_refusal_names_the_step_and_the_layer():
    # LSTM.step's jitted steps return False for shapes that do not fit, and
    # _refuse_layer_step raises the message (a parameter replaced with
    # another shape is refused by name before it, by _check_params).
    L, B, H, P = 2, 3, 4, 2

    def zeros(*shape):
        return np.zeros(shape, np.float32)

    x_t, c = zeros(B, 5), zeros(L, B, H)
    message = r"^numba_lstm\.LSTM\.step, layer 1: b must have shape \(4H,\) = \(16,\); got \(15,\)"
    with pytest.raises(ValueError, match=message):  # layer 1's input is h_new[0], (B, H)
        jit._refuse_layer_step(
            x_t, zeros(L, B, H), c, zeros(H + H, 4 * H), zeros(4 * H - 1), zeros(L, B, H), 1
        )
    message = r"^numba_lstm\.LSTM\.step, layer 0: W_hr must have shape \(H, P\) = \(4, 2\); got \(4, 3\)"
    with pytest.raises(ValueError, match=message):
        jit._refuse_layer_step(
            x_t, zeros(L, B, P), c, zeros(5 + P, 4 * H), zeros(4 * H), zeros(L, B, P), 0, zeros(H, P + 1)
        )


def test_jit_step_into_counts_the_work_of_a_huge_batch_without_wrapping_around():
    # B = 2**58 rows of zero-stride views: 10 * B * H wrapped around to a
    # negative count, a 16-element work passed the check, and the step
    # wrote past it (a segfault).
    rows = 2**58
    x_t = np.broadcast_to(np.zeros(3, np.float32), (rows, 3))
    h = c = np.broadcast_to(np.zeros(4, np.float32), (rows, 4))
    out = [
        np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (rows, 4), (0, 0), writeable=True)
        for _ in "hc"
    ]
    W, b = np.zeros((7, 16), np.float32), np.zeros(16, np.float32)
    with pytest.raises(ValueError, match=r"10 \* B \* H = more than 2\*\*63 - 1 elements; got 16"):
        jit.step_into(x_t, h, c, W, b, *out, np.zeros(16, np.float32))


def test_jit_step_into_rejects_bad_buffers(j):
    h_out, c_out = np.empty_like(j["h"]), np.empty_like(j["c"])
    work = np.empty(jit.work_size(B, H), np.float32)
    with pytest.raises(
        ValueError,
        match=rf"^numba_lstm\.jit\.step_into: work must have at least work_size\(B, H\) = 10 \* B \* H = {10 * B * H} elements; got {10 * B * H - 1}",
    ):
        jit.step_into(*j.values(), h_out, c_out, work[:-1])
    with pytest.raises(
        ValueError,
        match=rf"^numba_lstm\.jit\.step_into: h_out and c_out must have the shapes of h and c, \({B}, {H}\) and \({B}, {H}\); got \(1, {H}\) and",
    ):
        jit.step_into(*j.values(), h_out[:1], c_out, work)


JIT_DTYPE_CASES = [
    # (argument, bad value from the float32 one, regex naming the argument, the expectation and what was given)
    ("b", lambda a: a.astype(np.float64), r"numba_lstm.jit.step: b has dtype float64 but x_t is float32; pass every array in one dtype"),
    ("c", lambda a: a.astype(np.float64), r"c has dtype float64 but x_t is float32"),
    ("x_t", lambda a: a.astype(np.int64), r"x_t must have dtype float32 or float64, got int64"),
    ("W", lambda a: a.astype(bool), r"W must have dtype float32 or float64, got bool"),
    ("h", lambda a: a.astype(np.complex64), r"h must have dtype float32 or float64, got complex64"),
    ("x_t", lambda a: a.astype(object), r"x_t must have dtype float32 or float64, got object"),
    ("x_t", lambda a: a.astype(np.float16), r"x_t must have dtype float32 or float64, got float16"),
    ("x_t", lambda a: a.tolist(), r"x_t must be a numpy array of float32 or float64, got list"),
    ("b", lambda a: None, r"b must be a numpy array of float32 or float64, got NoneType"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "change", "message"), JIT_DTYPE_CASES)
def test_jit_step_refuses_bad_dtypes(j, name, change, message):
    compiled = set(jit.step.signatures)
    j[name] = change(j[name])
    with pytest.raises(TypeError, match=message):
        jit.step(**j)
    assert set(jit.step.signatures) == compiled  # no specialisation for the bad call


def jit_buffers(j):
    return dict(
        h_out=np.empty_like(j["h"]),
        c_out=np.empty_like(j["c"]),
        work=np.empty(jit.work_size(B, H), np.float32),
    )


@pytest.mark.parametrize(
    ("name", "dtype", "message"),
    [
        ("x_t", np.int32, r"numba_lstm.jit.step_into: x_t must have dtype float32 or float64, got int32"),
        ("W", np.float64, r"numba_lstm.jit.step_into: W has dtype float64 but x_t is float32"),
        ("h_out", np.float64, r"h_out has dtype float64 but x_t is float32"),
        ("work", np.float64, r"work has dtype float64 but x_t is float32"),
    ],
)
def test_jit_step_into_refuses_bad_dtypes(j, name, dtype, message):
    args = {**j, **jit_buffers(j)}
    args[name] = args[name].astype(dtype)
    with pytest.raises(TypeError, match=message):
        jit.step_into(**args)


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("x", lambda a: a.astype(np.uint8), r"numba_lstm.jit.forward: x must have dtype float32 or float64, got uint8"),
        ("x", lambda a: a.astype(object), r"x must have dtype float32 or float64, got object"),
        ("h0", lambda a: a.astype(np.float64), r"h0 has dtype float64 but x is float32; pass every array in one dtype"),
        ("W", lambda a: a.astype(np.complex128), r"W must have dtype float32 or float64, got complex128"),
    ],
)  # fmt: skip
def test_jit_forward_refuses_bad_dtypes(j, name, change, message):
    args = dict(x=j["x_t"][None], W=j["W"], b=j["b"], h0=j["h"], c0=j["c"])
    args[name] = change(args[name])
    with pytest.raises(TypeError, match=message):
        jit.forward(**args)


def test_jit_refuses_wrong_ranks(j):
    with pytest.raises(
        ValueError, match=r"numba_lstm.jit.step: x_t must be 2-D \(B, I\), got 1-D shape \(4,\)"
    ):
        jit.step(**{**j, "x_t": j["x_t"][0]})
    with pytest.raises(
        ValueError, match=r"numba_lstm.jit.step_into: work must be 1-D \(10 \* B \* H,\), got 2-D"
    ):
        jit.step_into(**j, **{**jit_buffers(j), "work": np.empty((10, B * H), np.float32)})
    with pytest.raises(
        ValueError, match=r"numba_lstm.jit.forward: x must be 3-D \(T, B, I\), got 2-D shape \(2, 4\)"
    ):
        jit.forward(j["x_t"], j["W"], j["b"], j["h"], j["c"])


def test_jit_step_into_refuses_a_strided_work_buffer(j):
    # step_into carves its work buffer into row blocks, which needs it whole.
    every_other = np.empty(2 * jit.work_size(B, H), np.float32)[::2]
    with pytest.raises(
        ValueError, match=r"numba_lstm.jit.step_into: work must be C-contiguous .* shape \(100,\)"
    ):
        jit.step_into(**j, **{**jit_buffers(j), "work": every_other})
    x = make_problem(T, B, I, H, np.float32)["x"]
    with pytest.raises(
        ValueError, match=r"numba_lstm.jit.step_into: work must be C-contiguous .* array\(float32, 1d, A\)"
    ):
        user_loop(x, j["W"], j["b"], j["h"], j["c"], every_other)


def test_jit_step_into_refuses_one_array_for_both_outputs(j):
    # Before, the array ended up holding h_t and c_t was lost, with no error.
    # h_out and c_out may still be h and c (an update in place).
    out = np.empty_like(j["h"])
    with pytest.raises(ValueError, match=r"h_out and c_out must not share memory"):
        jit.step_into(**j, h_out=out, c_out=out, work=jit_buffers(j)["work"])
    x = make_problem(T, B, I, H, np.float32)["x"]
    h = j["h"].copy()
    with pytest.raises(ValueError, match=r"h_out and c_out must not share memory"):
        user_loop(x, j["W"], j["b"], h, h, jit_buffers(j)["work"])


@pytest.mark.parametrize(
    "outputs",
    [
        lambda buf: (buf[:B], buf[1:]),  # c_out starts one row into h_out
        lambda buf: (buf[1:], buf[:B]),
        lambda buf: (buf[:B, :H], buf[:B, 1:]),  # one column apart
        lambda buf: (buf[::-1][1:], buf[:B]),  # a reversed view
    ],
)
def test_jit_step_into_refuses_outputs_that_overlap(j, outputs):
    """Only the same start address was refused: overlapping outputs gave a
    wrong h or c, with no error."""
    buf = np.zeros((B + 1, H + 1), np.float32)
    h_out, c_out = outputs(buf)
    h_out, c_out = h_out[:B, :H], c_out[:B, :H]
    with pytest.raises(ValueError, match=r"h_out and c_out must not share memory"):
        jit.step_into(**j, h_out=h_out, c_out=c_out, work=jit_buffers(j)["work"])


@pytest.mark.parametrize(
    "outputs",
    [
        lambda: (lambda buf: (buf[:, :H], buf[:, H:]))(np.zeros((B, 2 * H), np.float32)),  # side by side
        lambda: (lambda hc: (hc[..., 0], hc[..., 1]))(np.zeros((B, H, 2), np.float32)),  # interleaved
        lambda: (lambda buf: (buf[:, ::2], buf[:, 1::2]))(np.zeros((B, 2 * H), np.float32)[::-1]),
    ],
)
def test_jit_step_into_takes_outputs_that_share_a_buffer_but_no_element(j, outputs):
    """Their byte ranges overlap, their elements do not: refused by a first
    version of the check above, which compared ranges alone."""
    h_out, c_out = outputs()
    jit.step_into(**j, h_out=h_out, c_out=c_out, work=jit_buffers(j)["work"])
    h_ref, c_ref = jit.step(**j)
    np.testing.assert_array_equal(h_out, h_ref)
    np.testing.assert_array_equal(c_out, c_ref)


def test_jit_step_into_writes_outputs_over_its_inputs(j):
    """The step reads x_t, h and c before it writes: h_out and c_out may be
    any of them, swapped too (the README says so)."""
    h_ref, c_ref = jit.step(**j)
    for h_name, c_name in [("h", "c"), ("c", "h")]:
        k = {**j, "h": j["h"].copy(), "c": j["c"].copy()}
        jit.step_into(**k, h_out=k[h_name], c_out=k[c_name], work=jit_buffers(j)["work"])
        np.testing.assert_array_equal(k[h_name], h_ref)
        np.testing.assert_array_equal(k[c_name], c_ref)


@pytest.mark.parametrize("name", ["h_out", "c_out", "work"])
def test_jit_step_into_refuses_read_only_outputs(j, name):
    # Before, Numba failed inside step_into ("No implementation of function
    # setitem(readonly array ...)"), naming no argument.
    buffers = jit_buffers(j)
    read_only = buffers[name].copy()
    read_only.flags.writeable = False
    message = rf"numba_lstm.jit.step_into: {name} is written to and must be writeable, got a read-only array"
    with pytest.raises(ValueError, match=message):
        jit.step_into(**j, **{**buffers, name: read_only})
    if name == "h_out":  # the user's loop updates h in place: h is h_out
        h = j["h"].copy()
        h.flags.writeable = False
        x = make_problem(T, B, I, H, np.float32)["x"]
        with pytest.raises(ValueError, match=message):
            user_loop(x, j["W"], j["b"], h, j["c"].copy(), buffers["work"])


# --- numba_lstm.jit called from the user's @njit code ---------------------------
# Dtype and rank errors are found when the user's function is compiled: the
# same TypeError/ValueError, raised by the call that compiles it.


@numba.njit
def user_step(x_t, h, c, W, b):
    return jit.step(x_t, h, c, W, b)


@numba.njit
def user_loop(x, W, b, h, c, work):
    for t in range(x.shape[0]):
        jit.step_into(x[t], h, c, W, b, h, c, work)
    return h, c


@numba.njit
def user_forward(x, W, b, h0, c0):
    return jit.forward(x, W, b, h0, c0)


def test_jit_functions_work_inside_njit(j):
    x = make_problem(T, B, I, H, np.float32)["x"]
    work = np.empty(jit.work_size(B, H), np.float32)
    h, c = user_loop(x, j["W"], j["b"], j["h"].copy(), j["c"].copy(), work)
    y, h_n, c_n = user_forward(x, j["W"], j["b"], j["h"], j["c"])
    np.testing.assert_array_equal(y[-1], h_n)
    np.testing.assert_allclose(h, h_n, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c, c_n, rtol=1e-6, atol=1e-6)
    h1, c1 = user_step(x[0], j["h"], j["c"], j["W"], j["b"])
    np.testing.assert_array_equal(
        np.stack(jit.step(x[0], j["h"], j["c"], j["W"], j["b"])), np.stack([h1, c1])
    )


def test_jit_inside_njit_refuses_mixed_dtypes(j):
    compiled = set(jit.step.signatures)
    with pytest.raises(TypeError, match=r"numba_lstm.jit.step: b has dtype float64 but x_t is float32"):
        user_step(j["x_t"], j["h"], j["c"], j["W"], j["b"].astype(np.float64))
    assert set(jit.step.signatures) == compiled
    x = make_problem(T, B, I, H, np.float32)["x"]
    work64 = np.empty(jit.work_size(B, H), np.float64)
    with pytest.raises(
        TypeError, match=r"numba_lstm.jit.step_into: work has dtype float64 but x_t is float32"
    ):
        user_loop(x, j["W"], j["b"], j["h"], j["c"], work64)
    with pytest.raises(TypeError, match=r"numba_lstm.jit.forward: c0 has dtype float64 but x is float32"):
        user_forward(x, j["W"], j["b"], j["h"], j["c"].astype(np.float64))


def test_jit_inside_njit_refuses_non_float_arrays(j):
    with pytest.raises(
        TypeError, match=r"numba_lstm.jit.step: x_t must have dtype float32 or float64, got int64"
    ):
        user_step(j["x_t"].astype(np.int64), j["h"], j["c"], j["W"], j["b"])
    with pytest.raises(
        TypeError, match=r"numba_lstm.jit.forward: W must have dtype float32 or float64, got bool"
    ):
        user_forward(j["x_t"][None], j["W"].astype(bool), j["b"], j["h"], j["c"])
    with pytest.raises(
        TypeError,
        match=r"numba_lstm.jit.step: h must be a numpy array of float32 or float64, got Numba type float64",
    ):
        user_step(j["x_t"], 0.0, j["c"], j["W"], j["b"])


def test_jit_inside_njit_refuses_wrong_ranks(j):
    with pytest.raises(
        ValueError, match=r"numba_lstm.jit.step: b must be 1-D \(4H,\), got 2-D array\(float32, 2d, C\)"
    ):
        user_step(j["x_t"], j["h"], j["c"], j["W"], j["b"][None])
    with pytest.raises(ValueError, match=r"numba_lstm.jit.forward: x must be 3-D \(T, B, I\), got 2-D"):
        user_forward(j["x_t"], j["W"], j["b"], j["h"], j["c"])


def test_jit_inside_njit_still_compiles_after_refusing(j):
    with pytest.raises(TypeError):
        user_step(j["x_t"], j["h"].astype(np.float64), j["c"], j["W"], j["b"])
    h, c = user_step(j["x_t"], j["h"], j["c"], j["W"], j["b"])
    assert h.dtype == c.dtype == np.float32


@pytest.mark.parametrize("call", ["forward", "step"])
@pytest.mark.parametrize(
    ("name", "replace", "error", "message"),
    [
        # The kernels' messages named their own arguments: "b has dtype
        # float32 but the other arrays are float64", "x must have shape ...".
        ("W_l0", lambda a: a.astype(np.float64), TypeError, r"params\['W_l0'\] has dtype float64 but the layer has dtype float32"),
        ("W_l0", lambda a: np.zeros((a.shape[0] + 1, a.shape[1]), np.float32), ValueError, r"params\['W_l0'\] must have shape \(9, 20\), got \(10, 20\)"),
        ("b_l1", lambda a: np.zeros(a.size + 4, np.float32), ValueError, r"params\['b_l1'\] must have shape \(20,\), got \(24,\)"),
        # step: "numba_lstm.jit.step: b must be 1-D" (the jitted step's argument).
        ("b_l0", lambda a: a[None].copy(), ValueError, r"params\['b_l0'\] must have shape \(20,\), got \(1, 20\)"),
    ],
)  # fmt: skip
def test_layer_names_a_replaced_parameter(call, name, replace, error, message):
    layer = numba_lstm.LSTM(I, H, num_layers=2, seed=0)
    layer.params[name] = replace(layer.params[name])
    with pytest.raises(error, match=message):
        layer(_x(T, B, I)) if call == "forward" else layer.step(_x(B, I))


@pytest.mark.parametrize("dtype", [">f4", ">f8"])
def test_arrays_of_the_other_byte_order_are_refused_as_such(dtype):
    """ "must have dtype float32 or float64, got >f4", of a float32 array:
    the byte order was what was wrong, and the message did not say so."""
    native = np.dtype(dtype).newbyteorder("=")
    x = np.zeros((2, 1, 3), native)
    W, b = np.zeros((8, 20), native), np.zeros(20, native)
    message = rf"is {native.name} in the other byte order \(dtype '{dtype}'\); .* pass (\w+)\.astype\(\1\.dtype\.newbyteorder\('='\)\)$"
    with pytest.raises(TypeError, match="x " + message):
        numba_lstm.lstm_forward(x.astype(dtype), W, b)
    with pytest.raises(TypeError, match="kernel " + message):
        numba_lstm.convert.from_tf1(W.astype(dtype), b)
    with pytest.raises(
        TypeError, match=r"x must have dtype float32 or float64, got >i4"
    ):  # not a float: as before
        numba_lstm.lstm_forward(x.astype(">i4"), W, b)


def test_layer_step_names_a_parameter_of_the_other_byte_order():
    """Run in a new process: once any Numba function in a process has seen
    an unaligned array, Numba's dispatcher reads an array of the other byte
    order as native (README, "Bad input ..."), so the step cannot see it.  In
    a new process the step's typing refuses it; that came out as Numba's
    TypingError ("non-precise type pyobject"), naming no parameter."""
    script = textwrap.dedent(
        """
        import numpy as np
        import numba_lstm

        layer = numba_lstm.LSTM(3, 5, seed=0)
        layer.params["W_l0"] = layer.params["W_l0"].astype(">f4")
        try:
            layer.step(np.zeros((2, 3), np.float32))
        except TypeError as error:
            print(error)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "params['W_l0'] is float32 in the other byte order (dtype '>f4')" in out.stdout, out.stdout


def _masked(*shape):
    return np.ma.masked_array(_x(*shape), mask=np.zeros(shape, bool))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        # NumPy reads dtype=None as float64: the layer was float64, silently.
        (lambda: numba_lstm.LSTM(I, H, dtype=None), TypeError, "dtype must be float32 or float64, got None"),
        (lambda: numba_lstm.Dense(I, H, dtype=None), TypeError, "dtype must be float32 or float64, got None"),
        # NumPy's messages, naming neither argument:
        (
            lambda: numba_lstm.LSTM(I, H, dtype="foo"),
            TypeError,
            "dtype must be float32 or float64, got 'foo', which is not a NumPy dtype",
        ),
        # A framework's dtype object: the message says what to pass instead.
        (
            lambda: numba_lstm.LSTM(I, H, dtype=__import__("torch").float32),
            TypeError,
            r"dtype must be float32 or float64, got torch.float32, which is not a NumPy dtype \(pass np.float32",
        ),
        (
            lambda: numba_lstm.LSTM(I, H, seed=-1),
            ValueError,
            "seed must be None, a non-negative integer.*got -1",
        ),
        (
            lambda: numba_lstm.Dense(I, H, seed="a"),
            TypeError,
            "seed must be None, a non-negative integer.*got 'a'",
        ),
        (
            lambda: numba_lstm.LSTM(I, H)(_x(T, B, I), lengths=[[1, 2], [3]]),
            ValueError,
            r"lengths must be an integer array of shape \(B,\), got \[\[1, 2\], \[3\]\]",
        ),
        # The mask was ignored.
        (lambda: numba_lstm.LSTM(I, H)(_masked(T, B, I)), TypeError, "x is a masked array"),
        (lambda: numba_lstm.LSTM(I, H).step(_masked(B, I)), TypeError, "x_t is a masked array"),
        (
            lambda: numba_lstm.lstm_forward(_masked(T, B, I), _x(I + H, 4 * H), _x(4 * H)),
            TypeError,
            "x is a masked array",
        ),
        # work_size(1.5, 3) was 45.0, work_size(-1, 3) -30, work_size(2**62, 1) negative.
        (lambda: jit.work_size(1.5, 3), TypeError, "work_size: B must be an integer, got Numba type float64"),
        (lambda: jit.work_size(2, -1), ValueError, "work_size: B and H must be >= 0"),
        (lambda: jit.work_size(2**62, 1), ValueError, "work_size: 10 \\* B \\* H is past the largest int64"),
        (
            lambda: numba_lstm.LSTM(I, H)(_x(T, B, I), lengths=np.ma.masked_array([1, 2])),
            TypeError,
            "lengths is a masked array",
        ),
        (
            lambda: numba_lstm.LSTM.from_params(
                numba_lstm.LSTM(I, H).config,
                {k: np.ma.masked_array(v) for k, v in numba_lstm.LSTM(I, H).params.items()},
            ),
            TypeError,
            r"params\['W_l0'\] is a masked array",
        ),
        # from_params: "got multiple values for keyword argument 'dtype'".
        (
            lambda: numba_lstm.LSTM.from_params(
                numba_lstm.LSTM(I, H).config, numba_lstm.LSTM(I, H).params, dtype=np.float64
            ),
            TypeError,
            "dtype float64 was given but the parameters are float32: numba_lstm never casts",
        ),
    ],
)
def test_arguments_numpy_would_read_or_refuse_are_refused_by_name(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_from_params_takes_a_dtype_option_that_agrees():
    layer = numba_lstm.LSTM(I, H, dtype=np.float64, seed=0)
    copy = numba_lstm.LSTM.from_params(layer.config, layer.params, dtype="float64")
    assert copy.dtype == np.float64
    np.testing.assert_array_equal(copy.params["W_l0"], layer.params["W_l0"])


def test_messages_say_how_to_mend_the_commonest_mistakes():
    """A W in PyTorch's layout, a float64 x for a float32 layer and a torch
    tensor are what a newcomer passes first: each message says what to do."""
    x = np.zeros((2, 1, 4), np.float32)
    transposed = "W looks transposed: PyTorch stores .* numba_lstm.convert.from_torch"
    with pytest.raises(ValueError, match=r"positive multiple of 4, got \(16, 7\); " + transposed):
        numba_lstm.lstm_forward(x, np.zeros((16, 7), np.float32), np.zeros(28, np.float32))
    with pytest.raises(ValueError, match=r"b must have shape \(12,\) .* got \(32,\); " + transposed):
        numba_lstm.lstm_forward(x, np.zeros((32, 12), np.float32), np.zeros(32, np.float32))
    with pytest.raises(ValueError, match=r"got \(31,\)$"):  # not every wrong b is a transposed W
        numba_lstm.lstm_forward(x, np.zeros((12, 32), np.float32), np.zeros(31, np.float32))
    layer = numba_lstm.LSTM(4, 3)
    with pytest.raises(TypeError, match=r"x has dtype float64 .* x.astype\(np.float32\), for one"):
        layer(np.zeros((2, 1, 4)))
    layer.params["W_l0"] = layer.params["W_l0"].astype(np.float64)  # the optimizer holds the old array
    with pytest.raises(TypeError, match=r"assign in place, params\['W_l0'\]\[...\] = W, for one"):
        layer(x)
    torch = pytest.importorskip("torch")
    with pytest.raises(
        TypeError, match=r"got Tensor .*; convert it with x.detach\(\).cpu\(\).numpy\(\) first"
    ):
        numba_lstm.LSTM(4, 3)(torch.zeros(2, 1, 4))
    with pytest.raises(TypeError, match=r"got Linear .*\)$"):  # a module has no detach: no hint
        numba_lstm.LSTM(4, 3)(torch.nn.Linear(2, 2))
