"""Conversion to and from PyTorch and ONNX: exact round trips, live parity, refusals.

The oracle is ``native_forward`` below: the stacked, bidirectional, projected
LSTM of the native contract evaluated in float64 NumPy, built from
``numba_lstm.reference.lstm_forward`` (and a small loop for projections).
"""

import os
import re
import sys
from io import BytesIO

import numpy as np
import pytest
from conftest import assert_close, import_or_skip

import numba_lstm
from numba_lstm import convert, reference

CONFIGS = {
    "1layer": dict(input_size=3, hidden_size=4, num_layers=1, bidirectional=False, proj_size=0),
    "2layers": dict(input_size=5, hidden_size=3, num_layers=2, bidirectional=False, proj_size=0),
    "bidir": dict(input_size=4, hidden_size=5, num_layers=1, bidirectional=True, proj_size=0),
    "2layers_bidir": dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, proj_size=0),
    "proj": dict(input_size=4, hidden_size=6, num_layers=1, bidirectional=False, proj_size=3),
    "2layers_bidir_proj": dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2),
}
NO_PROJ = [k for k, c in CONFIGS.items() if not c["proj_size"]]


def random_params(config, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {
        name: (rng.standard_normal(shape) * 0.5).astype(dtype)
        for name, shape in convert.parameter_shapes(config).items()
    }


def _projected_forward(x, W, b, W_hr):
    """One projected direction: h_t = (o * tanh(c_t)) @ W_hr, as torch's proj_size."""
    T, B, _ = x.shape
    H, P = W_hr.shape
    h, c = np.zeros((B, P)), np.zeros((B, H))
    y = np.zeros((T, B, P))
    for t in range(T):
        z = np.concatenate([x[t], h], axis=1) @ W + b
        i, f = reference.sigmoid(z[:, :H]), reference.sigmoid(z[:, H : 2 * H])
        g, o = np.tanh(z[:, 2 * H : 3 * H]), reference.sigmoid(z[:, 3 * H :])
        c = f * c + i * g
        h = (o * np.tanh(c)) @ W_hr
        y[t] = h
    return y, h, c


def native_forward(config, params, x, lengths=None, state=None):
    """The native model in float64: ``y (T, B, D*H_out)``, ``h_n``, ``c_n`` ``(L*D, B, ...)``.

    With ``lengths`` each batch element b only runs its first ``lengths[b]``
    steps (y is zero after them), as ONNX's ``sequence_lens``.  ``state``
    ``(h0, c0)``, each ``(L*D, B, H)``, without projection: zeros if None.
    """
    if lengths is not None:
        parts = []
        for b, n in enumerate(lengths):
            state_b = None if state is None else [s[:, b : b + 1] for s in state]
            parts.append(native_forward(config, params, x[:n, b : b + 1], None, state_b))
        y = np.zeros(x.shape[:2] + parts[0][0].shape[2:])
        for b, (n, part) in enumerate(zip(lengths, parts, strict=True)):
            y[:n, b] = part[0][:, 0]
        return y, np.concatenate([p[1] for p in parts], 1), np.concatenate([p[2] for p in parts], 1)
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    dirs = ["", "_reverse"] if config["bidirectional"] else [""]
    inp = x.astype(np.float64)
    hs, cs = [], []
    assert state is None or not config["proj_size"]
    for k in range(config["num_layers"]):
        outs = []
        for sfx in dirs:
            xs = np.ascontiguousarray(inp[::-1] if sfx else inp)
            W, b = p64[f"W_l{k}{sfx}"], p64[f"b_l{k}{sfx}"]
            if config["proj_size"]:
                y, h, c = _projected_forward(xs, W, b, p64[f"W_hr_l{k}{sfx}"])
            else:
                h0, c0 = (None, None) if state is None else (s[len(hs)].astype(np.float64) for s in state)
                y, h, c, _ = reference.lstm_forward(xs, W, b, h0, c0)
            outs.append(y[::-1] if sfx else y)
            hs.append(h)
            cs.append(c)
        inp = np.concatenate(outs, axis=2)
    return inp, np.stack(hs), np.stack(cs)


# --------------------------------------------------------------------------
# config and params validation


def test_parameter_shapes_follow_the_contract():
    shapes = convert.parameter_shapes(CONFIGS["2layers_bidir_proj"])
    # I = 3, H = 5, P = 2, D = 2: layer 1 reads P * D = 4 inputs; h has size P.
    assert shapes == {
        "W_l0": (3 + 2, 20), "b_l0": (20,), "W_hr_l0": (5, 2),
        "W_l0_reverse": (3 + 2, 20), "b_l0_reverse": (20,), "W_hr_l0_reverse": (5, 2),
        "W_l1": (4 + 2, 20), "b_l1": (20,), "W_hr_l1": (5, 2),
        "W_l1_reverse": (4 + 2, 20), "b_l1_reverse": (20,), "W_hr_l1_reverse": (5, 2),
    }  # fmt: skip
    assert convert.parameter_shapes({"input_size": 4, "hidden_size": 2}) == {"W_l0": (6, 8), "b_l0": (8,)}
    # A layer's dropout and batch_first do not change the parameters.
    layer_config = {**CONFIGS["bidir"], "dropout": 0.5, "batch_first": True}
    assert convert.check_config(layer_config) == CONFIGS["bidir"]


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"hidden": 3}, ValueError, "unknown keys.*hidden"),
        ({"hidden_size": 0}, ValueError, r"config\['hidden_size'\] must be a positive integer, got 0"),
        (
            {"num_layers": 1.5},
            TypeError,
            r"config\['num_layers'\] must be a positive integer, got 1.5 \(float\)",
        ),
        ({"bidirectional": "yes"}, TypeError, r"config\['bidirectional'\] must be True or False, got 'yes'"),
        ({"proj_size": 4}, ValueError, r"proj_size'\] must be smaller than hidden_size"),
    ],
)
def test_bad_config_is_refused_naming_the_key(change, error, match):
    with pytest.raises(error, match=match):
        convert.check_config({**CONFIGS["1layer"], **change})


def test_bad_params_are_refused_naming_the_parameter():
    config = CONFIGS["bidir"]
    params = random_params(config, np.float32)
    with pytest.raises(ValueError, match=r"missing \['b_l0_reverse'\]"):
        convert.check_params(config, {k: v for k, v in params.items() if k != "b_l0_reverse"})
    with pytest.raises(ValueError, match=r"unexpected \['W_l1'\]"):
        convert.check_params(config, {**params, "W_l1": params["W_l0"]})
    with pytest.raises(ValueError, match=r"params\['W_l0'\] must have shape \(9, 20\).*got \(8, 20\)"):
        convert.check_params(config, {**params, "W_l0": params["W_l0"][:8]})
    with pytest.raises(TypeError, match=r"params\['b_l0'\] must have dtype float32 or float64, got int64"):
        convert.check_params(config, {**params, "b_l0": np.zeros(20, np.int64)})
    with pytest.raises(TypeError, match="one dtype"):
        convert.check_params(config, {**params, "b_l0": params["b_l0"].astype(np.float64)})
    with pytest.raises(TypeError, match=r"params\['b_l0'\] must be an array.*list"):
        convert.check_params(config, {**params, "b_l0": [0.0] * 20})


# --------------------------------------------------------------------------
# PyTorch


@pytest.fixture
def torch():
    return import_or_skip("torch")


def _torch_module(torch, config, dtype, bias=True, seed=0):
    torch.manual_seed(seed)
    c = config
    module = torch.nn.LSTM(
        c["input_size"],
        c["hidden_size"],
        num_layers=c["num_layers"],
        bidirectional=c["bidirectional"],
        proj_size=c["proj_size"],
        bias=bias,
    )
    return module.to({np.float32: torch.float32, np.float64: torch.float64}[dtype])


def _run_torch(torch, module, x):
    with torch.no_grad():
        y, (h_n, c_n) = module(torch.from_numpy(x))
    return y.numpy(), h_n.numpy(), c_n.numpy()


