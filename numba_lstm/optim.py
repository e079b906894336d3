"""Optimizers and gradient clipping for NumPy training loops.

An optimizer takes a dict of name -> parameter array (``layer.params``, or
several of them merged with ``merge``) and updates those arrays in place from
a dict of gradients with the same names (``layer.grads``); extra keys in the
gradients, such as ``"h0"`` and ``"c0"``, are ignored.  The update rules and
their order of operations follow ``torch.optim`` (``SGD``, ``Adam``,
``AdamW``), so a model trained here follows the same trajectory as the same
model in PyTorch, to rounding: torch fuses some multiplies and adds (its
``add``, ``lerp`` and ``addcdiv`` kernels), which moves an element by an
ulp now and then.  ``clip_grad_norm`` follows
``torch.nn.utils.clip_grad_norm_``.  For an LSTM that holds for a torch module
with one trainable bias per gate (``bias_hh`` frozen at zero, say): numba_lstm
holds one bias ``b = bias_ih + bias_hh``, while torch updates its two biases
each with the same gradient, so their sum moves twice as far a step.

An optimizer holds the arrays it was given, not the dict: a parameter
replaced in the layer's dict afterwards (``layer.params["W"] = W``) is not
the one it updates.  Assign in place (``layer.params["W_l0"][...] = W``), or
build the optimizer again (``load_state_dict`` carries its state over).

Every update runs in the parameters' dtype: float32 parameters stay float32
and so does the optimizer's state.
"""

import math
from collections import Counter
from collections.abc import Mapping

import numpy as np

from numba_lstm._validation import FLOAT_DTYPES, _describe, byte_bounds, check_bool, is_real, refuse_masked

__all__ = ["SGD", "Adam", "AdamW", "clip_grad_norm", "merge"]


def merge(dicts):
    """Merge named dicts into one with dotted names.

    Parameters
    ----------
    dicts : dict of prefix -> dict of name -> ndarray
        For example ``{"lstm": lstm.params, "head": head.params}``.

    Returns
    -------
    dict of ``"prefix.name"`` -> ndarray
        The same arrays (not copies), e.g. ``{"lstm.W": ..., "head.W": ...}``,
        so an optimizer built on ``merge(params)`` updates the layers' own
        arrays, and ``merge(grads)`` gives the matching gradients.
    """
    if not isinstance(dicts, dict):
        raise TypeError(f"dicts must be a dict of prefix -> dict of arrays, got {type(dicts).__name__}")
    merged, origin = {}, {}
    for prefix, named in dicts.items():
        if not isinstance(named, dict):
            raise TypeError(f"dicts[{prefix!r}] must be a dict of name -> array, got {type(named).__name__}")
        for name, value in named.items():
            key = f"{prefix}.{name}"
            if key in merged:
                raise ValueError(
                    f"dicts gives the name {key!r} twice: dicts[{origin[key][0]!r}][{origin[key][1]!r}] and "
                    f"dicts[{prefix!r}][{name!r}]; rename a prefix or a name so that every dotted name is distinct"
                )
            merged[key], origin[key] = value, (prefix, name)
    return merged


def _shared_pairs(arrays):
    """The pairs of keys of ``arrays`` (key -> ndarray) whose arrays share memory, in sweep order.

    The arrays are taken in the order of their first byte, and each is
    compared only with the earlier ones whose memory reaches past that byte:
    for arrays apart that is a sort, where comparing every pair took 0.1 s
    for 1000 arrays at every ``clip_grad_norm`` call.
    """
    keys = list(arrays)
    spans = sorted((*byte_bounds(a), i) for i, a in enumerate(arrays.values()) if a.size)
    reaching = []  # (end, index) of the arrays taken so far that may reach the next one
    for start, end, i in spans:
        reaching = [(e, j) for e, j in reaching if e > start]
        for _, j in reaching:
            if np.shares_memory(arrays[keys[i]], arrays[keys[j]]):
                yield keys[min(i, j)], keys[max(i, j)]
        reaching.append((end, i))


