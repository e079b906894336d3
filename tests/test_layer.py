"""The LSTM layer object: parameters, initialisation, forward/backward plumbing."""

import copy
import pickle
import tracemalloc

import numpy as np
import pytest
from conftest import COPIES, as64, assert_close, make_problem

import numba_lstm
from numba_lstm import reference
from numba_lstm._panels import CACHE_LINE
from numba_lstm.layer import NotReadyError


def test_parameter_count_matches_keras_lstm2_on_4_features():
    layer = numba_lstm.LSTM(4, 2)
    assert layer.num_parameters == 56
    assert layer.W.shape == (6, 8) and layer.b.shape == (8,)
    assert layer.params["W_l0"] is layer.W


def test_seed_makes_initialisation_reproducible(dtype):
    a = numba_lstm.LSTM(3, 5, dtype=dtype, seed=42)
    b = numba_lstm.LSTM(3, 5, dtype=dtype, seed=42)
    c = numba_lstm.LSTM(3, 5, dtype=dtype, seed=43)
    np.testing.assert_array_equal(a.W, b.W)
    assert not np.array_equal(a.W, c.W)
    assert a.W.dtype == dtype and a.b.dtype == dtype
    bound = 1 / np.sqrt(5)
    assert np.all(np.abs(a.W) <= bound) and np.all(np.abs(a.b) <= bound)


def test_parameters_start_on_a_cache_line_when_built_copied_and_loaded(dtype, tmp_path):
    # The step reads W in place; NumPy starts large arrays 16 bytes past a
    # line, where LSTM.step ran 7-11% slower at H = 128 (bench/NOTES.md, "Session 19").
    layer = numba_lstm.LSTM(7, 13, num_layers=2, bidirectional=True, proj_size=5, dtype=dtype, seed=3)
    layer.save(tmp_path / "layer.npz")
    copied = numba_lstm.LSTM.from_params(layer.config, layer.params)
    loaded = numba_lstm.LSTM.load(tmp_path / "layer.npz")
    for built in (layer, copied, loaded):
        assert sorted(built.params) == sorted(layer.params)
        for name, value in built.params.items():
            assert value.ctypes.data % CACHE_LINE == 0, name
            assert value.flags.c_contiguous and value.flags.writeable and value.dtype == dtype, name
            np.testing.assert_array_equal(value, layer.params[name])


def test_layer_forward_backward_match_reference(dtype):
    T, B, I, H = 6, 3, 4, 5
    layer = numba_lstm.LSTM(I, H, dtype=dtype, seed=1)
    p = make_problem(T, B, I, H, dtype)
    y, (h_n, c_n) = layer(p["x"], (p["h0"][None], p["c0"][None]))
    assert h_n.shape == (1, B, H) and c_n.shape == (1, B, H)
    h_n, c_n = h_n[0], c_n[0]
    ref = as64({"x": p["x"], "W": layer.W, "b": layer.b, "h0": p["h0"], "c0": p["c0"]})
    ry, rh, rc, rcache = reference.lstm_forward(**ref)
    assert_close(y, ry, dtype, "y")
    assert_close(h_n, rh, dtype, "h_n")
    assert_close(c_n, rc, dtype, "c_n")
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    rg = reference.lstm_backward(dy.astype(np.float64), rcache)
    assert_close(dx, rg.dx, dtype, "dx")
    assert_close(layer.dW, rg.dW, dtype, "dW")
    assert_close(layer.db, rg.db, dtype, "db")
    assert_close(layer.grads["h0"][0], rg.dh0, dtype, "dh0")
    assert_close(layer.grads["c0"][0], rg.dc0, dtype, "dc0")
    assert set(layer.grads) >= set(layer.params)


