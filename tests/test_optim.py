"""Optimizers and gradient clipping, checked step for step against torch.optim."""

import numpy as np
import pytest
from conftest import assert_close, import_or_skip

import numba_lstm
from numba_lstm.optim import SGD, Adam, AdamW, clip_grad_norm, merge

SHAPES = {"W": (7, 12), "b": (12,)}
STEPS = 6


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}


def make_grads(dtype, steps=STEPS, seed=1):
    """A different gradient at every step, some large so that clipping bites."""
    rng = np.random.default_rng(seed)
    scales = [1 + 3 * (k % 2) for k in range(steps)]
    return [
        {name: (rng.standard_normal(shape) * scale).astype(dtype) for name, shape in SHAPES.items()}
        for scale in scales
    ]


def run_torch(torch_cls, params, grad_steps, **kwargs):
    """Apply ``torch_cls(**kwargs)`` to copies of ``params``; return the params after every step."""
    torch = import_or_skip("torch")
    tensors = {name: torch.tensor(p.copy(), requires_grad=True) for name, p in params.items()}
    opt = torch_cls(list(tensors.values()), foreach=False, **kwargs)
    history = []
    for grads in grad_steps:
        for name, t in tensors.items():
            t.grad = torch.tensor(grads[name].copy())
        opt.step()
        history.append({name: t.detach().numpy().copy() for name, t in tensors.items()})
    return history


def run_ours(cls, params, grad_steps, **kwargs):
    params = {name: p.copy() for name, p in params.items()}
    opt = cls(params, **kwargs)
    history = []
    for grads in grad_steps:
        opt.step({name: g.copy() for name, g in grads.items()})
        history.append({name: p.copy() for name, p in params.items()})
    return history


def assert_same_trajectory(ours, ref, dtype):
    for k, (got_step, ref_step) in enumerate(zip(ours, ref, strict=True)):
        for name in SHAPES:
            assert got_step[name].dtype == dtype, f"step {k} {name}: dtype {got_step[name].dtype}"
            assert_close(got_step[name], ref_step[name], dtype, f"step {k} {name}")


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.05),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.05),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05),
]


@pytest.mark.parametrize("kwargs", SGD_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_sgd_matches_torch(kwargs, dtype):
    torch = import_or_skip("torch")
    params, grads = make_params(dtype), make_grads(dtype)
    ref = run_torch(torch.optim.SGD, params, grads, **kwargs)
    assert_same_trajectory(run_ours(SGD, params, grads, **kwargs), ref, dtype)


ADAM_CASES = [
    dict(lr=0.01),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.003, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.02),
]


@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_adam_matches_torch(kwargs, dtype):
    torch = import_or_skip("torch")
    params, grads = make_params(dtype), make_grads(dtype)
    ref = run_torch(torch.optim.Adam, params, grads, **kwargs)
    assert_same_trajectory(run_ours(Adam, params, grads, **kwargs), ref, dtype)


