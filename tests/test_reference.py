"""The reference's gradients against central finite differences, float64."""

import numpy as np
import pytest
from conftest import make_problem

from numba_lstm import reference


def _loss(p, dy, dh_n, dc_n):
    y, h_n, c_n, _ = reference.lstm_forward(**p)
    return np.sum(y * dy) + np.sum(h_n * dh_n) + np.sum(c_n * dc_n)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (4, 2, 3, 5), (6, 3, 2, 3)])
def test_reference_gradients_match_finite_differences(shape):
    T, B, I, H = shape
    p = make_problem(T, B, I, H, np.float64, scale=1.0)
    rng = np.random.default_rng(7)
    dy = rng.standard_normal((T, B, H))
    dh_n = rng.standard_normal((B, H))
    dc_n = rng.standard_normal((B, H))
    _, _, _, cache = reference.lstm_forward(**p)
    grads = reference.lstm_backward(dy, cache, dh_n, dc_n)
    analytic = {"x": grads.dx, "W": grads.dW, "b": grads.db, "h0": grads.dh0, "c0": grads.dc0}
    eps = 1e-6
    for name, grad in analytic.items():
        numeric = np.zeros_like(grad)
        for idx in np.ndindex(grad.shape):
            plus = {k: v.copy() for k, v in p.items()}
            minus = {k: v.copy() for k, v in p.items()}
            plus[name][idx] += eps
            minus[name][idx] -= eps
            numeric[idx] = (_loss(plus, dy, dh_n, dc_n) - _loss(minus, dy, dh_n, dc_n)) / (2 * eps)
        # Central differences have O(eps^2) truncation and O(1e-16 / eps) rounding error.
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8, err_msg=name)