def _assert_outputs_close(got, ref, dtype):
    for name, g, r in zip(("y", "h_n", "c_n"), got, ref, strict=True):
        assert_close(g, r, dtype, name)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_from_torch_matches_torch_forward(torch, name, dtype):
    config = CONFIGS[name]
    module = _torch_module(torch, config, dtype)
    got_config, params = convert.from_torch(module)
    assert got_config == config
    assert all(p.dtype == dtype for p in params.values())
    x = np.random.default_rng(1).standard_normal((7, 3, config["input_size"])).astype(dtype)
    _assert_outputs_close(_run_torch(torch, module, x), native_forward(config, params, x), dtype)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_to_torch_state_dict_loads_strictly_and_matches(torch, name, dtype):
    config = CONFIGS[name]
    params = random_params(config, dtype, seed=2)
    module = _torch_module(torch, config, dtype, seed=5)
    module.load_state_dict(convert.to_torch_state_dict(config, params), strict=True)
    state = module.state_dict()
    assert all(state[k].dtype == module.weight_ih_l0.dtype for k in state)
    x = np.random.default_rng(3).standard_normal((6, 2, config["input_size"])).astype(dtype)
    _assert_outputs_close(_run_torch(torch, module, x), native_forward(config, params, x), dtype)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_torch_round_trips_are_exact(torch, name, dtype):
    config = CONFIGS[name]
    params = random_params(config, dtype, seed=4)
    back_config, back = convert.from_torch(convert.to_torch_state_dict(config, params))
    assert back_config == config and list(back) == list(params)
    for key in params:
        assert back[key].dtype == dtype
        np.testing.assert_array_equal(back[key], params[key], err_msg=key)

    # torch -> native -> torch: weights move exactly, the biases are summed into bias_ih.
    module = _torch_module(torch, config, dtype)
    state = module.state_dict()
    again = convert.to_torch_state_dict(*convert.from_torch(state))
    assert list(again) == list(state)
    for key, value in state.items():
        if key.startswith("bias_ih"):
            expected = (value + state[key.replace("bias_ih", "bias_hh")]).numpy()
        elif key.startswith("bias_hh"):
            expected = np.zeros_like(value.numpy())
        else:
            expected = value.numpy()
        np.testing.assert_array_equal(again[key].numpy(), expected, err_msg=key)


def test_from_torch_accepts_a_numpy_state_dict_and_bias_false(torch):
    config = CONFIGS["2layers_bidir"]
    module = _torch_module(torch, config, np.float64, bias=False)
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    got_config, params = convert.from_torch(state)
    assert got_config == config
    for key in ("b_l0", "b_l1_reverse"):
        np.testing.assert_array_equal(params[key], np.zeros(4 * config["hidden_size"]))
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    _assert_outputs_close(_run_torch(torch, module, x), native_forward(config, params, x), np.float64)
    # ... and goes back into a bias=False module.
    fresh = _torch_module(torch, config, np.float64, bias=False, seed=9)
    fresh.load_state_dict(convert.to_torch_state_dict(config, params, bias=False), strict=True)
    _assert_outputs_close(_run_torch(torch, fresh, x), _run_torch(torch, module, x), np.float64)
    params["b_l0"][0] = 1.0
    with pytest.raises(ValueError, match=r"bias=False but params\['b_l0'\] is not zero"):
        convert.to_torch_state_dict(config, params, bias=False)


def test_from_torch_refusals_name_the_problem(torch):
    with pytest.raises(TypeError, match="must be a torch.nn.LSTM.*not GRU"):
        convert.from_torch(torch.nn.GRU(3, 4))
    with pytest.raises(TypeError, match="must be a torch.nn.LSTM or its state dict"):
        convert.from_torch(np.zeros(3))
    state = torch.nn.LSTM(3, 4).state_dict()
    with pytest.raises(ValueError, match="unexpected key 'weight_ih_l0_extra'"):
        convert.from_torch({**state, "weight_ih_l0_extra": state["weight_ih_l0"]})
    with pytest.raises(ValueError, match=r"missing \['bias_hh_l0'\]"):
        convert.from_torch({k: v for k, v in state.items() if k != "bias_hh_l0"})
    with pytest.raises(
        ValueError, match=r"state_dict\['weight_hh_l0'\] must have shape \(16, 4\).*got \(16, 3\)"
    ):
        convert.from_torch({**state, "weight_hh_l0": state["weight_hh_l0"][:, :3]})
    with pytest.raises(
        TypeError, match=r"state_dict\['weight_ih_l0'\] must be a float32 or float64 tensor.*float16"
    ):
        convert.from_torch({**state, "weight_ih_l0": state["weight_ih_l0"].half()})
    with pytest.raises(TypeError, match="one dtype"):
        convert.from_torch({**state, "bias_ih_l0": state["bias_ih_l0"].double()})
    with pytest.raises(TypeError, match=r"keys must be strings such as 'weight_ih_l0', got 0 \(int\)"):
        convert.from_torch({**state, 0: state["bias_ih_l0"]})
    with pytest.raises(ValueError, match=r"state_dict\['bias_ih_l0'\] is a tensor on the meta device"):
        convert.from_torch({**state, "bias_ih_l0": state["bias_ih_l0"].to("meta")})
    # PyTorch has no weight_hr with proj_size=0: an empty projection is refused, not returned as P = 0.
    with pytest.raises(
        ValueError, match=r"weight_hr_l0'\] must have shape \(P, H\) with proj_size P >= 1, got \(0, 4\)"
    ):
        convert.from_torch({**state, "weight_hr_l0": torch.zeros(0, 4)})


def test_from_torch_takes_subclasses_that_keep_forward(torch):
    class Named(torch.nn.LSTM):  # a subclass for a name or a helper, same computation
        def describe(self):
            return "encoder"

    class Doubled(torch.nn.LSTM):  # another computation on the same weights
        def forward(self, x, hx=None):
            return super().forward(2 * x, hx)

    torch.manual_seed(0)
    module = Named(3, 4, num_layers=2)
    config, params = convert.from_torch(module)
    want_config, want = convert.from_torch(module.state_dict())
    assert config == want_config and sorted(params) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(params[key], want[key], err_msg=key)
    with pytest.raises(
        TypeError, match=r"Doubled, a subclass of torch.nn.LSTM that overrides forward.*state_dict\(\)"
    ):
        convert.from_torch(Doubled(3, 4))


def test_from_torch_refuses_a_gap_in_the_layers_quickly(torch):
    # The layer indices are compared with the keys present before anything is
    # built for num_layers layers: a key of layer 10**6 took seconds and gave a
    # message of 80 MB listing every missing key.
    state = torch.nn.LSTM(3, 4).state_dict()
    with pytest.raises(
        ValueError, match=r"layer 1000000 but none for 999999 layer\(s\) below it \(l1, l2"
    ) as error:
        convert.from_torch({**state, "weight_ih_l1000000": torch.zeros(16, 4)})
    assert len(str(error.value)) < 300
    with pytest.raises(ValueError, match=r"layer 2 but none for 1 layer\(s\) below it \(l1\)"):
        convert.from_torch({**state, **{k.replace("l0", "l2"): v for k, v in state.items()}})


# --------------------------------------------------------------------------
# ONNX


@pytest.fixture
def onnx():
    return import_or_skip("onnx")


@pytest.fixture
def ort():
    return import_or_skip("onnxruntime")