@pytest.mark.parametrize(
    "kwargs", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.3)], ids=["wd=0.01", "wd=0.3"]
)
def test_adamw_matches_torch(kwargs, dtype):
    torch = import_or_skip("torch")
    params, grads = make_params(dtype), make_grads(dtype)
    ref = run_torch(torch.optim.AdamW, params, grads, **kwargs)
    assert_same_trajectory(run_ours(AdamW, params, grads, **kwargs), ref, dtype)


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_adam_recovers_from_a_gradient_spike_as_torch_does(cls, dtype):
    """A first gradient whose square overflows (3e19 in float32, 1e155 in
    float64), then ordinary ones.  torch's addcmul_ computes
    ``(1 - beta2) * g * g``, finite; squaring g first gave an infinite
    ``exp_avg_sq`` that froze the parameter for good."""
    torch = import_or_skip("torch")
    spike = 3e19 if dtype == np.float32 else 1e155
    params = make_params(dtype)
    rng = np.random.default_rng(5)
    grads = [{name: np.full(shape, spike, dtype) for name, shape in SHAPES.items()}]
    grads += [
        {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()} for _ in range(8)
    ]
    with np.errstate(over="raise"):
        ours = run_ours(getattr(numba_lstm.optim, cls), params, grads, lr=0.1)
    ref = run_torch(getattr(torch.optim, cls), params, grads, lr=0.1)
    assert_same_trajectory(ours, ref, dtype)
    assert not np.array_equal(ours[-1]["W"], ours[0]["W"])  # it moved after the spike


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
@pytest.mark.parametrize("betas", [(0.0, 0.0), (0.0, 0.99), (0.3, 0.99), (0.5, 0.99)])
def test_adam_with_beta1_below_a_half_keeps_a_small_gradient_after_a_large_one(cls, betas, dtype):
    """torch's ``lerp`` computes ``g - beta1 (g - m)`` when beta1 <= 0.5 (GAN
    recipes set betas=(0, 0.99)): with beta1 = 0 the moment is the gradient
    itself.  ``m + (1 - beta1) (g - m)`` lost a gradient far smaller than m:
    after 3.0, a gradient of 1e-7 left m at 0 where torch's is 1e-7, and with
    beta2 = 0 the step was 0 where torch's is -0.09.  The moments and the
    parameters are compared after every step; beta1 = 0 fails on the old
    code, 0.3 and 0.5 (the edge of the branch) check parity only."""
    torch = import_or_skip("torch")
    values = (3.0, 1e-7, 1e3, 1e-4, -2.0, 5e-6)
    p = np.zeros(4, dtype)
    opt = getattr(numba_lstm.optim, cls)({"p": p}, lr=0.1, betas=betas)
    t = torch.zeros(4, dtype=torch.float32 if dtype == np.float32 else torch.float64, requires_grad=True)
    torch_opt = getattr(torch.optim, cls)([t], lr=0.1, betas=betas, foreach=False)
    for k, value in enumerate(values):
        g = np.full(4, value, dtype)
        opt.step({"p": g})
        t.grad = torch.from_numpy(g.copy())
        torch_opt.step()
        assert_close(opt.state["p"]["exp_avg"], torch_opt.state[t]["exp_avg"].numpy(), dtype, f"exp_avg {k}")
        assert_close(p, t.detach().numpy(), dtype, f"p {k}")


def test_adam_weight_decay_is_l2_and_adamw_is_decoupled():
    """With a zero gradient, Adam's L2 decay moves p by about lr; AdamW's only by lr * wd * p."""
    p = np.full(3, 2.0)
    zero = {"p": np.zeros(3)}
    adam, adamw = {"p": p.copy()}, {"p": p.copy()}
    Adam(adam, lr=0.1, weight_decay=0.5).step(zero)
    AdamW(adamw, lr=0.1, weight_decay=0.5).step(zero)
    np.testing.assert_allclose(adam["p"], p - 0.1, rtol=1e-6)  # first Adam step is lr * sign(g)
    np.testing.assert_allclose(adamw["p"], p * (1 - 0.1 * 0.5), rtol=1e-12)


def test_optimizer_updates_layer_params_in_place_and_ignores_extra_grads(dtype):
    layer = numba_lstm.LSTM(3, 4, dtype=dtype, seed=0)
    arrays = {name: p for name, p in layer.params.items()}
    before = {name: p.copy() for name, p in arrays.items()}
    opt = SGD(layer.params, lr=0.5)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(dtype)
    y, _ = layer(x)
    layer.backward(np.ones_like(y))
    assert {"h0", "c0"} <= set(layer.grads)
    opt.step(layer.grads)
    for name, p in layer.params.items():
        assert p is arrays[name], f"{name} was replaced, not updated in place"
        assert p.dtype == dtype
        np.testing.assert_array_equal(p, (before[name] - dtype(0.5) * layer.grads[name]).astype(dtype))


def test_merge_keeps_the_arrays():
    a, b = {"W": np.zeros(2)}, {"W": np.ones(3), "b": np.ones(1)}
    merged = merge({"lstm": a, "head": b})
    assert list(merged) == ["lstm.W", "head.W", "head.b"]
    assert merged["lstm.W"] is a["W"] and merged["head.b"] is b["b"]
    SGD(merged, lr=1.0).step(merge({"lstm": {"W": np.ones(2)}, "head": {"W": np.ones(3), "b": np.ones(1)}}))
    np.testing.assert_array_equal(a["W"], -np.ones(2))
    np.testing.assert_array_equal(b["W"], np.zeros(3))


