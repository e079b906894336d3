"""Conversion to and from Keras 3 (torch backend): live parity, exact round trips, refusals."""

import os

import numpy as np
import pytest
from conftest import assert_close

import numba_lstm
from numba_lstm import convert

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras", reason="keras is not installed (pip install -e '.[test]')")
if keras.backend.backend() != "torch":  # pragma: no cover - depends on the environment
    pytest.skip(
        f"keras uses the {keras.backend.backend()} backend, these tests need torch", allow_module_level=True
    )

T, B, I, H = 7, 3, 4, 5


def _x(seed=0):
    return np.random.default_rng(seed).standard_normal((B, T, I)).astype(np.float32)


def _random_keras_weights(n, seed=1, bias=True):
    """Random [kernel, recurrent_kernel, bias] (non-zero bias, unlike the initialiser)."""
    rng = np.random.default_rng(seed)
    shapes = [(I, 4 * H), (H, 4 * H), (4 * H,)][: 3 if bias else 2]
    return [(rng.standard_normal(s) * 0.5).astype(np.float32) for _ in range(n) for s in shapes]


def _lstm(**kwargs):
    layer = keras.layers.LSTM(H, return_sequences=True, return_state=True, **kwargs)
    layer.build((None, T, I))
    return layer


def _native(params, x, sfx=""):
    """numba_lstm.lstm_forward on batch-major x; the reverse direction runs on x reversed in time."""
    xt = np.ascontiguousarray(x.transpose(1, 0, 2)[::-1] if sfx else x.transpose(1, 0, 2))
    y, h_n, c_n, _ = numba_lstm.lstm_forward(xt, params[f"W_l0{sfx}"], params[f"b_l0{sfx}"])
    y = y[::-1] if sfx else y
    return y.transpose(1, 0, 2), h_n, c_n


def _numpy(value):
    return keras.ops.convert_to_numpy(value)


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
def test_from_keras_layer_matches_keras(use_bias):
    layer = _lstm(use_bias=use_bias)
    layer.set_weights(_random_keras_weights(1, bias=use_bias))
    config, params = convert.from_keras(layer)
    assert config == {
        "input_size": I,
        "hidden_size": H,
        "num_layers": 1,
        "bidirectional": False,
        "proj_size": 0,
    }
    assert params["W_l0"].dtype == np.float32
    if not use_bias:
        np.testing.assert_array_equal(params["b_l0"], np.zeros(4 * H, np.float32))
    x = _x()
    y_k, h_k, c_k = (_numpy(v) for v in layer(x))  # Keras's state order is (h, c)
    y, h_n, c_n = _native(params, x)
    assert_close(y, y_k, np.float32, "y")
    assert_close(h_n, h_k, np.float32, "h_n")
    assert_close(c_n, c_k, np.float32, "c_n")
    # The weights list gives the same parameters as the layer.
    _, from_list = convert.from_keras(layer.get_weights())
    for key in params:
        np.testing.assert_array_equal(from_list[key], params[key])


def test_return_sequences_false_is_the_final_h():
    layer = keras.layers.LSTM(H, return_sequences=False, unit_forget_bias=True)
    layer.build((None, T, I))
    layer.set_weights(_random_keras_weights(1, seed=3))
    _, params = convert.from_keras(layer)
    x = _x(1)
    assert_close(_native(params, x)[1], _numpy(layer(x)), np.float32, "h_n")


def test_to_keras_weights_set_into_a_layer_match_native():
    config = {"input_size": I, "hidden_size": H, "num_layers": 1, "bidirectional": False, "proj_size": 0}
    rng = np.random.default_rng(4)
    params = {"W_l0": rng.standard_normal((I + H, 4 * H)).astype(np.float32) * 0.5}
    params["b_l0"] = rng.standard_normal(4 * H).astype(np.float32)
    layer = _lstm()
    layer.set_weights(convert.to_keras_weights(config, params))
    x = _x(2)
    y_k, h_k, c_k = (_numpy(v) for v in layer(x))
    for name, got, ref in zip(("y", "h_n", "c_n"), _native(params, x), (y_k, h_k, c_k), strict=True):
        assert_close(got, ref, np.float32, name)
    # Round trip native -> keras -> native is exact, in both dtypes.
    for dtype in (np.float32, np.float64):
        p = {k: v.astype(dtype) for k, v in params.items()}
        back_config, back = convert.from_keras(convert.to_keras_weights(config, p))
        assert back_config == config
        for key in p:
            assert back[key].dtype == dtype
            np.testing.assert_array_equal(back[key], p[key])


