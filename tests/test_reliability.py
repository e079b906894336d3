"""Reliability guarantees of issue 7 (beyond bad input, save/load and properties).

Edge sizes, non-contiguous and read-only inputs, inputs never modified, NaN/Inf
propagation, saturation without floating-point errors, a long float32
sequence, determinism (in process, across processes, across BLAS thread
counts), concurrent calls from threads and a forked child.
"""

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from conftest import TOLERANCE, as64, assert_close, make_problem

import numba_lstm
from numba_lstm import _kernels, jit, reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _same(a, b, name=""):
    """Bit-identical (NaN payloads and signed zeros included)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, f"{name}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
    assert a.tobytes() == b.tobytes(), f"{name}: arrays differ"


def _check_against_reference(p, dtype, lengths=None, reverse=False, W_hr=None, dy_seed=1):
    y, h_n, c_n, cache = numba_lstm.lstm_forward(**p, W_hr=W_hr, lengths=lengths, reverse=reverse)
    q = as64(p)
    W_hr64 = None if W_hr is None else W_hr.astype(np.float64)
    ry, rh, rc, rcache = reference.lstm_forward(**q, W_hr=W_hr64, lengths=lengths, reverse=reverse)
    for got, ref, name in ((y, ry, "y"), (h_n, rh, "h_n"), (c_n, rc, "c_n")):
        assert_close(got, ref, dtype, name)
    dy = np.random.default_rng(dy_seed).standard_normal(y.shape).astype(dtype)
    g = numba_lstm.lstm_backward(dy, cache, h_n, c_n)
    r = reference.lstm_backward(dy.astype(np.float64), rcache, rh, rc)
    for name in g._fields:
        assert_close(getattr(g, name), getattr(r, name), dtype, name)
    return y, g


# --- edge sizes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("T", "B", "I", "H"),
    [(0, 3, 2, 4), (4, 0, 2, 4), (0, 0, 2, 4), (5, 3, 2, 1), (5, 3, 1, 4), (1, 1, 1, 1)],
)
def test_functional_edge_sizes_match_reference(dtype, T, B, I, H):
    p = make_problem(T, B, I, H, dtype, seed=T + B + I + H)
    y, g = _check_against_reference(p, dtype)
    assert y.shape == (T, B, H) and g.dx.shape == (T, B, I)
    if T == 0:
        y, h_n, c_n, _ = numba_lstm.lstm_forward(**p)
        _same(h_n, p["h0"]), _same(c_n, p["c0"])


@pytest.mark.parametrize("reverse", [False, True])
def test_functional_zero_lengths_match_reference(dtype, reverse):
    p = make_problem(4, 4, 2, 3, dtype, seed=5)
    W_hr = (np.random.default_rng(2).standard_normal((3, 2)) * 0.5).astype(dtype)
    p["h0"] = p["h0"][:, :2].copy()
    p["W"] = p["W"][:4].copy()  # (I + P, 4H) with P = 2
    lengths = np.array([0, 4, 0, 2])
    y, g = _check_against_reference(p, dtype, lengths=lengths, reverse=reverse, W_hr=W_hr)
    assert not y[:, [0, 2]].any() and not g.dx[:, [0, 2]].any()
    all_zero = np.zeros(4, np.int64)
    y, h_n, c_n, cache = numba_lstm.lstm_forward(**p, W_hr=W_hr, lengths=all_zero, reverse=reverse)
    _same(h_n, p["h0"]), _same(c_n, p["c0"])
    assert y.shape == (4, 4, 2) and not y.any()
    g = numba_lstm.lstm_backward(np.ones_like(y), cache, p["h0"], p["c0"])
    _same(g.dh0, p["h0"]), _same(g.dc0, p["c0"])
    assert not g.dW.any() and not g.db.any() and not g.dW_hr.any()


LAYER_CONFIGS = [
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, bidirectional=True, proj_size=1),
    dict(num_layers=2),
]


def _layer_reference(layer, x, lengths, h0=None, c0=None):
    """The layer's forward recomputed per layer and direction with reference.lstm_forward."""
    D, L = layer.num_directions, layer.num_layers
    P, H = layer.output_size, layer.hidden_size
    T, B = x.shape[:2]
    h0 = np.zeros((L * D, B, P)) if h0 is None else h0.astype(np.float64)
    c0 = np.zeros((L * D, B, H)) if c0 is None else c0.astype(np.float64)
    inp = x.astype(np.float64)
    h_n, c_n = np.zeros_like(h0), np.zeros_like(c0)
    for k in range(L):
        outs = []
        for d, suffix in enumerate(("", "_reverse")[:D]):
            W = layer.params[f"W_l{k}{suffix}"].astype(np.float64)
            b = layer.params[f"b_l{k}{suffix}"].astype(np.float64)
            W_hr = layer.params.get(f"W_hr_l{k}{suffix}")
            W_hr = None if W_hr is None else W_hr.astype(np.float64)
            i = k * D + d
            y, h_n[i], c_n[i], _ = reference.lstm_forward(
                inp, W, b, h0[i], c0[i], W_hr=W_hr, lengths=lengths, reverse=d == 1
            )
            outs.append(y)
        inp = np.concatenate(outs, axis=2)
    return inp, h_n, c_n


