"""The registry of LSTM implementations (numbagg style).

One list, ``REGISTRY``, drives both the benchmarks (``bench/test_bench_lstm.py``)
and the correctness smoke test (``tests/test_bench_smoke.py``): every entry is
timed by the first and checked against ``numba_lstm.reference`` by the second.

An entry's ``prepare(problem)`` receives the workload's inputs in the native
layout and returns ``(run, collect)``: ``run()`` is the call that is timed (the
framework's own call on its own inputs, converted beforehand); ``collect()``
turns the outputs of the last ``run()`` back into native NumPy arrays for the
correctness check and is never timed.

Workloads and what ``collect()`` returns:

* ``inference``: forward over the whole sequence -> ``y, h_n, c_n``.
* ``training``: forward, then backward of ``sum(y * dy)`` -> ``y, dx, dW, db``.
* ``streaming``: one time step per call at B = 1, over T steps -> ``y, h_n, c_n``.
* ``lengths``: forward over a padded batch with per-sequence ``lengths`` ->
  ``y`` (zero past each length), ``h_n, c_n`` (the state after the last valid step).
"""

import functools
import importlib
import importlib.util
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import numba_lstm
import numba_lstm.reference

WORKLOADS = ("inference", "training", "streaming", "lengths")

#: Outputs compared by the correctness test, per workload.
OUTPUTS = {
    "inference": ("y", "h_n", "c_n"),
    "training": ("y", "dx", "dW", "db"),
    "streaming": ("y", "h_n", "c_n"),
    "lengths": ("y", "h_n", "c_n"),
}


@dataclass(frozen=True)
class Implementation:
    """One implementation of one workload.

    name      : label in tables and test ids
    workload  : one of ``WORKLOADS``
    prepare   : problem dict -> (run, collect), see the module docstring
    requires  : modules that must be importable (peers that may be missing)
    dtypes    : dtypes the implementation supports; others are reported skipped
    available : optional () -> None, or the reason the entry cannot run
    baseline  : the PyTorch entry that the workload's ratios refer to
    outputs   : the outputs ``collect()`` returns, when not all of ``OUTPUTS[workload]``
    """

    name: str
    workload: str
    prepare: Callable
    requires: tuple = ()
    dtypes: tuple = (np.float32, np.float64)
    available: Callable | None = None
    baseline: bool = False
    outputs: tuple | None = None

    def skip_reason(self, dtype):
        """None when the entry runs in ``dtype``, else why it is skipped."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"{module} not installed"
        if np.dtype(dtype).type not in self.dtypes:
            return f"no {np.dtype(dtype).name} kernel"
        if self.available is not None:
            return self.available()
        return None


# ---------------------------------------------------------------- problems


def make_problem(workload, T, B, I, H, dtype, seed=0):
    """Random inputs of one workload in the native layout, in ``dtype``.

    ``lengths`` (workload ``lengths``) are uniform in ``T // 10 .. T`` with the
    first sequence of full length, so the padded output has T steps.
    """
    rng = np.random.default_rng(seed)

    def draw(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    problem = {
        "x": draw(T, B, I),
        "W": draw(I + H, 4 * H, scale=0.5 / np.sqrt(H)),
        "b": draw(4 * H, scale=0.5),
        "h0": draw(B, H, scale=0.5),
        "c0": draw(B, H, scale=0.5),
    }
    if workload == "training":
        problem["dy"] = draw(T, B, H)
    if workload == "lengths":
        lengths = rng.integers(max(T // 10, 1), T + 1, size=B)
        lengths[0] = T
        problem["lengths"] = lengths.astype(np.int64)
    return problem


def expected(workload, problem):
    """The reference result of a workload (``numba_lstm.reference`` in float64)."""
    p = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in problem.items()}
    ref = numba_lstm.reference
    if workload == "training":
        y, _, _, cache = ref.lstm_forward(p["x"], p["W"], p["b"], p["h0"], p["c0"])
        grads = ref.lstm_backward(p["dy"], cache)
        return {"y": y, "dx": grads.dx, "dW": grads.dW, "db": grads.db}
    if workload == "lengths":
        x, lengths = p["x"], p["lengths"]
        y = np.zeros((x.shape[0], x.shape[1], p["h0"].shape[1]))
        h_n, c_n = p["h0"].copy(), p["c0"].copy()
        for r, n in enumerate(lengths):  # each sequence on its own, cut at its length
            rows = slice(r, r + 1)
            y_r, h_r, c_r, _ = ref.lstm_forward(x[:n, rows], p["W"], p["b"], p["h0"][rows], p["c0"][rows])
            y[:n, rows], h_n[rows], c_n[rows] = y_r, h_r, c_r
        return {"y": y, "h_n": h_n, "c_n": c_n}
    y, h_n, c_n, _ = ref.lstm_forward(p["x"], p["W"], p["b"], p["h0"], p["c0"])
    return {"y": y, "h_n": h_n, "c_n": c_n}


def flops(workload, T, B, I, H):
    """Floating-point operations of one call: forward ``2 T B (I + H) 4H``, training 3x."""
    forward = 2 * T * B * (I + H) * 4 * H
    return 3 * forward if workload == "training" else forward


def work(workload, problem):
    """``(sequence_steps, flops)`` of one call on ``problem``.

    With variable lengths only the valid steps count (``sum(lengths)`` instead
    of ``T * B``), so a run that computes the padding shows as slower.
    """
    T, B, I = problem["x"].shape
    H = problem["h0"].shape[1]
    steps = int(problem["lengths"].sum()) if "lengths" in problem else T * B
    return steps, flops(workload, T, B, I, H) * steps // (T * B)


def _mask(y, lengths):
    """Zero ``y (T, B, H)`` past each sequence's length, in place."""
    y[np.arange(y.shape[0])[:, None] >= lengths[None, :]] = 0
    return y