def _refuse_shared(what, arrays):
    """Raise ValueError if two entries of ``arrays`` (name -> ndarray) share memory.

    Updating such entries in place would change the memory twice (an
    optimizer step or a clip applied twice).
    """
    for first, second in _shared_pairs(arrays):
        raise ValueError(
            f"{what}[{first!r}] and {what}[{second!r}] are the same array (or share memory): "
            "it would be updated twice; pass each array under one name only"
        )


def _check_number(name, value, low=0.0, low_inclusive=True, high=None, infinite=False):
    """``value`` as a float; ``infinite``: +inf is accepted too (never NaN)."""
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        value = float(value)
    except OverflowError:  # an int past float's range
        # Its bits, not its digits: str() of an int past 4300 digits raises.
        raise ValueError(f"{name} must be finite, got an integer of {abs(value).bit_length()} bits") from None
    below = value < low if low_inclusive else value <= low
    finite = math.isfinite(value) or (infinite and value == math.inf)
    if not finite or below or (high is not None and value >= high):
        bound = f"{'>=' if low_inclusive else '>'} {low}" + (f" and < {high}" if high is not None else "")
        raise ValueError(f"{name} must be {'a number' if infinite else 'finite'} and {bound}, got {value!r}")
    return value


def _plain(a):
    """``a`` itself, or a plain ndarray view of its memory if it is of a
    subclass: NumPy's operators on an ``np.matrix`` are matrix algebra (Adam's
    ``g * g`` a matrix product, which made its parameters NaN)."""
    return a if type(a) is np.ndarray else a.view(np.ndarray)


def _check_betas(name, value):
    """``value`` as a pair of floats in [0, 1)."""
    if not isinstance(value, (tuple, list, np.ndarray)) or np.shape(value) != (2,):
        raise TypeError(f"{name} must be a pair (beta1, beta2), got {_describe(value)}")
    return (_check_number(f"{name}[0]", value[0], high=1.0), _check_number(f"{name}[1]", value[1], high=1.0))


def _hyperparameter(name, check, doc):
    """A hyperparameter attribute checked as the constructor checks it,
    whenever it is set: between steps too, to schedule it (a NaN momentum
    set there made the parameters NaN at the next step)."""
    private = "_" + name

    def fset(self, value):
        value = check(name, value)
        self._check_together(**{name: value})
        setattr(self, private, value)

    return property(lambda self: getattr(self, private), fset, doc=doc)


def _check_params(params):
    if not isinstance(params, dict) or not params:
        raise TypeError(
            "params must be a non-empty dict of name -> parameter array (e.g. layer.params), "
            f"got {type(params).__name__}"
        )
    for name, p in params.items():
        if not isinstance(p, np.ndarray):
            raise TypeError(f"params[{name!r}] must be a numpy array, got {type(p).__name__}")
        refuse_masked(f"params[{name!r}]", p)
        if p.dtype not in FLOAT_DTYPES:
            raise TypeError(f"params[{name!r}] must have dtype float32 or float64, got {p.dtype}")
        if not p.flags.writeable:
            raise ValueError(f"params[{name!r}] must be writeable: the optimizer updates it in place")
    _refuse_shared("params", params)
    return {name: _plain(p) for name, p in params.items()}


def _check_state_entry(entry, value, key, p):
    """An entry of a loaded state, checked against its parameter ``p``: a
    positive integer scalar for ``"step"``, else a copy of ``p``'s shape and
    dtype (``"exp_avg_sq"``, a mean of squares, >= 0 everywhere)."""
    refuse_masked(f"state_dict[{entry!r}]", value)  # np.asarray would load the values under the mask
    value = np.asarray(value)
    if key == "step":
        if value.shape != () or value.dtype.kind not in "iu" or value < 1:
            raise ValueError(f"state_dict[{entry!r}] must be a positive integer scalar, got {value!r:.200}")
        return int(value)
    if value.shape != p.shape or value.dtype != p.dtype:
        raise ValueError(
            f"state_dict[{entry!r}] must have its parameter's shape {p.shape} and dtype {p.dtype}, "
            f"got {value.shape} {value.dtype}"
        )
    if key == "exp_avg_sq" and not np.all(value >= 0):  # NaN fails too
        raise ValueError(
            f"state_dict[{entry!r}] must be >= 0 everywhere (a mean of squares), got {value.min()!r} among its values"
        )
    return np.array(value, order="C")