@pytest.mark.parametrize("config", LAYER_CONFIGS, ids=["bidir2", "bidir3-proj1", "stack2"])
@pytest.mark.parametrize(
    ("T", "B", "I", "H", "lengths"),
    [
        (0, 2, 3, 2, None),
        (3, 0, 3, 2, None),
        (4, 3, 1, 2, None),
        (4, 3, 2, 2, [0, 4, 1]),
        (3, 2, 1, 2, [0, 0]),
    ],
)
def test_layer_edge_sizes(dtype, config, T, B, I, H, lengths):
    if config.get("proj_size", 0) >= H:
        H = config["proj_size"] + 1
    layer = numba_lstm.LSTM(I, H, **config, dtype=dtype, seed=0).eval()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    LD, P = layer.num_layers * layer.num_directions, layer.output_size
    h0 = rng.standard_normal((LD, B, P)).astype(dtype)
    c0 = rng.standard_normal((LD, B, H)).astype(dtype)
    lengths = None if lengths is None else np.array(lengths)
    y, (h_n, c_n) = layer(x, (h0, c0), lengths)
    ry, rh, rc = _layer_reference(layer, x, lengths, h0, c0)
    assert_close(y, ry, dtype, "y"), assert_close(h_n, rh, dtype, "h_n"), assert_close(c_n, rc, dtype, "c_n")
    if T == 0 or (lengths is not None and not lengths.any()):
        _same(h_n, h0), _same(c_n, c0)  # T = 0 / all lengths 0: the initial state itself
    dx = layer.backward(np.ones_like(y), np.ones_like(h_n), np.ones_like(c_n))
    assert dx.shape == x.shape and np.isfinite(dx).all()
    assert all(np.isfinite(v).all() for v in layer.grads.values())
    if T == 0 or B == 0:
        assert not any(layer.grads[k].any() for k in layer.params)


def test_jit_edge_sizes():
    for T, B in ((0, 2), (3, 0), (0, 0)):
        p = make_problem(T, B, 2, 3, np.float64)
        y, h_n, c_n = jit.forward(p["x"], p["W"], p["b"], p["h0"], p["c0"])
        assert y.shape == (T, B, 3)
        ry, rh, rc, _ = reference.lstm_forward(**p)
        np.testing.assert_allclose(h_n, rh, atol=1e-12), np.testing.assert_allclose(c_n, rc, atol=1e-12)
    p = make_problem(4, 1, 1, 1, np.float32)
    y, h_n, c_n = jit.forward(p["x"], p["W"], p["b"], p["h0"], p["c0"])
    assert_close(y, reference.lstm_forward(**as64(p))[0], np.float32, "y")


# --- layout and immutability --------------------------------------------------------


def _strided(a):
    """The same values in a non-contiguous, read-only view with negative strides."""
    if a.ndim == 0 or a.size == 0:
        return a
    big = np.repeat(a[..., ::-1], 2, axis=-1)[..., ::-2]
    big.setflags(write=False)
    assert np.array_equal(big, a) and (a.ndim == 1 or not big.flags.c_contiguous) and not big.flags.writeable
    return big


