"""Dense layer: forward against the formula, backward against central finite differences."""

import numpy as np
import pytest
from conftest import COPIES, import_or_skip

from numba_lstm.dense import Dense
from numba_lstm.layer import NotReadyError


def numerical_grad(f, a, eps=1e-6):
    """Central finite differences of the scalar ``f()`` with respect to every entry of ``a`` (in place)."""
    grad = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        up = f()
        a[idx] = old - eps
        down = f()
        a[idx] = old
        grad[idx] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("lead", [(5,), (3, 4), ()], ids=["N", "T,B", "none"])
def test_dense_backward_matches_finite_differences(lead):
    rng = np.random.default_rng(0)
    dense = Dense(6, 3, dtype=np.float64, seed=1)
    x = rng.standard_normal((*lead, 6))
    r = rng.standard_normal((*lead, 3))  # loss = sum(r * y): dL/dy = r

    def loss():
        return float(np.sum(r * dense.forward(x)))

    y = dense.forward(x)
    assert y.shape == (*lead, 3)
    dx = dense.backward(r)
    for name, got in (("x", dx), ("W", dense.grads["W"]), ("b", dense.grads["b"])):
        target = x if name == "x" else dense.params[name]
        np.testing.assert_allclose(got, numerical_grad(loss, target), rtol=1e-7, atol=1e-8, err_msg=name)


def test_dense_forward_is_affine_and_keeps_dtype(dtype):
    dense = Dense(4, 2, dtype=dtype, seed=0)
    x = np.random.default_rng(0).standard_normal((7, 4)).astype(dtype)
    y = dense(x)
    assert y.dtype == dtype and dense.W.dtype == dtype and dense.b.dtype == dtype
    ref = x.astype(np.float64) @ dense.W.astype(np.float64) + dense.b
    np.testing.assert_allclose(y, ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    dense.backward(np.ones_like(y))
    assert all(g.dtype == dtype for g in dense.grads.values())
    assert set(dense.grads) == set(dense.params) and dense.num_parameters == 10


def test_dense_matches_torch_linear():
    torch = import_or_skip("torch")
    dense = Dense(5, 3, dtype=np.float64, seed=2)
    linear = torch.nn.Linear(5, 3, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(dense.W.T))
        linear.bias.copy_(torch.tensor(dense.b))
    x = np.random.default_rng(3).standard_normal((4, 5))
    xt = torch.tensor(x, requires_grad=True)
    yt = linear(xt)
    dy = np.random.default_rng(4).standard_normal((4, 3))
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(dense(x), yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(dense.backward(dy), xt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(dense.grads["W"], linear.weight.grad.numpy().T, rtol=1e-12)
    np.testing.assert_allclose(dense.grads["b"], linear.bias.grad.numpy(), rtol=1e-12)


def test_dense_initialisation_is_seeded_and_bounded():
    a, b = Dense(16, 8, seed=5), Dense(16, 8, seed=5)
    np.testing.assert_array_equal(a.W, b.W)
    assert np.abs(a.W).max() <= 0.25 and np.abs(a.b).max() <= 0.25  # 1/sqrt(16)


def test_dense_initialisation_is_torchs_uniform():
    """W and b uniform in [-1/sqrt(F), 1/sqrt(F)], as torch.nn.Linear: 40,000
    draws of W fill the range (min and max within 1% of the bound) with the
    uniform's standard deviation bound/sqrt(3) (within 2%: its sampling
    error is about 0.4%); b is drawn too, not zeros."""
    F = 100
    dense = Dense(F, 400, dtype=np.float64, seed=1)
    bound = 1 / np.sqrt(F)
    W, b = dense.W, dense.b
    assert -bound <= W.min() < -0.99 * bound and 0.99 * bound < W.max() <= bound
    assert W.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)
    assert abs(W.mean()) < 0.01 * bound
    assert np.abs(b).max() <= bound and np.unique(b).size == b.size


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: Dense(0, 2), ValueError, "in_features must be a positive integer, got 0"),
        (lambda: Dense(2, 2.0), TypeError, r"out_features must be a positive integer, got 2.0 \(float\)"),
        (lambda: Dense(2, 2, dtype=np.int32), TypeError, "dtype must be float32 or float64"),
        (lambda: Dense(3, 2)(np.zeros((4, 2), np.float32)), ValueError, r"x must have 3 features.*\(4, 2\)"),
        (
            lambda: Dense(3, 2)(np.zeros((4, 3))),
            TypeError,
            "x has dtype float64 but the layer has dtype float32",
        ),
        (lambda: Dense(3, 2).backward(np.zeros((4, 2), np.float32)), NotReadyError, "before forward"),
        (lambda: Dense(3, 2)(np.zeros((), np.float32)), ValueError, r"x must have 3 features .* shape \(\)"),
    ],
)
def test_dense_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_dense_backward_checks_dy_shape():
    dense = Dense(3, 2)
    dense(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"dy must have shape \(4, 2\)"):
        dense.backward(np.zeros((4, 3), np.float32))