# ---------------------------------------------------------------- threads

_THREADS = {"n": None, "limits": None}


def configure_threads(n=None):
    """Give every implementation the same number of threads and return it.

    The default is PyTorch's own default (the physical cores), so PyTorch runs
    exactly as a user gets it; without torch, ``os.cpu_count()``.  BLAS (the
    OpenBLAS that Numba calls, and NumPy's) gets the same count through
    threadpoolctl, Numba's pool and onnxruntime's intra-op pool too.  Numba's
    pool cannot grow past ``NUMBA_NUM_THREADS`` (fixed when Numba starts, the
    logical CPUs unless set), so the count is at most that for everyone: with
    ``NUMBA_NUM_THREADS=1`` every implementation runs on one thread, and
    ``--threads`` above the CPUs does not oversubscribe the others alone.
    """
    import numba
    import scipy.linalg  # noqa: F401  (loads the BLAS that Numba calls, so threadpoolctl sees it)
    from threadpoolctl import threadpool_limits

    torch = _import("torch")
    if n is None:
        n = torch.get_num_threads() if torch is not None else os.cpu_count()
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    if torch is not None:
        torch.set_num_threads(n)
    numba.set_num_threads(n)
    _THREADS["limits"] = threadpool_limits(n, user_api="blas")
    _THREADS["n"] = n
    return n


def _threads():
    return _THREADS["n"] or os.cpu_count()


def _import(name):
    return importlib.import_module(name) if importlib.util.find_spec(name) is not None else None


# ---------------------------------------------------------------- numba_lstm and the reference


def _functional(module):
    def prepare(p):
        out = {}

        def run():  # inference: nothing kept for a backward, as torch.inference_mode
            out["r"] = module.lstm_forward(p["x"], p["W"], p["b"], p["h0"], p["c0"], cache=False)

        def collect():
            y, h_n, c_n, _ = out["r"]
            return {"y": y, "h_n": h_n, "c_n": c_n}

        return run, collect

    return prepare


def _functional_training(module):
    def prepare(p):
        out = {}

        def run():
            y, _, _, cache = module.lstm_forward(p["x"], p["W"], p["b"], p["h0"], p["c0"])
            out["r"] = y, module.lstm_backward(p["dy"], cache)

        def collect():
            y, grads = out["r"]
            return {"y": y, "dx": grads.dx, "dW": grads.dW, "db": grads.db}

        return run, collect

    return prepare


def _layer_training(p):
    """numba_lstm's ``LSTM`` layer as a training loop calls it, forward then
    ``backward`` (as ``torch.nn.LSTM``'s row): each forward writes its cache
    into the last one's arrays, which the functional call cannot (its
    caller owns the cache)."""
    layer = _layer_of(p)
    state = (p["h0"][None], p["c0"][None])
    out = {}

    def run():
        y, _ = layer(p["x"], state)
        out["r"] = y, layer.backward(p["dy"])

    def collect():
        y, dx = out["r"]
        return {"y": y, "dx": dx, "dW": layer.grads["W_l0"], "db": layer.grads["b_l0"]}

    return run, collect


def _jit_missing():
    try:
        importlib.import_module("numba_lstm.jit")
    except ImportError:
        return "numba_lstm.jit not available"
    return None