def _session(ort, model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", NO_PROJ)
def test_onnx_round_trip_is_exact(onnx, name, dtype, tmp_path):
    config = CONFIGS[name]
    params = random_params(config, dtype, seed=6)
    path = tmp_path / "model.onnx"
    model = convert.to_onnx(config, params, path)
    lstm = [n for n in model.graph.node if n.op_type == "LSTM"]
    assert len(lstm) == config["num_layers"]
    for source in (path, str(path), model):
        back_config, back = convert.from_onnx(source)
        assert back_config == config and sorted(back) == sorted(params)
        for key in params:
            assert back[key].dtype == dtype
            np.testing.assert_array_equal(back[key], params[key], err_msg=key)


@pytest.mark.parametrize("framework", ["torch", "onnx"])
def test_round_trips_keep_the_sign_of_a_zero_bias(request, framework, dtype):
    # The native bias goes out as the first of two biases beside zeros, and
    # the import summed them: -0.0 + 0.0 came back as +0.0.
    request.getfixturevalue(framework)
    config = CONFIGS["2layers"]
    params = random_params(config, dtype, seed=7)
    params["b_l0"][:3] = [-0.0, 0.0, -0.0]
    params["b_l1"][-1] = -0.0
    if framework == "torch":
        _, back = convert.from_torch(convert.to_torch_state_dict(config, params))
    else:
        _, back = convert.from_onnx(convert.to_onnx(config, params))
    bits = f"u{np.dtype(dtype).itemsize}"  # assert_array_equal takes -0.0 for +0.0
    for key in params:
        np.testing.assert_array_equal(back[key].view(bits), params[key].view(bits), err_msg=key)


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "sequence_lens"])
@pytest.mark.parametrize("name", NO_PROJ)
def test_onnxruntime_runs_the_export_like_native(onnx, ort, name, with_lengths):
    # onnxruntime's LSTM kernel is float32 only ("LSTM operator does not support double yet").
    config = CONFIGS[name]
    params = random_params(config, np.float32, seed=7)
    model = convert.to_onnx(config, params, sequence_lens=with_lengths)
    x = np.random.default_rng(8).standard_normal((6, 3, config["input_size"])).astype(np.float32)
    feeds = {"X": x}
    lengths = None
    if with_lengths:
        lengths = [6, 2, 4]
        feeds["sequence_lens"] = np.array(lengths, np.int32)
    got = _session(ort, model).run(["Y", "Y_h", "Y_c"], feeds)
    _assert_outputs_close(got, native_forward(config, params, x, lengths), np.float32)


