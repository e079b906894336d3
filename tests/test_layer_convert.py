"""Layer-level conversion shortcuts: from_* builds a working layer, to_* round-trips exactly."""

import os

import numpy as np
import pytest
from conftest import assert_close, import_or_skip

import numba_lstm


def test_summary_totals_56_for_keras_lstm2_on_4_features(capsys):
    layer = numba_lstm.LSTM(4, 2)
    # It prints, and returns None: a returned table showed twice at a prompt.
    assert layer.summary() is None
    printed = capsys.readouterr().out
    assert printed == numba_lstm.gates.parameter_table(layer.config, layer.params) + "\n"
    assert printed.splitlines()[-1].split()[-1] == "56"


def test_from_params_copies_and_checks():
    source = numba_lstm.LSTM(3, 4, num_layers=2, dtype=np.float64, seed=1)
    layer = numba_lstm.LSTM.from_params(source.config, source.params, batch_first=True)
    assert layer.dtype == np.float64 and layer.batch_first and layer.config == source.config
    for name, value in source.params.items():
        np.testing.assert_array_equal(layer.params[name], value)
        assert layer.params[name] is not value
    with pytest.raises(ValueError, match="W_l1"):
        numba_lstm.LSTM.from_params(dict(source.config, num_layers=1), source.params)


def test_from_params_draws_no_initialisation_it_would_overwrite():
    # It drew one first: 155 ms and 1.7x the memory of a 96 MB model for
    # values copied over at once, and the generator given as seed advanced.
    source = numba_lstm.LSTM(3, 4, num_layers=2, seed=1)
    drawn = numba_lstm.LSTM(3, 4, seed=1).params["W_l0"].copy()
    generator = np.random.default_rng(7)
    before = generator.bit_generator.state
    layer = numba_lstm.LSTM.from_params(source.config, source.params, seed=generator)
    assert generator.bit_generator.state == before
    np.testing.assert_array_equal(layer.params["W_l1"], source.params["W_l1"])
    # A constructor that fails inside from_params leaves later layers drawn as before.
    with pytest.raises(ValueError, match="dropout"):
        numba_lstm.LSTM.from_params(source.config, source.params, dropout=2.0)
    np.testing.assert_array_equal(numba_lstm.LSTM(3, 4, seed=1).params["W_l0"], drawn)

    # Only the layer built is left to be filled, not another one that a
    # subclass's constructor builds besides.
    class WithTwin(numba_lstm.LSTM):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.twin = numba_lstm.LSTM(3, 4, seed=1)

    layer = WithTwin.from_params(source.config, source.params)
    np.testing.assert_array_equal(layer.params["W_l0"], source.params["W_l0"])
    np.testing.assert_array_equal(layer.twin.params["W_l0"], drawn)


def test_torch_round_trip_and_outputs(dtype):
    torch = import_or_skip("torch")
    module = torch.nn.LSTM(3, 5, 2, bidirectional=True, proj_size=2)
    module = module.to(torch.float64 if dtype == np.float64 else torch.float32)
    layer = numba_lstm.LSTM.from_torch(module).eval()
    assert layer.dtype == dtype
    twin = torch.nn.LSTM(3, 5, 2, bidirectional=True, proj_size=2).to(next(module.parameters()).dtype)
    twin.load_state_dict(layer.to_torch_state_dict(), strict=True)
    back = numba_lstm.LSTM.from_torch(twin)
    for name, value in layer.params.items():
        np.testing.assert_array_equal(back.params[name], value)
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype(dtype)
    with torch.no_grad():
        y_t, (h_t, c_t) = module(torch.from_numpy(x))
    y, (h, c) = layer(x)
    assert_close(y, y_t.numpy(), dtype, "y")
    assert_close(h, h_t.numpy(), dtype, "h_n")
    assert_close(c, c_t.numpy(), dtype, "c_n")