def _jit_forward(p):
    jit = importlib.import_module("numba_lstm.jit")
    out = {}

    def run():
        out["r"] = jit.forward(p["x"], p["W"], p["b"], p["h0"], p["c0"])

    def collect():
        y, h_n, c_n = out["r"]
        return {"y": y, "h_n": h_n, "c_n": c_n}

    return run, collect


def _layer_step_missing():
    return _jit_missing() or (
        None if hasattr(numba_lstm.LSTM, "step") else "numba_lstm.LSTM.step not available"
    )


def _layer_of(p):
    """A one-layer ``LSTM`` holding the problem's W and b (copied into its
    parameters, which start on a cache line)."""
    x = p["x"]
    layer = numba_lstm.LSTM(x.shape[2], p["h0"].shape[1], dtype=x.dtype)
    layer.W[...] = p["W"]
    layer.b[...] = p["b"]
    return layer


def _layer_step(p):
    """numba_lstm called from Python one step at a time: ``LSTM.step`` (state (layers, B, H))."""
    x = p["x"]
    layer = _layer_of(p)
    out = {}

    def run():  # as _torch_cell: each step's output is kept in a list
        state = (p["h0"][None], p["c0"][None])
        ys = []
        for x_t in x:
            y_t, state = layer.step(x_t, state)
            ys.append(y_t)
        out["r"] = ys, state

    def collect():
        ys, (h_n, c_n) = out["r"]
        return {"y": np.stack(ys), "h_n": h_n[0], "c_n": c_n[0]}

    return run, collect


@functools.cache
def _jitted_stream_loop():
    """An ``@njit`` loop that steps ``numba_lstm.jit.step_into`` with no Python in between."""
    import numba

    step_into = importlib.import_module("numba_lstm.jit").step_into

    @numba.njit
    def stream(y, h, c, work, x, W, b):
        for t in range(x.shape[0]):
            step_into(x[t], h, c, W, b, h, c, work)  # the state is updated in place
            y[t] = h

    return stream


def _jit_stream(p):
    """numba_lstm stepping inside a jitted loop (the time per step includes no Python).

    W and b are an ``LSTM`` layer's, as in the README's example: they start
    on a cache line, which a W of NumPy's own may not (see ``step_into``).
    """
    jit = importlib.import_module("numba_lstm.jit")
    stream = _jitted_stream_loop()
    x = p["x"]
    T, B, _ = x.shape
    H = p["h0"].shape[1]
    layer = _layer_of(p)
    y = np.empty((T, B, H), x.dtype)
    h, c = np.empty_like(p["h0"]), np.empty_like(p["c0"])
    work = np.empty(jit.work_size(B, H), x.dtype)

    def run():
        h[...] = p["h0"]
        c[...] = p["c0"]
        stream(y, h, c, work, x, layer.W, layer.b)

    def collect():
        return {"y": y, "h_n": h.copy(), "c_n": c.copy()}

    return run, collect


def _lengths_missing():
    if "lengths" not in inspect.signature(numba_lstm.lstm_forward).parameters:
        return "numba_lstm.lstm_forward has no lengths argument"
    return None


def _numba_lengths(p):
    out = {}

    def run():
        out["r"] = numba_lstm.lstm_forward(
            p["x"], p["W"], p["b"], p["h0"], p["c0"], lengths=p["lengths"], cache=False
        )

    def collect():
        y, h_n, c_n, _ = out["r"]
        return {"y": y, "h_n": h_n, "c_n": c_n}

    return run, collect


def _numba_padded(p):
    """numba_lstm over the whole padded batch, ignoring the lengths (what a user does without them).

    ``collect`` cuts y at the lengths and takes h at each length (untimed); the
    padded call's c at a length is not returned, so only y and h_n are checked.
    """
    out = {}

    def run():
        out["r"] = numba_lstm.lstm_forward(p["x"], p["W"], p["b"], p["h0"], p["c0"], cache=False)

    def collect():
        return _cut_padded(out["r"][0], p["lengths"])

    return run, collect


def _cut_padded(y, lengths):
    """y (T, B, H) of a padded run -> y zero past the lengths and h_n, the output at each length."""
    h_n = y[lengths - 1, np.arange(len(lengths))]
    return {"y": _mask(np.array(y, copy=True), lengths), "h_n": h_n}


# ---------------------------------------------------------------- PyTorch


def _torch_module(cls, p):
    """``torch.nn.LSTM`` / ``LSTMCell`` holding the native (W, b): b_ih = b, b_hh = 0."""
    import torch

    I = p["x"].shape[2]
    H = p["h0"].shape[1]
    module = cls(I, H).to(torch.float64 if p["x"].dtype == np.float64 else torch.float32)
    suffix = "_l0" if cls is torch.nn.LSTM else ""
    with torch.no_grad():
        getattr(module, "weight_ih" + suffix).copy_(torch.from_numpy(p["W"][:I].T.copy()))
        getattr(module, "weight_hh" + suffix).copy_(torch.from_numpy(p["W"][I:].T.copy()))
        getattr(module, "bias_ih" + suffix).copy_(torch.from_numpy(p["b"]))
        getattr(module, "bias_hh" + suffix).zero_()
    return module