@pytest.mark.parametrize("sequence_lens", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_onnxruntime_runs_the_export_on_empty_sequences(onnx, ort, batch_first, sequence_lens):
    """The layers' Reshape had the shape (0, 0, -1), which onnxruntime cannot
    apply to an empty Y ("requested shape:{0,2,-1}").  And onnxruntime's LSTM
    leaves Y_c unwritten at T = 0: without an initial state, the export
    returned what the run before left there (up to 5.1 off the layer's zeros)."""
    config = CONFIGS["2layers_bidir"]
    params = random_params(config, np.float32)
    session = _session(
        ort, convert.to_onnx(config, params, batch_first=batch_first, sequence_lens=sequence_lens)
    )
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((2, 6, 3) if batch_first else (6, 2, 3)).astype(np.float32)
        feeds = {"X": x} | ({"sequence_lens": np.array([6, 4], np.int32)} if sequence_lens else {})
        session.run(["Y", "Y_h", "Y_c"], feeds)  # leaves its states in onnxruntime's buffers
        x = np.zeros((2, 0, 3) if batch_first else (0, 2, 3), np.float32)
        feeds = {"X": x} | ({"sequence_lens": np.zeros(2, np.int32)} if sequence_lens else {})
        y, h_n, c_n = session.run(["Y", "Y_h", "Y_c"], feeds)
        assert y.shape == x.shape[:2] + (8,)
        np.testing.assert_array_equal(h_n, np.zeros((4, 2, 4), np.float32))
        np.testing.assert_array_equal(c_n, np.zeros((4, 2, 4), np.float32))


@pytest.mark.parametrize("opset", [7, 8, 9, 13, 21])
def test_every_opset_from_7_exports_a_model_that_onnxruntime_runs(onnx, ort, opset):
    # Opsets 7 and 8 need IR version 3, which lists every initializer among the graph's inputs.
    config = CONFIGS["2layers_bidir"]
    params = random_params(config, np.float32, seed=9)
    model = convert.to_onnx(config, params, opset=opset)
    assert model.opset_import[0].version == opset
    x = np.random.default_rng(10).standard_normal((5, 2, config["input_size"])).astype(np.float32)
    got = _session(ort, model).run(["Y", "Y_h", "Y_c"], {"X": x})
    _assert_outputs_close(got, native_forward(config, params, x, None), np.float32)
    back_config, back = convert.from_onnx(model)
    assert back_config == config
    for key in params:
        np.testing.assert_array_equal(back[key], params[key], err_msg=key)


def test_onnx_export_has_the_layout_of_the_operator(onnx):
    # Gate order i, o, f, c; W (D, 4H, I); B = [Wb, Rb] with Rb = 0 (ONNX operator spec).
    from onnx import numpy_helper

    config = CONFIGS["bidir"]
    I, H = config["input_size"], config["hidden_size"]
    params = random_params(config, np.float64)
    model = convert.to_onnx(config, params)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    W, R, B = init["W_l0"], init["R_l0"], init["B_l0"]
    assert W.shape == (2, 4 * H, I) and R.shape == (2, 4 * H, H) and B.shape == (2, 8 * H)
    for d, sfx in enumerate(["", "_reverse"]):
        Wn, bn = params[f"W_l0{sfx}"], params[f"b_l0{sfx}"]
        native = dict(zip("ifgo", range(4), strict=True))
        for onnx_block, gate in enumerate("iofg"):  # ONNX's c is the native g
            cols = slice(native[gate] * H, (native[gate] + 1) * H)
            rows = slice(onnx_block * H, (onnx_block + 1) * H)
            np.testing.assert_array_equal(W[d, rows], Wn[:I, cols].T)
            np.testing.assert_array_equal(R[d, rows], Wn[I:, cols].T)
            np.testing.assert_array_equal(B[d, rows], bn[cols])
        np.testing.assert_array_equal(B[d, 4 * H :], 0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", ["1layer", "2layers", "2layers_bidir"])
def test_from_onnx_reads_torch_onnx_export(torch, onnx, ort, name, tmp_path):
    # dynamo=False: the TorchScript exporter writes one LSTM node per layer and
    # needs no extra package (the dynamo exporter needs onnxscript).
    config = CONFIGS[name]
    module = _torch_module(torch, config, np.float32, seed=11)
    x = np.random.default_rng(12).standard_normal((5, 2, config["input_size"])).astype(np.float32)
    path = tmp_path / "torch_lstm.onnx"
    torch.onnx.export(module, (torch.from_numpy(x),), str(path), dynamo=False)
    got_config, got = convert.from_onnx(path)
    want_config, want = convert.from_torch(module)
    assert got_config == want_config == config
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # Our own export of the weights read back runs like the torch module.
    y_torch = _run_torch(torch, module, x)
    got_ort = _session(ort, convert.to_onnx(got_config, got)).run(["Y", "Y_h", "Y_c"], {"X": x})
    _assert_outputs_close(got_ort, y_torch, np.float32)


@pytest.mark.parametrize("opset", [7, 8, 9, 13, 17])
@pytest.mark.parametrize("name", ["1layer", "2layers", "2layers_bidir"])
def test_onnx_export_with_batch_first_and_initial_states_runs_like_native(onnx, ort, name, opset):
    # Before, a layer's batch_first was not exported (a batch_first layer's
    # model read (B, T, I) as (T, B, I): 0.21 off) and states could not be given.
    config = CONFIGS[name]
    L, H = config["num_layers"], config["hidden_size"]
    LD = L * (2 if config["bidirectional"] else 1)
    params = random_params(config, np.float32, seed=13)
    rng = np.random.default_rng(14)
    x = rng.standard_normal((6, 3, config["input_size"])).astype(np.float32)
    state = [rng.standard_normal((LD, 3, H)).astype(np.float32) for _ in range(2)]
    # A sequence of length 0: onnxruntime's LSTM gives zeros as its final
    # state, the layer its initial state; the export keeps the initial state
    # (before, Y_h and Y_c were 0 there), with Where, from opset 9.
    lengths = [6, 0, 4]
    options = dict(batch_first=True, initial_state=True, sequence_lens=True, opset=opset)
    if opset < 9:
        with pytest.raises(ValueError, match="sequence_lens=True needs opset 9 or later"):
            convert.to_onnx(config, params, **options)
        options.update(initial_state=False)
        state = None  # sequence_lens alone: zeros, the final state of a sequence of length 0
    model = convert.to_onnx(config, params, **options)
    feeds = {"X": np.ascontiguousarray(x.transpose(1, 0, 2)), "sequence_lens": np.array(lengths, np.int32)}
    if state is not None:
        assert [i.name for i in model.graph.input][:4] == ["X", "initial_h", "initial_c", "sequence_lens"]
        feeds.update(initial_h=state[0], initial_c=state[1])
    y, h_n, c_n = _session(ort, model).run(["Y", "Y_h", "Y_c"], feeds)
    assert y.shape == (3, 6, LD // L * H)
    want = native_forward(config, params, x, lengths, state)
    _assert_outputs_close((y.transpose(1, 0, 2), h_n, c_n), want, np.float32)
    if state is None:
        state = [rng.standard_normal((LD, 3, H)).astype(np.float32) for _ in range(2)]
    else:  # the pair, time-major
        y, h_n, c_n = _session(ort, convert.to_onnx(config, params, **{**options, "batch_first": False})).run(
            ["Y", "Y_h", "Y_c"], {**feeds, "X": x}
        )
        _assert_outputs_close((y, h_n, c_n), want, np.float32)
    # Each option alone: the other inputs keep their defaults.
    y, h_n, c_n = _session(ort, convert.to_onnx(config, params, initial_state=True, opset=opset)).run(
        ["Y", "Y_h", "Y_c"], {"X": x, "initial_h": state[0], "initial_c": state[1]}
    )
    _assert_outputs_close((y, h_n, c_n), native_forward(config, params, x, None, state), np.float32)
    y, h_n, c_n = _session(ort, convert.to_onnx(config, params, batch_first=True, opset=opset)).run(
        ["Y", "Y_h", "Y_c"], {"X": feeds["X"]}
    )
    _assert_outputs_close((y.transpose(1, 0, 2), h_n, c_n), native_forward(config, params, x), np.float32)
    # What the export writes, from_onnx reads back bit for bit.
    back_config, back = convert.from_onnx(model)
    assert back_config == config
    for key in params:
        np.testing.assert_array_equal(back[key], params[key], err_msg=key)


@pytest.mark.parametrize("opset", [8, 9, 17])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("name", ["1layer", "2layers_bidir"])
def test_onnx_export_with_initial_states_keeps_them_when_x_has_no_steps(onnx, ort, name, batch_first, opset):
    """T = 0: the layer returns the initial state; onnxruntime's LSTM does
    not (zeros, and in this test's first runs other values), which the export
    of initial_state=True without sequence_lens returned (with sequence_lens,
    each length is 0 and Where kept the state)."""
    config = CONFIGS[name]
    L, H = config["num_layers"], config["hidden_size"]
    LD = L * (2 if config["bidirectional"] else 1)
    params = random_params(config, np.float32, seed=15)
    rng = np.random.default_rng(16)
    state = [rng.standard_normal((LD, 3, H)).astype(np.float32) for _ in range(2)]
    model = convert.to_onnx(config, params, initial_state=True, batch_first=batch_first, opset=opset)
    session = _session(ort, model)
    for T in (0, 4):
        x = rng.standard_normal((T, 3, config["input_size"])).astype(np.float32)
        X = np.ascontiguousarray(x.transpose(1, 0, 2)) if batch_first else x
        y, h_n, c_n = session.run(["Y", "Y_h", "Y_c"], {"X": X, "initial_h": state[0], "initial_c": state[1]})
        if batch_first:
            y = y.transpose(1, 0, 2)
        if T == 0 and opset < 9:  # no Where operator: what onnxruntime gives (zeros, or not even those)
            continue
        _assert_outputs_close((y, h_n, c_n), native_forward(config, params, x, None, state), np.float32)
        if T == 0:
            np.testing.assert_array_equal(h_n, state[0])
            np.testing.assert_array_equal(c_n, state[1])
    back_config, back = convert.from_onnx(model)
    assert back_config == config
    for key in params:
        np.testing.assert_array_equal(back[key], params[key], err_msg=key)


@pytest.mark.parametrize("option", ["batch_first", "initial_state", "sequence_lens"])
def test_to_onnx_refuses_options_that_are_not_bools(onnx, option):
    config = CONFIGS["1layer"]
    with pytest.raises(TypeError, match=f"{option} must be True or False, got 'False'"):
        convert.to_onnx(config, random_params(config, np.float32), **{option: "False"})


def test_to_onnx_takes_the_configs_batch_first_and_refuses_a_contradiction(onnx):
    """check_config accepts a layer's batch_first and drops it: to_onnx made
    a time-major model of a configuration that from_params builds into a
    batch-first layer."""
    config = {**CONFIGS["1layer"], "batch_first": True}
    params = random_params(CONFIGS["1layer"], np.float32)

    def x_dims(model):
        return [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]

    assert x_dims(convert.to_onnx(config, params))[:2] == ["B", "T"]
    assert x_dims(convert.to_onnx(config, params, batch_first=True))[:2] == ["B", "T"]
    assert x_dims(convert.to_onnx({**config, "batch_first": False}, params))[:2] == ["T", "B"]
    assert x_dims(convert.to_onnx(CONFIGS["1layer"], params))[:2] == ["T", "B"]
    with pytest.raises(ValueError, match=r"batch_first=False contradicts config\['batch_first'\] = True"):
        convert.to_onnx(config, params, batch_first=False)
    with pytest.raises(TypeError, match=r"config\['batch_first'\] must be True or False, got 'yes'"):
        convert.to_onnx({**config, "batch_first": "yes"}, params)


def test_onnx_paths_may_be_bytes_but_not_integers(onnx, tmp_path):
    """An int given to onnx.load or onnx.save is a file descriptor: it was
    read or written, then closed."""
    config = CONFIGS["1layer"]
    params = random_params(config, np.float32)
    path = os.fsencode(tmp_path / "model.onnx")
    convert.to_onnx(config, params, path)
    assert convert.from_onnx(path)[0] == config
    with open(tmp_path / "model.onnx", "rb") as f:
        for bad in (f.fileno(), True):
            with pytest.raises(TypeError, match="path_or_model must be a file path .*, got (int|bool)"):
                convert.from_onnx(bad)
            with pytest.raises(TypeError, match="path must be a file path .*, got (int|bool)"):
                convert.to_onnx(config, params, bad)
        os.fstat(f.fileno())  # still open
    # File objects, as onnx.save and onnx.load take them.
    buffer = BytesIO()
    convert.to_onnx(config, params, buffer)
    buffer.seek(0)
    assert convert.from_onnx(buffer)[0] == config


def test_from_onnx_refuses_a_file_that_is_not_onnx_naming_it(onnx, tmp_path):
    """protobuf's DecodeError came out as it was, naming no file."""
    config = CONFIGS["1layer"]
    data = convert.to_onnx(config, random_params(config, np.float32)).SerializeToString()
    path = tmp_path / "model.onnx"
    for content in (data[: len(data) // 2], b"\0" * 100):
        path.write_bytes(content)
        with pytest.raises(ValueError, match=re.escape(f"{path} is not an ONNX model, or is truncated")):
            convert.from_onnx(path)
    # protobuf reads these as an empty model: "the ONNX model has no LSTM node", naming no file.
    for content in (b"", data[:2]):
        path.write_bytes(content)
        with pytest.raises(
            ValueError,
            match=re.escape(f"the ONNX model {str(path)!r} has no graph nodes at all: is it empty"),
        ):
            convert.from_onnx(path)


def test_from_onnx_refuses_a_damaged_model_as_valueerror(onnx):
    """A model whose bytes decode but hold damaged values raised internal
    errors: an attribute without a value of its type a TypeError in the
    reader ('NoneType' object is not iterable), an initializer of an unknown
    data type onnx's KeyError."""
    config = CONFIGS["2layers"]
    base = convert.to_onnx(config, random_params(config, np.float32))
    no_value = onnx.ModelProto()
    no_value.CopyFrom(base)
    transpose = next(n for n in no_value.graph.node if n.op_type == "Transpose")
    transpose.attribute[0].type = onnx.AttributeProto.UNDEFINED
    with pytest.raises(
        ValueError, match=r"Transpose node .* has an attribute 'perm' of an undefined or unknown type \(0\)"
    ):
        convert.from_onnx(no_value)
    unknown_type = onnx.ModelProto()
    unknown_type.CopyFrom(base)
    unknown_type.graph.initializer[0].data_type = 93
    name = unknown_type.graph.initializer[0].name
    with pytest.raises(ValueError, match=f"initializer '{name}' cannot be read as an array .*KeyError: 93"):
        convert.from_onnx(unknown_type)


def test_onnx_file_objects_are_checked_as_save_and_load_check_them(onnx, tmp_path):
    """A text file or one open the other way went to onnx as it was:
    UnicodeDecodeError, io.UnsupportedOperation, or write() of bytes to text."""
    config = CONFIGS["1layer"]
    params = random_params(config, np.float32)
    path = tmp_path / "model.onnx"
    convert.to_onnx(config, params, path)
    before = path.read_bytes()
    with (
        open(path) as text,
        pytest.raises(
            TypeError, match=r"path_or_model as a file object must be opened in binary mode \('rb'\)"
        ),
    ):
        convert.from_onnx(text)
    with (
        open(tmp_path / "other.onnx", "wb") as written,
        pytest.raises(TypeError, match="path_or_model as a file object must be open to read"),
    ):
        convert.from_onnx(written)
    with (
        open(tmp_path / "text.onnx", "w") as text,
        pytest.raises(TypeError, match=r"path as a file object must be opened in binary mode \('wb'\)"),
    ):
        convert.to_onnx(config, params, text)
    with (
        open(path, "rb") as read_only,
        pytest.raises(TypeError, match="path as a file object must be open to write"),
    ):
        convert.to_onnx(config, params, read_only)
    assert path.read_bytes() == before


def _edit_lstm_node(onnx, model, **attrs):
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    kept = [a for a in node.attribute if a.name not in attrs]
    del node.attribute[:]
    node.attribute.extend(kept + [onnx.helper.make_attribute(k, v) for k, v in attrs.items()])
    return model


def _with_peepholes(onnx, model, value):
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    H = node.attribute[[a.name for a in node.attribute].index("hidden_size")].i
    node.input.extend([""] * (7 - len(node.input)) + ["P_l0"])
    model.graph.initializer.append(
        onnx.numpy_helper.from_array(np.full((1, 3 * H), value, np.float32), "P_l0")
    )
    return model


def test_from_onnx_accepts_zero_peepholes_and_default_activations(onnx):
    config = CONFIGS["1layer"]
    params = random_params(config, np.float32)
    model = _with_peepholes(onnx, convert.to_onnx(config, params), 0.0)
    model = _edit_lstm_node(onnx, model, activations=["Sigmoid", "Tanh", "Tanh"], input_forget=0)
    _, back = convert.from_onnx(model)
    np.testing.assert_array_equal(back["W_l0"], params["W_l0"])


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda onnx, m: _with_peepholes(onnx, m, 0.5), "peepholes"),
        (lambda onnx, m: _edit_lstm_node(onnx, m, clip=3.0), "clip=3.0"),
        (lambda onnx, m: _edit_lstm_node(onnx, m, input_forget=1), "input_forget=1"),
        (
            lambda onnx, m: _edit_lstm_node(onnx, m, activations=["HardSigmoid", "Tanh", "Tanh"]),
            "activations=.*hardsigmoid",
        ),
        (lambda onnx, m: _edit_lstm_node(onnx, m, activation_alpha=[0.2]), "activation_alpha"),
        (lambda onnx, m: _edit_lstm_node(onnx, m, direction="reverse"), "direction='reverse'"),
    ],
    ids=["peepholes", "clip", "input_forget", "activations", "activation_alpha", "reverse"],
)
def test_from_onnx_refuses_what_it_cannot_represent(onnx, edit, match):
    config = CONFIGS["1layer"]
    model = edit(onnx, convert.to_onnx(config, random_params(config, np.float32)))
    with pytest.raises(ValueError, match=match):
        convert.from_onnx(model)


@pytest.mark.parametrize("index, label", [(1, "W"), (2, "R")])
def test_from_onnx_refuses_a_node_without_w_or_r(onnx, index, label):
    model = convert.to_onnx(CONFIGS["1layer"], random_params(CONFIGS["1layer"], np.float32))
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    node.input[index] = ""
    with pytest.raises(ValueError, match=f"LSTM node 'lstm_l0' has no {label} input"):
        convert.from_onnx(model)


def test_from_onnx_refuses_a_model_without_lstm_and_unstackable_nodes(onnx, tmp_path):
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["X"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", 1, [2])],
        [helper.make_tensor_value_info("Y", 1, [2])],
    )
    with pytest.raises(ValueError, match="^the ONNX model has no LSTM node$"):
        convert.from_onnx(helper.make_model(graph))
    onnx.save(helper.make_model(graph), tmp_path / "relu.onnx")
    with pytest.raises(ValueError, match=r"^the ONNX model '.*relu\.onnx' has no LSTM node$"):
        convert.from_onnx(tmp_path / "relu.onnx")
    # Two independent one-layer models glued together: layer 1 reads 3 inputs, not H = 4.
    a = convert.to_onnx(CONFIGS["1layer"], random_params(CONFIGS["1layer"], np.float32))
    b = convert.to_onnx(CONFIGS["1layer"], random_params(CONFIGS["1layer"], np.float32))
    for t in b.graph.initializer:
        t.name += "_b"
    node = next(n for n in b.graph.node if n.op_type == "LSTM")
    node.input[:] = [i + "_b" if i != "X" else i for i in node.input]
    a.graph.initializer.extend(b.graph.initializer)
    a.graph.node.append(node)
    with pytest.raises(ValueError, match="does not stack.*input size 3; expected 1, 4 and 4"):
        convert.from_onnx(a)


def _torch_onnx(torch, onnx, module, *inputs, **options):
    import io

    buffer = io.BytesIO()
    torch.onnx.export(module.eval(), inputs, buffer, dynamo=False, **options)
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_from_onnx_refuses_operators_between_its_lstm_nodes(torch, onnx):
    # Read as a plain 2-layer stack, these gave outputs 0.09 away from onnxruntime's.
    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.lin, self.b = torch.nn.LSTM(6, 6), torch.nn.Linear(6, 6), torch.nn.LSTM(6, 6)

        def forward(self, x):
            return self.b(self.lin(self.a(x)[0]))[0]

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.LSTM(6, 6), torch.nn.LSTM(6, 6)

        def forward(self, x):
            return self.b(self.a(x)[0] + x)[0]

    class Swapped(Residual):  # time and batch axes swapped between the layers
        def forward(self, x):
            return self.b(self.a(x)[0].transpose(0, 1))[0]

    x = torch.randn(5, 2, 6)
    for module, message in (
        (Linear(), "does not read the output Y of .*: its input X comes from the Add node"),
        (Residual(), "does not read the output Y of .*: its input X comes from the Add node"),
        (Swapped(), r"rearranged otherwise than into \(T, B, 6\)"),
    ):
        with pytest.raises(ValueError, match=message):
            convert.from_onnx(_torch_onnx(torch, onnx, module, x))
    # Layers that do stack, around the operators of batch_first and of given states.
    stack = torch.nn.LSTM(6, 4, num_layers=2, batch_first=True)
    state = (torch.zeros(2, 2, 4), torch.zeros(2, 2, 4))
    for inputs in ((torch.randn(2, 5, 6),), (torch.randn(2, 5, 6), state)):
        config, params = convert.from_onnx(_torch_onnx(torch, onnx, stack, *inputs))
        _, want = convert.from_torch(stack)
        for key in want:
            np.testing.assert_array_equal(params[key], want[key], err_msg=key)


@pytest.mark.parametrize("source", ["initializer", "ConstantOfShape", "value_floats", "Add", "Expand to X"])
@pytest.mark.parametrize("value", [0.0, 0.5])
@pytest.mark.parametrize("index, label", [(5, "initial_h"), (6, "initial_c")])
def test_from_onnx_refuses_a_constant_initial_state_other_than_zero(onnx, index, label, value, source):
    # value_floats (a Constant node's list) and Add (a state computed from
    # constants) were accepted whatever their value.
    from onnx import helper, numpy_helper

    config = CONFIGS["2layers"]
    params = random_params(config, np.float32)
    model = convert.to_onnx(config, params)
    node = [n for n in model.graph.node if n.op_type == "LSTM"][1]
    node.input.extend([""] * (index + 1 - len(node.input)))
    node.input[index] = f"{label}_l1"
    H = config["hidden_size"]
    if source == "initializer":
        state = np.full((1, 1, H), value, np.float32)
        model.graph.initializer.append(numpy_helper.from_array(state, f"{label}_l1"))
    elif source == "ConstantOfShape":  # a state filled through Expand
        model.graph.initializer.append(numpy_helper.from_array(np.array([1, 1, H], np.int64), "shape_1_1_H"))
        fill = numpy_helper.from_array(np.array([value], np.float32))
        model.graph.node.insert(
            0, helper.make_node("ConstantOfShape", ["shape_1_1_H"], ["filled"], value=fill)
        )
        model.graph.node.insert(1, helper.make_node("Expand", ["filled", "shape_1_1_H"], [f"{label}_l1"]))
    elif source == "value_floats":
        model.graph.initializer.append(numpy_helper.from_array(np.array([1, 1, H], np.int64), "shape_1_1_H"))
        model.graph.node.insert(0, helper.make_node("Constant", [], ["flat"], value_floats=[value] * H))
        model.graph.node.insert(1, helper.make_node("Reshape", ["flat", "shape_1_1_H"], [f"{label}_l1"]))
    elif source == "Add":  # value / 2 + value / 2
        half = numpy_helper.from_array(np.full((1, 1, H), value / 2, np.float32), "half")
        model.graph.initializer.append(half)
        model.graph.node.insert(0, helper.make_node("Add", ["half", "half"], [f"{label}_l1"]))
    else:  # repeated at run time to (1, B, H), B from X's shape, as torch exports zeros
        ints = {"one_i": [1], "H_i": [H]}
        model.graph.initializer.extend(
            numpy_helper.from_array(np.array(v, np.int64), n) for n, v in ints.items()
        )
        model.graph.initializer.append(numpy_helper.from_array(np.full((1, 1, 1), value, np.float32), "one"))
        nodes = [
            helper.make_node("Shape", ["X"], ["shape_X"]),
            helper.make_node("Gather", ["shape_X", "one_i"], ["B_i"]),
            helper.make_node("Concat", ["one_i", "B_i", "H_i"], ["shape_1_B_H"], axis=0),
            helper.make_node("Expand", ["one", "shape_1_B_H"], [f"{label}_l1"]),
        ]
        for position, node in enumerate(nodes):
            model.graph.node.insert(position, node)
    if value == 0.0:
        _, back = convert.from_onnx(model)
        np.testing.assert_array_equal(back["W_l1"], params["W_l1"])
    else:
        with pytest.raises(ValueError, match=f"lstm_l1' starts from an {label} that is not zero"):
            convert.from_onnx(model)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("fill", [0.0, 0.5])
@pytest.mark.parametrize("batch_axis", [False, True], ids=["fixed B", "dynamic B"])
def test_from_onnx_evaluates_a_state_of_b_rows_from_the_input_shape(torch, onnx, fill, batch_axis):
    # h0 = ones(1, B, H) * fill, B from x: ConstantOfShape then Mul, which the
    # old check took for a value computed from x (accepted: 0.149 off torch).
    class Filled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(3, 4, batch_first=True)

        def forward(self, x):
            h0 = torch.ones(1, x.size(0), 4) * fill
            return self.lstm(x, (h0, h0))[0]

    axes = {"x": {0: "B"}} if batch_axis else None
    model = _torch_onnx(torch, onnx, Filled(), torch.zeros(2, 5, 3), input_names=["x"], dynamic_axes=axes)
    if batch_axis:  # with a fixed B, torch folds the product into a constant
        assert "Mul" in [n.op_type for n in model.graph.node]
    if fill == 0.0:
        convert.from_onnx(model)
    else:
        with pytest.raises(ValueError, match="starts from an initial_h that is not zero"):
            convert.from_onnx(model)


@pytest.mark.parametrize("offset", [0, 2])
def test_from_onnx_evaluates_a_state_from_the_input_shape_at_more_than_one_size(onnx, offset):
    """A state computed from X's shape was evaluated with every dimension
    that is not a number taken as 2: h0 = (B - 2) * ones(1, B, H) was read as
    zero, and at B = 3 the layer ran 0.48 off onnxruntime.  B * ones is not
    zero at either size."""
    from onnx import TensorProto, helper, numpy_helper

    I, H = 3, 4
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((1, 4 * H, I)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal((1, 4 * H, H)).astype(np.float32), "R"),
        numpy_helper.from_array(np.array([1], np.int64), "axis_1"),
        numpy_helper.from_array(np.array(1, np.int64), "axis_1_scalar"),
        numpy_helper.from_array(np.array([H], np.int64), "H"),
        numpy_helper.from_array(np.array(offset, np.int64), "offset"),
    ]
    ones = numpy_helper.from_array(np.array([1.0], np.float32))
    nodes = [
        helper.make_node("Shape", ["X"], ["shape_X"]),
        helper.make_node("Gather", ["shape_X", "axis_1"], ["B_1"], axis=0),
        helper.make_node("Concat", ["axis_1", "B_1", "H"], ["shape_h"], axis=0),
        helper.make_node("ConstantOfShape", ["shape_h"], ["ones"], value=ones),
        helper.make_node("Gather", ["shape_X", "axis_1_scalar"], ["B"], axis=0),
        helper.make_node("Sub", ["B", "offset"], ["B_less"]),
        helper.make_node("Cast", ["B_less"], ["scale"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ones", "scale"], ["h0"]),
        helper.make_node("LSTM", ["X", "W", "R", "", "", "h0", "h0"], ["Y", "Y_h", "Y_c"], hidden_size=H),
    ]
    graph = helper.make_graph(
        nodes, "state_from_B", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "B", H])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    with pytest.raises(
        ValueError, match=r"starts from an initial_h that is not zero .*computed from X's shape\)"
    ):
        convert.from_onnx(model)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_from_onnx_reads_weights_computed_from_constants(torch, onnx):
    # Without constant folding, torch's export computes W, R and B from its
    # initializers (Slice, Concat, Unsqueeze): they were refused as "not an
    # initializer or Constant".
    module = _torch_module(torch, CONFIGS["2layers_bidir"], np.float32, seed=3)
    x = torch.zeros(5, 2, CONFIGS["2layers_bidir"]["input_size"])
    got = convert.from_onnx(_torch_onnx(torch, onnx, module, x, do_constant_folding=False))
    want = convert.from_torch(module)
    assert got[0] == want[0] and sorted(got[1]) == sorted(want[1])
    for key, value in want[1].items():
        np.testing.assert_array_equal(got[1][key], value, err_msg=key)


def test_from_onnx_with_a_state_it_cannot_evaluate(onnx):
    # A state of constants through an operator of another domain: onnx's
    # reference evaluator does not know it, so the state may not be zero:
    # refused by name (it raised the evaluator's NotImplementedError).
    from onnx import helper, numpy_helper

    config = CONFIGS["1layer"]
    H = config["hidden_size"]
    model = convert.to_onnx(config, random_params(config, np.float32))
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    node.input.extend(["", "initial_h"])
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 1, H), np.float32), "zeros"))
    model.graph.node.insert(0, helper.make_node("Gelu", ["zeros"], ["initial_h"], domain="com.microsoft"))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(
        ValueError, match="initial_h computed from constants by operators that numba_lstm cannot"
    ):
        convert.from_onnx(model)
    # A state from an If node: its branches may read X (they are not
    # followed), so it is taken for a value computed from the inputs, as
    # before the evaluator (which failed on the branches' outer names).
    branch = helper.make_graph(
        [helper.make_node("Identity", ["zeros"], ["out"])],
        "branch",
        [],
        [helper.make_tensor_value_info("out", 1, None)],
    )
    model.graph.node[0].CopyFrom(
        helper.make_node("If", ["cond"], ["initial_h"], then_branch=branch, else_branch=branch)
    )
    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    _, params = convert.from_onnx(model)
    assert sorted(params) == ["W_l0", "b_l0"]


