"""TF1 and Flax cells: conversion checked against each framework's equations written out here.

Neither TensorFlow 1 nor Flax/JAX is a dependency; their cell equations are
written below from the frameworks' source (TF1 ``BasicLSTMCell.call``, Flax
``linen.recurrent.LSTMCell.__call__`` and ``nnx.OptimizedLSTMCell.__call__``)
and the converted weights must give the same sequence through ``numba_lstm``.
(Checked once against live Flax 0.12.8 and TensorFlow 2.21 too:
bench/NOTES.md, "Session 47".)
"""

import numpy as np
import pytest
from conftest import assert_close

import numba_lstm
from numba_lstm import convert

T, B, I, H = 6, 3, 4, 5


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _random(shape, dtype, rng, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# --------------------------------------------------------------------------
# TF1


def tf1_basic_lstm_cell(x, state, kernel, bias, forget_bias):
    """One step of TF1 ``BasicLSTMCell``: state is the tuple (c, h), gates i, j, f, o."""
    c, h = state
    z = np.concatenate([x, h], axis=1) @ kernel + bias
    i, j, f, o = np.split(z, 4, axis=1)
    new_c = c * _sigmoid(f + forget_bias) + _sigmoid(i) * np.tanh(j)
    new_h = np.tanh(new_c) * _sigmoid(o)
    return new_h, (new_c, new_h)


@pytest.mark.parametrize("forget_bias", [1.0, 0.0, 2.5])
def test_from_tf1_runs_like_the_tf1_cell(forget_bias, dtype):
    rng = np.random.default_rng(0)
    kernel, bias = _random((I + H, 4 * H), dtype, rng), _random(4 * H, dtype, rng)
    x = _random((T, B, I), dtype, rng, 1.0)
    c0, h0 = _random((B, H), dtype, rng), _random((B, H), dtype, rng)

    state = (c0.astype(np.float64), h0.astype(np.float64))  # TF1 order: (c, h)
    ys = []
    for t in range(T):
        out, state = tf1_basic_lstm_cell(
            x[t].astype(np.float64), state, kernel.astype(np.float64), bias, forget_bias
        )
        ys.append(out)

    W, b = convert.from_tf1(kernel, bias, forget_bias)
    assert W.dtype == dtype and b.dtype == dtype
    y, h_n, c_n, _ = numba_lstm.lstm_forward(x, W, b, h0=h0, c0=c0)
    assert_close(y, np.stack(ys), dtype, "y")
    assert_close(h_n, state[1], dtype, "h_n")
    assert_close(c_n, state[0], dtype, "c_n")


def test_tf1_gate_blocks_move_to_native_order():
    kernel = np.repeat(np.arange(4.0), H)[None].repeat(I + H, axis=0)  # TF1 blocks i=0, j=1, f=2, o=3
    bias = np.repeat(np.arange(4.0), H)
    W, b = convert.from_tf1(kernel, bias, forget_bias=10.0)
    np.testing.assert_array_equal(W[0], np.repeat([0.0, 2.0, 1.0, 3.0], H))  # native i, f, g(=j), o
    np.testing.assert_array_equal(b, np.repeat([0.0, 12.0, 1.0, 3.0], H))  # forget_bias in the f block


def test_tf1_round_trips(dtype):
    rng = np.random.default_rng(1)
    kernel, bias = _random((I + H, 4 * H), dtype, rng), _random(4 * H, dtype, rng)
    # Weights move exactly whatever forget_bias; with forget_bias = 0 so does the bias.
    for forget_bias in (0.0, 1.0):
        W, b = convert.from_tf1(kernel, bias, forget_bias)
        kernel2, bias2 = convert.to_tf1(W, b, forget_bias)
        np.testing.assert_array_equal(kernel2, kernel)
        W2, _ = convert.from_tf1(*convert.to_tf1(W, b, forget_bias), forget_bias)
        np.testing.assert_array_equal(W2, W)
    np.testing.assert_array_equal(convert.to_tf1(*convert.from_tf1(kernel, bias, 0.0), 0.0)[1], bias)
    # With forget_bias = 1 the bias round trip is an addition then a subtraction:
    # exact on values where b + 1 is representable exactly (multiples of 2**-16
    # below 4 in magnitude, well inside float32's 24-bit mantissa) ...
    grid = np.round(bias * 2**16) / 2**16
    np.testing.assert_array_equal(convert.to_tf1(*convert.from_tf1(kernel, grid, 1.0), 1.0)[1], grid)
    W, b = convert.from_tf1(kernel, grid, 1.0)
    np.testing.assert_array_equal(convert.from_tf1(*convert.to_tf1(W, b, 1.0), 1.0)[1], b)
    # ... and for arbitrary values within the rounding of that addition (half an
    # ulp of |b + 1| for each of the two operations).
    back = convert.to_tf1(*convert.from_tf1(kernel, bias, 1.0), 1.0)[1]
    ulp = np.spacing(np.abs(bias) + dtype(1.0))
    assert np.all(np.abs(back - bias) <= ulp)


def test_tf1_refusals_name_the_argument():
    kernel, bias = np.zeros((I + H, 4 * H), np.float32), np.zeros(4 * H, np.float32)
    with pytest.raises(ValueError, match=r"bias must have shape \(20,\).*got \(16,\)"):
        convert.from_tf1(kernel, bias[:16])
    with pytest.raises(
        ValueError, match=r"kernel must have shape \(I \+ H, 4H\) with I and H at least 1, got \(9, 18\)"
    ):
        convert.from_tf1(kernel[:, :18], bias)
    # No cell has fewer than two rows (I >= 1, H or P >= 1): the error came
    # later, naming params['W_l0'], not the kernel.
    for rows in (0, 1):
        with pytest.raises(ValueError, match=rf"kernel must have shape .* got \({rows}, 20\)"):
            convert.from_tf1(kernel[:rows], bias)
        with pytest.raises(ValueError, match=rf"W must have shape .* got \({rows}, 20\)"):
            convert.to_tf1(kernel[:rows], bias)
    with pytest.raises(TypeError, match="one dtype"):
        convert.from_tf1(kernel, bias.astype(np.float64))
    with pytest.raises(TypeError, match="kernel must have dtype float32 or float64, got int64"):
        convert.from_tf1(kernel.astype(np.int64), bias)
    with pytest.raises(TypeError, match="forget_bias must be a real number"):
        convert.from_tf1(kernel, bias, forget_bias="1.0")
    with pytest.raises(ValueError, match="forget_bias must be finite"):
        convert.to_tf1(kernel, bias, forget_bias=float("nan"))
    # 1e40 is finite as a Python float but inf in float32, the weights' dtype.
    with pytest.raises(
        ValueError, match=r"forget_bias must be finite in float32 \(the weights' dtype\), got 1e\+40"
    ):
        convert.from_tf1(kernel, bias, forget_bias=1e40)
    with pytest.raises(ValueError, match="forget_bias must be finite in float32"):
        convert.to_tf1(kernel, bias, forget_bias=-1e40)
    # An int past every float: Python's conversion raised a bare OverflowError.
    with pytest.raises(ValueError, match=r"forget_bias must be finite in float64 .*got 1000000000"):
        convert.from_tf1(kernel.astype(np.float64), bias.astype(np.float64), forget_bias=10**400)


def test_tf1_forget_bias_that_takes_the_bias_out_of_range_is_refused():
    # Each value is finite in float32, the sum is not: before, the f block held
    # inf (from_tf1) or -inf (to_tf1) without an error.
    kernel, bias = np.zeros((I + H, 4 * H), np.float32), np.zeros(4 * H, np.float32)
    bias[2 * H + 3] = 3e38  # TF1's f block (i, j, f, o), unit 3
    with pytest.raises(
        ValueError, match=rf"forget_bias = 1e\+38 added to bias\[{2 * H + 3}\] = 3e\+38 overflows float32"
    ):
        convert.from_tf1(kernel, bias, forget_bias=1e38)
    W, b = np.zeros((I + H, 4 * H), np.float32), np.zeros(4 * H, np.float32)
    b[H + 1] = -3e38  # the native f block (i, f, g, o), unit 1
    with pytest.raises(
        ValueError, match=rf"forget_bias = 1e\+38 subtracted from b\[{H + 1}\] = -3e\+38 overflows float32"
    ):
        convert.to_tf1(W, b, forget_bias=1e38)
    # The same values fit in float64, and a NaN or Inf already in the bias
    # is the bias's own (it passes through like any other weight).
    bias64 = bias.astype(np.float64)
    _, b64 = convert.from_tf1(kernel.astype(np.float64), bias64, forget_bias=1e38)
    assert b64[H + 3] == bias64[2 * H + 3] + 1e38
    bias[2 * H + 3], bias[2 * H + 4] = np.nan, np.inf
    _, b_odd = convert.from_tf1(kernel, bias, forget_bias=1e38)
    assert np.isnan(b_odd[H + 3]) and b_odd[H + 4] == np.inf


# --------------------------------------------------------------------------
# Flax


def flax_lstm_cell(carry, x, params):
    """One step of Flax ``LSTMCell``: carry (c, h), Dense layers ii.. (no bias) and hi.. (bias)."""
    c, h = carry

    def pre(g):
        return x @ params[f"i{g}"]["kernel"] + h @ params[f"h{g}"]["kernel"] + params[f"h{g}"]["bias"]

    i, f, g, o = _sigmoid(pre("i")), _sigmoid(pre("f")), np.tanh(pre("g")), _sigmoid(pre("o"))
    new_c = f * c + i * g
    new_h = o * np.tanh(new_c)
    return (new_c, new_h), new_h


def _flax_params(dtype, seed=2):
    rng = np.random.default_rng(seed)
    params = {f"i{g}": {"kernel": _random((I, H), dtype, rng)} for g in "ifgo"}
    params.update(
        {f"h{g}": {"kernel": _random((H, H), dtype, rng), "bias": _random(H, dtype, rng)} for g in "ifgo"}
    )
    return params


def _assert_from_flax_runs_like(cell, params, given, dtype, seed):
    """``from_flax(given)`` through ``lstm_forward`` against ``cell`` (one step
    of the Flax equations, in float64) over T steps from a random carry;
    returns the converted ``(W, b)``."""
    rng = np.random.default_rng(seed)
    x = _random((T, B, I), dtype, rng, 1.0)
    c0, h0 = _random((B, H), dtype, rng), _random((B, H), dtype, rng)
    p64 = {k: {n: a.astype(np.float64) for n, a in v.items()} for k, v in params.items()}
    carry, ys = (c0.astype(np.float64), h0.astype(np.float64)), []
    for t in range(T):
        carry, out = cell(carry, x[t].astype(np.float64), p64)
        ys.append(out)
    W, b = convert.from_flax(given)
    assert W.shape == (I + H, 4 * H) and W.dtype == dtype and b.dtype == dtype
    y, h_n, c_n, _ = numba_lstm.lstm_forward(x, W, b, h0=h0, c0=c0)
    assert_close(y, np.stack(ys), dtype, "y")
    assert_close(h_n, carry[1], dtype, "h_n")
    assert_close(c_n, carry[0], dtype, "c_n")
    return W, b


def test_from_flax_runs_like_the_flax_cell(dtype):
    params = _flax_params(dtype)
    W, b = _assert_from_flax_runs_like(flax_lstm_cell, params, params, dtype, seed=3)
    # The nested trees of variables / nn.RNN are unwrapped.
    W2, b2 = convert.from_flax({"params": {"cell": params}})
    np.testing.assert_array_equal(W2, W)
    np.testing.assert_array_equal(b2, b)


def test_flax_round_trips_are_exact(dtype):
    params = _flax_params(dtype, seed=4)
    back = convert.to_flax(*convert.from_flax(params), input_size=I)
    assert sorted(back) == sorted(params)
    for key, node in params.items():
        assert sorted(back[key]) == sorted(node)
        for leaf, value in node.items():
            assert back[key][leaf].dtype == dtype
            np.testing.assert_array_equal(back[key][leaf], value, err_msg=f"{key}.{leaf}")
    rng = np.random.default_rng(5)
    W, b = _random((I + H, 4 * H), dtype, rng), _random(4 * H, dtype, rng)
    W2, b2 = convert.from_flax(convert.to_flax(W, b, I))
    np.testing.assert_array_equal(W2, W)
    np.testing.assert_array_equal(b2, b)
    # to_flax returns copies: the caller's W is not shared.
    tree = convert.to_flax(W, b, I)
    tree["ii"]["kernel"][0, 0] += 1
    np.testing.assert_array_equal(W2, W)


def flax_fused_lstm_cell(carry, x, params):
    """One step of Flax ``nnx.OptimizedLSTMCell``: carry (c, h), Dense ``dense_i``
    (no bias) and ``dense_h`` (bias), their sum split in four: i, f, g, o."""
    c, h = carry
    z = x @ params["dense_i"]["kernel"] + h @ params["dense_h"]["kernel"] + params["dense_h"]["bias"]
    zi, zf, zg, zo = np.split(z, 4, axis=-1)
    new_c = _sigmoid(zf) * c + _sigmoid(zi) * np.tanh(zg)
    new_h = _sigmoid(zo) * np.tanh(new_c)
    return (new_c, new_h), new_h


def test_from_flax_reads_the_nnx_cells(dtype):
    # nnx.LSTMCell: linen's tree with "if_" for "if" (a Python keyword).
    params = _flax_params(dtype, seed=6)
    nnx_params = {("if_" if key == "if" else key): node for key, node in params.items()}
    W, b = convert.from_flax(params)
    W_nnx, b_nnx = convert.from_flax(nnx_params)
    np.testing.assert_array_equal(W_nnx, W)
    np.testing.assert_array_equal(b_nnx, b)
    # nnx.OptimizedLSTMCell: two fused layers, run by its own equations.
    rng = np.random.default_rng(7)
    fused = {
        "dense_i": {"kernel": _random((I, 4 * H), dtype, rng)},
        "dense_h": {"kernel": _random((H, 4 * H), dtype, rng), "bias": _random(4 * H, dtype, rng)},
    }
    _assert_from_flax_runs_like(flax_fused_lstm_cell, fused, {"params": fused}, dtype, seed=10)


@pytest.mark.parametrize("layout", ["linen", "nnx", "nnx_optimized"])
def test_to_flax_layouts_round_trip_exactly(layout, dtype):
    rng = np.random.default_rng(8)
    W, b = _random((I + H, 4 * H), dtype, rng), _random(4 * H, dtype, rng)
    tree = convert.to_flax(W, b, I, layout=layout)
    keys = {
        "linen": ["hf", "hg", "hi", "ho", "if", "ig", "ii", "io"],
        "nnx": ["hf", "hg", "hi", "ho", "if_", "ig", "ii", "io"],
        "nnx_optimized": ["dense_h", "dense_i"],
    }[layout]
    assert sorted(tree) == keys
    if layout == "nnx_optimized":
        assert tree["dense_i"]["kernel"].shape == (I, 4 * H) and tree["dense_h"]["bias"].shape == (4 * H,)
    W2, b2 = convert.from_flax(tree)
    np.testing.assert_array_equal(W2, W)
    np.testing.assert_array_equal(b2, b)
    # Copies: the caller's W is not shared.
    next(iter(tree.values()))["kernel"][0, 0] += 1
    np.testing.assert_array_equal(W2, W)


def test_flax_nnx_refusals_name_the_parameter():
    rng = np.random.default_rng(9)
    fused = {
        "dense_i": {"kernel": _random((I, 4 * H), np.float32, rng)},
        "dense_h": {"kernel": _random((H, 4 * H), np.float32, rng), "bias": _random(4 * H, np.float32, rng)},
    }
    with pytest.raises(ValueError, match=r"nnx.OptimizedLSTMCell.*missing \['dense_i'\]"):
        convert.from_flax({"dense_h": fused["dense_h"]})
    with pytest.raises(ValueError, match=r"nnx.state\(cell, nnx.Param\).*unexpected \['rngs'\]"):
        convert.from_flax({**fused, "rngs": {"count": np.zeros(1)}})
    with pytest.raises(
        ValueError, match=r"params\['dense_h'\] must be a dict with keys \['kernel', 'bias'\]"
    ):
        convert.from_flax({**fused, "dense_h": {"kernel": fused["dense_h"]["kernel"]}})
    with pytest.raises(
        ValueError, match=r"params\['dense_h'\]\['kernel'\] must have shape \(H, 4H\), got \(5, 16\)"
    ):
        convert.from_flax({**fused, "dense_h": {**fused["dense_h"], "kernel": np.zeros((H, 16), np.float32)}})
    with pytest.raises(
        ValueError,
        match=r"params\['dense_i'\]\['kernel'\] must have shape \(I, 4H\) = \(I, 20\), got \(4, 16\)",
    ):
        convert.from_flax({**fused, "dense_i": {"kernel": np.zeros((I, 16), np.float32)}})
    with pytest.raises(
        ValueError, match=r"params\['dense_h'\]\['bias'\] must have shape \(20,\) \(4H,\), got \(5,\)"
    ):
        convert.from_flax({**fused, "dense_h": {**fused["dense_h"], "bias": np.zeros(H, np.float32)}})
    with pytest.raises(TypeError, match="one dtype"):
        convert.from_flax({**fused, "dense_i": {"kernel": np.zeros((I, 4 * H))}})
    # nnx.LSTMCell's "if_" beside linen's "if": one of them is not expected.
    params = _flax_params(np.float32)
    with pytest.raises(ValueError, match=r"unexpected \['if_'\]"):
        convert.from_flax({**params, "if_": params["if"]})
    nnx_params = {("if_" if key == "if" else key): node for key, node in params.items()}
    with pytest.raises(ValueError, match=r"params\['if_'\]\['kernel'\] must have shape \(4, 5\)"):
        convert.from_flax({**nnx_params, "if_": {"kernel": np.zeros((3, H), np.float32)}})
    W, b = convert.from_flax(params)
    with pytest.raises(
        ValueError, match=r"layout must be one of \['linen', 'nnx', 'nnx_optimized'\], got 'NNX'"
    ):
        convert.to_flax(W, b, I, layout="NNX")


def test_flax_refusals_name_the_parameter():
    params = _flax_params(np.float32)
    with pytest.raises(ValueError, match=r"missing \['hg'\]"):
        convert.from_flax({k: v for k, v in params.items() if k != "hg"})
    with pytest.raises(ValueError, match=r"params\['ii'\] must be a dict with keys \['kernel'\]"):
        convert.from_flax(
            {**params, "ii": {"kernel": params["ii"]["kernel"], "bias": np.zeros(H, np.float32)}}
        )
    with pytest.raises(ValueError, match=r"params\['if'\]\['kernel'\] must have shape \(4, 5\)"):
        convert.from_flax({**params, "if": {"kernel": np.zeros((3, H), np.float32)}})
    # The odd one out is named whichever gate it is, ii included.
    with pytest.raises(
        ValueError, match=r"params\['ii'\]\['kernel'\] must have shape \(4, 5\).*got \(3, 5\)"
    ):
        convert.from_flax({**params, "ii": {"kernel": np.zeros((3, H), np.float32)}})
    with pytest.raises(
        TypeError, match=r"params\['ho'\]\['bias'\] must have dtype float32 or float64, got int64"
    ):
        convert.from_flax({**params, "ho": {"kernel": params["ho"]["kernel"], "bias": np.zeros(H, np.int64)}})
    with pytest.raises(TypeError, match="one dtype"):
        convert.from_flax({**params, "ho": {"kernel": params["ho"]["kernel"], "bias": np.zeros(H)}})
    W, b = convert.from_flax(params)
    with pytest.raises(ValueError, match=r"W must have shape \(input_size \+ H, 4H\) = \(3 \+ 5, 20\)"):
        convert.to_flax(W, b, input_size=3)
    with pytest.raises(ValueError, match="input_size must be a positive integer"):
        convert.to_flax(W, b, input_size=0)