def test_bidirectional_matches_keras_both_ways():
    layer = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True))
    layer.build((None, T, I))
    weights = _random_keras_weights(2, seed=5)
    layer.set_weights(weights)
    config, params = convert.from_keras(layer)
    assert config["bidirectional"] is True and sorted(params) == [
        "W_l0",
        "W_l0_reverse",
        "b_l0",
        "b_l0_reverse",
    ]
    x = _x(3)
    y = np.concatenate([_native(params, x)[0], _native(params, x, "_reverse")[0]], axis=2)
    assert_close(y, _numpy(layer(x)), np.float32, "y")
    # Exact round trip keras -> native -> keras, and back into a fresh Bidirectional.
    back = convert.to_keras_weights(config, params)
    assert len(back) == 6
    for got, want in zip(back, weights, strict=True):
        np.testing.assert_array_equal(got, want)
    fresh = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True))
    fresh.build((None, T, I))
    fresh.set_weights(back)
    assert_close(_numpy(fresh(x)), _numpy(layer(x)), np.float32, "y")


def test_bidirectional_without_bias_from_a_list():
    weights = _random_keras_weights(2, bias=False)
    config, params = convert.from_keras(weights)
    assert config["bidirectional"]
    np.testing.assert_array_equal(params["b_l0_reverse"], np.zeros(4 * H, np.float32))
    np.testing.assert_array_equal(params["W_l0_reverse"], np.concatenate(weights[2:], axis=0))
    assert len(convert.to_keras_weights(config, params, use_bias=False)) == 4


@pytest.mark.parametrize("biased", ["forward", "backward"])
def test_bidirectional_whose_directions_differ_in_use_bias(biased):
    # Keras accepts a backward_layer with another use_bias; its weights were
    # joined into one list of 5 arrays and refused as a list.
    layer = keras.layers.Bidirectional(
        keras.layers.LSTM(H, return_sequences=True, use_bias=biased == "forward"),
        backward_layer=keras.layers.LSTM(
            H, return_sequences=True, go_backwards=True, use_bias=biased == "backward"
        ),
    )
    layer.build((None, T, I))
    forward, backward = _random_keras_weights(1, seed=6), _random_keras_weights(1, seed=7)
    weights = forward + backward[:2] if biased == "forward" else forward[:2] + backward
    layer.set_weights(weights)
    config, params = convert.from_keras(layer)
    assert config["bidirectional"] is True
    unbiased = "b_l0_reverse" if biased == "forward" else "b_l0"
    np.testing.assert_array_equal(params[unbiased], np.zeros(4 * H, np.float32))
    x = _x(4)
    y = np.concatenate([_native(params, x)[0], _native(params, x, "_reverse")[0]], axis=2)
    assert_close(y, _numpy(layer(x)), np.float32, "y")


def test_to_keras_weights_stacked_layers_and_refusals():
    config = {"input_size": I, "hidden_size": H, "num_layers": 2, "bidirectional": False, "proj_size": 0}
    params = {k: np.ones(s, np.float32) for k, s in convert.parameter_shapes(config).items()}
    with pytest.raises(ValueError, match="num_layers=2: pass layer=k"):
        convert.to_keras_weights(config, params)
    kernel, recurrent, bias = convert.to_keras_weights(config, params, layer=1)
    assert kernel.shape == (H, 4 * H) and recurrent.shape == (H, 4 * H)
    with pytest.raises(ValueError, match="use_bias=False but params"):
        convert.to_keras_weights(config, params, layer=0, use_bias=False)
    proj = {"input_size": I, "hidden_size": H, "proj_size": 2}
    with pytest.raises(ValueError, match="proj_size=2"):
        convert.to_keras_weights(proj, {k: np.ones(s) for k, s in convert.parameter_shapes(proj).items()})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"recurrent_activation": "hard_sigmoid"}, "recurrent_activation='hard_sigmoid'"),
        ({"activation": "relu"}, "activation='relu'"),
        ({"go_backwards": True}, "go_backwards=True"),
    ],
)
def test_from_keras_refuses_what_it_cannot_represent(kwargs, match):
    with pytest.raises(ValueError, match=match):
        convert.from_keras(_lstm(**kwargs))


def test_activations_from_keras_ops_are_the_same_activations():
    # keras.ops.tanh is another function object than keras.activations.tanh,
    # which the check once refused with "activation='tanh' ... 'tanh' only".
    layer = _lstm(activation=keras.ops.tanh, recurrent_activation=keras.ops.sigmoid)
    layer.set_weights(_random_keras_weights(1))
    _, params = convert.from_keras(layer)
    x = _x()
    y_k, h_k, c_k = (_numpy(a) for a in layer(x))
    y, h, c = _native(params, x)
    assert_close(y, y_k, np.float32, "y")
    assert_close(h, h_k, np.float32, "h")
    assert_close(c, c_k, np.float32, "c")
    with pytest.raises(ValueError, match=r"activation='relu' \(keras\..*relu\); .*'tanh' only"):
        convert.from_keras(_lstm(activation=keras.ops.relu))