def test_from_onnx_tells_constants_from_inputs_past_empty_names(onnx):
    # A node whose optional output is left out ("") reads the input X; the
    # state is Clip(0.5, "", ""), whose optional inputs are "" too: "" is no
    # value computed from X, and the state is a constant.
    from onnx import helper, numpy_helper

    config = CONFIGS["1layer"]
    model = convert.to_onnx(config, random_params(config, np.float32))
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    node.input.extend(["", "initial_h"])
    H = config["hidden_size"]
    model.graph.initializer.append(numpy_helper.from_array(np.full((1, 1, H), 0.5, np.float32), "half"))
    model.graph.node.insert(0, helper.make_node("Dropout", ["X"], ["X_dropped", ""]))
    model.graph.node.insert(1, helper.make_node("Clip", ["half", "", ""], ["initial_h"]))
    with pytest.raises(ValueError, match="starts from an initial_h that is not zero"):
        convert.from_onnx(model)


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_from_onnx_refuses_the_frozen_state_of_its_own_export(onnx, ort, value):
    # to_onnx(initial_state=True) with the state made initializers: each
    # layer's rows come through a Gather, which the check did not follow
    # (accepted, and 0.44 off from onnxruntime's outputs).
    from onnx import numpy_helper

    config = CONFIGS["2layers"]
    model = convert.to_onnx(config, random_params(config, np.float32), initial_state=True)
    graph = model.graph
    kept = [i for i in graph.input if i.name not in ("initial_h", "initial_c")]
    del graph.input[:]
    graph.input.extend(kept)
    state = np.zeros((2, 1, config["hidden_size"]), np.float32)
    state[1, 0, 2] = value  # layer 1's initial_h only
    graph.initializer.extend(
        [numpy_helper.from_array(state, "initial_h"), numpy_helper.from_array(0 * state, "initial_c")]
    )
    if value == 0.0:
        convert.from_onnx(model)
    else:
        with pytest.raises(ValueError, match="'lstm_l1' starts from an initial_h that is not zero"):
            convert.from_onnx(model)