def test_merge_refuses_colliding_dotted_names():
    with pytest.raises(
        ValueError, match=r"'a\.b\.c' twice: dicts\['a'\]\['b\.c'\] and dicts\['a\.b'\]\['c'\]"
    ):
        merge({"a": {"b.c": np.zeros(1)}, "a.b": {"c": np.ones(1)}})


@pytest.mark.parametrize("make", [SGD, Adam, AdamW])
def test_optimizers_refuse_one_array_under_two_names(make):
    p = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"params\['p'\] and params\['q'\] are the same array"):
        make({"p": p, "q": p}, lr=0.1)
    with pytest.raises(ValueError, match=r"params\['p'\] and params\['q'\] are the same array"):
        make({"p": p, "q": p[1:]}, lr=0.1)  # overlapping views too
    make({"p": p[::2], "q": p[1::2]}, lr=0.1)  # interleaved views share no element: accepted
    np.testing.assert_array_equal(p, np.ones(3, np.float32))


def test_shared_memory_is_found_past_arrays_between_in_memory():
    """The overlap check takes the arrays in order of address: a share with an
    array that starts earlier is found even when another array starts
    between the two, and the message names the pair in the dict's order."""
    buf = np.zeros(100)
    # Every array reaches past where ``tail`` starts; only ``evens`` shares an element with it.
    evens, odds, tail = buf[0:100:2], buf[1:100:2], buf[50:51]
    grads = {"tail": tail, "odds": odds, "evens": evens}
    with pytest.raises(ValueError, match=r"grads\['tail'\] and grads\['evens'\] are the same array"):
        clip_grad_norm(grads, 1.0)
    np.testing.assert_array_equal(buf, np.zeros(100))
    many = {f"p{i}": np.ones(3) for i in range(300)}  # apart in memory, then one view of p7
    many["also_p7"] = many["p7"][1:]
    with pytest.raises(ValueError, match=r"params\['p7'\] and params\['also_p7'\] are the same array"):
        SGD(many, lr=0.1)
    del many["also_p7"]
    many["odds"], many["evens"] = buf[1::2], buf[::2]  # interleaved, no element in common
    SGD(many, lr=0.1)


def test_none_gradient_skips_the_parameter_and_its_state():
    params = {"a": np.ones(2), "b": np.ones(2)}
    opt = Adam(params, lr=0.1)
    opt.step({"a": np.ones(2), "b": None})
    np.testing.assert_array_equal(params["b"], np.ones(2))
    assert opt.state["b"] == {} and opt.state["a"]["step"] == 1


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e6, np.inf])  # inf: measure only (it was refused)
def test_clip_grad_norm_matches_torch(max_norm, dtype):
    torch = import_or_skip("torch")
    grads = make_grads(dtype, steps=1)[0]
    tensors = [torch.tensor(g.copy(), requires_grad=False) for g in grads.values()]
    params = [torch.zeros(t.shape, dtype=t.dtype, requires_grad=True) for t in tensors]
    for p, t in zip(params, tensors, strict=True):
        p.grad = t
    ref_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    got_norm = clip_grad_norm(grads, max_norm)
    assert got_norm == pytest.approx(ref_norm, rel=1e-6 if dtype == np.float32 else 1e-12)
    for name, p in zip(grads, params, strict=True):
        assert grads[name].dtype == dtype
        assert_close(grads[name], p.grad.numpy(), dtype, name)
    clipped = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
    assert clipped <= max_norm * (1 + 1e-5)


def test_clip_grad_norm_names_leave_other_entries_alone():
    grads = {"W": np.full(4, 3.0), "h0": np.full(4, 100.0)}
    total = clip_grad_norm(grads, 1.0, names={"W": None})
    assert total == pytest.approx(6.0)
    np.testing.assert_allclose(grads["W"], np.full(4, 0.5), rtol=1e-6)
    np.testing.assert_array_equal(grads["h0"], np.full(4, 100.0))