@pytest.mark.parametrize("batch_first", [False, True])
def test_from_torch_module_carries_batch_first_dropout_and_mode(batch_first):
    # Before, a batch_first module gave a time-major layer: same output shape,
    # wrong values; and a module in eval() gave a layer in training mode,
    # whose dropout changed the outputs (0.037 off at dropout 0.5).
    torch = import_or_skip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 4, num_layers=2, batch_first=batch_first, dropout=0.25).eval()
    layer = numba_lstm.LSTM.from_torch(module)
    assert layer.batch_first is batch_first and layer.dropout == 0.25 and layer.training is False
    assert numba_lstm.LSTM.from_torch(module.train()).training is True
    module.eval()
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(np.float32)  # B = 2, T = 5 if batch_first
    with torch.no_grad():
        y_t, (h_t, c_t) = module(torch.from_numpy(x))
    y, (h, c) = layer(x)
    assert_close(y, y_t.numpy(), np.float32, "y")
    assert_close(h, h_t.numpy(), np.float32, "h_n")
    assert_close(c, c_t.numpy(), np.float32, "c_n")
    # The options win; a state dict carries neither setting.
    assert numba_lstm.LSTM.from_torch(module, batch_first=not batch_first).batch_first is not batch_first
    from_state = numba_lstm.LSTM.from_torch(module.state_dict())
    assert from_state.batch_first is False and from_state.dropout == 0.0
    # torch takes dropout = 1; the layer does not, and says where it came from.
    with pytest.raises(ValueError, match=r"the module has dropout=1.0; .*pass dropout=\.\.\. to from_torch"):
        numba_lstm.LSTM.from_torch(torch.nn.LSTM(3, 4, num_layers=2, dropout=1.0))
    assert (
        numba_lstm.LSTM.from_torch(torch.nn.LSTM(3, 4, num_layers=2, dropout=1.0), dropout=0.5).dropout == 0.5
    )


def test_torch_round_trip_without_bias():
    # The layer's to_torch_state_dict took no bias option: a bias=False module
    # could not load it (unexpected keys bias_ih_l0, bias_hh_l0).
    torch = import_or_skip("torch")
    module = torch.nn.LSTM(3, 4, num_layers=2, bias=False)
    layer = numba_lstm.LSTM.from_torch(module)
    twin = torch.nn.LSTM(3, 4, num_layers=2, bias=False)
    twin.load_state_dict(layer.to_torch_state_dict(bias=False), strict=True)
    for name, value in module.state_dict().items():
        np.testing.assert_array_equal(twin.state_dict()[name].numpy(), value.numpy(), err_msg=name)
    layer.params["b_l1"][0] = 1.0
    with pytest.raises(ValueError, match="b_l1"):
        layer.to_torch_state_dict(bias=False)


def test_from_torch_refuses_an_empty_projection():
    # A weight_hr of P = 0 rows once came back as proj_size=0 plus a stray
    # W_hr_l0, which from_params refused as "unexpected ['W_hr_l0']".
    torch = import_or_skip("torch")
    state = torch.nn.LSTM(3, 4).state_dict()
    with pytest.raises(ValueError, match=r"weight_hr_l0'\] must have shape \(P, H\) with proj_size P >= 1"):
        numba_lstm.LSTM.from_torch({**state, "weight_hr_l0": torch.zeros(0, 4)})


def test_keras_layer_round_trip_and_outputs():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = import_or_skip("keras")
    x = np.random.default_rng(0).standard_normal((2, 7, 4)).astype(np.float32)
    k_layer = keras.layers.LSTM(6, return_sequences=True, return_state=True)
    y_k, h_k, c_k = (np.asarray(keras.ops.convert_to_numpy(a)) for a in k_layer(x))
    layer = numba_lstm.LSTM.from_keras(k_layer)  # batch-major, as the Keras layer
    assert layer.batch_first
    y, (h, c) = layer(x)
    assert_close(y, y_k, np.float32, "y")
    assert_close(h[0], h_k, np.float32, "h")
    assert_close(c[0], c_k, np.float32, "c")
    for got, want in zip(layer.to_keras_weights(), k_layer.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    # A list of weights says nothing about the layout: the default, time-major.
    assert not numba_lstm.LSTM.from_keras(k_layer.get_weights()).batch_first
    assert not numba_lstm.LSTM.from_keras(k_layer, batch_first=False).batch_first


def test_onnx_round_trip_runs_in_onnxruntime(tmp_path):
    ort = import_or_skip("onnxruntime")
    layer = numba_lstm.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0).eval()
    path = tmp_path / "lstm.onnx"
    layer.to_onnx(str(path))
    back = numba_lstm.LSTM.from_onnx(str(path))
    for name, value in layer.params.items():
        np.testing.assert_array_equal(back.params[name], value)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: x})
    y, (h, c) = layer(x)
    assert_close(outputs[0], y, np.float32, "y")
    assert_close(outputs[1], h, np.float32, "h_n")
    assert_close(outputs[2], c, np.float32, "c_n")