@pytest.mark.parametrize("source", ["input", "initializer", "from the input's shape"])
def test_from_onnx_refuses_sequence_lens_built_into_the_model(onnx, source):
    # Lengths that the model fixes (an initializer, or T for every row from
    # X's shape) were accepted and dropped: 0.16 off from onnxruntime's
    # outputs with lengths [2, 2].  Lengths that are an input are the caller's.
    from onnx import helper, numpy_helper

    config = CONFIGS["2layers"]
    params = random_params(config, np.float32)
    model = convert.to_onnx(config, params, sequence_lens=True)
    graph = model.graph
    if source != "input":
        kept = [i for i in graph.input if i.name != "sequence_lens"]
        del graph.input[:]
        graph.input.extend(kept)
    if source == "initializer":
        graph.initializer.append(numpy_helper.from_array(np.array([2, 2], np.int32), "sequence_lens"))
    elif source == "from the input's shape":  # Expand(Cast(Shape(X)[0]), [B])
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array([0], np.int64), "zero_i"),
                numpy_helper.from_array(np.array([2], np.int64), "B_i"),
            ]
        )
        nodes = [
            helper.make_node("Shape", ["X"], ["shape_X"]),
            helper.make_node("Gather", ["shape_X", "zero_i"], ["T_i"]),
            helper.make_node("Cast", ["T_i"], ["T_32"], to=onnx.TensorProto.INT32),
            helper.make_node("Expand", ["T_32", "B_i"], ["sequence_lens"]),
        ]
        for position, node in enumerate(nodes):
            graph.node.insert(position, node)
    if source == "input":
        got_config, got = convert.from_onnx(model)
        assert got_config == convert.check_config(config)
        for key, value in params.items():
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    else:
        with pytest.raises(ValueError, match="'lstm_l0' reads a sequence_lens built into the model"):
            convert.from_onnx(model)