def test_clip_grad_norm_checks_every_gradient_before_scaling_any():
    a, b = np.ones(3, np.float32), np.ones(3, np.float32)
    b.setflags(write=False)
    with pytest.raises(ValueError, match=r"grads\['b'\] must be writeable"):
        clip_grad_norm({"a": a, "b": b}, 0.1)
    np.testing.assert_array_equal(a, np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"grads\['a'\] and grads\['c'\] are the same array"):
        clip_grad_norm({"a": a, "c": a}, 0.1)
    np.testing.assert_array_equal(a, np.ones(3, np.float32))


def test_clip_grad_norm_names_must_be_distinct_names_not_a_string():
    a = np.ones(3)
    with pytest.raises(ValueError, match=r"names must name each entry once, got \['a'\] more than once"):
        clip_grad_norm({"a": a}, 0.1, names=["a", "a"])
    with pytest.raises(
        TypeError, match=r"names must be a collection of names such as \['lstm\.W'\], not a string"
    ):
        clip_grad_norm({"lstm.W": a}, 0.1, names="lstm.W")
    np.testing.assert_array_equal(a, np.ones(3))


def test_clip_grad_norm_nonfinite_follows_torch():
    grads = {"a": np.array([np.inf, 1.0]), "b": np.array([np.nan])}
    assert np.isnan(clip_grad_norm(grads, 1.0))
    assert np.isnan(grads["a"]).all()
    grads = {"a": np.array([np.inf, 1.0], np.float32)}
    assert clip_grad_norm(grads, 1.0) == np.inf
    assert np.isnan(grads["a"][0]) and grads["a"][1] == 0  # inf * 0, 1 * 0


