"""Losses: values against their definitions and torch, gradients against central finite differences."""

import numpy as np
import pytest
from conftest import import_or_skip
from test_dense import numerical_grad

import numba_lstm
from numba_lstm.losses import (
    cross_entropy_backward,
    cross_entropy_forward,
    log_softmax,
    mse_backward,
    mse_forward,
    softmax,
)


def test_mse_value_and_gradient():
    rng = np.random.default_rng(0)
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    assert mse_forward(pred, target) == pytest.approx(np.mean((pred - target) ** 2), rel=1e-14)
    grad = numerical_grad(lambda: mse_forward(pred, target), pred)
    np.testing.assert_allclose(mse_backward(pred, target), grad, rtol=1e-7, atol=1e-9)


def test_float32_mse_is_summed_accurately():
    """4M float32 differences: a float32 dot product was 6.6e-6 off (relative)
    where torch's mse_loss is 5e-8 off; the sum is now taken in float64."""
    rng = np.random.default_rng(3)
    pred = rng.standard_normal(4_000_000).astype(np.float32)
    target = rng.standard_normal(4_000_000).astype(np.float32)
    exact = np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2)
    assert mse_forward(pred, target) == pytest.approx(
        exact, rel=2e-7
    )  # one float32 rounding of each difference


def test_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((6, 5)) * 3
    labels = rng.integers(0, 5, 6)
    grad = numerical_grad(lambda: cross_entropy_forward(logits, labels), logits)
    np.testing.assert_allclose(cross_entropy_backward(logits, labels), grad, rtol=1e-7, atol=1e-9)


def test_cross_entropy_value_from_definition():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    labels = np.array([2, 0])
    expected = -(np.log(np.exp(3) / np.exp([1, 2, 3]).sum()) + np.log(1 / 3)) / 2
    assert cross_entropy_forward(logits, labels) == pytest.approx(expected, rel=1e-14)


