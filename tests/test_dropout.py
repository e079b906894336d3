"""Dropout between layers: statistics, seeding, eval mode, and a consistent backward."""

import numpy as np

import numba_lstm


def _layer(dtype=np.float64, **kw):
    return numba_lstm.LSTM(3, 200, num_layers=2, dropout=0.3, dtype=dtype, seed=7, **kw)


def test_mask_statistics_and_scale():
    layer = _layer()
    x = np.random.default_rng(0).standard_normal((20, 8, 3))
    layer(x)
    mask = layer._caches[1][0]
    assert layer._caches[1][1] is None, "no dropout after the last layer"
    kept = mask != 0
    # 32000 Bernoulli(0.7) draws: the kept fraction has std 0.0026; 0.015 is ~6 sigma.
    assert abs(kept.mean() - 0.7) < 0.015
    np.testing.assert_allclose(mask[kept], 1 / 0.7)


def test_seed_reproduces_masks_and_eval_disables_dropout():
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    y1, _ = _layer()(x)
    y2, _ = _layer()(x)
    np.testing.assert_array_equal(y1, y2)
    layer = _layer()
    y_eval, _ = layer.eval()(x)
    no_dropout = numba_lstm.LSTM(3, 200, num_layers=2, dtype=np.float64, seed=7)
    np.testing.assert_array_equal(y_eval, no_dropout(x)[0])
    assert not np.array_equal(y_eval, y1)


def test_backward_uses_the_forward_mask():
    """Finite differences through the same masks match the analytic gradient."""
    layer = numba_lstm.LSTM(2, 4, num_layers=3, dropout=0.5, dtype=np.float64, seed=3)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2, 2))
    dy = rng.standard_normal((4, 2, 4))
    state = layer._rng.bit_generator.state

    def loss(x_in):
        layer._rng.bit_generator.state = state  # replay the same masks
        return np.sum(layer(x_in)[0] * dy)

    loss(x)
    dx = layer.backward(dy)
    W = layer.params["W_l1"]
    dW = layer.grads["W_l1"].copy()
    eps = 1e-6
    for idx in [(0, 0, 0), (3, 1, 1), (2, 0, 1)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        np.testing.assert_allclose(dx[idx], (loss(xp) - loss(xm)) / (2 * eps), rtol=1e-6, atol=1e-9)
    for idx in [(0, 0), (5, 7), (3, 12)]:
        old = W[idx]
        W[idx] = old + eps
        up = loss(x)
        W[idx] = old - eps
        down = loss(x)
        W[idx] = old
        np.testing.assert_allclose(dW[idx], (up - down) / (2 * eps), rtol=1e-6, atol=1e-9)