def test_float32_norm_does_not_overflow():
    grads = {"a": np.full(4, 1e20, np.float32)}  # squares overflow float32, the norm does not
    total = clip_grad_norm(grads, 1.0)
    assert total == pytest.approx(2e20, rel=1e-6)
    np.testing.assert_allclose(grads["a"], np.full(4, 0.5), rtol=1e-5)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: SGD([np.zeros(2)], lr=0.1), TypeError, "params must be a non-empty dict"),
        (lambda: SGD({"W": np.zeros(2, int)}, lr=0.1), TypeError, r"params\['W'\] must have dtype"),
        (lambda: SGD({"W": np.zeros(2)}, lr=-1), ValueError, "lr must be finite and >= 0"),
        (lambda: SGD({"W": np.zeros(2)}, lr=0.1, nesterov=True), ValueError, "nesterov=True needs momentum"),
        (
            lambda: SGD({"W": np.zeros(2)}, lr=0.1, momentum=0.9, nesterov="False"),
            TypeError,
            "nesterov must be True or False, got 'False'",
        ),
        (lambda: Adam({"W": np.zeros(2)}, betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be finite"),
        (lambda: Adam({"W": np.zeros(2)}, betas=0.9), TypeError, "betas must be a pair"),
        (
            lambda: Adam({"W": np.zeros(2)}, betas=np.zeros(3)),
            TypeError,
            r"betas must be a pair .* shape \(3,\)",
        ),
        # float() raised a bare OverflowError that named nothing.
        (
            lambda: SGD({"W": np.zeros(2)}, lr=10**400),
            ValueError,
            "lr must be finite, got an integer of 1329 bits",
        ),
        (  # past 4300 digits, str() of the int raises
            lambda: SGD({"W": np.zeros(2)}, lr=-(10**5000)),
            ValueError,
            "lr must be finite, got an integer of 16610 bits",
        ),
        # The message showed a repr cut at 80 characters, without the dtype.
        (
            lambda: clip_grad_norm({"W": np.arange(40)}, 1.0),
            TypeError,
            r"grads\['W'\] must be a float32 or float64 numpy array, got an array of shape \(40,\) and dtype int64",
        ),
        (lambda: clip_grad_norm({"W": np.zeros(2)}, "1"), TypeError, "max_norm must be a real number"),
        (
            lambda: clip_grad_norm({"W": np.zeros(2)}, np.nan),
            ValueError,
            "max_norm must be a number and >= 0",
        ),
        (
            lambda: clip_grad_norm({"W": np.zeros(2)}, -np.inf),
            ValueError,
            "max_norm must be a number and >= 0",
        ),
        (lambda: clip_grad_norm({"W": np.zeros(2)}, 1.0, names=["V"]), KeyError, "no entry for"),
        # The masked 3 was counted: the norm was 5.
        (
            lambda: clip_grad_norm({"W": np.ma.array([3.0, 4.0], mask=[True, False])}, 10.0),
            TypeError,
            r"grads\['W'\] is a masked array",
        ),
        (lambda: SGD({"W": np.ma.zeros(2)}, lr=0.1), TypeError, r"params\['W'\] is a masked array"),
    ],
)
def test_argument_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "grads, error, match",
    [
        ({"b": np.zeros(2)}, KeyError, r"no entry for parameter\(s\) \['W'\]"),
        ({"W": np.zeros(3)}, ValueError, r"grads\['W'\] must have shape \(2,\)"),
        ({"W": np.zeros(2, np.float32)}, TypeError, r"grads\['W'\] must have dtype float64"),
        ({"W": [0.0, 0.0]}, TypeError, r"grads\['W'\] must be a numpy array"),
        # AdamW's decay shrank the gradient with its parameter before the Adam step.
        ({"W": "the parameter"}, ValueError, r"grads\['W'\] shares memory with its own parameter"),
        # The masked entry moved by -0.1: NumPy computes under the mask too.
        ({"W": np.ma.array([100.0, 1.0], mask=[True, False])}, TypeError, r"grads\['W'\] is a masked array"),
    ],
)
@pytest.mark.parametrize("make", [SGD, Adam, AdamW])
def test_step_errors_leave_params_untouched(grads, error, match, make):
    params = {"W": np.ones(2)}
    opt = make(params, lr=0.1)
    if isinstance(grads.get("W"), str):  # the parameter itself, and a reversed view of it
        for view in (params["W"], params["W"][::-1]):
            with pytest.raises(error, match=match):
                opt.step({"W": view})
    else:
        with pytest.raises(error, match=match):
            opt.step(grads)
    np.testing.assert_array_equal(params["W"], np.ones(2))


@pytest.mark.parametrize("make", [SGD, Adam, AdamW])
def test_a_gradient_inside_another_parameter_is_refused(make):
    """Updating params['b'] first would change grads['c'], a view of it,
    before the step read it: refused, naming both, with nothing updated."""
    params = {"b": np.ones(4), "c": np.ones(2)}
    opt = make(params, lr=0.1)
    with pytest.raises(ValueError, match=r"grads\['c'\] shares memory with params\['b'\]"):
        opt.step({"b": np.ones(4), "c": params["b"][1:3]})
    np.testing.assert_array_equal(params["b"], np.ones(4))
    np.testing.assert_array_equal(params["c"], np.ones(2))
    opt.step({"b": np.ones(4), "c": params["b"][1:3].copy()})  # a copy is fine


def test_load_state_dict_refuses_a_masked_entry():
    opt = SGD({"W": np.ones(2)}, lr=0.1, momentum=0.9)
    state = {"W/momentum_buffer": np.ma.array([1.0, 2.0], mask=[True, False])}
    with pytest.raises(TypeError, match=r"state_dict\['W/momentum_buffer'\] is a masked array"):
        opt.load_state_dict(state)


RESUME_CASES = [
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (Adam, dict(lr=0.01, weight_decay=0.05)),
    (AdamW, dict(lr=0.01)),
]


