"""The reference's gradients against central finite differences, float64."""

import numpy as np
import pytest
from conftest import make_problem

from numba_lstm import reference


def _loss(p, options, dy, dh_n, dc_n):
    y, h_n, c_n, _ = reference.lstm_forward(**p, **options)
    return np.sum(y * dy) + np.sum(h_n * dh_n) + np.sum(c_n * dc_n)


def _problem(T, B, I, H, P):
    """make_problem's layer, with a projection W_hr (H, P) when P differs from H."""
    if P == H:
        return make_problem(T, B, I, H, np.float64, scale=1.0)
    rng = np.random.default_rng(11)
    p = make_problem(T, B, I, H, np.float64, scale=1.0)
    p["W"] = rng.standard_normal((I + P, 4 * H)) / np.sqrt(H)
    p["h0"] = rng.standard_normal((B, P)) * 0.5
    p["W_hr"] = rng.standard_normal((H, P)) / np.sqrt(H)
    return p


# shape (T, B, I, H, P), options: every option that changes the equations,
# lengths with a sequence of length 0 and one of length T among them.
CASES = {
    "plain-1": ((1, 1, 1, 1, 1), {}),
    "plain": ((4, 2, 3, 5, 5), {}),
    "plain-3": ((6, 3, 2, 3, 3), {}),
    "lengths": ((5, 3, 2, 3, 3), {"lengths": [5, 0, 2]}),
    "reverse": ((4, 2, 3, 3, 3), {"reverse": True}),
    "reverse-lengths": ((5, 3, 2, 3, 3), {"reverse": True, "lengths": [2, 5, 0]}),
    "projection": ((4, 2, 3, 5, 2), {}),
    "projection-reverse-lengths": ((5, 3, 2, 4, 3), {"reverse": True, "lengths": [3, 0, 5]}),
}


@pytest.mark.parametrize("case", CASES)
def test_reference_gradients_match_finite_differences(case):
    (T, B, I, H, P), options = CASES[case]
    p = _problem(T, B, I, H, P)
    rng = np.random.default_rng(7)
    dy = rng.standard_normal((T, B, P))
    dh_n = rng.standard_normal((B, P))
    dc_n = rng.standard_normal((B, H))
    _, _, _, cache = reference.lstm_forward(**p, **options)
    grads = reference.lstm_backward(dy, cache, dh_n, dc_n)
    analytic = {"x": grads.dx, "W": grads.dW, "b": grads.db, "h0": grads.dh0, "c0": grads.dc0}
    if "W_hr" in p:
        analytic["W_hr"] = grads.dW_hr
    eps = 1e-6
    for name, grad in analytic.items():
        numeric = np.zeros_like(grad)
        for idx in np.ndindex(grad.shape):
            plus = {k: v.copy() for k, v in p.items()}
            minus = {k: v.copy() for k, v in p.items()}
            plus[name][idx] += eps
            minus[name][idx] -= eps
            numeric[idx] = (_loss(plus, options, dy, dh_n, dc_n) - _loss(minus, options, dy, dh_n, dc_n)) / (
                2 * eps
            )
        # Central differences have O(eps^2) truncation and O(1e-16 / eps) rounding error.
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("case", ["plain", "projection-reverse-lengths"])
def test_reference_cache_keeps_copies_as_numba_lstms_does(case):
    """The reference's cache held the caller's x, W, W_hr and rows of h0 and
    c0: editing them between forward and backward changed every gradient
    (dW by 2.2), where numba_lstm's cache keeps copies."""
    (T, B, I, H, P), options = CASES[case]
    p = _problem(T, B, I, H, P)
    dy = np.random.default_rng(3).standard_normal((T, B, P))
    before = reference.lstm_backward(dy, reference.lstm_forward(**p, **options)[3])
    edited = {k: v.copy() for k, v in p.items()}
    cache = reference.lstm_forward(**edited, **options)[3]
    for value in edited.values():
        value[...] = 0.0
    after = reference.lstm_backward(dy, cache)
    for name in before._fields:
        np.testing.assert_array_equal(getattr(after, name), getattr(before, name), err_msg=name)