@pytest.mark.parametrize("through", ["directly", "Identity"])
def test_from_onnx_refuses_a_layer_that_starts_from_another_layers_state(onnx, through):
    """Layer 1 starting from layer 0's final state (Y_h, Y_c) was accepted as
    an input-driven state: the layer it made gave other outputs than
    onnxruntime (0.3 apart), and no state given to forward could match."""
    from onnx import helper

    config = CONFIGS["2layers"]
    model = convert.to_onnx(config, random_params(config, np.float32))
    first, second = [n for n in model.graph.node if n.op_type == "LSTM"]
    states = list(first.output[1:3])
    if through == "Identity":
        after_first = [n.name for n in model.graph.node].index("lstm_l0") + 1
        for position, state in enumerate(list(states)):
            model.graph.node.insert(after_first, helper.make_node("Identity", [state], [f"{state}_copy"]))
            states[position] = f"{state}_copy"
    second.input.extend(["", "", ""][: 7 - len(second.input)])
    second.input[5], second.input[6] = states
    with pytest.raises(
        ValueError, match="'lstm_l1' starts from an initial_h computed from the outputs of .*'lstm_l0'"
    ):
        convert.from_onnx(model)


def test_from_onnx_refuses_nodes_that_read_different_sequence_lens(onnx):
    """One node limited by sequence_lens and the other not: neither
    forward(x) nor forward(x, lengths=...) gives what the model gives."""
    from onnx import helper

    config = CONFIGS["2layers_bidir"]
    params = random_params(config, np.float32)
    model = convert.to_onnx(config, params, sequence_lens=True)
    first, second = [n for n in model.graph.node if n.op_type == "LSTM"]
    # The same input through a Cast is the same lengths.
    model.graph.node.insert(0, helper.make_node("Cast", ["sequence_lens"], ["lens_again"], to=6))
    second.input[4] = "lens_again"
    _, back = convert.from_onnx(model)
    np.testing.assert_array_equal(back["W_l1"], params["W_l1"])
    first.input[4] = ""
    with pytest.raises(
        ValueError,
        match=r"read different sequence_lens \(LSTM node 'lstm_l0': none, LSTM node 'lstm_l1': 'sequence_lens'\)",
    ):
        convert.from_onnx(model)


def test_from_onnx_follows_batch_major_nodes(onnx):
    # layout = 1 (opset 14): Y (B, T, D, H) reshaped into the next node's X
    # (B, T, D * H), with no Transpose; onnxruntime cannot run such nodes
    # ("layout == 1 ... not supported"), so the spec is the reference here.
    config = CONFIGS["2layers_bidir"]
    params = random_params(config, np.float32)
    model = convert.to_onnx(config, params, opset=14)
    graph = model.graph
    for node in graph.node:
        if node.op_type == "LSTM":
            node.attribute.append(onnx.helper.make_attribute("layout", 1))
    transpose = next(n for n in graph.node if n.op_type == "Transpose")
    reshape = next(n for n in graph.node if n.op_type == "Reshape" and n.input[0] == transpose.output[0])
    reshape.input[0] = transpose.input[0]
    graph.node.remove(transpose)
    _, back = convert.from_onnx(model)
    np.testing.assert_array_equal(back["W_l1_reverse"], params["W_l1_reverse"])
    second = [n for n in graph.node if n.op_type == "LSTM"][1]
    next(a for a in second.attribute if a.name == "layout").i = 0  # now it reads (B, T, D * H) as (T, B, ...)
    with pytest.raises(ValueError, match=r"rearranged otherwise than into \(T, B, 8\)"):
        convert.from_onnx(model)