def _check_grad(name, g, p):
    """Return the gradient of parameter ``name`` checked against ``p``, or None to skip."""
    if g is None:
        return None
    if not isinstance(g, np.ndarray):
        raise TypeError(f"grads[{name!r}] must be a numpy array, got {type(g).__name__}")
    # NumPy's arithmetic on a masked array computes the masked values too (an
    # SGD step moved a masked entry by lr times the one beside it).
    refuse_masked(f"grads[{name!r}]", g)
    if g.shape != p.shape:
        raise ValueError(f"grads[{name!r}] must have shape {p.shape} (its parameter's), got {g.shape}")
    if g.dtype != p.dtype:
        raise TypeError(f"grads[{name!r}] must have dtype {p.dtype} (its parameter's), got {g.dtype}")
    return _plain(g)


def _refuse_gradients_in_parameters(params, grads):
    """ValueError if a gradient shares memory with a parameter, its own or another's.

    The step updates the parameters in place, so such a gradient would change
    before the step read it (AdamW's decay shrank a gradient that was its own
    parameter before the Adam step read it; an earlier parameter's update
    changes another's gradient in any optimizer).  Gradients that share
    memory with each other are only read: allowed.
    """
    arrays = {("params", name): p for name, p in params.items()}
    arrays |= {("grads", name): g for name, g in grads.items() if g is not None}
    for first, second in _shared_pairs(arrays):
        if first[0] != second[0]:  # a parameter and a gradient
            (_, name), (_, owner) = (first, second) if first[0] == "grads" else (second, first)
            whose = "its own parameter" if owner == name else f"params[{owner!r}]"
            raise ValueError(
                f"grads[{name!r}] shares memory with {whose}: the step updates the parameters in place, "
                "which would change the gradient before it is read; pass a copy"
            )