@pytest.mark.parametrize("config", [dict(), dict(num_layers=2, bidirectional=True, proj_size=2)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_layer_strided_read_only_inputs_same_results_and_nothing_modified(dtype, config, batch_first):
    def run(layer, x, state, lengths, dy, dh, dc):
        y, (h_n, c_n) = layer(x, state, lengths)
        dx = layer.backward(dy, dh, dc)
        return [y, h_n, c_n, dx] + [layer.grads[k] for k in sorted(layer.grads)]

    layer = numba_lstm.LSTM(3, 4, **config, batch_first=batch_first, dtype=dtype, seed=0).eval()
    rng = np.random.default_rng(0)
    LD, P = layer.num_layers * layer.num_directions, layer.output_size
    shape = (2, 5, 3) if batch_first else (5, 2, 3)
    args = dict(
        x=rng.standard_normal(shape).astype(dtype),
        state=(rng.standard_normal((LD, 2, P)).astype(dtype), rng.standard_normal((LD, 2, 4)).astype(dtype)),
        lengths=np.array([5, 3]),
        dy=rng.standard_normal(shape[:2] + (P * layer.num_directions,)).astype(dtype),
        dh=rng.standard_normal((LD, 2, P)).astype(dtype),
        dc=rng.standard_normal((LD, 2, 4)).astype(dtype),
    )
    params_before = {k: v.copy() for k, v in layer.params.items()}
    flat_before = [
        a.copy() for a in (args["x"], *args["state"], args["lengths"], args["dy"], args["dh"], args["dc"])
    ]
    expected = run(layer, **args)
    flat_after = [args["x"], *args["state"], args["lengths"], args["dy"], args["dh"], args["dc"]]
    for before, after in zip(flat_before, flat_after, strict=True):
        _same(before, after, "input modified")
    for k, v in params_before.items():
        _same(layer.params[k], v, f"param {k} modified")

    strided = {k: (tuple(map(_strided, v)) if isinstance(v, tuple) else _strided(v)) for k, v in args.items()}
    layer.params = {k: _strided(v) for k, v in layer.params.items()}  # read-only, strided weights too
    got = run(layer, **strided)
    for e, g in zip(expected, got, strict=True):
        _same(g, e, "strided/read-only result")


def test_layer_step_strided_read_only_and_unmodified(dtype):
    layer = numba_lstm.LSTM(3, 4, num_layers=2, dtype=dtype, seed=0).eval()
    rng = np.random.default_rng(0)
    x_t = rng.standard_normal((2, 3)).astype(dtype)
    state = (rng.standard_normal((2, 2, 4)).astype(dtype), rng.standard_normal((2, 2, 4)).astype(dtype))
    before = [x_t.copy(), state[0].copy(), state[1].copy()]
    params = {k: v.copy() for k, v in layer.params.items()}
    y, (h, c) = layer.step(x_t, state)
    for a, b in zip(before, [x_t, *state], strict=True):
        _same(a, b)
    for k, v in params.items():
        _same(layer.params[k], v)
    y2, (h2, c2) = layer.step(_strided(x_t), (_strided(state[0]), _strided(state[1])))
    _same(y2, y), _same(h2, h), _same(c2, c)


def test_functional_with_lengths_projection_and_reverse_modifies_nothing(dtype):
    p = make_problem(5, 3, 2, 4, dtype)
    p["W_hr"] = (np.random.default_rng(1).standard_normal((4, 3)) * 0.5).astype(dtype)
    p["h0"] = p["h0"][:, :3].copy()
    p["W"] = p["W"][:5].copy()  # (I + P, 4H) with P = 3
    p["lengths"] = np.array([5, 0, 2])
    before = {k: v.copy() for k, v in p.items()}
    y, h_n, c_n, cache = numba_lstm.lstm_forward(**p, reverse=True)
    dy = np.ones_like(y)
    dh, dc = h_n.copy(), c_n.copy()
    y_saved = y.copy()
    numba_lstm.lstm_backward(dy, cache, dh, dc)
    for k, v in p.items():
        _same(v, before[k], k)
    _same(dy, np.ones_like(y)), _same(dh, h_n), _same(dc, c_n), _same(y, y_saved)
    strided = {k: _strided(v) for k, v in p.items()}
    y2 = numba_lstm.lstm_forward(**strided, reverse=True)[0]
    _same(y2, y)


def _changed_in_place(arrays):
    for a in arrays:
        a *= 0.5
        a += 0.25


@pytest.mark.parametrize("projection", [False, True])
def test_functional_gradients_are_the_forwards_after_inputs_and_y_change_in_place(dtype, projection):
    """The cache holds arrays of its own: x, h0, c0, W, W_hr and the returned
    y changed in place between forward and backward (a reused input buffer,
    ``y *= mask``) leave the gradients those of the forward.  Before, the
    cache referred to x, h0, c0 and the weights, and y was its own array:
    the gradients changed.  No lengths: the case where x and y are not
    reordered copies anyway."""
    p = make_problem(5, 3, 4, 6, dtype)
    if projection:
        p["W_hr"] = (np.random.default_rng(1).standard_normal((6, 4)) * 0.5).astype(dtype)
        p["h0"] = p["h0"][:, :4].copy()
        p["W"] = p["W"][:8].copy()  # (I + P, 4H) with P = 4
    y, h_n, c_n, cache = numba_lstm.lstm_forward(**{k: v.copy() for k, v in p.items()})
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
    expected = numba_lstm.lstm_backward(dy, cache, h_n, c_n)
    y, h_n, c_n, cache = numba_lstm.lstm_forward(**p)
    _changed_in_place([y, *p.values()])
    got = numba_lstm.lstm_backward(dy, cache, h_n, c_n)
    for name, g, e in zip(got._fields, got, expected, strict=True):
        _same(g, e, name)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("T, B", [(5, 3), (5, 1), (1, 3)])
def test_layer_gradients_are_the_forwards_after_x_and_y_change_in_place(
    dtype, bidirectional, batch_first, T, B
):
    """One sequence or one step: a batch_first x is then time-major as it is
    (its transpose is a view), and the cache kept the caller's array."""
    layer = numba_lstm.LSTM(
        4, 6, num_layers=2, bidirectional=bidirectional, batch_first=batch_first, dtype=dtype, seed=0
    )
    x = make_problem(T, B, 4, 6, dtype)["x"]
    x = x.transpose(1, 0, 2).copy() if batch_first else x
    rng = np.random.default_rng(2)
    D = 2 if bidirectional else 1
    state = tuple(rng.standard_normal((2 * D, B, 6)).astype(dtype) for _ in range(2))
    dy = rng.standard_normal(x.shape[:2] + (D * 6,)).astype(dtype)
    layer(x.copy(), tuple(s.copy() for s in state))
    expected = layer.backward(dy), dict(layer.grads)
    y, (h_n, c_n) = layer(x, state)
    _changed_in_place([x, y, h_n, c_n, *state])
    got = layer.backward(dy), layer.grads
    _same(got[0], expected[0], "dx")
    for name in expected[1]:
        _same(got[1][name], expected[1][name], name)


@pytest.mark.parametrize("batch_first", [False, True])
def test_stacked_layer_caches_inner_outputs_without_copies(dtype, batch_first):
    """A layer's output is the next layer's input, and the stack never changes
    either: the caches keep one array for both (before, each inner output was
    copied twice).  The caller's x and the returned y stay apart from every
    cache (the test above checks what that protects)."""
    layer = numba_lstm.LSTM(4, 6, num_layers=3, batch_first=batch_first, dtype=dtype, seed=0)
    x = make_problem(5, 3, 4, 6, dtype)["x"]
    y, _ = layer(x)
    caches = layer._caches[0]
    for k in range(2):
        assert np.shares_memory(caches[k].y, caches[k + 1].x), (
            f"layer {k}'s y was copied as layer {k + 1}'s x"
        )
    for k, saved in enumerate(caches):
        assert not np.shares_memory(x, saved.x), f"layer {k}'s cache keeps the caller's x"
        assert not np.shares_memory(y, saved.y), f"layer {k}'s cache keeps the returned y"


def test_backward_refuses_a_cache_whose_arrays_do_not_fit(dtype):
    # The kernels index the cache's arrays by the shapes of its packing: an
    # edited cache (LSTMCache is a NamedTuple) must not reach them.
    p = make_problem(4, 3, 5, 6, dtype)
    y, _, _, cache = numba_lstm.lstm_forward(**p)
    H = 6
    with pytest.raises(ValueError, match=r"cache is not one that lstm_forward returned: x, gates do not fit"):
        numba_lstm.lstm_backward(
            y, cache._replace(gates=np.zeros((1, 4 * H), dtype), x=np.zeros((1, 5), dtype))
        )
    with pytest.raises(ValueError, match=r"cache is not one .*: its arrays differ in kind, dtype or rank"):
        numba_lstm.lstm_backward(y, cache._replace(c=cache.c.astype(np.float16)))
    p["lengths"] = np.array([4, 1, 3])
    y, _, _, cache = numba_lstm.lstm_forward(**p)
    past = cache.packing.packed_row.copy()
    past[0, 0] = 8  # N = 8 rows: a write past the packed arrays
    with pytest.raises(
        ValueError, match=r"packing.packed_row do not fit its packing \(T = 4, B = 3, N = 8 rows\)"
    ):
        numba_lstm.lstm_backward(y, cache._replace(packing=cache.packing._replace(packed_row=past)))
    twice = np.zeros_like(cache.packing.order)  # row 0 three times: rows 1 and 2 left unwritten
    with pytest.raises(ValueError, match=r"packing.order do not fit"):
        numba_lstm.lstm_backward(y, cache._replace(packing=cache.packing._replace(order=twice)))
    y, _, _, cache = numba_lstm.lstm_forward(**{k: v for k, v in p.items() if k != "lengths"})
    short = cache.packing._replace(batch_sizes=cache.packing.batch_sizes[:-1])
    with pytest.raises(
        ValueError, match=r"packing.batch_sizes do not fit its packing \(T = 4, B = 3, N = 12 rows\)"
    ):
        numba_lstm.lstm_backward(y, cache._replace(packing=short))
    # Steps of growing rows gave wrong gradients; float sizes a Numba TypingError.
    p["lengths"] = np.array([4, 1, 3])
    y, _, _, cache = numba_lstm.lstm_forward(**p)
    sizes = cache.packing.batch_sizes
    for edited in (sizes[::-1].copy(), sizes.astype(np.float64), list(sizes)):
        with pytest.raises(ValueError, match=r"packing.batch_sizes do not fit"):
            numba_lstm.lstm_backward(y, cache._replace(packing=cache.packing._replace(batch_sizes=edited)))
    # Float index arrays reached NumPy's indexing or a Numba TypingError; a list, an AttributeError.
    for field in ("packed_row", "order"):
        index = getattr(cache.packing, field)
        for edited in (index.astype(np.float64), index.tolist()):
            with pytest.raises(ValueError, match=rf"packing.{field} do not fit"):
                numba_lstm.lstm_backward(y, cache._replace(packing=cache.packing._replace(**{field: edited})))


# --- NaN and Inf propagation ------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_functional_nan_inf_stays_in_its_sequence_and_after_its_step(dtype, bad):
    T, B, t0 = 6, 3, 2
    p = make_problem(T, B, 2, 4, dtype, seed=7)
    clean_y, clean_h, clean_c, clean_cache = numba_lstm.lstm_forward(**p)
    dy = np.random.default_rng(3).standard_normal(clean_y.shape).astype(dtype)
    clean_g = numba_lstm.lstm_backward(dy, clean_cache)
    p["x"] = p["x"].copy()
    p["x"][t0, 0, 1] = bad
    with np.errstate(all="ignore"):
        y, h_n, c_n, cache = numba_lstm.lstm_forward(**p)
        g = numba_lstm.lstm_backward(dy, cache)
    _same(y[:t0], clean_y[:t0], "steps before the bad value")
    _same(y[:, 1:], clean_y[:, 1:], "other sequences (forward)")
    _same(h_n[1:], clean_h[1:]), _same(c_n[1:], clean_c[1:])
    _same(g.dx[:, 1:], clean_g.dx[:, 1:], "other sequences (dx)")
    _same(g.dh0[1:], clean_g.dh0[1:]), _same(g.dc0[1:], clean_g.dc0[1:])
    if np.isnan(bad):
        assert np.isnan(y[t0:, 0]).all() and np.isnan(h_n[0]).all() and np.isnan(c_n[0]).all()
        assert np.isnan(g.dx[:, 0]).all() and np.isnan(g.dW).any() and np.isnan(g.db).all()
    else:
        # An infinite input saturates the gates of that step; what follows is determined.
        assert not np.array_equal(y[t0, 0], clean_y[t0, 0])


def test_functional_nan_in_padding_or_other_state_row_is_ignored(dtype):
    p = make_problem(5, 2, 3, 4, dtype, seed=2)
    lengths = np.array([5, 2])
    y0, h0_, c0_, cache0 = numba_lstm.lstm_forward(**p, lengths=lengths)
    p["x"] = p["x"].copy()
    p["x"][2:, 1] = np.nan  # past sequence 1's length: never read
    y, h_n, c_n, cache = numba_lstm.lstm_forward(**p, lengths=lengths)
    _same(y, y0), _same(h_n, h0_), _same(c_n, c0_)
    dy = np.full(y.shape, np.nan, dtype)  # dy past each length is ignored
    dy[:5, 0], dy[:2, 1] = 1, 1
    g = numba_lstm.lstm_backward(dy, cache)
    assert all(np.isfinite(getattr(g, f)).all() for f in g._fields)
    p["h0"] = p["h0"].copy()
    p["h0"][0, 0] = np.nan
    y, h_n, _, _ = numba_lstm.lstm_forward(**p, lengths=lengths)
    assert np.isnan(y[:, 0]).all()
    _same(y[:, 1], y0[:, 1]), _same(h_n[1], h0_[1])


def test_layer_bidirectional_nan_reaches_only_dependent_outputs(dtype):
    T, B, t0 = 6, 2, 2
    layer = numba_lstm.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=dtype, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((T, B, 3)).astype(dtype)
    clean, _ = layer(x)
    x[t0, 0, 0] = np.nan
    y, (h_n, c_n) = layer(x)
    _same(y[:, 1], clean[:, 1], "sequence 1")
    # Layer 0 forward direction sees steps >= t0, reverse steps <= t0; layer 1
    # mixes both directions, so every output of sequence 0 depends on it.
    assert np.isnan(y[:, 0]).all()
    single = numba_lstm.LSTM(3, 4, num_layers=2, dtype=dtype, seed=0).eval()
    clean, _ = single(np.nan_to_num(x, nan=0.5))
    y, _ = single(x)
    _same(y[:t0, 0], clean[:t0, 0]), _same(y[:, 1], clean[:, 1])
    assert np.isnan(y[t0:, 0]).all()


# --- numerics ---------------------------------------------------------------------


def _saturating_problem(dtype, sign_seed=0):
    """Pre-activations of magnitude at least 1e4 - 1 for every gate of every step."""
    T, B, I, H = 5, 3, 1, 4
    rng = np.random.default_rng(sign_seed)
    x = rng.choice([-1.0, 1.0], (T, B, I)).astype(dtype)
    W = np.empty((I + H, 4 * H), dtype)
    W[:I] = rng.choice([-1e4, 1e4], (I, 4 * H))
    W[I:] = rng.uniform(-0.1, 0.1, (H, 4 * H))  # |h| <= 1, so |h @ W_h| <= 0.4
    b = rng.uniform(-0.5, 0.5, 4 * H).astype(dtype)
    h0 = rng.uniform(-1, 1, (B, H)).astype(dtype)
    c0 = rng.uniform(-3, 3, (B, H)).astype(dtype)
    return dict(x=x, W=W, b=b, h0=h0, c0=c0)


def _saturated_run(dtype, seed):
    """``_saturating_problem`` through lstm_forward and lstm_backward, and the
    float64 reference forward and backward, with every floating-point warning
    raised as an error."""
    p = _saturating_problem(dtype, seed)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        y, h_n, c_n, cache = numba_lstm.lstm_forward(**p)
        dy = np.random.default_rng(seed).standard_normal(y.shape).astype(dtype)
        g = numba_lstm.lstm_backward(dy, cache, h_n, c_n)
        ry, rh, rc, rcache = reference.lstm_forward(**as64(p))
        rg = reference.lstm_backward(dy.astype(np.float64), rcache, rh, rc)
    return y, c_n, cache, g, ry, rc, rg


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_huge_preactivations_saturate_without_fp_errors(dtype, seed):
    y, c_n, cache, g, ry, rc, _ = _saturated_run(dtype, seed)
    H = 4
    gates = cache.gates
    # Saturation: sigmoid gates exactly 0 or 1, tanh(g) exactly +-1, in both
    # dtypes (so it was before session 36 too; the float32 check was held to
    # the tanh approximation's 1e-6 all the same).
    for k in (0, 1, 3):
        gate = gates[:, k * H : (k + 1) * H]
        assert ((gate == 0) | (gate == 1)).all()
    assert (np.abs(gates[:, 2 * H : 3 * H]) == 1).all()
    assert_close(y, ry, dtype, "y"), assert_close(c_n, rc, dtype, "c_n")
    for name in g._fields:
        assert np.isfinite(getattr(g, name)).all(), name


@pytest.mark.parametrize(
    "dtype",
    [
        np.float32,
        np.float64,
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_huge_preactivations_gradients_match_reference(dtype, seed):
    """With saturated gates the gate derivatives vanish: gradients equal the exact ones."""
    _, _, _, g, _, _, rg = _saturated_run(dtype, seed)
    for name in g._fields:
        assert_close(getattr(g, name), getattr(rg, name), dtype, name)


def test_huge_preactivations_through_the_layer(dtype):
    layer = numba_lstm.LSTM(2, 3, num_layers=2, bidirectional=True, proj_size=2, dtype=dtype, seed=0)
    for v in layer.params.values():
        v *= dtype(1e4) * np.sqrt(3)  # uniform(+-1/sqrt(H)) -> entries up to 1e4
    x = np.random.default_rng(0).choice([-1.0, 1.0], (6, 2, 2)).astype(dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        y, (h_n, c_n) = layer.eval()(x)
        dx = layer.backward(np.ones_like(y), np.ones_like(h_n), np.ones_like(c_n))
    for a in (y, h_n, c_n, dx, *layer.grads.values()):
        assert np.isfinite(a).all()


def test_long_float32_sequence_stays_close_to_float64():
    """T = 10 000 in float32 against the float64 kernel on the same inputs.

    A forget gate below 1 makes the recurrence contracting, so rounding errors
    of past steps decay instead of adding up: the error must stay at the level
    of one step's float32 error (the float32 tanh approximation has absolute
    error below 1e-6, tests/test_math.py), not grow like T.  Linear growth of a
    1e-7 per-step error would reach 1e-3 here.  Bound for y, h_n, c_n: 2e-6
    absolute (|y| < 1).  Gradients sum over all 10 000 steps (dW, db are float32
    sums of 20 000 terms), so they are held to the project's float32 tolerance
    relative to their magnitude (conftest.TOLERANCE, 1e-5).
    """
    T, B, I, H = 10_000, 2, 3, 8
    p = make_problem(T, B, I, H, np.float32, seed=11)
    y, h_n, c_n, cache = numba_lstm.lstm_forward(**p)
    y64, h64, c64, cache64 = numba_lstm.lstm_forward(**as64(p))
    err = np.abs(y - y64)
    assert err.max() <= 2e-6, err.max()
    assert np.abs(h_n - h64).max() <= 2e-6 and np.abs(c_n - c64).max() <= 2e-6
    # No drift: the last 1000 steps are no worse than 4x the first 1000.
    assert err[-1000:].max() <= 4 * err[:1000].max() + 1e-7
    dy = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    g = numba_lstm.lstm_backward(dy, cache)
    g64 = numba_lstm.lstm_backward(dy.astype(np.float64), cache64)
    assert TOLERANCE[np.float32] == 1e-5
    for name in g._fields:
        assert_close(getattr(g, name), getattr(g64, name), np.float32, name)


# --- determinism ----------------------------------------------------------------

_DIGEST_SCRIPT = r"""
import hashlib, json, sys
import numpy as np
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
import numba_lstm
from conftest import make_problem
def digest(dtype):
    p = make_problem(12, 48, 64, 96, dtype, seed=3)
    y, h_n, c_n, cache = numba_lstm.lstm_forward(**p, lengths=np.arange(48) % 13)
    dy = np.random.default_rng(4).standard_normal(y.shape).astype(dtype)
    g = numba_lstm.lstm_backward(dy, cache, h_n, c_n)
    layer = numba_lstm.LSTM(64, 32, num_layers=2, bidirectional=True, dropout=0.3, dtype=dtype, seed=5)
    ly, (lh, lc) = layer(p["x"])
    ldx = layer.backward(np.ones_like(ly))
    parts = [y, h_n, c_n, *g, ly, lh, lc, ldx, *(layer.grads[k] for k in sorted(layer.grads))]
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in parts)).hexdigest()
out = {{"float32": digest(np.float32), "float64": digest(np.float64)}}
try:
    import threadpoolctl
    out["blas_threads"] = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
except ImportError:
    out["blas_threads"] = None
print(json.dumps(out))
"""


def _digests_in_subprocess(threads):
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    script = _DIGEST_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests"))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _digests_here():
    ns = {}
    exec(
        _DIGEST_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests")).replace(
            "print(json.dumps(out))", ""
        ),
        ns,
    )
    return ns["out"]


def test_repeated_calls_are_bit_identical_in_process():
    first = _digests_here()
    for _ in range(2):
        again = _digests_here()
        assert again["float32"] == first["float32"] and again["float64"] == first["float64"]


@pytest.mark.parametrize("threads", [1, 2])
def test_results_identical_across_processes_for_a_given_blas_thread_count(threads):
    """A fresh process with OPENBLAS_NUM_THREADS=n gives the bits this process gives with n BLAS threads."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
        here = _digests_here()
    there = _digests_in_subprocess(threads)
    assert there["blas_threads"] == [threads] * len(there["blas_threads"])
    assert there["float32"] == here["float32"] and there["float64"] == here["float64"]


def test_sequence_results_do_not_depend_on_blas_threads(dtype):
    """1 and 2 BLAS threads give the same bits (README, "Determinism").  The
    sequence kernels never call BLAS (a projection's dW_hr went through
    np.dot until session 38), but this test does not show it: OpenBLAS
    splits a product's output between its threads, not its sums, so np.dot
    gave the same bits here too.  tests/test_threads.py sees a BLAS call by
    its busy thread."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    W_hr = (np.random.default_rng(4).standard_normal((96, 40)) * 0.1).astype(dtype)  # projection P = 40

    def run():
        p = make_problem(12, 48, 64, 96, dtype, seed=3)
        p["W"], p["h0"] = p["W"][: 64 + 40].copy(), p["h0"][:, :40].copy()
        y, h_n, c_n, cache = numba_lstm.lstm_forward(**p, W_hr=W_hr)
        g = numba_lstm.lstm_backward(np.ones_like(y), cache, h_n, c_n)
        return [y, h_n, c_n, *g]

    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        one = run()
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        two = run()
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


# --- concurrency ------------------------------------------------------------------


def test_kernels_release_the_gil():
    dispatchers = [
        _kernels._lstm_forward, _kernels._lstm_backward, _kernels._gates_forward, _kernels._gates_backward,
        jit.step_into, jit.step, jit.forward,
    ]  # fmt: skip
    for d in dispatchers:
        assert d.targetoptions.get("nogil") is True, d.py_func.__name__


def test_threads_sharing_weights_get_correct_results(dtype):
    n_threads, repeats = 4, 3
    shared = make_problem(8, 4, 16, 32, dtype, seed=0)
    W, b = shared["W"], shared["b"]
    W_before, b_before = W.copy(), b.copy()
    inputs = [make_problem(8, 4, 16, 32, dtype, seed=10 + k)["x"] for k in range(n_threads)]
    layer = numba_lstm.LSTM(16, 8, num_layers=2, bidirectional=True, dtype=dtype, seed=1).eval()

    def work(x):
        y, h_n, c_n, cache = numba_lstm.lstm_forward(x, W, b)
        g = numba_lstm.lstm_backward(np.ones_like(y), cache)
        mine = numba_lstm.LSTM(16, 8, num_layers=2, bidirectional=True, dtype=dtype).eval()
        mine.params = layer.params  # the same weight arrays, own caches
        ly, _ = mine(x)
        ldx = mine.backward(np.ones_like(ly))
        return [y, h_n, c_n, *g, ly, ldx, *(mine.grads[k] for k in sorted(mine.grads))]

    expected = [work(x) for x in inputs]
    results, errors = {}, []
    barrier = threading.Barrier(n_threads)

    def run(k):
        try:
            barrier.wait()
            results[k] = [work(inputs[k]) for _ in range(repeats)]
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for k in range(n_threads):
        for got in results[k]:
            for e, g in zip(expected[k], got, strict=True):
                _same(g, e, f"thread {k}")
    _same(W, W_before), _same(b, b_before)


def _child_forward(args):
    x, W, b = args
    y, h_n, c_n, cache = numba_lstm.lstm_forward(x, W, b)
    g = numba_lstm.lstm_backward(np.ones_like(y), cache)
    return hashlib.sha256(b"".join(a.tobytes() for a in (y, h_n, c_n, *g))).hexdigest()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_forked_child_after_a_forward_pass_works():
    p = make_problem(10, 32, 64, 96, np.float32, seed=0)  # large enough for Numba's threads
    parent = _child_forward((p["x"], p["W"], p["b"]))  # the threaded kernels used before the fork
    ctx = multiprocessing.get_context("fork")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python 3.12+)
        with ctx.Pool(2) as pool:
            got = pool.map_async(_child_forward, [(p["x"], p["W"], p["b"])] * 2).get(timeout=120)
    assert got == [parent, parent]