def test_from_onnx_refuses_a_rearrangement_it_cannot_follow(onnx):
    config = CONFIGS["2layers_bidir"]
    model = convert.to_onnx(config, random_params(config, np.float32))
    transpose = next(n for n in model.graph.node if n.op_type == "Transpose")
    del transpose.attribute[:]
    # Y (T, D, B, H) into (B, T, D, H): reshaped to (B, T, D * H), B and T swapped.
    transpose.attribute.append(onnx.helper.make_attribute("perm", [2, 0, 1, 3]))
    with pytest.raises(ValueError, match="rearranged otherwise than into"):
        convert.from_onnx(model)
    model = convert.to_onnx(config, random_params(config, np.float32))
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    reshape.input[1] = "X"  # a shape that is not a constant
    with pytest.raises(
        ValueError, match="through the Reshape node .* whose parameters numba_lstm cannot follow"
    ):
        convert.from_onnx(model)


def test_to_onnx_refuses_projection_and_bad_opset(onnx):
    config = CONFIGS["proj"]
    with pytest.raises(ValueError, match="proj_size=3.*no projection"):
        convert.to_onnx(config, random_params(config, np.float32))
    config = CONFIGS["1layer"]
    params = random_params(config, np.float32)
    with pytest.raises(ValueError, match="opset must be from 7 .* got 5"):
        convert.to_onnx(config, params, opset=5)
    newest = onnx.defs.onnx_opset_version()
    convert.to_onnx(config, params, opset=newest)
    with pytest.raises(ValueError, match=f"opset must be from 7 .* to {newest} .* got {newest + 1}"):
        convert.to_onnx(config, params, opset=newest + 1)  # failed inside onnx, naming no argument
    for opset in (17.0, "17", True):  # a ValueError before
        with pytest.raises(TypeError, match=f"opset must be an integer, got {opset!r}"):
            convert.to_onnx(config, params, opset=opset)


# --------------------------------------------------------------------------
# the arrays the converters return


def _assert_fresh_and_on_cache_lines(arrays, inputs):
    """Each returned array is C-contiguous, starts on a 64-byte line and shares no memory with an input."""
    for name, a in arrays.items():
        assert a.flags.c_contiguous, name
        assert a.ctypes.data % 64 == 0, f"{name} starts {a.ctypes.data % 64} bytes past a cache line"
        for given in inputs:
            assert not np.shares_memory(a, given), f"{name} is a view of an input array"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_functions_return_new_arrays_on_cache_lines(onnx, dtype):
    """``jit.step_into`` reads W in place, fastest from a line's start (README, "Calling the LSTM ...").

    The torch state dict has ``proj_size = 1``: ``weight_hr (1, H)`` transposed
    is already C-contiguous, so a converter that only made arrays contiguous
    returned a view of the caller's tensor.
    """
    rng = np.random.default_rng(3)
    H, I = 8, 5
    state = {
        "weight_ih_l0": _random(rng, (4 * H, I), dtype),
        "weight_hh_l0": _random(rng, (4 * H, 1), dtype),
        "bias_ih_l0": _random(rng, (4 * H,), dtype),
        "bias_hh_l0": _random(rng, (4 * H,), dtype),
        "weight_hr_l0": _random(rng, (1, H), dtype),
    }
    _, params = convert.from_torch(state)
    _assert_fresh_and_on_cache_lines(params, state.values())
    np.testing.assert_array_equal(params["W_hr_l0"], state["weight_hr_l0"].T)

    keras_weights = [
        _random(rng, (I, 4 * H), dtype),
        _random(rng, (H, 4 * H), dtype),
        _random(rng, (4 * H,), dtype),
    ]
    _, params = convert.from_keras(keras_weights)
    _assert_fresh_and_on_cache_lines(params, keras_weights)
    np.testing.assert_array_equal(params["b_l0"], keras_weights[2])

    kernel, bias = _random(rng, (I + H, 4 * H), dtype), _random(rng, (4 * H,), dtype)
    W, b = convert.from_tf1(kernel, bias, forget_bias=0.0)
    _assert_fresh_and_on_cache_lines({"W": W, "b": b}, [kernel, bias])

    tree = convert.to_flax(kernel, bias, input_size=I)
    W, b = convert.from_flax(tree)
    _assert_fresh_and_on_cache_lines({"W": W, "b": b}, [kernel, bias])
    np.testing.assert_array_equal(W, kernel)

    config = dict(input_size=I, hidden_size=H, num_layers=2, bidirectional=True, proj_size=0)
    native = random_params(config, dtype)
    _, params = convert.from_onnx(convert.to_onnx(config, native))
    _assert_fresh_and_on_cache_lines(params, native.values())
    for name, value in native.items():
        np.testing.assert_array_equal(params[name], value, err_msg=name)


@pytest.mark.parametrize(
    "sizes", [dict(input_size=1, hidden_size=4, proj_size=1), dict(input_size=3, hidden_size=1)]
)
def test_to_functions_share_no_memory_with_the_parameters(torch, sizes):
    """With I, H or P of 1 a weight block's transpose is C-contiguous already:
    ``to_torch_state_dict`` returned tensors on the caller's memory for them
    (zeroing one zeroed the layer's W)."""
    config = convert.check_config(dict(sizes, num_layers=2, bidirectional=True))
    params = random_params(config, np.float32)
    for name, tensor in convert.to_torch_state_dict(config, params).items():
        for given in params.values():
            assert not np.shares_memory(tensor.numpy(), given), f"{name} is a view of a parameter"
    if config["proj_size"]:
        return  # Keras, TF1 and Flax have no projection
    outputs = convert.to_keras_weights(config, params, layer=1)
    outputs += convert.to_tf1(params["W_l0"], params["b_l0"])
    outputs += [
        a for gate in convert.to_flax(params["W_l0"], params["b_l0"], 3).values() for a in gate.values()
    ]
    for a in outputs:
        for given in params.values():
            assert not np.shares_memory(a, given)


@pytest.mark.parametrize(
    "to_function, option", [("to_torch_state_dict", "bias"), ("to_keras_weights", "use_bias")]
)
def test_to_functions_refuse_options_that_are_not_bools(to_function, option):
    """``bias="False"`` was read as true: the bias went out, no error."""
    config = CONFIGS["1layer"]
    with pytest.raises(TypeError, match=f"{option} must be True or False, got 'False'"):
        getattr(convert, to_function)(config, random_params(config, np.float32), **{option: "False"})


def _random(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def test_params_of_a_config_with_many_layers_are_refused_in_a_short_message():
    # Before, every missing name and every expected name went into the message:
    # 4.7 MB of it for 10**5 layers.
    config = {"input_size": 3, "hidden_size": 4, "num_layers": 10**4}
    params = {"W_l0": np.zeros((7, 16), np.float32), "b_l0": np.zeros(16, np.float32), 0: np.zeros(1)}
    with pytest.raises(ValueError, match=r"missing \['W_l1', 'b_l1', .*, \.\.\. 19998 in all\]") as info:
        convert.check_params(config, params)
    assert len(str(info.value)) < 2000
    assert "unexpected [0]" in str(info.value)


@pytest.mark.parametrize(
    ("module", "call", "needed_by"),
    [
        ("torch", lambda layer, tmp: layer.to_torch_state_dict(), "to_torch_state_dict"),
        ("onnx", lambda layer, tmp: layer.to_onnx(), "to_onnx"),
        ("onnx", lambda layer, tmp: numba_lstm.LSTM.from_onnx(str(tmp / "missing.onnx")), "from_onnx"),
    ],
)
def test_a_missing_optional_package_names_the_extra(module, call, needed_by, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import module: ModuleNotFoundError, as if not installed
    with pytest.raises(
        ModuleNotFoundError,
        match=rf"{needed_by} needs {module}, .*pip install {module}, .*pip install '\.\[convert\]' in its clone",
    ):
        call(numba_lstm.LSTM(2, 3), tmp_path)