@pytest.mark.parametrize(("cls", "kwargs"), RESUME_CASES, ids=lambda v: getattr(v, "__name__", ""))
def test_training_resumes_from_a_saved_state_bit_for_bit(cls, kwargs, dtype, tmp_path):
    """Three steps, the state through a file and a new optimizer, three more:
    the bits of six steps in one go (a new Adam restarts its bias correction)."""
    grad_steps = make_grads(dtype)
    params = make_params(dtype)
    straight = run_ours(cls, params, grad_steps, **kwargs)[-1]
    resumed = {name: p.copy() for name, p in params.items()}
    first = cls(resumed, **kwargs)
    for grads in grad_steps[:3]:
        first.step(grads)
    np.savez(tmp_path / "opt.npz", **first.state_dict())
    second = cls(resumed, **kwargs)
    with np.load(tmp_path / "opt.npz") as saved:
        second.load_state_dict(saved)
    for grads in grad_steps[3:]:
        second.step(grads)
    for name in SHAPES:
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)
    # Without the state, the last three steps go elsewhere.
    restarted = {name: p.copy() for name, p in params.items()}
    for begin, end in ((0, 3), (3, STEPS)):
        opt = cls(restarted, **kwargs)
        for grads in grad_steps[begin:end]:
            opt.step(grads)
    assert not np.array_equal(restarted["W"], straight["W"])
    # The state is copied both ways: changing what was loaded, or what
    # state_dict returned, leaves the optimizer's state alone.
    given = second.state_dict()
    third = cls({name: p.copy() for name, p in params.items()}, **kwargs)
    third.load_state_dict(given)
    for value in given.values():
        value[...] = 7
    for value in third.state_dict().values():
        value[...] = 8
    for key, value in second.state_dict().items():
        np.testing.assert_array_equal(third.state_dict()[key], value, err_msg=key)


def test_state_dict_round_trip_with_names_that_are_not_strings():
    # state_dict's keys are text: a parameter named 0 came back as "0" and was refused.
    params = {0: np.ones(3, np.float32), "w": np.ones(2, np.float32)}
    opt = Adam(params)
    opt.step({0: np.ones(3, np.float32), "w": np.ones(2, np.float32)})
    fresh = Adam({k: v.copy() for k, v in params.items()})
    fresh.load_state_dict(opt.state_dict())
    assert fresh.state[0]["step"] == 1 and sorted(map(str, fresh.state)) == ["0", "w"]
    with pytest.raises(ValueError, match="names that read the same as text"):
        Adam({0: np.ones(3), "0": np.ones(3)}).state_dict()


def test_fresh_optimizer_state_dict_is_empty_and_loads_empty():
    opt = Adam(make_params(np.float32))
    assert opt.state_dict() == {}
    opt.load_state_dict({})
    assert opt.state == {"W": {}, "b": {}}


def _adam_state(dtype=np.float32):
    opt = Adam(make_params(dtype))
    opt.step(make_grads(dtype)[0])
    return opt.state_dict()


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda s: s.update({"V/step": np.array(1)}), KeyError, r"entry 'V/step'; Adam takes .*\['W', 'b'\]"),
        (lambda s: s.update({"W/momentum_buffer": s["W/exp_avg"]}), KeyError, r"entry 'W/momentum_buffer'"),
        (lambda s: s.update({"W": s["W/exp_avg"]}), KeyError, r"entry 'W'"),
        (lambda s: s.pop("b/exp_avg_sq"), ValueError, r"for 'b' but not \['exp_avg_sq'\]"),
        (lambda s: s.update({"W/exp_avg": s["W/exp_avg"][:2]}), ValueError, r"'W/exp_avg'\] must have .* shape \(7, 12\) and dtype float32, got \(2, 12\) float32"),
        (lambda s: s.update({"W/exp_avg": s["W/exp_avg"].astype(np.float64)}), ValueError, r"got \(7, 12\) float64"),
        (lambda s: s.update({"W/step": np.array(0)}), ValueError, r"'W/step'\] must be a positive integer scalar"),
        (lambda s: s["W/exp_avg_sq"].__setitem__((0, 0), -1.0), ValueError, r"'W/exp_avg_sq'\] must be >= 0 everywhere"),
        (lambda s: s["b/exp_avg_sq"].__setitem__(3, np.nan), ValueError, r"'b/exp_avg_sq'\] must be >= 0 everywhere"),
        (lambda s: s.update({"W/step": np.array(1.0)}), ValueError, r"positive integer scalar"),
        (lambda s: s.update({"W/step": np.array([1])}), ValueError, r"positive integer scalar"),
    ],
)  # fmt: skip
def test_load_state_dict_refusals_leave_the_state_alone(change, error, match):
    opt = Adam(make_params(np.float32))
    opt.step(make_grads(np.float32)[0])
    before = opt.state_dict()
    state = _adam_state()
    change(state)
    with pytest.raises(error, match=match):
        opt.load_state_dict(state)
    after = opt.state_dict()
    assert sorted(after) == sorted(before)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        opt.load_state_dict([("W/step", 1)])


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_a_learning_rate_set_between_steps_is_checked_and_used(cls):
    """No scheduler: the loop sets ``opt.lr``.  A negative or NaN rate set
    that way went through unchecked (a NaN parameter at the next step)."""
    params = make_params(np.float64)
    opt = cls(params, lr=0.1)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"lr must be finite and >= 0"):
            opt.lr = bad
    with pytest.raises(TypeError, match=r"lr must be a real number"):
        opt.lr = "0.1"
    assert opt.lr == 0.1
    opt.lr = 0.0  # a rate of zero leaves SGD's and Adam's parameters where they are
    before = {name: p.copy() for name, p in params.items()}
    opt.step(make_grads(np.float64)[0])
    for name, p in params.items():
        np.testing.assert_array_equal(p, before[name], err_msg=name)


