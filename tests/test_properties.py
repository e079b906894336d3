"""Property-based tests (Hypothesis): kernels against numba_lstm.reference.

Profiles: "default" (15 examples per test, no deadline) keeps the normal run
short; "ci" (200 examples) is chosen with HYPOTHESIS_PROFILE=ci.
"""

import os

import numpy as np
import pytest
from conftest import assert_close

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import numba_lstm  # noqa: E402
from numba_lstm import reference  # noqa: E402

settings.register_profile(
    "default", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

DTYPES = st.sampled_from([np.float32, np.float64])


@st.composite
def problems(draw):
    dtype = draw(DTYPES)
    T = draw(st.integers(0, 6))
    B = draw(st.integers(0, 12))  # both sides of the kernels' SMALL_ROWS = 8
    I = draw(st.integers(1, 5))
    H = draw(st.integers(1, 6))
    P = draw(st.one_of(st.none(), st.integers(1, H)))  # projection size or none
    use_lengths = draw(st.booleans())
    lengths = (
        np.array(draw(st.lists(st.integers(0, T), min_size=B, max_size=B)), np.int64) if use_lengths else None
    )
    reverse = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 3.0]))
    rng = np.random.default_rng(seed)
    Pe = H if P is None else P

    def r(*shape, s=1.0):
        return (rng.standard_normal(shape) * s).astype(dtype)

    return dict(
        dtype=dtype,
        x=r(T, B, I),
        W=r(I + Pe, 4 * H, s=scale / np.sqrt(H)),
        b=r(4 * H, s=scale),
        h0=r(B, Pe, s=0.5),
        c0=r(B, H, s=0.5),
        W_hr=None if P is None else r(H, P, s=1 / np.sqrt(H)),
        lengths=lengths,
        reverse=reverse,
        dy=r(T, B, Pe),
        dh_n=r(B, Pe),
        dc_n=r(B, H),
    )


def _f64(a):
    return None if a is None else a.astype(np.float64)


@given(problems())
def test_functional_forward_backward_match_reference(p):
    dtype = p["dtype"]
    kw = dict(W_hr=p["W_hr"], lengths=p["lengths"], reverse=p["reverse"])
    y, h_n, c_n, cache = numba_lstm.lstm_forward(p["x"], p["W"], p["b"], p["h0"], p["c0"], **kw)
    kw64 = dict(kw, W_hr=_f64(p["W_hr"]))
    ry, rh, rc, rcache = reference.lstm_forward(*(_f64(p[k]) for k in ("x", "W", "b", "h0", "c0")), **kw64)
    assert_close(y, ry, dtype, "y"), assert_close(h_n, rh, dtype, "h_n"), assert_close(c_n, rc, dtype, "c_n")
    g = numba_lstm.lstm_backward(p["dy"], cache, p["dh_n"], p["dc_n"])
    rg = reference.lstm_backward(_f64(p["dy"]), rcache, _f64(p["dh_n"]), _f64(p["dc_n"]))
    assert type(g).__name__ == type(rg).__name__
    for name in g._fields:
        got = getattr(g, name)
        assert got.dtype == dtype, name
        assert_close(got, getattr(rg, name), dtype, name)


@st.composite
def layers(draw):
    dtype = draw(DTYPES)
    H = draw(st.integers(1, 5))
    config = dict(
        input_size=draw(st.integers(1, 4)),
        hidden_size=H,
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        proj_size=draw(st.integers(0, H - 1)),
        batch_first=draw(st.booleans()),
    )
    T, B = draw(st.integers(0, 5)), draw(st.integers(0, 3))
    lengths = draw(st.one_of(st.none(), st.lists(st.integers(0, T), min_size=B, max_size=B)))
    return (
        dtype,
        config,
        T,
        B,
        None if lengths is None else np.array(lengths, np.int64),
        draw(st.integers(0, 10**6)),
    )