def test_from_keras_takes_subclasses_that_keep_the_computation():
    class Named(keras.layers.LSTM):
        pass

    class Scaled(keras.layers.LSTM):
        def call(self, sequences, *args, **kwargs):
            return super().call(2 * sequences, *args, **kwargs)

    layer = Named(H)
    layer.build((None, T, I))
    config, params = convert.from_keras(layer)
    _, want = convert.from_keras(layer.get_weights())
    for key in want:
        np.testing.assert_array_equal(params[key], want[key], err_msg=key)
    scaled = Scaled(H)
    scaled.build((None, T, I))
    with pytest.raises(TypeError, match=r"Scaled, a subclass of keras.layers.LSTM that overrides call"):
        convert.from_keras(scaled)


def test_from_keras_refuses_a_bidirectional_subclass_that_overrides_call():
    # It was converted from its inner layers alone: 0.17 off Keras's output.
    class Named(keras.layers.Bidirectional):
        pass

    class Reversed(keras.layers.Bidirectional):
        def call(self, sequences, *args, **kwargs):
            return super().call(sequences[:, ::-1], *args, **kwargs)

    named = Named(keras.layers.LSTM(H, return_sequences=True))
    named.build((None, T, I))
    _, params = convert.from_keras(named)
    _, want = convert.from_keras(named.forward_layer.get_weights() + named.backward_layer.get_weights())
    for key in want:
        np.testing.assert_array_equal(params[key], want[key], err_msg=key)
    changed = Reversed(keras.layers.LSTM(H, return_sequences=True))
    changed.build((None, T, I))
    with pytest.raises(
        TypeError, match=r"Reversed, a subclass of keras.layers.Bidirectional that overrides call"
    ):
        convert.from_keras(changed)
    if hasattr(keras.layers.Bidirectional, "_call_fused_lstm"):  # Keras 3.15's path for two LSTMs

        class Fused(keras.layers.Bidirectional):
            def _call_fused_lstm(self, *args, **kwargs):
                return super()._call_fused_lstm(*args, **kwargs)

        fused = Fused(keras.layers.LSTM(H, return_sequences=True))
        fused.build((None, T, I))
        with pytest.raises(TypeError, match=r"Fused, a subclass of .* that overrides _call_fused_lstm"):
            convert.from_keras(fused)


def test_from_keras_refuses_other_layers_and_settings():
    with pytest.raises(ValueError, match="merge_mode='sum'"):
        layer = keras.layers.Bidirectional(keras.layers.LSTM(H), merge_mode="sum")
        layer.build((None, T, I))
        convert.from_keras(layer)
    with pytest.raises(ValueError, match="backward_layer.*recurrent_activation='hard_sigmoid'"):
        layer = keras.layers.Bidirectional(
            keras.layers.LSTM(H),
            backward_layer=keras.layers.LSTM(H, go_backwards=True, recurrent_activation="hard_sigmoid"),
        )
        layer.build((None, T, I))
        convert.from_keras(layer)
    # It said "wrap it in keras.layers.Bidirectional", of a layer inside one.
    with pytest.raises(
        ValueError, match=r"forward_layer has go_backwards=True: .* forward_layer of go_backwards=False$"
    ):
        layer = keras.layers.Bidirectional(
            keras.layers.LSTM(H, go_backwards=True), backward_layer=keras.layers.LSTM(H, go_backwards=False)
        )
        layer.build((None, T, I))
        convert.from_keras(layer)
    with pytest.raises(ValueError, match="not built"):
        convert.from_keras(keras.layers.LSTM(H))
    gru = keras.layers.GRU(H)
    gru.build((None, T, I))
    with pytest.raises(TypeError, match="must be a keras.layers.LSTM, got GRU"):
        convert.from_keras(gru)
    with pytest.raises(ValueError, match="got 5 arrays"):
        convert.from_keras([np.zeros((I, 4 * H), np.float32)] * 5)
    with pytest.raises(ValueError, match=r"kernel must have shape \(I, 4H\) = \(I, 20\), got \(4, 16\)"):
        convert.from_keras([np.zeros((I, 16), np.float32), np.zeros((H, 20), np.float32)])
    with pytest.raises(TypeError, match="recurrent_kernel must have dtype float32 or float64, got int32"):
        convert.from_keras([np.zeros((I, 20), np.float32), np.zeros((H, 20), np.int32)])