@pytest.mark.parametrize(
    ("name", "value", "error", "match"),
    [
        # A float64 W made a float32 x's output float64; a W of another shape
        # failed in NumPy's matmul, naming no parameter.
        ("W", np.zeros((3, 2), np.float64), TypeError, r"params\['W'\] has dtype float64 but the layer has dtype float32"),
        ("W", np.zeros((2, 3), np.float32), ValueError, r"params\['W'\] must have shape \(3, 2\) \(in_features, out_features\), got \(2, 3\)"),
        ("b", np.zeros(3, np.float32), ValueError, r"params\['b'\] must have shape \(2,\) \(out_features,\), got \(3,\)"),
    ],
)  # fmt: skip
def test_dense_refuses_a_replaced_parameter_by_its_name(name, value, error, match):
    dense = Dense(3, 2, seed=0)
    dense.params[name] = value
    with pytest.raises(error, match=match):
        dense(np.ones((4, 3), np.float32))


def test_dense_gradients_are_the_forwards_after_x_and_W_change_in_place():
    # backward used the caller's x and the parameters as they were then.
    dense = Dense(3, 2, seed=0)
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    dy = np.random.default_rng(2).standard_normal((4, 2)).astype(np.float32)
    dense(x.copy())
    expected = dense.backward(dy), dict(dense.grads)
    dense(x)
    x *= 2.0
    dense.params["W"] *= 3.0
    got = dense.backward(dy), dense.grads
    np.testing.assert_array_equal(got[0], expected[0])
    for key in ("W", "b"):
        np.testing.assert_array_equal(got[1][key], expected[1][key])


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_a_copy_of_dense_keeps_no_forward_cache(how):
    """As the LSTM layer's copies: the copy of x and W that forward keeps for
    backward stays behind, and the copy's backward names the copy."""
    import pickle

    dense = Dense(64, 3, seed=0)
    x = np.random.default_rng(0).standard_normal((100, 50, 64)).astype(np.float32)
    dense.forward(x)
    assert len(pickle.dumps(dense)) < dense.W.nbytes + dense.b.nbytes + 5_000
    copied = COPIES[how](dense)
    with pytest.raises(NotReadyError, match=r"this layer is a copy .* run dense.forward\(x\) on it"):
        copied.backward(np.ones((100, 50, 3), np.float32))
    dx = dense.backward(np.ones((100, 50, 3), np.float32))
    copied.forward(x)
    np.testing.assert_array_equal(copied.backward(np.ones((100, 50, 3), np.float32)), dx)


def test_dense_bias_gradient_over_many_rows_is_rounded_once():
    """``dy.sum(axis=0)`` adds the rows one after another (NumPy sums down
    axis 0 without pairwise summation): at a million float32 rows its error
    was 6e-6 to 3e-5 relative, 100-1000x torch's.  Summed in float64, the
    float32 gradient is the exact sum rounded once: within half an ulp."""
    rng = np.random.default_rng(1)
    N, F, K = 10**6, 2, 4
    dense = Dense(F, K, seed=0)
    dense(rng.standard_normal((N, F)).astype(np.float32))
    dy = (rng.standard_normal((N, K)) + 0.1).astype(np.float32)
    dense.backward(dy)
    exact = dy.astype(np.float64).sum(axis=0)
    error = np.abs(dense.grads["b"].astype(np.float64) - exact)
    assert np.all(error <= 0.5 * np.spacing(np.abs(exact).astype(np.float32))), error


def test_dense_load_params_restores_a_saved_head_in_place(tmp_path, dtype):
    """The README's recipe, ``head.params["W"][...] = np.load(...)["W"]``,
    cast a float64 file into a float32 head and broadcast a (1, K) W into
    (F, K) without a word.  ``load_params`` copies each array into its
    parameter only after checking them all, so an optimizer built on the
    head goes on updating the same arrays."""
    saved = Dense(4, 3, dtype=dtype, seed=1)
    np.savez(tmp_path / "head.npz", **saved.params)
    head = Dense(4, 3, dtype=dtype, seed=2)
    arrays = dict(head.params)
    head.load_params(np.load(tmp_path / "head.npz"))
    for name, p in head.params.items():
        assert p is arrays[name]
        np.testing.assert_array_equal(p, saved.params[name])


@pytest.mark.parametrize(
    ("arrays", "error", "match"),
    [
        ({"W": np.zeros((4, 3)), "b": np.zeros(3, np.float32)}, TypeError,
         r"arrays\['W'\] has dtype float64 but the layer has dtype float32"),
        ({"W": np.zeros((1, 3), np.float32), "b": np.zeros(3, np.float32)}, ValueError,
         r"arrays\['W'\] must have shape \(4, 3\) \(params\['W'\]'s\), got \(1, 3\)"),
        ({"W": np.zeros((4, 3), np.float32), "b": np.zeros(4, np.float32)}, ValueError,
         r"arrays\['b'\] must have shape \(3,\)"),
        ({"W": np.zeros((4, 3), np.float32)}, ValueError, r"arrays must hold exactly \['W', 'b'\], got \['W'\]"),
        ({"W": np.zeros((4, 3), np.float32), "b": [0.0] * 3}, TypeError, r"arrays\['b'\] must be a numpy array"),
        ([np.zeros((4, 3), np.float32), np.zeros(3, np.float32)], TypeError, r"arrays must be a mapping"),
    ],
)  # fmt: skip
def test_dense_load_params_refuses_what_does_not_fit_and_changes_nothing(arrays, error, match):
    head = Dense(4, 3, seed=0)
    before = {name: p.copy() for name, p in head.params.items()}
    with pytest.raises(error, match=match):
        head.load_params(arrays)
    for name, p in head.params.items():
        np.testing.assert_array_equal(p, before[name])