@given(layers())
def test_layer_matches_per_layer_reference(case):
    """The layer equals lstm_forward and reference.lstm_forward run per layer and direction."""
    dtype, config, T, B, lengths, seed = case
    layer = numba_lstm.LSTM(**config, dtype=dtype, seed=seed).eval()
    rng = np.random.default_rng(seed)
    L, D = layer.num_layers, layer.num_directions
    P, H = layer.output_size, layer.hidden_size
    x = rng.standard_normal((T, B, config["input_size"])).astype(dtype)
    h0 = rng.standard_normal((L * D, B, P)).astype(dtype)
    c0 = rng.standard_normal((L * D, B, H)).astype(dtype)
    x_in = x.transpose(1, 0, 2) if config["batch_first"] else x
    y, (h_n, c_n) = layer(x_in, (h0, c0), lengths)
    y_tm = y.transpose(1, 0, 2) if config["batch_first"] else y
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy, h_n, c_n)
    dy_tm = dy.transpose(1, 0, 2) if config["batch_first"] else dy

    # Per layer and direction: our functional kernel and the reference.
    inp, inp64 = x, x.astype(np.float64)
    caches = []
    for k in range(L):
        outs, outs64 = [], []
        for d, suffix in enumerate(("", "_reverse")[:D]):
            i = k * D + d
            W, b = layer.params[f"W_l{k}{suffix}"], layer.params[f"b_l{k}{suffix}"]
            W_hr = layer.params.get(f"W_hr_l{k}{suffix}")
            kw = dict(W_hr=W_hr, lengths=lengths, reverse=d == 1)
            yk, hk, ck, cache = numba_lstm.lstm_forward(inp, W, b, h0[i], c0[i], **kw)
            ry, rh, rc, rcache = reference.lstm_forward(
                inp64, _f64(W), _f64(b), _f64(h0[i]), _f64(c0[i]), **dict(kw, W_hr=_f64(W_hr))
            )
            assert_close(yk, ry, dtype, f"y l{k}{suffix}")
            (
                assert_close(h_n[i], rh, dtype, f"h_n l{k}{suffix}"),
                assert_close(c_n[i], rc, dtype, f"c_n l{k}{suffix}"),
            )
            np.testing.assert_array_equal(h_n[i], hk), np.testing.assert_array_equal(c_n[i], ck)
            outs.append(yk), outs64.append(ry)
            caches.append((cache, rcache))
        inp, inp64 = np.concatenate(outs, axis=2), np.concatenate(outs64, axis=2)
    assert_close(y_tm, inp64, dtype, "y")
    np.testing.assert_array_equal(y_tm, inp)

    # Backward, top layer down, with the reference.
    d_out = dy_tm.astype(np.float64)
    for k in reversed(range(L)):
        d_in = 0
        for d, suffix in enumerate(("", "_reverse")[:D]):
            i = k * D + d
            _, rcache = caches[i]
            rg = reference.lstm_backward(d_out[:, :, d * P : (d + 1) * P], rcache, _f64(h_n[i]), _f64(c_n[i]))
            assert_close(layer.grads[f"W_l{k}{suffix}"], rg.dW, dtype, f"dW l{k}{suffix}")
            assert_close(layer.grads[f"b_l{k}{suffix}"], rg.db, dtype, f"db l{k}{suffix}")
            if layer.proj_size:
                assert_close(layer.grads[f"W_hr_l{k}{suffix}"], rg.dW_hr, dtype, f"dW_hr l{k}{suffix}")
            assert_close(layer.grads["h0"][i], rg.dh0, dtype, f"dh0 l{k}{suffix}")
            assert_close(layer.grads["c0"][i], rg.dc0, dtype, f"dc0 l{k}{suffix}")
            d_in = d_in + rg.dx
        d_out = d_in
    dx_tm = dx.transpose(1, 0, 2) if config["batch_first"] else dx
    assert_close(dx_tm, d_out, dtype, "dx")


@given(layers())
def test_layer_step_loop_equals_forward(case):
    dtype, config, T, B, _, seed = case
    config = dict(config, bidirectional=False, batch_first=False)
    layer = numba_lstm.LSTM(**config, dtype=dtype, seed=seed).eval()
    x = np.random.default_rng(seed).standard_normal((T, B, config["input_size"])).astype(dtype)
    y, (h_n, c_n) = layer(x)
    state = None
    for t in range(T):
        y_t, state = layer.step(x[t], state)
        assert_close(y_t, y[t], dtype, f"y[{t}]")
    if T:
        assert_close(state[0], h_n, dtype, "h_n"), assert_close(state[1], c_n, dtype, "c_n")