HYPERPARAMETERS_SET_BETWEEN_STEPS = [
    (SGD, dict(momentum=0.9), "momentum", float("nan"), ValueError, r"momentum must be finite and >= 0"),
    (SGD, dict(momentum=0.9), "momentum", -0.5, ValueError, r"momentum must be finite and >= 0"),
    (SGD, dict(momentum=0.9), "dampening", float("inf"), ValueError, r"dampening must be finite"),
    (SGD, dict(momentum=0.9), "weight_decay", -1.0, ValueError, r"weight_decay must be finite and >= 0"),
    (SGD, dict(momentum=0.9), "nesterov", "False", TypeError, r"nesterov must be True or False, got 'False'"),
    (
        SGD,
        dict(momentum=0.9, dampening=0.1),
        "nesterov",
        True,
        ValueError,
        r"nesterov=True needs .* dampening=0.1",
    ),
    (
        SGD,
        dict(momentum=0.9, nesterov=True),
        "momentum",
        0.0,
        ValueError,
        r"nesterov=True needs momentum > 0",
    ),
    (Adam, {}, "betas", (0.9, 1.0), ValueError, r"betas\[1\] must be finite and >= 0.0 and < 1.0, got 1.0"),
    (Adam, {}, "betas", (float("nan"), 0.9), ValueError, r"betas\[0\] must be finite"),
    (Adam, {}, "betas", 0.9, TypeError, r"betas must be a pair \(beta1, beta2\), got float 0.9"),
    (Adam, {}, "eps", float("nan"), ValueError, r"eps must be finite and >= 0"),
    (AdamW, {}, "weight_decay", "0.01", TypeError, r"weight_decay must be a real number, got str '0.01'"),
]


@pytest.mark.parametrize(
    "cls, kwargs, name, bad, error, match",
    HYPERPARAMETERS_SET_BETWEEN_STEPS,
    ids=[f"{case[0].__name__}-{case[2]}-{case[3]!r}" for case in HYPERPARAMETERS_SET_BETWEEN_STEPS],
)
def test_every_hyperparameter_set_between_steps_is_checked(cls, kwargs, name, bad, error, match):
    """Only ``lr`` was checked after construction: a NaN momentum or a beta
    of 1 set between steps (a schedule) made the parameters NaN at the next
    step, and ``nesterov = "False"`` turned Nesterov on.  A refused value
    leaves the one before in place."""
    params = make_params(np.float64)
    opt = cls(params, lr=0.1, **kwargs)
    before = getattr(opt, name)
    with pytest.raises(error, match=match):
        setattr(opt, name, bad)
    assert getattr(opt, name) == before
    opt.step(make_grads(np.float64)[0])
    assert all(np.isfinite(p).all() for p in params.values())