@pytest.mark.parametrize("batch_first", [False, True])
def test_onnx_export_reads_what_the_layer_reads(batch_first):
    # Before, a batch_first layer exported a model reading (T, B, I): given
    # the layer's own (B, T, I) input, onnxruntime's y was 0.21 off.
    ort = import_or_skip("onnxruntime")
    layer = numba_lstm.LSTM(4, 8, num_layers=2, bidirectional=True, batch_first=batch_first, seed=2).eval()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)  # B = 3, T = 5 if batch_first
    B = 3 if batch_first else 5
    state = tuple(rng.standard_normal((4, B, 8)).astype(np.float32) for _ in range(2))
    y, (h, c) = layer(x, state)
    session = ort.InferenceSession(layer.to_onnx(initial_state=True).SerializeToString())
    got = session.run(["Y", "Y_h", "Y_c"], {"X": x, "initial_h": state[0], "initial_c": state[1]})
    for name, g, want in zip(("y", "h_n", "c_n"), got, (y, h, c), strict=True):
        assert_close(g, want, np.float32, name)
    # The option wins over the layer's own; the model reads it back.
    other = layer.to_onnx(batch_first=not batch_first)
    assert numba_lstm.LSTM.from_onnx(other).batch_first is not batch_first
    assert numba_lstm.LSTM.from_onnx(layer.to_onnx()).batch_first is batch_first
    assert numba_lstm.LSTM.from_onnx(layer.to_onnx(), batch_first=False).batch_first is False


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("batch_first", [False, True])
def test_from_onnx_reads_a_torch_export_with_its_layout(batch_first):
    # torch exports a batch_first module with a Transpose of X before the first node.
    import io

    torch = import_or_skip("torch")
    onnx = import_or_skip("onnx")
    torch.manual_seed(4)
    module = torch.nn.LSTM(3, 6, num_layers=2, bidirectional=True, batch_first=batch_first).eval()
    x = np.random.default_rng(5).standard_normal((2, 5, 3)).astype(np.float32)
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.from_numpy(x),), buffer, dynamo=False)
    layer = numba_lstm.LSTM.from_onnx(onnx.load_from_string(buffer.getvalue()))
    assert layer.batch_first is batch_first
    with torch.no_grad():
        want = module(torch.from_numpy(x))[0].numpy()
    assert_close(layer(x)[0], want, np.float32, "y")


def test_from_onnx_takes_the_layout_of_a_node_reading_the_input_as_it_is():
    # A node of layout = 1 reads X (B, T, I) as it is: batch_first.  What it
    # reads through other operators it cannot tell apart: the default.
    onnx = import_or_skip("onnx")
    model = numba_lstm.LSTM(3, 4, seed=0).to_onnx(opset=14)
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    node.attribute.append(onnx.helper.make_attribute("layout", 1))
    assert numba_lstm.LSTM.from_onnx(model).batch_first is True
    model.graph.node.insert(0, onnx.helper.make_node("Relu", ["X"], ["X_relu"]))
    node.input[0] = "X_relu"
    assert numba_lstm.LSTM.from_onnx(model).batch_first is False


@pytest.mark.parametrize("export", ["to_torch_state_dict", "to_keras_weights", "to_onnx"])
def test_exports_refuse_a_parameter_replaced_with_another_dtype(export):
    """forward refused a float64 parameter in a float32 layer, by its name;
    the exports wrote it out as it was (float64 tensors, DOUBLE initializers)."""
    if export == "to_onnx":
        import_or_skip("onnx")
    layer = numba_lstm.LSTM(3, 4, seed=0)
    layer.params["W_l0"] = layer.params["W_l0"].astype(np.float64)
    with pytest.raises(
        TypeError, match=r"params\['W_l0'\] has dtype float64 but the layer has dtype float32"
    ):
        getattr(layer, export)()