class Optimizer:
    """Base class: holds the parameters and walks the gradients in ``step``.

    Parameters whose gradient is ``None`` are skipped (like a PyTorch
    parameter whose ``.grad`` is None); a parameter name missing from the
    gradients is an error, because it usually means the names do not match.
    """

    #: What a parameter's state holds once it has taken a step: all, or none.
    state_keys = ()

    def __init__(self, params, lr):
        self.params = _check_params(params)
        self.lr = lr
        self.state = {name: {} for name in self.params}

    lr = _hyperparameter(
        "lr", _check_number, "The learning rate; set it between steps to schedule it (finite, >= 0)."
    )

    weight_decay = _hyperparameter(
        "weight_decay",
        _check_number,
        "Weight decay (finite, >= 0): an L2 penalty on the gradient, or AdamW's decay.",
    )

    def _check_together(self, **new):
        """Raise ValueError if the hyperparameters, with ``new`` (name -> checked
        value) in place of theirs, do not go together."""

    def state_dict(self):
        """The optimizer's state, to resume training: ``np.savez(path, **opt.state_dict())``.

        A flat dict of ``"<parameter name>/<key>"`` -> ndarray (copies) for
        each parameter that has taken a step: SGD's ``momentum_buffer``;
        Adam's and AdamW's ``step`` (an int64 scalar), ``exp_avg`` and
        ``exp_avg_sq``, the keys ``torch.optim`` uses (the dict is flat and
        not torch's format: torch keeps ``step`` as a tensor, for one, which
        ``load_state_dict`` refuses).  The hyperparameters
        (``lr``, ``betas``, ...) are not in it: they are the constructor's.
        """
        self._names_by_text()  # names that read the same as text would collide here
        return {
            f"{name}/{key}": np.array(value)
            for name, state in self.state.items()
            for key, value in state.items()
        }

    def load_state_dict(self, state_dict):
        """Take the state that ``state_dict`` returned (or ``np.load`` of its
        file) for the same parameter names, shapes and dtypes, as copies.
        Every entry is checked first: on an error the state is unchanged."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict of name -> array, got {type(state_dict).__name__}")
        names = self._names_by_text()
        new = {name: {} for name in self.params}
        for entry in state_dict:
            text, _, key = str(entry).rpartition("/")
            name = names.get(text)
            if name is None or key not in self.state_keys:
                raise KeyError(
                    f"state_dict has the entry {entry!r}; {type(self).__name__} takes '<parameter>/<key>' with "
                    f"one of its parameters {list(self.params)} and a key in {list(self.state_keys)}"
                )
            new[name][key] = _check_state_entry(entry, state_dict[entry], key, self.params[name])
        for name, state in new.items():
            if state and set(state) != set(self.state_keys):
                missing = [key for key in self.state_keys if key not in state]
                raise ValueError(f"state_dict holds {sorted(state)} for {name!r} but not {missing}")
        self.state = new

    def _names_by_text(self):
        """The parameter names by their text (``state_dict``'s keys are text: a name may be an int)."""
        names = {str(name): name for name in self.params}
        if len(names) != len(self.params):
            raise ValueError(
                f"params has names that read the same as text ({list(self.params)}), so state_dict cannot "
                "tell them apart; give every parameter a distinct string name"
            )
        return names

    def step(self, grads):
        """Update every parameter in place from ``grads`` (a dict with the same names)."""
        if not isinstance(grads, dict):
            raise TypeError(f"grads must be a dict of name -> gradient array, got {type(grads).__name__}")
        missing = [name for name in self.params if name not in grads]
        if missing:
            raise KeyError(
                f"grads has no entry for parameter(s) {missing}; expected the names {list(self.params)}, "
                f"got {list(grads)}"
            )
        checked = [(name, p, _check_grad(name, grads[name], p)) for name, p in self.params.items()]
        _refuse_gradients_in_parameters(self.params, {name: g for name, _, g in checked})
        for name, p, g in checked:
            if g is not None:
                self._update(p, g, self.state[name])

    def _update(self, p, g, state):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

    With weight decay ``λ``, momentum ``μ``, dampening ``τ``::

        d = g + λ p
        buf = d (first step), else μ buf + (1 - τ) d
        d = d + μ buf (nesterov), else buf
        p -= lr d

    Parameters
    ----------
    params : dict of name -> ndarray
    lr : float, default 0.001
        torch's default too.
    momentum : float, default 0
    dampening : float, default 0
    weight_decay : float, default 0
        L2 penalty added to the gradient.
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    """

    state_keys = ("momentum_buffer",)

    def __init__(self, params, lr=0.001, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        self.momentum = momentum
        self.dampening = dampening
        self.weight_decay = weight_decay
        self.nesterov = nesterov

    momentum = _hyperparameter("momentum", _check_number, "Momentum factor (finite, >= 0).")
    dampening = _hyperparameter("dampening", _check_number, "Dampening of the momentum (finite, >= 0).")
    nesterov = _hyperparameter(
        "nesterov", check_bool, "Nesterov momentum: True or False (a string such as 'False' is refused)."
    )

    def _check_together(self, **new):
        values = {
            name: new.get(name, getattr(self, "_" + name, None))
            for name in ("momentum", "dampening", "nesterov")
        }
        if values["nesterov"] and (values["momentum"] <= 0 or values["dampening"] != 0):
            raise ValueError(
                "nesterov=True needs momentum > 0 and dampening == 0, "
                f"got momentum={values['momentum']} and dampening={values['dampening']}"
            )

    def _update(self, p, g, state):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= self.momentum
                buf += (1.0 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (``weight_decay`` is an L2 penalty on the gradient).

    At step ``t``, with ``g`` the gradient plus ``weight_decay * p``::

        m = β1 m + (1 - β1) g
        v = β2 v + (1 - β2) g²
        p -= lr / (1 - β1^t) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)

    Parameters
    ----------
    params : dict of name -> ndarray
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0
    """

    decoupled = False
    state_keys = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay

    betas = _hyperparameter("betas", _check_betas, "(beta1, beta2), each in [0, 1).")
    eps = _hyperparameter("eps", _check_number, "Added to the denominator (finite, >= 0).")

    def _update(self, p, g, state):
        beta1, beta2 = self.betas
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p)
            state["exp_avg_sq"] = np.zeros_like(p)
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if self.weight_decay:
            if self.decoupled:
                p *= 1.0 - self.lr * self.weight_decay
            else:
                g = g + self.weight_decay * p
        # torch's exp_avg.lerp_(g, w), w = 1 - beta1, which computes
        # m + w (g - m) for w < 0.5 and g - (1 - w) (g - m) from 0.5 on: with
        # beta1 = 0 that is g, where m + (g - m) lost a g much smaller than m.
        # The weight in the parameters' dtype, as torch converts it (beta1 =
        # 0.5 + 1e-9 took the other branch in float64 than torch in float32).
        w = p.dtype.type(1.0 - beta1)
        if w < 0.5:
            m += w * (g - m)
        else:
            np.subtract(g, (1 - w) * (g - m), out=m)
        v *= beta2
        v += (1.0 - beta2) * g * g  # as torch's addcmul_: g * g alone overflows for |g| > 1.8e19 in float32
        step_size = self.lr / (1.0 - beta1**t)
        denom = np.sqrt(v)
        denom /= math.sqrt(1.0 - beta2**t)
        denom += self.eps
        p -= step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    The parameter first shrinks by ``p *= 1 - lr * weight_decay``; the Adam
    step then uses the plain gradient.  Same arguments as ``Adam``, with
    ``weight_decay`` defaulting to 0.01 as in PyTorch.
    """

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


def clip_grad_norm(grads, max_norm, names=None):
    """Scale gradients in place so that their global 2-norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the total norm is the 2-norm of all
    the gradients together, and every gradient is multiplied by
    ``min(1, max_norm / (total_norm + 1e-6))``.  One difference: where the
    float32 sum of squares overflows (a norm above about 1.8e19), the norm is
    summed again in float64, so it is the finite norm and the gradients are
    scaled by its ``coef``; torch's float32 norm is then ``inf`` and it
    multiplies every gradient by 0.

    Parameters
    ----------
    grads : dict of name -> ndarray
    max_norm : float
        ``inf`` measures the norm and scales nothing (unless the norm is
        ``inf`` or ``nan``, below), as PyTorch.
    names : collection of str, optional
        Only these entries (each named once) are measured and scaled (for example
        ``layer.params``, to leave ``"h0"`` / ``"c0"`` out).  All entries by
        default; ``None`` values are skipped.

    Returns
    -------
    float
        The total norm before clipping.  If it is ``nan`` the gradients are
        scaled by ``nan``, if it is ``inf`` by 0 (by ``nan`` when ``max_norm``
        is ``inf`` too), as PyTorch does (which raises only with
        ``error_if_nonfinite=True``).
    """
    if not isinstance(grads, dict):
        raise TypeError(f"grads must be a dict of name -> gradient array, got {type(grads).__name__}")
    max_norm = _check_number("max_norm", max_norm, infinite=True)
    if names is None:
        names = list(grads)
    else:
        if isinstance(names, (str, bytes)):
            raise TypeError(
                f"names must be a collection of names such as [{names!r}], not a string, got {names!r}"
            )
        names = list(names)
        repeated = [name for name, count in Counter(names).items() if count > 1]
        if repeated:
            raise ValueError(f"names must name each entry once, got {repeated} more than once")
        missing = [name for name in names if name not in grads]
        if missing:
            raise KeyError(f"grads has no entry for {missing} named in names; it has {list(grads)}")
    arrays = {}
    for name in names:  # every check before any gradient is scaled
        g = grads[name]
        if g is None:
            continue
        if not isinstance(g, np.ndarray) or g.dtype not in FLOAT_DTYPES:
            raise TypeError(f"grads[{name!r}] must be a float32 or float64 numpy array, got {_describe(g)}")
        refuse_masked(f"grads[{name!r}]", g)  # its norm counted the masked values
        if not g.flags.writeable:
            raise ValueError(f"grads[{name!r}] must be writeable: clip_grad_norm scales it in place")
        arrays[name] = _plain(g)  # an np.matrix's ravel() is 2-D: np.dot refused it
    _refuse_shared("grads", arrays)
    arrays = list(arrays.values())
    if not arrays:
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite norms are reported, not warned
        total = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in arrays if g.size))
        # np.dot in float32 overflows where the norm is still finite: redo in float64.
        if math.isinf(total):
            total = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in arrays))
        coef = min(max_norm / (total + 1e-6), 1.0)  # nan stays nan, inf gives 0 (as torch)
        for g in arrays:
            g *= coef
    return total