def test_batch_first_is_a_transpose_of_time_major(dtype):
    layer = numba_lstm.LSTM(3, 4, dtype=dtype, seed=0)
    layer_bf = numba_lstm.LSTM(3, 4, batch_first=True, dtype=dtype, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(dtype)
    y, (h, c) = layer(x)
    y_bf, (h_bf, c_bf) = layer_bf(x.transpose(1, 0, 2))
    np.testing.assert_array_equal(y_bf, y.transpose(1, 0, 2))
    np.testing.assert_array_equal(h_bf, h)
    dx = layer.backward(np.ones_like(y))
    dx_bf = layer_bf.backward(np.ones_like(y_bf))
    np.testing.assert_array_equal(dx_bf, dx.transpose(1, 0, 2))


def test_a_forward_frees_the_last_forward_cache_before_it_makes_its_own():
    """A training loop holds one forward cache at a time, not two (at 2
    layers of H = 512, T = 200, B = 64, float32: a forward's peak 954 MB
    before, 543 MB now, bench/NOTES.md "Session 43").  Here the second
    forward's peak above what the layer held before it is at most half the
    first forward's cache (1.07 of it when the old cache stayed until the new
    one replaced it; now its arrays are the new cache's), and so is the
    third's, whose lengths give the cache other shapes: the old arrays that
    it cannot take are freed before it allocates."""
    T, B, I, H = 100, 32, 64, 64
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    numba_lstm.LSTM(I, H, num_layers=2, dtype=np.float32)(x, lengths=[T] * B)  # compiled before tracing
    tracemalloc.start()
    try:
        layer = numba_lstm.LSTM(I, H, num_layers=2, dtype=np.float32, seed=0)
        before = tracemalloc.get_traced_memory()[0]
        layer(x)
        cache_bytes = tracemalloc.get_traced_memory()[0] - before
        peaks = []
        for lengths in (None, [T - 10] * B):
            held = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            layer(x, lengths=lengths)
            peaks.append(tracemalloc.get_traced_memory()[1] - held)
    finally:
        tracemalloc.stop()
    assert cache_bytes > 10 * 2**20  # the activations of 2 layers, 100 steps (12.6 MB)
    assert max(peaks) < 0.5 * cache_bytes, (peaks, cache_bytes)


@pytest.mark.parametrize(
    "options",
    [
        dict(num_layers=2),
        dict(num_layers=2, bidirectional=True, proj_size=3),
        dict(num_layers=3, dropout=0.5, batch_first=True),
    ],
)
def test_a_forward_takes_the_last_caches_arrays_and_gives_the_same_bits(options, dtype):
    """Each forward writes its cache into the last forward's arrays of the
    same shape (no new pages to map and zero at each call of a training
    loop); a layer so reused gives the bits of a new layer at every call,
    through changes of T, B, lengths and cache=False in between."""
    I, H = 5, 6
    layer = numba_lstm.LSTM(I, H, dtype=dtype, seed=0, **options)
    rng = np.random.default_rng(1)
    calls = [(7, 4, None, True), (7, 4, None, True), (7, 4, [7, 3, 0, 5], True), (7, 4, None, False),
             (7, 4, None, True), (7, 4, None, True), (9, 2, None, True), (7, 4, None, True),
             (7, 4, None, True)]  # fmt: skip
    last_gates, reused = None, 0
    for T, B, lengths, cache in calls:
        shape = (B, T, I) if layer.batch_first else (T, B, I)
        x = rng.standard_normal(shape).astype(dtype)
        dy = rng.standard_normal((*shape[:2], layer.num_directions * layer.output_size)).astype(dtype)
        same = dict(batch_first=layer.batch_first, dropout=layer.dropout)
        fresh = numba_lstm.LSTM.from_params(layer.config, layer.params, **same)
        fresh._rng = copy.deepcopy(layer._rng)  # the same dropout masks
        x_before = x.copy()
        y, (h_n, c_n) = layer(x, lengths=lengths, cache=cache)
        want_y, (want_h, want_c) = fresh(x, lengths=lengths, cache=cache)
        np.testing.assert_array_equal(x, x_before)
        for got, want in ((y, want_y), (h_n, want_h), (c_n, want_c)):
            np.testing.assert_array_equal(got, want)
        if not cache:  # no cache kept: the next call's arrays are new
            last_gates = None
            continue
        np.testing.assert_array_equal(layer.backward(dy), fresh.backward(dy))
        for name, grad in fresh.grads.items():
            np.testing.assert_array_equal(layer.grads[name], grad, err_msg=name)
        # Each layer's gates in memory of the last call's (one layer's may be another's).
        gates = sorted((saved.gates.shape, saved.gates.ctypes.data) for saved in layer._caches[0])
        if last_gates is not None and [s for s, _ in gates] == [s for s, _ in last_gates]:
            assert gates == last_gates
            reused += 1
        last_gates = gates
    assert reused == 3  # the second call, and the second of each later pair of one shape


def test_a_forward_does_not_write_into_its_input_when_it_is_the_last_caches(dtype):
    """x here is the last forward's own y (reachable only through the
    layer's internals): the spare arrays leave out any that overlaps x or
    the state (``_SpareArrays``' own test checks that rule directly)."""
    T, B, H = 6, 3, 4
    layer = numba_lstm.LSTM(H, H, dtype=dtype, seed=0)
    layer(np.random.default_rng(0).standard_normal((T, B, H)).astype(dtype))
    x = layer._caches[0][0].y.reshape(T, B, H)
    x_before = x.copy()
    want, _ = numba_lstm.LSTM.from_params(layer.config, layer.params)(x_before)
    y, _ = layer(x)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(x, x_before)


def test_spare_arrays_hand_out_each_memory_once_and_none_of_the_inputs():
    from numba_lstm._panels import aligned_empty
    from numba_lstm.functional import _SpareArrays

    f32 = np.dtype(np.float32)
    a, b, c = (aligned_empty((8, 16), f32) for _ in range(3))
    unaligned = np.empty(8 * 16 + 1, f32)[1:].reshape(8, 16)  # 4 bytes past NumPy's 16-byte alignment
    # a twice (as m is y), a view of b (as a layer's x is the layer below's y),
    # c given as an input to avoid, an array not on a cache line.
    spare = _SpareArrays([a, a, b, b.reshape(16, 8), c, unaligned], avoid=(c[2:4],))
    taken = [spare.take((8, 16), f32) for _ in range(3)]
    assert {id(t) for t in taken[:2]} == {id(a), id(b)}
    assert not any(np.may_share_memory(taken[2], m) for m in (a, b, c, unaligned))  # a new one
    assert taken[2].ctypes.data % 64 == 0
    assert not np.may_share_memory(spare.take((16, 8), f32), b)  # b's view went with b
    assert spare.take((8, 16), np.dtype(np.float64)).dtype == np.float64


def test_a_forward_during_a_backward_leaves_that_backwards_cache_alone(monkeypatch, dtype):
    """Another thread's forward (here run between the backward's start and
    its products) writes its cache into new arrays while a backward reads
    the last cache; it would otherwise overwrite the activations being read."""
    T, B, I, H = 6, 3, 4, 5
    rng = np.random.default_rng(0)
    x, x_other = (rng.standard_normal((T, B, I)).astype(dtype) for _ in range(2))
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    layer = numba_lstm.LSTM(I, H, num_layers=2, dtype=dtype, seed=0)
    fresh = numba_lstm.LSTM.from_params(layer.config, layer.params)
    fresh(x)
    want = fresh.backward(dy)
    layer(x)
    compute_grads = numba_lstm.layer.lstm_backward
    forwards = []

    def another_forward_first(*args):
        if not forwards:
            forwards.append(layer(x_other))
        return compute_grads(*args)

    monkeypatch.setattr(numba_lstm.layer, "lstm_backward", another_forward_first)
    np.testing.assert_array_equal(layer.backward(dy), want)
    for name, grad in fresh.grads.items():
        np.testing.assert_array_equal(layer.grads[name], grad, err_msg=name)


def test_backward_refuses_after_a_forward_that_raised(monkeypatch, dtype):
    """A forward refused at its checks keeps the last forward's cache (it
    changed nothing); one that fails while it computes has dropped it, and
    backward then refuses, rather than take the last call's activations
    for this one's."""
    layer = numba_lstm.LSTM(3, 4, num_layers=2, dtype=dtype, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(dtype)
    y, _ = layer(x)
    dy = np.ones_like(y)
    dx = layer.backward(dy)
    with pytest.raises(ValueError, match="input_size"):
        layer(np.zeros((5, 2, 7), dtype))
    np.testing.assert_array_equal(layer.backward(dy), dx)

    compute_layer = numba_lstm.layer._forward
    calls = []

    def fail_in_the_second_layer(*args, **kwargs):
        calls.append(None)
        if len(calls) == 2:
            raise MemoryError("the second layer's cache")
        return compute_layer(*args, **kwargs)

    monkeypatch.setattr(numba_lstm.layer, "_forward", fail_in_the_second_layer)
    with pytest.raises(MemoryError):
        layer(x)
    with pytest.raises(NotReadyError, match="the last forward raised an error"):
        layer.backward(dy)
    monkeypatch.undo()
    layer(x)
    np.testing.assert_array_equal(layer.backward(dy), dx)


def test_backward_before_forward_is_an_error():
    with pytest.raises(ValueError, match="before forward"):
        numba_lstm.LSTM(2, 3).backward(np.zeros((1, 1, 3), np.float32))


def test_input_of_other_dtype_is_refused_not_cast():
    layer = numba_lstm.LSTM(2, 3, dtype=np.float32)
    with pytest.raises(TypeError, match="x has dtype float64"):
        layer(np.zeros((1, 1, 2)))


def test_wrong_feature_count_names_input_size():
    layer = numba_lstm.LSTM(2, 3)
    with pytest.raises(ValueError, match="input_size"):
        layer(np.zeros((1, 1, 5), np.float32))


def test_a_deep_copy_holds_its_parameters_on_cache_lines(dtype):
    """NumPy's own copies start 16 or 32 bytes off a cache line, and ``step``
    on such a copy took 10.8 against 7.6 us at H = 128 (bench/NOTES.md,
    "Session 44"): a deep copy's parameters start on a line, as the
    constructor's do, with the same values in memory of their own."""
    layer = numba_lstm.LSTM(5, 7, num_layers=2, bidirectional=True, proj_size=3, dtype=dtype, seed=0)
    copied = copy.deepcopy(layer)
    assert copied.params.keys() == layer.params.keys()
    for name, param in layer.params.items():
        new = copied.params[name]
        assert new.ctypes.data % CACHE_LINE == 0, name
        assert new.dtype == param.dtype and new.flags.c_contiguous and new.flags.writeable, name
        assert not np.shares_memory(new, param), name
        np.testing.assert_array_equal(new, param, err_msg=name)


def test_a_deep_copy_leaves_a_parameter_of_another_dtype_to_numpy():
    """A parameter replaced by a big-endian array (which forward refuses by
    name) went through numba_lstm's jitted allocator and raised a Numba
    error from deepcopy; NumPy copies it as it is."""
    layer = numba_lstm.LSTM(2, 3, seed=0)
    layer.params["W_l0"] = layer.params["W_l0"].astype(">f4")
    copied = copy.deepcopy(layer)
    assert copied.params["W_l0"].dtype == np.dtype(">f4")
    np.testing.assert_array_equal(copied.params["W_l0"], layer.params["W_l0"])


@pytest.mark.parametrize("layer_first", [True, False])
def test_a_deep_copy_with_its_optimizer_updates_the_copys_parameters(layer_first):
    """A layer and its optimizer copied in one ``deepcopy`` call stay linked:
    the copied optimizer updates the copied layer's arrays, whichever of the
    two is copied first, and leaves the original's alone."""
    layer = numba_lstm.LSTM(3, 4, seed=0)
    opt = numba_lstm.optim.SGD(layer.params, lr=0.5)
    before = {name: param.copy() for name, param in layer.params.items()}
    if layer_first:
        new_layer, new_opt = copy.deepcopy((layer, opt))
    else:
        new_opt, new_layer = copy.deepcopy((opt, layer))
    grads = {name: np.ones_like(param) for name, param in layer.params.items()}
    new_opt.step(grads)
    for name, param in new_layer.params.items():
        assert param is new_opt.params[name], name
        np.testing.assert_array_equal(param, before[name] - 0.5, err_msg=name)
        np.testing.assert_array_equal(layer.params[name], before[name], err_msg=name)
    if layer_first:  # copied by the layer: on a cache line
        assert all(p.ctypes.data % CACHE_LINE == 0 for p in new_layer.params.values())


def test_a_deep_copy_of_a_subclass_keeps_its_type_and_attributes():
    class Tagged(numba_lstm.LSTM):
        pass

    layer = Tagged(3, 4, seed=0)
    layer.tags = ["a", ["b"]]
    copied = copy.deepcopy(layer)
    assert type(copied) is Tagged
    assert copied.tags == layer.tags and copied.tags[1] is not layer.tags[1]


@pytest.mark.parametrize("how", COPIES)
def test_a_copy_keeps_the_parameters_and_gradients_but_not_the_forward_cache(how, dtype):
    """A copy (a layer sent to a worker process goes through pickle) holds no
    activations: after a forward and backward of T = 50, B = 32, the pickle
    was 58 times the parameters' size, 3.4 MB in float32 (its cache); it is
    now 135 KB, the parameters and gradients.  The copy raises NotReadyError
    naming the copy until it runs a forward of its own; the original still
    backpropagates, and the copy's forward and backward give its bits."""
    layer = numba_lstm.LSTM(16, 32, num_layers=2, dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 32, 16)).astype(dtype)
    dy = rng.standard_normal((50, 32, 32)).astype(dtype)
    y, _ = layer.forward(x)
    layer.backward(dy)
    param_bytes = sum(p.nbytes for p in layer.params.values())
    grad_bytes = sum(g.nbytes for g in layer.grads.values())
    assert len(pickle.dumps(layer)) < param_bytes + grad_bytes + 20_000
    copied = COPIES[how](layer)
    assert copied.grads.keys() == layer.grads.keys()
    with pytest.raises(NotReadyError, match=r"this layer is a copy .* run layer.forward\(x\) on it"):
        copied.backward(dy)
    dx = layer.backward(dy)  # the original keeps its cache
    y_copy, _ = copied.forward(x)
    np.testing.assert_array_equal(y_copy, y)
    np.testing.assert_array_equal(copied.backward(dy), dx)
    for name, grad in layer.grads.items():
        np.testing.assert_array_equal(copied.grads[name], grad, err_msg=name)


@pytest.mark.parametrize(
    ("name", "value", "error", "message"),
    [
        ("dropout", 1.5, ValueError, r"layer.dropout must be in \[0, 1\), got 1.5"),
        ("dropout", 1.0, ValueError, r"layer.dropout must be in \[0, 1\), got 1.0"),
        ("dropout", None, TypeError, r"layer.dropout must be a number in \[0, 1\), got None"),
        ("batch_first", 1, TypeError, r"layer.batch_first must be True or False, got 1"),
    ],
)  # fmt: skip
def test_options_set_on_a_layer_are_checked_at_each_call(name, value, error, message):
    """The constructor refused dropout=1.5, but the attribute set afterwards
    was used as it was: the kept values scaled by 1 / (1 - 1.5) = -2."""
    layer = numba_lstm.LSTM(3, 4, num_layers=2, seed=0)
    x = np.ones((5, 2, 3), np.float32)
    layer(x)
    setattr(layer, name, value)
    with pytest.raises(error, match=message):
        layer(x)
    with pytest.raises(error, match=message):  # on the cache of the forward before
        layer.backward(np.ones((5, 2, 4), np.float32))


@pytest.mark.parametrize("proj_size", [0, 2])
def test_the_state_returned_is_a_plain_array_whatever_the_state_given(proj_size, tmp_path):
    """h_n and c_n were made with np.empty_like(h0): an np.memmap state gave
    back file-less memmaps (the projected step's new state too)."""
    layer = numba_lstm.LSTM(3, 4, proj_size=proj_size, seed=0).eval()
    shapes = {"h": (1, 2, proj_size or 4), "c": (1, 2, 4)}
    h0, c0 = (np.memmap(tmp_path / k, np.float32, "w+", shape=shape) for k, shape in shapes.items())
    y, state = layer(np.ones((5, 2, 3), np.float32), (h0, c0))
    y_t, step_state = layer.step(np.ones((2, 3), np.float32), (h0, c0))
    assert [type(a) for a in (y, *state, y_t, *step_state)] == [np.ndarray] * 6