def _torch_inference(p):
    import torch

    module = _torch_module(torch.nn.LSTM, p)
    x = torch.from_numpy(p["x"])
    state = (torch.from_numpy(p["h0"])[None], torch.from_numpy(p["c0"])[None])
    out = {}

    def run():
        with torch.inference_mode():
            out["r"] = module(x, state)

    def collect():
        y, (h_n, c_n) = out["r"]
        return {"y": y.numpy(), "h_n": h_n[0].numpy(), "c_n": c_n[0].numpy()}

    return run, collect


def _torch_training(p):
    import torch

    module = _torch_module(torch.nn.LSTM, p)
    x = torch.from_numpy(p["x"]).requires_grad_(True)
    dy = torch.from_numpy(p["dy"])
    state = (torch.from_numpy(p["h0"])[None], torch.from_numpy(p["c0"])[None])
    out = {}

    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        y, _ = module(x, state)
        y.backward(dy)
        out["y"] = y

    def collect():
        dW = torch.cat([module.weight_ih_l0.grad.T, module.weight_hh_l0.grad.T])
        return {"y": out["y"].detach().numpy(), "dx": x.grad.numpy(), "dW": dW.numpy(),
                "db": module.bias_ih_l0.grad.numpy()}  # fmt: skip

    return run, collect


def _torch_cell(p):
    """``torch.nn.LSTMCell`` called from Python once per step."""
    import torch

    cell = _torch_module(torch.nn.LSTMCell, p)
    xs = torch.from_numpy(p["x"])
    h0, c0 = torch.from_numpy(p["h0"]), torch.from_numpy(p["c0"])
    out = {}

    def run():
        with torch.inference_mode():
            h, c = h0, c0
            ys = []
            for x_t in xs:
                h, c = cell(x_t, (h, c))
                ys.append(h)
            out["r"] = ys, h, c

    def collect():
        ys, h, c = out["r"]
        return {"y": torch.stack(ys).numpy(), "h_n": h.numpy(), "c_n": c.numpy()}

    return run, collect


def _torch_padded(p):
    """``torch.nn.LSTM`` over the whole padded batch; checked like ``_numba_padded``."""
    run, collect_all = _torch_inference(p)

    def collect():
        return _cut_padded(collect_all()["y"], p["lengths"])

    return run, collect