def test_losses_match_torch(dtype):
    torch = import_or_skip("torch")
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal((8, 4)) * 4).astype(dtype)
    labels = rng.integers(0, 4, 8)
    lt = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(lt, torch.tensor(labels))
    ref.backward()
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert cross_entropy_forward(logits, labels) == pytest.approx(float(ref.detach()), rel=rtol)
    got = cross_entropy_backward(logits, labels)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, lt.grad.numpy(), rtol=rtol, atol=rtol * 1e-2)

    pred, target = rng.standard_normal((2, 5, 3)).astype(dtype)
    pt = torch.tensor(pred, requires_grad=True)
    ref = torch.nn.functional.mse_loss(pt, torch.tensor(target))
    ref.backward()
    assert mse_forward(pred, target) == pytest.approx(float(ref.detach()), rel=rtol)
    got = mse_backward(pred, target)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, pt.grad.numpy(), rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, 0.0, -1e4], [-3e4, 3e4, 0.0]], dtype)
    labels = np.array([1, 1])
    # exact: row 0 loses 1e4 (log-sum-exp is 1e4 to within e^-1e4), row 1 loses 0.
    assert cross_entropy_forward(logits, labels) == pytest.approx(5e3, rel=1e-6)
    grad = cross_entropy_backward(logits, labels)
    np.testing.assert_allclose(grad, [[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], atol=1e-7)
    assert np.isfinite(log_softmax(logits)).all()
    np.testing.assert_allclose(softmax(logits).sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: mse_forward(np.zeros(3), np.zeros(4)), ValueError, r"target must have shape \(3,\)"),
        (
            lambda: mse_forward(np.zeros(3), np.zeros(3, np.float32)),
            TypeError,
            "target has dtype float32 but pred has dtype float64",
        ),
        (lambda: mse_backward([0.0], np.zeros(1)), TypeError, "pred must be a numpy array"),
        (lambda: cross_entropy_forward(np.zeros(3), np.zeros(3, int)), ValueError, "logits must be 2-D"),
        (
            lambda: cross_entropy_forward(np.zeros((2, 3)), np.zeros(2)),
            TypeError,
            "labels must be .* integers",
        ),
        (
            lambda: cross_entropy_forward(np.zeros((2, 3)), np.zeros(3, int)),
            ValueError,
            r"labels must have shape",
        ),
        # "got int64" read as an integer dtype, which labels may have.
        (
            lambda: cross_entropy_forward(np.zeros((1, 3)), np.array([2, 0])[0]),
            TypeError,
            r"labels must be .* got a NumPy scalar np.int64\(2\); pass an array of shape \(1,\)",
        ),
        (lambda: cross_entropy_backward(np.zeros((2, 3)), np.array([0, 3])), ValueError, r"in \[0, 3\)"),
        # Negative labels would index the last classes.
        (lambda: cross_entropy_forward(np.zeros((2, 3)), np.array([0, -1])), ValueError, r"from -1 to 0"),
        # A masked label would be skipped by the range check and read as the value under the mask.
        (
            lambda: cross_entropy_forward(np.zeros((2, 3)), np.ma.masked_array([2, -1], mask=[0, 1])),
            TypeError,
            "labels is a masked array",
        ),
        (lambda: mse_forward(np.zeros((0, 2)), np.zeros((0, 2))), ValueError, r"pred must not be empty"),
        (lambda: mse_backward(np.zeros(0), np.zeros(0)), ValueError, r"pred must not be empty"),
        (lambda: cross_entropy_forward(np.zeros((0, 3)), np.zeros(0, int)), ValueError, r"N, C >= 1"),
        (
            lambda: log_softmax(np.zeros((2, 0))),
            ValueError,
            r"logits must have at least one class .* \(2, 0\)",
        ),
        (lambda: softmax(np.zeros(0)), ValueError, r"logits must have at least one class .* \(0,\)"),
        (lambda: log_softmax(np.ones(())), ValueError, r"at least one class .* \(\)"),
    ],
)
def test_loss_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix itself
def test_losses_and_dense_take_an_np_matrix_as_a_plain_array():
    """``np.matrix`` logits gave NumPy's "matrix.max() got an unexpected
    keyword argument 'keepdims'", and ``Dense`` returned a matrix for one
    (``@`` keeps the subclass), so ``head(np.asmatrix(x))`` could not reach
    the loss.  Each now computes on the plain array and returns arrays."""
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((4, 3)), np.array([0, 2, 1, 2])
    matrix = np.asmatrix(logits)
    assert cross_entropy_forward(matrix, labels) == cross_entropy_forward(logits, labels)
    for fn, args in [(cross_entropy_backward, (labels,)), (log_softmax, ()), (softmax, ())]:
        got = fn(matrix, *args)
        assert type(got) is np.ndarray, fn.__name__
        np.testing.assert_array_equal(got, fn(logits, *args), err_msg=fn.__name__)
    got = mse_backward(matrix, np.asmatrix(np.zeros((4, 3))))
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, mse_backward(logits, np.zeros((4, 3))))
    head = numba_lstm.Dense(5, 3, dtype=np.float64, seed=0)
    x = rng.standard_normal((4, 5))
    y = head(np.asmatrix(x))
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, head(x))
    dx = head.backward(np.asmatrix(np.ones((4, 3))))
    assert type(dx) is np.ndarray and all(type(g) is np.ndarray for g in head.grads.values())
    head.params["W"] = np.asmatrix(head.params["W"])
    assert type(head(x)) is np.ndarray


def test_losses_leave_their_inputs_unchanged(dtype):
    rng = np.random.default_rng(3)
    pred, target = rng.standard_normal((4, 5)).astype(dtype), rng.standard_normal((4, 5)).astype(dtype)
    logits, labels = rng.standard_normal((4, 5)).astype(dtype), np.array([0, 4, 2, 2])
    given = [a.copy() for a in (pred, target, logits, labels)]
    mse_forward(pred, target), mse_backward(pred, target)
    cross_entropy_forward(logits, labels), cross_entropy_backward(logits, labels)
    log_softmax(logits), softmax(logits)
    for before, after in zip(given, (pred, target, logits, labels), strict=True):
        np.testing.assert_array_equal(after, before)


def test_edge_values_as_torch():
    """One class: a loss of +0.0 (torch's), not -0.0.  A 0-d pred: the gradient is an array."""
    loss = cross_entropy_forward(np.array([[3.0], [-2.0]]), np.array([0, 0]))
    assert loss == 0.0 and np.copysign(1.0, loss) == 1.0
    grad = mse_backward(np.array(1.0), np.array(0.0))
    assert isinstance(grad, np.ndarray) and grad.shape == () and grad == 2.0