def test_hyperparameters_set_between_steps_are_used():
    """A momentum and betas schedule: the values set are the ones the next
    steps use, as a new torch optimizer's would be (checked by switching
    torch's param_group at the same step)."""
    torch = import_or_skip("torch")
    params, grad_steps = make_params(np.float64), make_grads(np.float64)
    tensors = {name: torch.tensor(p.copy(), requires_grad=True) for name, p in params.items()}
    theirs = torch.optim.Adam(list(tensors.values()), lr=0.1, foreach=False)
    ours = Adam(params, lr=0.1)
    for k, grads in enumerate(grad_steps):
        if k == 3:
            ours.betas = np.array([0.5, 0.9])  # a NumPy pair is taken too (it was refused)
            theirs.param_groups[0]["betas"] = (0.5, 0.9)
        for name, t in tensors.items():
            t.grad = torch.tensor(grads[name].copy())
        theirs.step()
        ours.step(grads)
    assert ours.betas == (0.5, 0.9) and all(type(beta) is float for beta in ours.betas)
    for name, t in tensors.items():
        assert_close(params[name], t.detach().numpy(), np.float64, name)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix itself
@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_np_matrix_parameters_and_gradients_step_as_plain_arrays(cls):
    """An ``np.matrix`` gradient went through the checks, and NumPy's
    operators on it are matrix algebra: Adam's ``g * g`` was a matrix product
    and the parameters came out NaN.  A matrix parameter (with weight decay)
    did the same.  Both are used as plain arrays; the matrix parameter is
    still updated in place."""
    grad_steps = [{"W": g["W"][:7, :7]} for g in make_grads(np.float64)]
    plain = {"W": make_params(np.float64)["W"][:7, :7].copy()}
    matrix = {"W": np.asmatrix(plain["W"].copy())}
    kwargs = dict(lr=0.1, weight_decay=0.1) | (dict(momentum=0.9) if cls is SGD else {})
    plain_opt, matrix_opt = cls(plain, **kwargs), cls(matrix, **kwargs)
    for grads in grad_steps:
        plain_opt.step(grads)
        matrix_opt.step({"W": np.asmatrix(grads["W"])})
    assert type(matrix["W"]) is np.matrix
    np.testing.assert_array_equal(np.asarray(matrix["W"]), plain["W"])
    g, before = {"W": np.asmatrix(grad_steps[0]["W"].copy())}, grad_steps[0]["W"]
    expected = np.linalg.norm(before)
    assert clip_grad_norm(g, 1.0) == pytest.approx(expected, rel=1e-12)  # was NumPy's "shapes not aligned"
    np.testing.assert_allclose(np.asarray(g["W"]), before / (expected + 1e-6), rtol=1e-12)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_defaults_are_torchs(name):
    """SGD had no default lr where torch.optim.SGD has 1e-3: a loop ported
    from torch without one failed.  Every argument both take defaults alike."""
    import inspect

    torch = import_or_skip("torch")
    ours = inspect.signature(getattr(numba_lstm.optim, name)).parameters
    theirs = inspect.signature(getattr(torch.optim, name)).parameters
    shared = [arg for arg in ours if arg != "params" and arg in theirs]
    assert "lr" in shared and len(shared) >= 4
    for arg in shared:
        assert ours[arg].default == theirs[arg].default, (name, arg, ours[arg].default, theirs[arg].default)


def test_sgd_with_the_default_lr_steps_as_torchs():
    params = {"W": np.linspace(-1.0, 1.0, 6).reshape(2, 3)}
    grads = [{"W": np.full((2, 3), 0.5)}, {"W": np.arange(6.0).reshape(2, 3)}]
    torch = import_or_skip("torch")
    ours, theirs = run_ours(SGD, params, grads), run_torch(torch.optim.SGD, params, grads)
    for mine, torchs in zip(ours, theirs, strict=True):
        assert not np.array_equal(mine["W"], params["W"])
        assert_close(mine["W"], torchs["W"], np.float64, "SGD with the default lr")