def _torch_packed(p):
    """``torch.nn.LSTM`` on a packed sequence: packing and unpacking are timed, as a user runs it."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    module = _torch_module(torch.nn.LSTM, p)
    x = torch.from_numpy(p["x"])
    T = x.shape[0]
    lengths = torch.from_numpy(p["lengths"])
    state = (torch.from_numpy(p["h0"])[None], torch.from_numpy(p["c0"])[None])
    out = {}

    def run():
        with torch.inference_mode():
            packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
            y, (h_n, c_n) = module(packed, state)
            out["r"] = pad_packed_sequence(y, total_length=T)[0], h_n, c_n

    def collect():
        y, h_n, c_n = out["r"]
        return {"y": y.numpy(), "h_n": h_n[0].numpy(), "c_n": c_n[0].numpy()}

    return run, collect


# ---------------------------------------------------------------- onnxruntime

#: Native gate blocks (i, f, g, o) in ONNX's order (i, o, f, c).
_ONNX_GATES = (0, 3, 1, 2)


def _onnx_session(p, with_lengths=False):
    """An onnxruntime session of one ONNX ``LSTM`` node holding the native (W, b)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    I = p["x"].shape[2]
    H = p["h0"].shape[1]
    W, b = p["W"], p["b"]

    def reorder(a):  # (4H, ...) in i, f, g, o -> i, o, f, c
        return np.concatenate([a[k * H : (k + 1) * H] for k in _ONNX_GATES])

    weights = {
        "W": reorder(W[:I].T)[None],  # (1, 4H, I)
        "R": reorder(W[I:].T)[None],  # (1, 4H, H)
        "B": np.concatenate([reorder(b), np.zeros_like(b)])[None],  # (1, 8H) = [Wb, Rb]
    }
    elem = TensorProto.DOUBLE if W.dtype == np.float64 else TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("X", elem, ["T", "B", I]),
        helper.make_tensor_value_info("initial_h", elem, [1, "B", H]),
        helper.make_tensor_value_info("initial_c", elem, [1, "B", H]),
    ]
    node_inputs = ["X", "W", "R", "B", "", "initial_h", "initial_c"]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]))
        node_inputs[4] = "sequence_lens"
    node = helper.make_node("LSTM", node_inputs, ["Y", "Y_h", "Y_c"], hidden_size=H)
    outputs = [
        helper.make_tensor_value_info("Y", elem, ["T", 1, "B", H]),
        helper.make_tensor_value_info("Y_h", elem, [1, "B", H]),
        helper.make_tensor_value_info("Y_c", elem, [1, "B", H]),
    ]
    initializers = [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in weights.items()]
    graph = helper.make_graph([node], "lstm", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _onnx_feeds(p):
    return {"X": p["x"], "initial_h": p["h0"][None], "initial_c": p["c0"][None]}


def _onnx_inference(p, with_lengths=False):
    session = _onnx_session(p, with_lengths)
    feeds = _onnx_feeds(p)
    if with_lengths:
        feeds["sequence_lens"] = p["lengths"].astype(np.int32)
    out = {}

    def run():
        out["r"] = session.run(None, feeds)

    def collect():
        y, h_n, c_n = out["r"]
        return {"y": y[:, 0], "h_n": h_n[0], "c_n": c_n[0]}

    return run, collect


def _onnx_stream(p):
    """onnxruntime called once per step on the same model (T = 1 per call)."""
    session = _onnx_session(p)
    x = p["x"]
    T = x.shape[0]
    steps = [x[t : t + 1] for t in range(T)]
    out = {}

    def run():
        h, c = p["h0"][None], p["c0"][None]
        ys = []
        for x_t in steps:
            y_t, h, c = session.run(None, {"X": x_t, "initial_h": h, "initial_c": c})
            ys.append(y_t)
        out["r"] = ys, h, c

    def collect():
        ys, h, c = out["r"]
        return {"y": np.concatenate(ys)[:, 0], "h_n": h[0], "c_n": c[0]}

    return run, collect


_F32 = (np.float32,)
_PADDED = ("y", "h_n")  # a padded run has no cell state at each length

#: Every implementation, in table order.  ``baseline`` marks the PyTorch entry of each workload.
REGISTRY = [
    # inference: forward over a whole sequence
    Implementation("numba_lstm", "inference", _functional(numba_lstm)),
    Implementation("numba_lstm.jit.forward", "inference", _jit_forward, available=_jit_missing),
    Implementation("numpy reference", "inference", _functional(numba_lstm.reference)),
    Implementation("torch.nn.LSTM", "inference", _torch_inference, ("torch",), baseline=True),
    Implementation("onnxruntime LSTM", "inference", _onnx_inference, ("onnx", "onnxruntime"), _F32),
    # training: forward + backward
    Implementation("numba_lstm", "training", _functional_training(numba_lstm)),
    Implementation("numba_lstm.LSTM (layer)", "training", _layer_training),
    Implementation("numpy reference", "training", _functional_training(numba_lstm.reference)),
    Implementation("torch.nn.LSTM", "training", _torch_training, ("torch",), baseline=True),
    # streaming: one step at a time, B = 1
    Implementation(
        "numba_lstm LSTM.step (Python loop)", "streaming", _layer_step, available=_layer_step_missing
    ),
    Implementation("numba_lstm.jit.step_into (njit loop)", "streaming", _jit_stream, available=_jit_missing),
    Implementation("torch.nn.LSTMCell (Python loop)", "streaming", _torch_cell, ("torch",), baseline=True),
    Implementation(
        "onnxruntime LSTM (Python loop)", "streaming", _onnx_stream, ("onnx", "onnxruntime"), _F32
    ),
    # variable lengths: padded batch with per-sequence lengths
    Implementation("numba_lstm (lengths)", "lengths", _numba_lengths, available=_lengths_missing),
    Implementation("numba_lstm (padded)", "lengths", _numba_padded, outputs=_PADDED),
    Implementation("torch.nn.LSTM (padded)", "lengths", _torch_padded, ("torch",), outputs=_PADDED),
    Implementation("torch.nn.LSTM (packed)", "lengths", _torch_packed, ("torch",), baseline=True),
    Implementation(
        "onnxruntime LSTM (sequence_lens)",
        "lengths",
        functools.partial(_onnx_inference, with_lengths=True),
        ("onnx", "onnxruntime"),
        _F32,
    ),  # fmt: skip
]


def implementations(workload):
    """The registry's entries for one workload."""
    return [impl for impl in REGISTRY if impl.workload == workload]
