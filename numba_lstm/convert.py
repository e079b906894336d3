"""Weight conversion between the native layout and other frameworks.

Pure functions on arrays and dicts; nothing here depends on the layer class
and no framework is imported until a function that needs it is called.

The native layout (README, "The native layout"), per layer ``k`` and direction:

* ``W_l{k}`` of shape ``(I_k + H_out, 4H)``: rows ``0..I_k-1`` multiply
  ``x_t``, the rest multiply ``h_{t-1}``; columns are the gates i, f, g, o.
* ``b_l{k}`` of shape ``(4H,)``.
* with ``proj_size = P > 0``: ``W_hr_l{k}`` of shape ``(H, P)`` and
  ``h_t = (o * tanh(c_t)) @ W_hr``, so ``H_out = P``; otherwise ``H_out = H``.
* the reverse direction of a bidirectional model adds the suffix
  ``_reverse`` to each name.

``I_0`` is ``input_size``; layer ``k > 0`` reads the concatenated outputs of
the layer below, ``I_k = H_out * num_directions``.  A *config* is a dict with
the keys ``input_size``, ``hidden_size``, ``num_layers``, ``bidirectional``
and ``proj_size`` (the last three default to 1, False and 0).

Formats
-------
PyTorch ``nn.LSTM``     ``from_torch`` / ``to_torch_state_dict``
Keras 3 ``LSTM``        ``from_keras`` / ``to_keras_weights``
TF1 ``LSTMCell``        ``from_tf1`` / ``to_tf1`` (one cell: ``(W, b)``)
ONNX ``LSTM``           ``from_onnx`` / ``to_onnx``
Flax ``LSTMCell``       ``from_flax`` / ``to_flax`` (one cell: ``(W, b)``; linen or nnx)

Arrays keep their dtype (float32 stays float32, float64 stays float64);
other dtypes are refused, never cast.  Every conversion only moves values
(transposes, gate permutations), except where a format stores two biases
(PyTorch, ONNX: summed on import) or TF1's ``forget_bias`` (added on import,
subtracted on export): those are one floating-point addition.

The ``from_*`` functions return new C-contiguous arrays, never views of
their input, each starting on a 64-byte cache line as an ``LSTM`` layer's
parameters do, so ``W`` can go straight to ``jit.step_into``, which reads it
in place.
"""

import importlib
import re
from collections import Counter
from collections.abc import Mapping

import numpy as np

from numba_lstm._panels import aligned_copy
from numba_lstm._validation import (
    FLOAT_DTYPES,
    check_binary_file,
    check_bool,
    check_integer,
    check_path,
    is_real,
    refuse_foreign_byte_order,
    refuse_masked,
    some_names,
)

__all__ = [
    "check_config",
    "check_params",
    "from_flax",
    "from_keras",
    "from_onnx",
    "from_tf1",
    "from_torch",
    "parameter_shapes",
    "to_flax",
    "to_keras_weights",
    "to_onnx",
    "to_tf1",
    "to_torch_state_dict",
]

CONFIG_KEYS = ("input_size", "hidden_size", "num_layers", "bidirectional", "proj_size")
_IGNORED_CONFIG_KEYS = ("dropout", "batch_first")
_CONFIG_DEFAULTS = {"num_layers": 1, "bidirectional": False, "proj_size": 0}
_DIRECTIONS = ("", "_reverse")

# Block permutations: native block j is the other format's block PERM[j].
_ONNX_FROM_NATIVE = (0, 3, 1, 2)  # ONNX i, o, f, c  <- native i, f, g, o
_NATIVE_FROM_ONNX = (0, 2, 3, 1)  # native i, f, g, o <- ONNX i, o, f, c
_TF1_FROM_NATIVE = (0, 2, 1, 3)  # TF1 i, j, f, o    <- native i, f, g, o (its own inverse)


# --------------------------------------------------------------------------
# arrays, configs and parameter dicts


def _require(module, needed_by):
    """Import the optional package ``module`` for ``needed_by``; if it is
    missing, a ModuleNotFoundError that names the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:  # the package is there but broken: its own error
            raise
        raise ModuleNotFoundError(
            f"{needed_by} needs {module}, which is not installed: pip install {module}, or numba_lstm's "
            "convert extra (pip install '.[convert]' in its clone)",
            name=module,
        ) from error


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"[:200]


def _to_numpy(name, value):
    """A float32/float64 ndarray from an ndarray, torch tensor or array-like object; never cast."""
    if type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach"):
        if str(value.dtype) not in ("torch.float32", "torch.float64"):
            raise TypeError(
                f"{name} must be a float32 or float64 tensor, got dtype {value.dtype}; "
                "numba_lstm never casts parameters silently"
            )
        if value.is_meta:
            raise ValueError(f"{name} is a tensor on the meta device: it has a shape but no data to convert")
        value = value.detach().cpu().numpy()
    elif not isinstance(value, np.ndarray):
        if isinstance(value, (list, tuple)) or not hasattr(value, "__array__"):
            raise TypeError(f"{name} must be an array of float32 or float64, got {_describe(value)}")
        value = np.asarray(value)  # JAX / TF arrays: keeps their dtype
    refuse_masked(name, value)
    if value.dtype not in FLOAT_DTYPES:
        refuse_foreign_byte_order(name, value)
        raise TypeError(
            f"{name} must have dtype float32 or float64, got {value.dtype}; "
            "numba_lstm never casts parameters silently"
        )
    return value


# Every ``from_*`` returns its native arrays through ``aligned_copy``: new
# C-contiguous arrays on a cache line, never views of the caller's tensors,
# laid out as an ``LSTM`` layer's parameters are.  ``jit.step_into`` reads
# ``W`` in place, row by row: ``from_torch`` and ``from_onnx`` once returned
# the concatenated transposes in Fortran order, on which a step took 3.1
# instead of 0.81 us at H = 32 and 56 instead of 8.9 us at H = 128
# (bench/NOTES.md, "Session 24"); a ``W`` 16 or 48 bytes past a line made a
# step 4-19% slower ("Session 19").


def _aligned_params(params):
    """``params`` (name -> array) with every array an ``aligned_copy``."""
    return {name: aligned_copy(value) for name, value in params.items()}


def _expect_shape(name, value, shape, meaning):
    if value.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} {meaning}, got {value.shape}")


def _expect_keys(what, given, expected, listing=""):
    """Raise ValueError unless ``given`` has exactly the keys ``expected`` (any order).

    The message is ``what``, the missing and the unexpected keys, then (if
    ``listing`` is given) ``listing`` followed by the expected keys.
    """
    missing = [k for k in expected if k not in given]
    unknown = sorted(set(given) - set(expected), key=str)
    if missing or unknown:
        tail = f"; {listing} {some_names(list(expected), 40)}" if listing else ""
        raise ValueError(f"{what}: missing {some_names(missing)}, unexpected {some_names(unknown)}{tail}")


def _same_dtype(arrays):
    """The one dtype of ``arrays`` (a dict name -> array); refuse a mixture."""
    dtypes = {a.dtype for a in arrays.values()}
    if len(dtypes) > 1:
        listing = ", ".join(f"{k}: {a.dtype}" for k, a in arrays.items())
        raise TypeError(f"all parameters must have one dtype (float32 or float64), got {listing}")
    return dtypes.pop() if dtypes else None


def _sum_of_biases(first, second):
    """``first + second``, with ``first`` itself where ``second`` is zero: the
    native bias goes out as a framework's first bias beside a zero second
    one, and ``-0.0 + 0.0`` is ``+0.0``, so a plain sum did not bring back a
    ``-0.0`` of the native bias."""
    return np.where(second == 0, first, first + second)


def check_config(config):
    """Validate a config dict; return a normalised copy with the five keys of ``CONFIG_KEYS``.

    A layer's ``dropout`` and ``batch_first`` are accepted and left out of the
    result (they do not change the parameters).  Raises ``ValueError`` naming
    a missing, unknown or invalid key, ``TypeError`` naming one whose value
    has the wrong type (a float for a size, a string for ``bidirectional``).
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict with keys {CONFIG_KEYS}, got {type(config).__name__}")
    unknown = sorted(set(config) - set(CONFIG_KEYS) - set(_IGNORED_CONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"config has unknown keys {unknown}; the keys are {CONFIG_KEYS} "
            f"(and {_IGNORED_CONFIG_KEYS}, which do not change the parameters)"
        )
    missing = [k for k in ("input_size", "hidden_size") if k not in config]
    if missing:
        raise ValueError(f"config is missing {missing}")
    out = {**_CONFIG_DEFAULTS, **config}
    for key in ("input_size", "hidden_size", "num_layers"):
        out[key] = check_integer(f"config[{key!r}]", out[key])
    out["proj_size"] = check_integer("config['proj_size']", out["proj_size"], minimum=0)
    out["bidirectional"] = check_bool("config['bidirectional']", out["bidirectional"])
    if out["proj_size"] >= out["hidden_size"]:
        raise ValueError(
            f"config['proj_size'] must be smaller than hidden_size = {out['hidden_size']} "
            f"(as in torch.nn.LSTM), got {out['proj_size']}"
        )
    return {k: out[k] for k in CONFIG_KEYS}


def _layer_sizes(config, k):
    """``(I_k, H, H_out)`` of layer ``k``."""
    H, P = config["hidden_size"], config["proj_size"]
    H_out = P or H
    D = 2 if config["bidirectional"] else 1
    return (config["input_size"] if k == 0 else H_out * D), H, H_out


def _directions(config):
    return _DIRECTIONS if config["bidirectional"] else _DIRECTIONS[:1]


def parameter_shapes(config):
    """The native parameters of ``config``: an ordered dict name -> shape.

    For each layer and direction: ``W_l{k}{sfx}`` (I_k + H_out, 4H),
    ``b_l{k}{sfx}`` (4H,) and, with a projection, ``W_hr_l{k}{sfx}`` (H, P).
    """
    config = check_config(config)
    shapes = {}
    for k in range(config["num_layers"]):
        I_k, H, H_out = _layer_sizes(config, k)
        for sfx in _directions(config):
            shapes[f"W_l{k}{sfx}"] = (I_k + H_out, 4 * H)
            shapes[f"b_l{k}{sfx}"] = (4 * H,)
            if config["proj_size"]:
                shapes[f"W_hr_l{k}{sfx}"] = (H, config["proj_size"])
    return shapes


def check_params(config, params):
    """Validate ``params`` against ``config``; return ``(config, params)`` normalised.

    Every expected name must be present with its shape, no other name, all
    arrays float32 or all float64.  The returned dict holds the caller's arrays
    (no copies) in the canonical order.
    """
    shapes = parameter_shapes(config)
    config = check_config(config)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict of name -> array, got {type(params).__name__}")
    _expect_keys(f"params do not match the config {config}", params, shapes, "expected names")
    out = {}
    for name, shape in shapes.items():
        value = _to_numpy(f"params[{name!r}]", params[name])
        _expect_shape(f"params[{name!r}]", value, shape, f"for the config {config}")
        out[name] = value
    _same_dtype(out)
    return config, out


# --------------------------------------------------------------------------
# PyTorch

_TORCH_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")


def _from_package(obj, package):
    """Whether the class of ``obj``, or a class it derives from, comes from
    ``package`` (asked before importing the package)."""
    return any(c.__module__.split(".")[0] == package for c in type(obj).__mro__)


def _refuse_overrides(obj, base, base_name, methods, what, remedy):
    """Refuse an instance of a subclass of ``base`` that overrides one of
    ``methods`` (those ``base`` has: private ones vary between versions): it
    may compute something else than ``base``."""
    changed = [m for m in methods if hasattr(base, m) and getattr(type(obj), m) is not getattr(base, m)]
    if changed:
        raise TypeError(
            f"{what} is a {type(obj).__name__}, a subclass of {base_name} that overrides {', '.join(changed)}: "
            f"numba_lstm cannot tell whether it still computes {base_name}'s equations; if it does, "
            f"convert its {remedy}"
        )


def from_torch(module_or_state_dict):
    """Convert a ``torch.nn.LSTM`` (or its state dict) to native ``(config, params)``.

    Parameters
    ----------
    module_or_state_dict : torch.nn.LSTM or dict of name -> tensor or ndarray
        The keys of ``nn.LSTM.state_dict()``: ``weight_ih_l{k}`` (4H, I_k),
        ``weight_hh_l{k}`` (4H, H_out), ``bias_ih_l{k}``, ``bias_hh_l{k}``
        (4H,), ``weight_hr_l{k}`` (P, H) with ``proj_size``, and the suffix
        ``_reverse`` for the backward direction.  Gate order i, f, g, o.

    Returns
    -------
    config : dict
        ``input_size``, ``hidden_size``, ``num_layers``, ``bidirectional``,
        ``proj_size``, inferred from the shapes.
    params : dict of name -> ndarray
        ``W_l{k} = [weight_ih.T; weight_hh.T]``, ``b_l{k} = bias_ih + bias_hh``
        (zero for ``bias=False``), ``W_hr_l{k} = weight_hr.T``; same dtype as
        the tensors (float32 or float64).

    Notes
    -----
    ``dropout`` and ``batch_first`` are not parameters and are not returned;
    ``LSTM.from_torch`` carries a module's over to the layer.
    """
    obj = module_or_state_dict
    if not isinstance(obj, Mapping):
        if not _from_package(obj, "torch"):
            raise TypeError(
                f"module_or_state_dict must be a torch.nn.LSTM or its state dict, got {type(obj).__name__}"
            )
        import torch

        if not isinstance(obj, torch.nn.LSTM):
            raise TypeError(
                f"module_or_state_dict must be a torch.nn.LSTM (not {type(obj).__name__}) or its state dict"
            )
        _refuse_overrides(
            obj, torch.nn.LSTM, "torch.nn.LSTM", ["forward"], "module_or_state_dict", "state_dict()"
        )
        obj = obj.state_dict()

    tensors = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise TypeError(
                f"the state dict's keys must be strings such as 'weight_ih_l0', got {key!r} ({type(key).__name__})"
            )
        m = _TORCH_KEY.match(key)
        if m is None:
            raise ValueError(
                f"unexpected key {key!r} in the state dict: an nn.LSTM has weight_ih_l{{k}}, weight_hh_l{{k}}, "
                "bias_ih_l{k}, bias_hh_l{k}, weight_hr_l{k} (suffix _reverse for the backward direction)"
            )
        tensors[key] = _to_numpy(f"state_dict[{key!r}]", value)
    if "weight_ih_l0" not in tensors:
        raise ValueError(f"the state dict has no 'weight_ih_l0'; got keys {sorted(tensors)}")

    layers = {int(_TORCH_KEY.match(k).group(2)) for k in tensors}
    num_layers = max(layers) + 1
    if num_layers > len(layers):  # checked before anything is built for num_layers layers
        absent = num_layers - len(layers)
        shown = [f"l{k}" for k in range(min(num_layers, len(layers) + 5)) if k not in layers][:5]
        raise ValueError(
            f"the state dict has weights for layer {max(layers)} but none for {absent} layer(s) below it "
            f"({', '.join(shown)}{', ...' if absent > 5 else ''}); an nn.LSTM's layers are numbered 0 to "
            "num_layers - 1"
        )
    bidirectional = any(k.endswith("_reverse") for k in tensors)
    has_bias = "bias_ih_l0" in tensors
    has_proj = "weight_hr_l0" in tensors
    w_ih0 = tensors["weight_ih_l0"]
    if w_ih0.ndim != 2 or w_ih0.shape[0] % 4 or w_ih0.shape[0] == 0:
        raise ValueError(f"state_dict['weight_ih_l0'] must have shape (4H, I), got {w_ih0.shape}")
    if has_proj and (tensors["weight_hr_l0"].ndim != 2 or tensors["weight_hr_l0"].shape[0] == 0):
        raise ValueError(
            f"state_dict['weight_hr_l0'] must have shape (P, H) with proj_size P >= 1, got "
            f"{tensors['weight_hr_l0'].shape} (an nn.LSTM with proj_size=0 has no weight_hr)"
        )
    config = {
        "input_size": w_ih0.shape[1],
        "hidden_size": w_ih0.shape[0] // 4,
        "num_layers": num_layers,
        "bidirectional": bidirectional,
        "proj_size": tensors["weight_hr_l0"].shape[0] if has_proj else 0,
    }
    config = check_config(config)

    expected = {}  # torch name -> shape
    for k in range(num_layers):
        I_k, H, H_out = _layer_sizes(config, k)
        for sfx in _directions(config):
            expected[f"weight_ih_l{k}{sfx}"] = (4 * H, I_k)
            expected[f"weight_hh_l{k}{sfx}"] = (4 * H, H_out)
            if has_bias:
                expected[f"bias_ih_l{k}{sfx}"] = (4 * H,)
                expected[f"bias_hh_l{k}{sfx}"] = (4 * H,)
            if has_proj:
                expected[f"weight_hr_l{k}{sfx}"] = (config["proj_size"], H)
    _expect_keys(f"the state dict does not describe one nn.LSTM with {config}", tensors, expected)
    for key, shape in expected.items():
        _expect_shape(f"state_dict[{key!r}]", tensors[key], shape, f"for an nn.LSTM with {config}")
    dtype = _same_dtype(tensors)

    params = {}
    for k in range(num_layers):
        for sfx in _directions(config):
            w_ih, w_hh = tensors[f"weight_ih_l{k}{sfx}"], tensors[f"weight_hh_l{k}{sfx}"]
            params[f"W_l{k}{sfx}"] = np.concatenate([w_ih.T, w_hh.T], axis=0)
            if has_bias:
                params[f"b_l{k}{sfx}"] = _sum_of_biases(
                    tensors[f"bias_ih_l{k}{sfx}"], tensors[f"bias_hh_l{k}{sfx}"]
                )
            else:
                params[f"b_l{k}{sfx}"] = np.zeros(w_ih.shape[0], dtype)
            if has_proj:
                params[f"W_hr_l{k}{sfx}"] = tensors[f"weight_hr_l{k}{sfx}"].T
    return config, _aligned_params(params)


def to_torch_state_dict(config, params, *, bias=True):
    """Native ``(config, params)`` -> a state dict for ``torch.nn.LSTM``.

    Loads with ``strict=True`` into ``torch.nn.LSTM(input_size, hidden_size,
    num_layers=..., bidirectional=..., proj_size=..., bias=bias)`` of the same
    dtype (``module.double()`` for float64 parameters).

    Parameters
    ----------
    config, params : as returned by ``from_torch``
    bias : bool, default True
        True: ``bias_ih = b``, ``bias_hh = 0``.  False: for ``nn.LSTM(bias=False)``;
        every ``b`` must then be zero (else ``ValueError``).

    Returns
    -------
    dict of name -> torch.Tensor, in the order of ``nn.LSTM.state_dict()``.
    """
    config, params = check_params(config, params)
    bias = check_bool("bias", bias)
    torch = _require("torch", "to_torch_state_dict")

    out = {}
    for k in range(config["num_layers"]):
        I_k = _layer_sizes(config, k)[0]
        for sfx in _directions(config):
            W, b = params[f"W_l{k}{sfx}"], params[f"b_l{k}{sfx}"]
            # Copies, always: the transpose of a one-row block (I, H or P of
            # 1) is C-contiguous already, and a tensor from it would share
            # the caller's memory.
            out[f"weight_ih_l{k}{sfx}"] = torch.from_numpy(W[:I_k].T.copy())
            out[f"weight_hh_l{k}{sfx}"] = torch.from_numpy(W[I_k:].T.copy())
            if bias:
                out[f"bias_ih_l{k}{sfx}"] = torch.from_numpy(b.copy())
                out[f"bias_hh_l{k}{sfx}"] = torch.from_numpy(np.zeros_like(b))
            elif np.any(b != 0):
                raise ValueError(f"bias=False but params['b_l{k}{sfx}'] is not zero; pass bias=True")
            if config["proj_size"]:
                out[f"weight_hr_l{k}{sfx}"] = torch.from_numpy(params[f"W_hr_l{k}{sfx}"].T.copy())
    return out


# --------------------------------------------------------------------------
# Keras 3


def _single_config(I, H, bidirectional=False):
    return check_config(
        {"input_size": I, "hidden_size": H, "num_layers": 1, "bidirectional": bidirectional, "proj_size": 0}
    )


def _keras_direction(arrays, what):
    """``[kernel, recurrent_kernel(, bias)]`` -> ``(I, H, W, b)``."""
    names = ("kernel", "recurrent_kernel", "bias")
    arrays = {n: _to_numpy(f"{what} {n}", a) for n, a in zip(names, arrays, strict=False)}
    kernel, recurrent = arrays["kernel"], arrays["recurrent_kernel"]
    if recurrent.ndim != 2 or recurrent.shape[1] != 4 * recurrent.shape[0] or recurrent.shape[0] == 0:
        raise ValueError(f"{what} recurrent_kernel must have shape (H, 4H), got {recurrent.shape}")
    H = recurrent.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != 4 * H or kernel.shape[0] == 0:
        raise ValueError(f"{what} kernel must have shape (I, 4H) = (I, {4 * H}), got {kernel.shape}")
    if "bias" in arrays:
        _expect_shape(f"{what} bias", arrays["bias"], (4 * H,), "(4H,)")
    dtype = _same_dtype(arrays)
    b = arrays["bias"] if "bias" in arrays else np.zeros(4 * H, dtype)
    return kernel.shape[0], H, aligned_copy(np.concatenate([kernel, recurrent], axis=0)), aligned_copy(b)


def _check_keras_lstm(layer, what, go_backwards, in_bidirectional=False):
    """Refuse a Keras LSTM whose computation the native layout cannot represent
    (``go_backwards``: the value it must have)."""
    import keras

    if not isinstance(layer, keras.layers.LSTM):
        raise TypeError(f"{what} must be a keras.layers.LSTM, got {type(layer).__name__}")
    _refuse_overrides(
        layer, keras.layers.LSTM, "keras.layers.LSTM", ["call", "inner_loop"], what, "get_weights()"
    )
    if not isinstance(layer.cell, keras.layers.LSTMCell):
        raise TypeError(f"{what} has a cell of type {type(layer.cell).__name__}, not a keras.layers.LSTMCell")
    _refuse_overrides(
        layer.cell,
        keras.layers.LSTMCell,
        "keras.layers.LSTMCell",
        ["call"],
        f"{what}'s cell",
        "layer's get_weights()",
    )
    if not layer.built:
        raise ValueError(f"{what} is not built: call it on an input (or layer.build(input_shape)) first")
    for setting, expected in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        fn = getattr(layer, setting)
        # The activation by its name, or the same function from keras.ops.
        if fn is not keras.activations.get(expected) and fn is not getattr(keras.ops, expected):
            name = getattr(fn, "__name__", repr(fn))
            where = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', name)}"
            raise ValueError(
                f"{what} has {setting}={name!r} ({where}); numba_lstm computes {setting}={expected!r} only "
                f"(keras.activations.{expected} or keras.ops.{expected}: gates use an exact sigmoid, the "
                "candidate and cell output tanh)"
            )
    if bool(layer.go_backwards) != go_backwards:
        if go_backwards:
            raise ValueError(f"{what} must have go_backwards=True (the backward layer of a Bidirectional)")
        if in_bidirectional:  # "wrap it in a Bidirectional" read oddly there
            raise ValueError(
                f"{what} has go_backwards=True: numba_lstm's bidirectional layer runs its forward direction "
                "forwards; build the Bidirectional with a forward_layer of go_backwards=False"
            )
        raise ValueError(
            f"{what} has go_backwards=True, which the native layout cannot represent on its own "
            "(it reverses the output sequence); wrap it in keras.layers.Bidirectional or "
            "reverse the input yourself and convert a layer with go_backwards=False"
        )


def from_keras(layer_or_weights):
    """Convert a Keras 3 ``LSTM`` (or ``Bidirectional(LSTM)``) to native ``(config, params)``.

    Parameters
    ----------
    layer_or_weights : keras.layers.LSTM, keras.layers.Bidirectional or list of arrays
        A built layer, or its ``get_weights()``: ``[kernel (I, 4H),
        recurrent_kernel (H, 4H), bias (4H,)]`` (2 arrays when
        ``use_bias=False``: the bias is then zero); 6 (or 4) arrays are a
        ``Bidirectional``'s forward then backward weights (a ``Bidirectional``
        whose directions differ in ``use_bias``: pass the layer); two stacked
        layers' ``get_weights()`` of I = H have the same shapes and are read
        as one ``Bidirectional`` too: convert a stack layer by layer.  Gate
        order i, f, c, o, the native order, so ``W = [kernel; recurrent_kernel]``.

    Returns
    -------
    config, params : as for ``from_torch`` (one layer, no projection).

    Raises
    ------
    ValueError
        For what the native layout cannot represent, naming the setting:
        ``activation`` other than tanh, ``recurrent_activation`` other than
        sigmoid (e.g. ``'hard_sigmoid'``, the TF 1.x Keras default),
        ``go_backwards=True`` outside a ``Bidirectional``, a ``Bidirectional``
        with ``merge_mode`` other than ``'concat'``.

    Notes
    -----
    ``return_sequences=True`` returns the native ``y``; ``False`` returns its
    last step, the native ``h_n``.  ``unit_forget_bias``, ``dropout`` and
    ``recurrent_dropout`` only change initialisation or training and need no
    conversion.  Keras's state order is ``(h, c)``, the native one too.  A
    layer under a mixed-precision policy (``dtype="mixed_float16"`` or
    ``"mixed_bfloat16"``) holds float32 variables and computes in 16 bits;
    its weights convert exactly, to a float32 layer, which computes in
    float32: its outputs differ from Keras's by the 16-bit rounding (at most
    5e-4 for float16 and 4e-3 for bfloat16 at T = 20, B = 4, I = 16, H = 32).
    """
    obj = layer_or_weights
    if isinstance(obj, (list, tuple)):
        n = len(obj)
        if n in (2, 3):
            I, H, W, b = _keras_direction(obj, "keras weights")
            return _single_config(I, H), {"W_l0": W, "b_l0": b}
        if n in (4, 6):
            half = n // 2
            return _keras_bidirectional(
                obj[:half], obj[half:], "keras forward weights", "keras backward weights"
            )
        raise ValueError(
            "layer_or_weights as a list must hold [kernel, recurrent_kernel, bias] (2 or 3 arrays), "
            f"or a Bidirectional's 4 or 6, got {n} arrays (a Bidirectional whose directions differ in "
            "use_bias: pass the layer)"
        )
    if not _from_package(obj, "keras"):
        raise TypeError(
            "layer_or_weights must be a keras.layers.LSTM, a keras.layers.Bidirectional or a list of "
            f"arrays, got {type(obj).__name__}"
        )
    import keras

    if isinstance(obj, keras.layers.Bidirectional):
        _refuse_overrides(
            obj,
            keras.layers.Bidirectional,
            "keras.layers.Bidirectional",
            ["call", "_call_fused_lstm"],  # the latter: Keras 3.15's path for two LSTM layers
            "the keras layer",
            "forward_layer.get_weights() + backward_layer.get_weights()",
        )
        if obj.merge_mode != "concat":
            raise ValueError(
                f"Bidirectional has merge_mode={obj.merge_mode!r}; the native bidirectional output "
                "concatenates the directions, so only merge_mode='concat' is represented"
            )
        _check_keras_lstm(
            obj.forward_layer, "the Bidirectional's forward_layer", False, in_bidirectional=True
        )
        _check_keras_lstm(
            obj.backward_layer, "the Bidirectional's backward_layer", True, in_bidirectional=True
        )
        return _keras_bidirectional(
            obj.forward_layer.get_weights(),
            obj.backward_layer.get_weights(),
            "the Bidirectional's forward_layer weights",
            "the Bidirectional's backward_layer weights",
        )
    _check_keras_lstm(obj, "the keras layer", go_backwards=False)
    return from_keras(obj.get_weights())


def _keras_bidirectional(forward, backward, forward_name, backward_name):
    """``from_keras`` of a ``Bidirectional``: each direction's weights apart
    (2 or 3 arrays each: either may lack its bias)."""
    I, H, W, b = _keras_direction(forward, forward_name)
    I_r, H_r, W_r, b_r = _keras_direction(backward, backward_name)
    if (I_r, H_r) != (I, H):
        raise ValueError(f"{backward_name} have input size {I_r} and {H_r} units, {forward_name} {I} and {H}")
    _same_dtype({forward_name: W, backward_name: W_r})
    config = _single_config(I, H, bidirectional=True)
    return config, {"W_l0": W, "b_l0": b, "W_l0_reverse": W_r, "b_l0_reverse": b_r}


def to_keras_weights(config, params, *, layer=None, use_bias=True):
    """Native ``(config, params)`` -> the list for a Keras layer's ``set_weights``.

    Parameters
    ----------
    config, params : native; no projection (Keras's LSTM has none).
    layer : int, optional
        Which layer of a stacked model (one Keras ``LSTM`` each, the lower ones
        with ``return_sequences=True``); required when ``num_layers > 1``.
    use_bias : bool, default True
        False for a Keras layer with ``use_bias=False`` (the bias must be zero).

    Returns
    -------
    list of ndarray
        ``[kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,)]`` (no bias
        with ``use_bias=False``); for a bidirectional config the forward list
        followed by the backward one, for ``Bidirectional.set_weights``.
    """
    config, params = check_params(config, params)
    use_bias = check_bool("use_bias", use_bias)
    if config["proj_size"]:
        raise ValueError(
            f"config has proj_size={config['proj_size']}: a Keras LSTM has no projection, so it cannot hold it"
        )
    if layer is None:
        if config["num_layers"] > 1:
            raise ValueError(
                f"config has num_layers={config['num_layers']}: pass layer=k for the weights of Keras layer k"
            )
        layer = 0
    if (
        isinstance(layer, bool)
        or not isinstance(layer, (int, np.integer))
        or not 0 <= layer < config["num_layers"]
    ):
        raise ValueError(f"layer must be an integer in [0, {config['num_layers']}), got {layer!r}")
    I_k = _layer_sizes(config, layer)[0]
    out = []
    for sfx in _directions(config):
        W, b = params[f"W_l{layer}{sfx}"], params[f"b_l{layer}{sfx}"]
        out += [W[:I_k].copy(), W[I_k:].copy()]
        if use_bias:
            out.append(b.copy())
        elif np.any(b != 0):
            raise ValueError(f"use_bias=False but params['b_l{layer}{sfx}'] is not zero; pass use_bias=True")
    return out


# --------------------------------------------------------------------------
# TensorFlow 1 cells


def _cell_arrays(W_name, W, b_name, b):
    W = _to_numpy(W_name, W)
    if W.ndim != 2 or W.shape[1] == 0 or W.shape[1] % 4 or W.shape[0] < 2:  # I >= 1, H (or P) >= 1
        raise ValueError(f"{W_name} must have shape (I + H, 4H) with I and H at least 1, got {W.shape}")
    b = _to_numpy(b_name, b)
    _expect_shape(b_name, b, (W.shape[1],), f"(4H,) to match {W_name} {W.shape}")
    _same_dtype({W_name: W, b_name: b})
    return W, b


def _permute_blocks(a, perm, axis):
    H = a.shape[axis] // 4
    index = np.concatenate([np.arange(p * H, (p + 1) * H) for p in perm])
    return np.take(a, index, axis=axis)


def _forget_bias(forget_bias, dtype):
    if not is_real(forget_bias):
        raise TypeError(f"forget_bias must be a real number, got {_describe(forget_bias)}")
    try:
        with np.errstate(over="ignore"):
            value = dtype.type(forget_bias)
    except OverflowError:  # an int past every float: Python's own conversion fails
        value = dtype.type(np.inf)
    if not np.isfinite(value):
        raise ValueError(
            f"forget_bias must be finite in {dtype} (the weights' dtype), got {forget_bias!r:.200}"
        )
    return value


def _shift_forget_block(b, forget_bias, sign, name, f_offset):
    """Add ``sign * forget_bias`` to the f block of the native bias ``b`` (in place).

    A finite bias entry that the sum takes past the dtype's range is refused
    (it would run as an infinite pre-activation); NaN and Inf already in the
    bias pass through, as in every other conversion.  ``name`` and
    ``f_offset`` locate the f block in the caller's argument, for the message.
    """
    H = b.shape[0] // 4
    block = b[H : 2 * H]
    with np.errstate(over="ignore"):
        shifted = block + sign * _forget_bias(forget_bias, b.dtype)
    overflow = np.flatnonzero(np.isfinite(block) & ~np.isfinite(shifted))
    if overflow.size > 0:
        k = int(overflow[0])
        raise ValueError(
            f"forget_bias = {forget_bias!r} {'added to' if sign > 0 else 'subtracted from'} "
            f"{name}[{f_offset + k}] = {block[k]!s} overflows {b.dtype}, the weights' dtype"
        )
    block[...] = shifted


def from_tf1(kernel, bias, forget_bias=1.0):
    """TF1 ``BasicLSTMCell`` / ``LSTMCell`` weights -> native ``(W, b)``.

    Parameters
    ----------
    kernel : ndarray, shape (I + H, 4H)
        Applied to ``concat([x, h])``; gate blocks in TF1's order i, j, f, o
        (``j`` is the candidate, native ``g``).  For ``LSTMCell(num_proj=P)``
        it is ``(I + P, 4H)`` and the cell's projection kernel ``(H, P)`` is
        the native ``W_hr`` unchanged.
    bias : ndarray, shape (4H,), same dtype
    forget_bias : float, default 1.0
        The cell's ``forget_bias``: TF1 adds it to ``z_f`` at run time and does
        not store it; here it is added to the f block of ``b``.

    Returns
    -------
    W : ndarray (I + H, 4H), gate order i, f, g, o
    b : ndarray (4H,)

    Notes
    -----
    TF1's state tuple (``LSTMStateTuple``) is ``(c, h)``, not ``(h, c)``:
    pass ``h0 = state.h``, ``c0 = state.c`` (or ``state[1]``, ``state[0]``).
    ``LSTMCell``'s peepholes (``use_peepholes``), ``cell_clip``,
    ``proj_clip`` and an ``activation`` other than tanh have no native
    equivalent, and the arrays
    do not show them: such a cell is converted without an error but
    computes something else (0.06-2.4 off, bench/NOTES.md "Session 47").
    ``LSTMBlockCell`` and ``BlockLSTM`` store the same kernel and bias as
    ``LSTMCell``; ``BlockLSTMV2`` orders its gates i, f, c, o with no
    ``forget_bias``, which is the native layout already: its kernel and bias
    are ``W`` and ``b`` as they are, not for ``from_tf1``.  Folding the
    forget bias in and out is one float addition/subtraction, so
    ``to_tf1(*from_tf1(k, b, fb), fb)`` returns the f block of ``b`` to within
    rounding (exactly when ``forget_bias = 0``, but for the sign of a zero:
    ``-0.0 + 0`` is ``+0.0``); weights move exactly.
    """
    W, b = _cell_arrays("kernel", kernel, "bias", bias)
    W = _permute_blocks(W, _TF1_FROM_NATIVE, axis=1)
    b = _permute_blocks(b, _TF1_FROM_NATIVE, axis=0)
    _shift_forget_block(b, forget_bias, 1, "bias", 2 * (b.shape[0] // 4))  # TF1's f block: i, j, f, o
    return aligned_copy(W), aligned_copy(b)


def to_tf1(W, b, forget_bias=1.0):
    """Native ``(W, b)`` -> TF1 ``(kernel, bias)``, the reverse of ``from_tf1``:
    the kernel exactly, the bias up to one rounding of its f block (an addition
    there, a subtraction here).

    ``forget_bias`` (the cell's setting, default 1.0) is subtracted from the f
    block, since the TF1 cell adds it back at run time.  TF1's state tuple is
    ``(c, h)``, not ``(h, c)``.
    """
    W, b = _cell_arrays("W", W, "b", b)
    b = b.copy()
    _shift_forget_block(b, forget_bias, -1, "b", b.shape[0] // 4)
    return _permute_blocks(W, _TF1_FROM_NATIVE, axis=1), _permute_blocks(b, _TF1_FROM_NATIVE, axis=0)


# --------------------------------------------------------------------------
# Flax

_FLAX_GATES = ("i", "f", "g", "o")

#: What ``to_flax`` writes: the tree of ``flax.linen``'s ``LSTMCell`` and
#: ``OptimizedLSTMCell`` (one per gate, ``ii``..``ho``), of ``flax.nnx``'s
#: ``LSTMCell`` (the same, but ``if_``: ``if`` is a Python keyword) and of
#: ``flax.nnx``'s ``OptimizedLSTMCell`` (two fused layers, ``dense_i`` and
#: ``dense_h``, gates i, f, g, o: the native layout split at row I).
FLAX_LAYOUTS = ("linen", "nnx", "nnx_optimized")


def _flax_node(tree, key, leaves):
    """The arrays of ``tree[key]``, a dict of exactly ``leaves``, as ``{"key.leaf": array}``."""
    node = tree[key]
    if not isinstance(node, Mapping) or sorted(node) != sorted(leaves):
        got = sorted(node) if isinstance(node, Mapping) else type(node).__name__
        raise ValueError(f"params[{key!r}] must be a dict with keys {list(leaves)}, got {got}")
    return {f"{key}.{leaf}": _to_numpy(f"params[{key!r}][{leaf!r}]", node[leaf]) for leaf in leaves}


def from_flax(params):
    """Flax ``LSTMCell`` / ``OptimizedLSTMCell`` parameters (linen or nnx) -> native ``(W, b)``.

    Parameters
    ----------
    params : dict
        The cell's parameter tree.  ``flax.linen``'s ``LSTMCell`` and
        ``OptimizedLSTMCell`` (``variables['params']``; a dict holding only
        ``'params'`` or only ``'cell'``, as ``nn.RNN`` nests it, is
        unwrapped)::

            {'ii': {'kernel': (I, H)}, 'if': {...}, 'ig': {...}, 'io': {...},
             'hi': {'kernel': (H, H), 'bias': (H,)}, 'hf': ..., 'hg': ..., 'ho': ...}

        Flax computes ``i = sigmoid(x @ ii.kernel + h @ hi.kernel + hi.bias)``
        and likewise f, o, with ``g = tanh(...)``, ``c' = f*c + i*g``,
        ``h' = o*tanh(c')``; the carry is ``(c, h)``.  ``flax.nnx``'s
        ``LSTMCell`` has the same tree with ``if_`` for ``if``;
        ``nnx.OptimizedLSTMCell`` has ``{'dense_i': {'kernel': (I, 4H)},
        'dense_h': {'kernel': (H, 4H), 'bias': (4H,)}}``, gates i, f, g, o.
        For an nnx cell pass ``nnx.state(cell, nnx.Param)`` (or its
        ``nnx.to_pure_dict``).  Arrays may be JAX arrays or nnx ``Param``s
        (their dtype is kept).  A cell built with another ``gate_fn`` or
        ``activation_fn``, or computing in another ``dtype`` than its
        parameters' (bfloat16, say), has the same parameters: that is not
        seen here, and is yours to rule out.

    Returns
    -------
    W : ndarray (I + H, 4H) = per gate ``[i? kernel; h? kernel]``, order i, f, g, o
    b : ndarray (4H,), the ``h?`` biases
    """
    tree = params
    while isinstance(tree, Mapping) and len(tree) == 1 and next(iter(tree)) in ("params", "cell"):
        tree = tree[next(iter(tree))]
    if not isinstance(tree, Mapping):
        raise TypeError(f"params must be a Flax LSTMCell parameter dict, got {type(params).__name__}")
    if "dense_i" in tree or "dense_h" in tree:
        return _from_fused_flax(tree)
    # nnx.LSTMCell's f gate: "if_" (a tree with both is refused as unexpected "if_").
    input_keys = {g: "i" + g for g in _FLAX_GATES}
    if "if_" in tree and "if" not in tree:
        input_keys["f"] = "if_"
    expected = [input_keys[g] for g in _FLAX_GATES] + ["h" + g for g in _FLAX_GATES]
    _expect_keys(
        "params is not the parameter tree of a Flax LSTMCell or OptimizedLSTMCell (for an nnx cell, pass "
        "nnx.state(cell, nnx.Param))",
        tree, expected, "expected",
    )  # fmt: skip
    arrays = {}
    for g in _FLAX_GATES:
        arrays |= _flax_node(tree, input_keys[g], ("kernel",)) | _flax_node(tree, "h" + g, ("kernel", "bias"))
    inputs = {g: arrays[input_keys[g] + ".kernel"] for g in _FLAX_GATES}
    hi = arrays["hi.kernel"]
    if hi.ndim != 2 or hi.shape[0] != hi.shape[1] or hi.shape[0] == 0:
        raise ValueError(f"params['hi']['kernel'] must have shape (H, H), got {hi.shape}")
    H = hi.shape[0]
    # I is the input size most of the four input kernels agree on, so that the
    # message names the kernel that differs, whichever gate it is.
    sizes = [a.shape[0] for a in inputs.values() if a.ndim == 2 and a.shape[1] == H]
    if not any(sizes):
        raise ValueError(f"params['ii']['kernel'] must have shape (I, H) = (I, {H}), got {inputs['i'].shape}")
    I = Counter(size for size in sizes if size).most_common(1)[0][0]
    for g in _FLAX_GATES:
        _expect_shape(f"params[{input_keys[g]!r}]['kernel']", inputs[g], (I, H), "(I, H)")
        _expect_shape(f"params['h{g}']['kernel']", arrays[f"h{g}.kernel"], (H, H), "(H, H)")
        _expect_shape(f"params['h{g}']['bias']", arrays[f"h{g}.bias"], (H,), "(H,)")
    _same_dtype(arrays)
    W = np.concatenate(
        [
            np.concatenate([inputs[g] for g in _FLAX_GATES], axis=1),
            np.concatenate([arrays[f"h{g}.kernel"] for g in _FLAX_GATES], axis=1),
        ],
        axis=0,
    )
    b = np.concatenate([arrays[f"h{g}.bias"] for g in _FLAX_GATES])
    return aligned_copy(W), aligned_copy(b)


def _from_fused_flax(tree):
    """``from_flax`` of ``nnx.OptimizedLSTMCell``'s tree: ``dense_i`` and ``dense_h``."""
    _expect_keys(
        "params is not the parameter tree of a Flax nnx.OptimizedLSTMCell (pass nnx.state(cell, nnx.Param))",
        tree, ["dense_i", "dense_h"], "expected",
    )  # fmt: skip
    arrays = _flax_node(tree, "dense_i", ("kernel",)) | _flax_node(tree, "dense_h", ("kernel", "bias"))
    kernel_h, kernel_i, bias = arrays["dense_h.kernel"], arrays["dense_i.kernel"], arrays["dense_h.bias"]
    if kernel_h.ndim != 2 or kernel_h.shape[0] == 0 or kernel_h.shape[1] != 4 * kernel_h.shape[0]:
        raise ValueError(f"params['dense_h']['kernel'] must have shape (H, 4H), got {kernel_h.shape}")
    H = kernel_h.shape[0]
    if kernel_i.ndim != 2 or kernel_i.shape[0] == 0 or kernel_i.shape[1] != 4 * H:
        raise ValueError(
            f"params['dense_i']['kernel'] must have shape (I, 4H) = (I, {4 * H}), got {kernel_i.shape}"
        )
    _expect_shape("params['dense_h']['bias']", bias, (4 * H,), "(4H,)")
    _same_dtype(arrays)
    return aligned_copy(np.concatenate([kernel_i, kernel_h], axis=0)), aligned_copy(bias)


def to_flax(W, b, input_size, layout="linen"):
    """Native ``(W, b)`` -> a Flax ``LSTMCell`` / ``OptimizedLSTMCell`` parameter dict.

    ``layout`` (``FLAX_LAYOUTS``): ``"linen"`` gives ``flax.linen``'s tree,
    ``{'ii': {'kernel': (I, H)}, ..., 'hi': {'kernel': (H, H), 'bias':
    (H,)}, ...}``, for ``cell.apply({'params': to_flax(W, b, I)}, carry,
    x)``; ``"nnx"`` the same with ``if_`` for ``if`` (``nnx.LSTMCell``);
    ``"nnx_optimized"`` ``{'dense_i': {'kernel': (I, 4H)}, 'dense_h':
    {'kernel': (H, 4H), 'bias': (4H,)}}`` (``nnx.OptimizedLSTMCell``).  An
    nnx cell takes its tree through ``state = nnx.state(cell, nnx.Param)``,
    ``nnx.replace_by_pure_dict(state, tree)`` and ``nnx.update(cell,
    state)``.  The arrays are numpy copies (see ``from_flax``).
    """
    W, b = _cell_arrays("W", W, "b", b)
    H = W.shape[1] // 4
    input_size = check_integer("input_size", input_size)
    if layout not in FLAX_LAYOUTS:
        raise ValueError(f"layout must be one of {list(FLAX_LAYOUTS)}, got {layout!r}")
    if W.shape[0] != input_size + H:
        raise ValueError(
            f"W must have shape (input_size + H, 4H) = ({input_size} + {H}, {4 * H}), got {W.shape}"
        )
    if layout == "nnx_optimized":
        return {
            "dense_i": {"kernel": W[:input_size].copy()},
            "dense_h": {"kernel": W[input_size:].copy(), "bias": b.copy()},
        }
    out = {}
    for j, g in enumerate(_FLAX_GATES):
        key = "if_" if layout == "nnx" and g == "f" else "i" + g
        out[key] = {"kernel": W[:input_size, j * H : (j + 1) * H].copy()}
    for j, g in enumerate(_FLAX_GATES):
        out[f"h{g}"] = {
            "kernel": W[input_size:, j * H : (j + 1) * H].copy(),
            "bias": b[j * H : (j + 1) * H].copy(),
        }
    return out


# --------------------------------------------------------------------------
# ONNX

_ONNX_DTYPES = {np.dtype(np.float32): 1, np.dtype(np.float64): 11}  # TensorProto.FLOAT, DOUBLE
_ONNX_DEFAULT_ACTIVATIONS = ("sigmoid", "tanh", "tanh")


def to_onnx(
    config, params, path=None, *, batch_first=None, initial_state=False, sequence_lens=False, opset=17
):
    """Native ``(config, params)`` -> an ONNX model with one ``LSTM`` node per layer.

    Parameters
    ----------
    config, params : native; ``proj_size`` must be 0 (ONNX's LSTM has no projection).
    path : str, bytes, os.PathLike or a binary file object, optional
        Where to save the model (it is returned either way).
    batch_first : bool, optional
        ``X`` is ``(B, T, I)`` and ``Y`` is ``(B, T, D*H)`` (``Transpose``
        nodes around the stack, as torch exports a ``batch_first`` module);
        ``Y_h`` and ``Y_c`` keep their shape.  By default ``config``'s
        ``batch_first`` (a layer's configuration, as ``io`` saves it), else
        False; given, it must agree with ``config``'s (it was ignored: one
        configuration gave a batch-first layer and a time-major model).
        ``LSTM.to_onnx`` passes the layer's own.
    initial_state : bool, default False
        Add inputs ``initial_h`` and ``initial_c`` of shape
        ``(num_layers * D, B, H)`` (the layer's ``state=(h0, c0)``, in
        torch's order); without them every sequence starts from zeros.
        From opset 9, ``Where`` nodes give ``Y_h`` and ``Y_c`` the initial
        state (zeros without one) when ``X`` has no steps (T = 0), as the
        layer does: the ``LSTM`` operator of onnxruntime leaves them
        unwritten then (what an earlier run left in its buffers), and so
        does a model of opset 7 or 8, which has no ``Where``.
    sequence_lens : bool, default False
        Add an ``int32`` input ``sequence_lens`` of shape (B,) (ONNX semantics:
        steps past a sequence's length give zeros in ``Y`` and do not change
        its state; the reverse direction starts at each sequence's last step).
        With ``initial_state`` too, ``Where`` nodes give ``Y_h`` and ``Y_c``
        the initial state of a sequence of length 0, as the layer does (the
        ``LSTM`` operator of onnxruntime gives zeros); that needs opset 9.
    opset : int, default 17
        ONNX opset, from 7 to the newest the installed ``onnx`` knows.  The
        model holds the parameters' dtype; onnxruntime runs float32 models
        only ("LSTM operator does not support double yet").

    Returns
    -------
    onnx.ModelProto
        Inputs ``X (T, B, I)`` (and ``initial_h``, ``initial_c``,
        ``sequence_lens``); outputs ``Y (T, B, D*H)`` (``(B, ...)`` with
        ``batch_first``; directions concatenated on the last axis, as torch's output),
        ``Y_h`` and ``Y_c`` of shape ``(num_layers * D, B, H)`` (as torch's
        ``h_n``, ``c_n``).  Each node holds ``W (D, 4H, I_k)``, ``R (D, 4H, H)``,
        ``B (D, 8H) = [b, 0]`` in ONNX's gate order i, o, f, c; between layers
        a ``Transpose`` and a ``Reshape`` turn ``(T, D, B, H)`` into ``(T, B, D*H)``.
        With ``initial_state`` (opset 9 and later), two ``Where`` nodes
        follow the stack, choosing by ``Equal`` and ``Reshape`` nodes on
        ``sequence_lens``, or by ``Shape``, ``Gather`` and ``Equal`` nodes on
        ``X``'s T without it (above).
    """
    onnx = _require("onnx", "to_onnx")
    from onnx import helper, numpy_helper

    configured = config.get("batch_first") if isinstance(config, Mapping) else None
    config, params = check_params(config, params)
    if config["proj_size"]:
        raise ValueError(
            f"config has proj_size={config['proj_size']}: the ONNX LSTM operator has no projection, "
            "so this model cannot be exported"
        )
    if configured is not None:
        configured = check_bool("config['batch_first']", configured)
        if batch_first is not None and check_bool("batch_first", batch_first) != configured:
            raise ValueError(
                f"batch_first={batch_first} contradicts config['batch_first'] = {configured}: the model's "
                "input layout is one of them; drop one, or make them agree"
            )
    if batch_first is None:
        batch_first = bool(configured)  # False without one
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"opset must be an integer, got {opset!r}")
    newest = onnx.defs.onnx_opset_version()
    if not 7 <= opset <= newest:
        raise ValueError(
            f"opset must be from 7 (the LSTM operator's version 7) to {newest} (the newest that onnx "
            f"{onnx.__version__} knows), got {opset}"
        )
    batch_first = check_bool("batch_first", batch_first)
    initial_state = check_bool("initial_state", initial_state)
    sequence_lens = check_bool("sequence_lens", sequence_lens)
    if path is not None and hasattr(path, "write"):  # onnx.save takes a file object too
        check_binary_file("path", path, "write")
    elif path is not None:
        path = check_path("path", path)
    # onnxruntime's LSTM gives zeros as the final state of a sequence of
    # length 0, and leaves Y_c (and sometimes Y_h) unwritten when T = 0, so
    # that it holds what an earlier run left in its buffer: Where nodes put
    # the initial state there, or zeros without one (opset 9 and later).
    keep_empty_states = opset >= 9
    if initial_state and sequence_lens and opset < 9:
        raise ValueError(
            f"initial_state=True with sequence_lens=True needs opset 9 or later (the Where operator that "
            f"keeps the initial state of sequences of length 0), got opset {opset}"
        )
    stack = "_stack" if keep_empty_states else ""  # the stack's final states, before the Where nodes
    dtype = params["W_l0"].dtype
    elem = _ONNX_DTYPES[dtype]
    L, H = config["num_layers"], config["hidden_size"]
    D = 2 if config["bidirectional"] else 1
    direction = "bidirectional" if D == 2 else "forward"

    leading_axes = ["B", "T"] if batch_first else ["T", "B"]
    inputs = [helper.make_tensor_value_info("X", elem, [*leading_axes, config["input_size"]])]
    if initial_state:
        for name in ("initial_h", "initial_c"):
            inputs.append(helper.make_tensor_value_info(name, elem, [L * D, "B", H]))
    if sequence_lens:
        inputs.append(helper.make_tensor_value_info("sequence_lens", onnx.TensorProto.INT32, ["B"]))
    # (T, B, D * H) with D * H written out: -1 cannot be inferred from an empty Y (T = 0).
    initializers = [numpy_helper.from_array(np.array([0, 0, D * H], np.int64), "shape_T_B_DH")]
    nodes = []
    layer_input = "X"
    if batch_first:
        nodes.append(helper.make_node("Transpose", ["X"], ["X_TBI"], perm=[1, 0, 2]))
        layer_input = "X_TBI"
    for k in range(L):
        I_k = _layer_sizes(config, k)[0]
        Ws, Rs, Bs = [], [], []
        for sfx in _directions(config):
            Wk, bk = params[f"W_l{k}{sfx}"], params[f"b_l{k}{sfx}"]
            Ws.append(_permute_blocks(Wk[:I_k].T, _ONNX_FROM_NATIVE, axis=0))
            Rs.append(_permute_blocks(Wk[I_k:].T, _ONNX_FROM_NATIVE, axis=0))
            Bs.append(np.concatenate([_permute_blocks(bk, _ONNX_FROM_NATIVE, axis=0), np.zeros_like(bk)]))
        names = [f"W_l{k}", f"R_l{k}", f"B_l{k}"]
        for name, arrays in zip(names, (Ws, Rs, Bs), strict=True):
            initializers.append(numpy_helper.from_array(np.ascontiguousarray(np.stack(arrays)), name))
        lstm_inputs = [layer_input, *names, "sequence_lens" if sequence_lens else ""]
        if initial_state:
            if L == 1:
                lstm_inputs += ["initial_h", "initial_c"]
            else:  # this layer's D rows of (L * D, B, H)
                rows = f"rows_l{k}"
                initializers.append(
                    numpy_helper.from_array(np.arange(k * D, (k + 1) * D, dtype=np.int64), rows)
                )
                for name in ("initial_h", "initial_c"):
                    nodes.append(helper.make_node("Gather", [name, rows], [f"{name}_l{k}"], axis=0))
                lstm_inputs += [f"initial_h_l{k}", f"initial_c_l{k}"]
        while not lstm_inputs[-1]:  # optional inputs left out at the end
            lstm_inputs.pop()
        y_h, y_c = (f"Y_h_l{k}", f"Y_c_l{k}") if L > 1 else (f"Y_h{stack}", f"Y_c{stack}")
        nodes.append(
            helper.make_node(
                "LSTM",
                lstm_inputs,
                [f"Y_l{k}", y_h, y_c],
                name=f"lstm_l{k}",
                hidden_size=H,
                direction=direction,
            )
        )
        nodes.append(helper.make_node("Transpose", [f"Y_l{k}"], [f"Y_l{k}_TBDH"], perm=[0, 2, 1, 3]))
        out = f"X_l{k + 1}" if k < L - 1 else "Y_TBDH" if batch_first else "Y"
        nodes.append(helper.make_node("Reshape", [f"Y_l{k}_TBDH", "shape_T_B_DH"], [out]))
        layer_input = out
    if batch_first:
        nodes.append(helper.make_node("Transpose", ["Y_TBDH"], ["Y"], perm=[1, 0, 2]))
    if L > 1:
        for name in ("Y_h", "Y_c"):
            nodes.append(
                helper.make_node("Concat", [f"{name}_l{k}" for k in range(L)], [name + stack], axis=0)
            )
    if keep_empty_states and sequence_lens:  # (1, B, 1): each sequence of length 0 (all of them at T = 0)
        empty = "empty_1_B_1"
        initializers.append(numpy_helper.from_array(np.zeros((), np.int32), "zero_length"))
        initializers.append(numpy_helper.from_array(np.array([1, -1, 1], np.int64), "shape_1_B_1"))
        nodes.append(helper.make_node("Equal", ["sequence_lens", "zero_length"], ["empty"]))
        nodes.append(helper.make_node("Reshape", ["empty", "shape_1_B_1"], [empty]))
    elif keep_empty_states:  # a scalar: X has no steps
        empty = "no_steps"
        initializers.append(numpy_helper.from_array(np.array(1 if batch_first else 0, np.int64), "time_axis"))
        initializers.append(numpy_helper.from_array(np.zeros((), np.int64), "zero_steps"))
        nodes.append(helper.make_node("Shape", ["X"], ["shape_X"]))
        nodes.append(helper.make_node("Gather", ["shape_X", "time_axis"], ["steps"], axis=0))
        nodes.append(helper.make_node("Equal", ["steps", "zero_steps"], [empty]))
    if keep_empty_states:
        if not initial_state:  # a zero that Where broadcasts to (L * D, B, H)
            initializers.append(numpy_helper.from_array(np.zeros((), dtype), "zero_state"))
        for name, initial in (("Y_h", "initial_h"), ("Y_c", "initial_c")):
            initial = initial if initial_state else "zero_state"
            nodes.append(helper.make_node("Where", [empty, initial, name + stack], [name]))
    outputs = [
        helper.make_tensor_value_info("Y", elem, [*leading_axes, D * H]),
        helper.make_tensor_value_info("Y_h", elem, [L * D, "B", H]),
        helper.make_tensor_value_info("Y_c", elem, [L * D, "B", H]),
    ]
    opsets = [helper.make_opsetid("", int(opset))]
    ir_version = helper.find_min_ir_version_for(opsets)
    if ir_version < 4:  # opsets 7 and 8: IR 3 lists every initializer among the graph's inputs too
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in initializers]
    graph = helper.make_graph(nodes, "numba_lstm", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=opsets, producer_name="numba_lstm", ir_version=ir_version)
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, path)
    return model


#: A ``Constant`` node's attributes other than a tensor ``value``, and their dtypes.
_ONNX_CONSTANT_LISTS = {
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
}


def _onnx_constants(graph):
    """Initializers and ``Constant`` node values of ``graph``, by name."""
    from onnx import numpy_helper

    def array(tensor, what):
        try:
            return numpy_helper.to_array(tensor)
        except (KeyError, TypeError, ValueError) as error:  # an unknown data_type, data of another length
            raise ValueError(
                f"the ONNX model's {what} cannot be read as an array (a damaged model?): "
                f"{type(error).__name__}: {error}"
            ) from error

    values = {t.name: array(t, f"initializer {t.name!r}") for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for name, value in _onnx_attributes(node).items():
                if name == "value":
                    values[node.output[0]] = array(value, f"Constant {node.output[0]!r}")
                elif name in _ONNX_CONSTANT_LISTS:
                    values[node.output[0]] = np.array(value, _ONNX_CONSTANT_LISTS[name])
    return values


#: ONNX operators whose outputs depend on their input's shape alone, not its values.
_ONNX_SHAPE_OPS = ("Shape", "Size")


def _onnx_dynamic(graph, constants):
    """The names of the values of ``graph`` that depend on the values of its
    inputs (those that no initializer sets).  The others come from constants
    and the inputs' shapes alone (through ``Shape`` and ``Size``).  A node
    holding subgraphs (``If``, ``Loop``, ``Scan``) counts as reading the
    inputs: its subgraphs may."""
    from onnx import AttributeProto

    holds_graphs = (AttributeProto.GRAPH, AttributeProto.GRAPHS)
    dynamic = {i.name for i in graph.input} - set(constants)
    for node in graph.node:  # in topological order, as ONNX requires
        if node.op_type in _ONNX_SHAPE_OPS:
            continue
        if any(a.type in holds_graphs for a in node.attribute) or any(n in dynamic for n in node.input):
            dynamic.update(name for name in node.output if name)  # "": an optional output left out
    return dynamic


def _onnx_shapes(model):
    """The shape of each value of ``model`` whose rank onnx's shape inference
    knows, by name: its dimensions where they are numbers, else None."""
    from onnx import shape_inference

    try:
        graph = shape_inference.infer_shapes(model).graph
    except Exception:  # a model it cannot infer: the graph's own declarations
        graph = model.graph
    shapes = {}
    for info in (*graph.input, *graph.value_info, *graph.output):
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return shapes


def _onnx_evaluate(model, name, dynamic, shapes):
    """The value ``name`` of ``model``, which ``dynamic`` does not hold, or
    None where it cannot be computed.  onnx's reference evaluator runs the
    nodes that lead to it; the ``Shape`` (or ``Size``) of a value computed
    from the inputs is given from its declared or inferred shape:
    ``shapes()``, ``_onnx_shapes`` of the model, inferred once for all the
    values evaluated.  A dimension that is not a number is taken as
    2, and again as 3: a value zero at one of these sizes and not at the
    other is returned as the other, so that a state of B rows counts as zero
    only if it is zero at both (with 2 alone, a state zero at B = 2 only was
    read as zero at every B)."""
    from onnx import TensorProto, ValueInfoProto, helper, reference

    graph = model.graph
    producers = _onnx_producers(graph)
    initializers = {t.name: t for t in graph.initializer}
    needed, used, measured, todo = set(), [], {}, [name]
    while todo:
        value = todo.pop()
        if not value or value in needed:
            continue
        needed.add(value)
        node = producers.get(value)
        if value in initializers:
            used.append(initializers[value])
        elif node is None:  # an input of a subgraph's scope, or of nothing
            return None
        elif node.op_type in _ONNX_SHAPE_OPS and node.input[0] in dynamic:
            if node.input[0] not in shapes():
                return None
            measured[value] = node
        else:
            todo.extend(node.input)

    def feeds_at(unknown):
        feeds = {}
        for value, node in measured.items():
            shape = np.array([unknown if d is None else d for d in shapes()[node.input[0]]], np.int64)
            attrs = _onnx_attributes(node)
            feeds[value] = (
                shape[attrs.get("start", 0) : attrs.get("end")] if node.op_type == "Shape" else np.prod(shape)
            )
        return feeds

    feeds = feeds_at(2)
    nodes = [n for n in graph.node if any(out in needed and out not in feeds for out in n.output)]
    inputs = [helper.make_tensor_value_info(v, TensorProto.INT64, list(a.shape)) for v, a in feeds.items()]
    subgraph = helper.make_graph(nodes, "constant", inputs, [ValueInfoProto(name=name)], used)
    submodel = helper.make_model(subgraph, opset_imports=model.opset_import, ir_version=model.ir_version)
    try:
        evaluator = reference.ReferenceEvaluator(submodel)
        value = evaluator.run(None, feeds)[0]
        other = evaluator.run(None, feeds_at(3))[0] if measured else value
    except Exception:  # an operator it does not know (another domain), or cannot run here
        return None
    return other if np.any(other != 0) and not np.any(value != 0) else value


def _onnx_attributes(node):
    """The attributes of an ONNX node, by name, as Python values."""
    from onnx import helper

    attributes = {}
    for a in node.attribute:
        try:
            value = helper.get_attribute_value(a)
        except ValueError:  # onnx: "Unsupported ONNX attribute"
            value = None
        if value is None:  # type UNDEFINED, or one that onnx does not know
            raise ValueError(
                f"the ONNX model's {node.op_type} node {node.name or ', '.join(node.output)!r} has an attribute "
                f"{a.name!r} of an undefined or unknown type ({a.type}) (a damaged model?)"
            )
        attributes[a.name] = value
    return attributes


#: ONNX operators that only rearrange the values of their first input.
_ONNX_LAYOUT_OPS = ("Identity", "Squeeze", "Transpose", "Reshape")
#: ... and those that may also repeat them (an initial state broadcast to B rows).
_ONNX_REPEAT_OPS = _ONNX_LAYOUT_OPS + ("Expand", "Tile", "Unsqueeze", "Slice", "Cast")


def _onnx_rearrange(node, a, constants):
    """``a`` through the layout operator ``node`` (ONNX semantics), or None
    where its parameters are not constants this can follow."""
    attrs = _onnx_attributes(node)
    if node.op_type == "Identity":
        return a
    if node.op_type == "Transpose":
        perm = attrs.get("perm", list(range(a.ndim))[::-1])
        return np.transpose(a, perm) if sorted(perm) == list(range(a.ndim)) else None
    if node.op_type == "Squeeze":
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = constants.get(node.input[1])
            if axes is None:
                return None
        axes = None if axes is None else tuple(int(i) % a.ndim for i in np.ravel(axes))
        if axes is not None and any(a.shape[i] != 1 for i in axes):
            return None
        return np.squeeze(a, axis=axes)
    if node.op_type == "Reshape":
        shape = constants.get(node.input[1])
        if shape is None or attrs.get("allowzero", 0):
            return None
        shape = [int(d) for d in np.ravel(shape)]
        if any(d == 0 and i >= a.ndim for i, d in enumerate(shape)):
            return None
        shape = [a.shape[i] if d == 0 else d for i, d in enumerate(shape)]
        try:
            return np.reshape(a, shape)
        except ValueError:
            return None
    return None


def _onnx_follow(path, a, constants):
    """``a`` through the layout operators of ``path`` (from ``_onnx_source``,
    the last first): the result and None, or None and the node whose
    parameters cannot be followed."""
    for node in reversed(path):
        a = _onnx_rearrange(node, a, constants)
        if a is None:
            return None, node
    return a, None


def _onnx_producers(graph):
    """The node that writes each value of ``graph``, by the value's name."""
    return {out: node for node in graph.node for out in node.output if out}


def _onnx_source(name, ops, producers):
    """The nodes from the value ``name`` back through operators ``ops`` (each
    reading its first input), and the name of the value they start from."""
    path = []
    while name in producers and producers[name].op_type in ops:
        path.append(producers[name])
        name = producers[name].input[0]
    return path, name


def _onnx_lstm_upstream(name, producers):
    """An ``LSTM`` node whose outputs the value ``name`` is computed from
    (through any operators but the shape ops, which read no values), or None."""
    seen, todo = set(), [name]
    while todo:
        node = producers.get(todo.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == "LSTM":
            return node
        if node.op_type not in _ONNX_SHAPE_OPS:
            todo.extend(value for value in node.input if value)
    return None


def _onnx_batch_first(model, input_size, constants):
    """Whether the first ``LSTM`` node of ``model`` reads a graph input of
    shape (B, T, I): True or False where it reads one through layout
    operators alone (a torch export of a ``batch_first`` module transposes
    it; a node of ``layout = 1`` reads it as it is), None where it reads
    anything else."""
    graph = model.graph
    node = next(n for n in graph.node if n.op_type == "LSTM")
    path, start = _onnx_source(node.input[0], _ONNX_LAYOUT_OPS, _onnx_producers(graph))
    if start not in {i.name for i in graph.input} - set(constants):
        return None
    T, B = 3, 5  # a probe (T, B, I) of distinct values, read as X by the node
    probe = np.arange(T * B * input_size).reshape(T, B, input_size)
    want = probe.transpose(1, 0, 2) if _onnx_attributes(node).get("layout", 0) == 1 else probe
    for batch_first, given in ((False, probe), (True, probe.transpose(1, 0, 2))):
        got, _ = _onnx_follow(path, given, constants)
        if got is not None and got.shape == want.shape and np.array_equal(got, want):
            return batch_first
    return None


def _check_onnx_stack(nodes, wheres, D, H, graph, constants, dynamic, value_of):
    """Refuse LSTM nodes (of D directions and H units each, described by
    ``wheres``) that are not one stacked LSTM: layer k > 0 must read layer
    k - 1's output Y, (T, D, B, H), rearranged into (T, B, D * H) by layout
    operators alone (both batch-major with the attribute ``layout = 1``);
    no node may start from a constant state other than zero (the native
    parameters hold no initial state), nor from a state computed from an
    LSTM node's outputs; and all nodes must read one ``sequence_lens`` or
    none (forward applies one ``lengths`` to every layer).  ``value_of``: a
    value of the graph computed from constants (and the inputs' shapes), or
    None."""
    from onnx import numpy_helper

    producers = _onnx_producers(graph)
    layouts = [_onnx_attributes(node).get("layout", 0) for node in nodes]
    read = [node.input[4] if len(node.input) > 4 else "" for node in nodes]  # each node's sequence_lens
    sources = [_onnx_source(name, ("Identity", "Cast"), producers)[1] if name else "" for name in read]
    if len(set(sources)) > 1:
        listed = ", ".join(
            f"{where}: {repr(source) if source else 'none'}"
            for where, source in zip(wheres, sources, strict=True)
        )
        raise ValueError(
            f"the LSTM nodes read different sequence_lens ({listed}); the layer applies one lengths= to "
            "every layer"
        )

    for k, (node, where) in enumerate(zip(nodes, wheres, strict=True)):
        lengths = read[k]
        if lengths and lengths not in dynamic:
            raise ValueError(
                f"{where} reads a sequence_lens built into the model (computed from constants and the inputs' "
                "shapes, not from an input's values): the native parameters hold no lengths. Make it an input "
                "of the model, and pass the lengths to forward as lengths="
            )
        for index, label in ((5, "initial_h"), (6, "initial_c")):
            name = node.input[index] if len(node.input) > index else ""
            if not name:
                continue
            # A state computed from constants and the inputs' shapes (a state
            # of B rows, B taken from X) is evaluated; one that depends on the
            # values of the inputs is traced back through the operators that
            # repeat values (Expand, Tile, ...) to what they repeat.
            start = name if name not in dynamic else _onnx_source(name, _ONNX_REPEAT_OPS, producers)[1]
            start_node = producers.get(start)
            if start not in dynamic:
                value = value_of(start)
                if value is None:
                    raise ValueError(
                        f"{where} starts from an {label} computed from constants by operators that numba_lstm "
                        "cannot evaluate (onnx's reference evaluator failed), so it may not be zero, and the "
                        "native parameters hold no initial state"
                    )
            elif start_node is not None and start_node.op_type == "ConstantOfShape":
                fill = _onnx_attributes(start_node).get("value")
                value = 0.0 if fill is None else numpy_helper.to_array(fill)  # 0.0: ONNX's default
            else:  # an input of the model, or computed from one
                upstream = _onnx_lstm_upstream(name, producers)
                if upstream is not None:
                    outputs = list(upstream.output)
                    source = next(
                        (w for n, w in zip(nodes, wheres, strict=True) if list(n.output) == outputs),
                        "an LSTM node",
                    )
                    raise ValueError(
                        f"{where} starts from an {label} computed from the outputs of {source}: each layer of "
                        "a stacked LSTM starts from the state given to forward, not from another layer's"
                    )
                continue
            if np.any(np.asarray(value) != 0):
                raise ValueError(
                    f"{where} starts from an {label} that is not zero and that the model fixes (a constant, or "
                    "computed from X's shape) rather than takes as an input: the native parameters hold no "
                    "initial state (pass it to forward as state=(h0, c0))"
                )
        if k == 0:
            continue
        previous, Y = wheres[k - 1], nodes[k - 1].output[0] if nodes[k - 1].output else ""
        path, start = _onnx_source(node.input[0], _ONNX_LAYOUT_OPS, producers)
        if not Y or start != Y:
            found = producers.get(start)
            what = f"the {found.op_type} node {found.name!r}" if found is not None else f"{start!r}"
            raise ValueError(
                f"{where} does not read the output Y of {previous}: its input X comes from {what}, "
                "so the model computes something between its LSTM nodes that a stacked LSTM cannot hold"
            )
        T, B = 3, 5  # a probe (T, D, B, H) of distinct values through the operators
        probe = np.arange(T * D * B * H).reshape(T, D, B, H)
        y_probe = probe.transpose(2, 0, 1, 3) if layouts[k - 1] == 1 else probe  # Y (B, T, D, H)
        got, stuck = _onnx_follow(path, y_probe, constants)
        if stuck is not None:
            raise ValueError(
                f"{where} reads the output Y of {previous} through the {stuck.op_type} node {stuck.name!r}, "
                "whose parameters numba_lstm cannot follow"
            )
        want = probe.transpose(0, 2, 1, 3).reshape(T, B, D * H)
        want = want.transpose(1, 0, 2) if layouts[k] == 1 else want  # X (B, T, D * H)
        if got.shape != want.shape or not np.array_equal(got, want):
            raise ValueError(
                f"{where} reads the output Y (T, {D}, B, {H}) of {previous} rearranged otherwise than into "
                f"(T, B, {D * H}) with the directions side by side, as a stacked LSTM reads it"
            )


def from_onnx(path_or_model):
    """Read the ``LSTM`` nodes of an ONNX model into native ``(config, params)``.

    Parameters
    ----------
    path_or_model : str, bytes, os.PathLike, a binary file object or onnx.ModelProto
        A model whose ``LSTM`` nodes, in graph order, are the layers of one
        stacked LSTM (as ``to_onnx`` and ``torch.onnx.export(nn.LSTM(...))``
        write them): the same ``hidden_size`` and ``direction`` in each, layer
        ``k > 0`` reading the output ``Y`` of layer ``k - 1`` rearranged into
        ``(T, B, D * H)`` by ``Transpose``, ``Reshape``, ``Squeeze`` or
        ``Identity`` nodes alone.  ``W``, ``R`` and ``B`` must be constants
        (initializers, ``Constant`` outputs, or computed from them alone: onnx's
        reference evaluator computes them); ``B = [Wb, Rb]`` is summed.  What comes before
        the first node and after the last is not part of the stack.
        ``layout``, ``sequence_lens``, ``initial_h`` and ``initial_c`` concern
        the inputs, not the weights, and are not read, but a ``sequence_lens``
        must come from the model's inputs (pass the lengths to ``forward``),
        the same one in every node (or none in any), a constant initial state
        must be zero (one computed from constants and the inputs' shapes,
        such as zeros of B rows, is evaluated; an initializer counts as the
        state's value even where the graph also lists it as an input), and
        no initial state may be computed from an ``LSTM`` node's outputs.

    Returns
    -------
    config, params : as for ``from_torch``; dtype of the ONNX tensors.

    Raises
    ------
    ValueError
        Naming what cannot be represented: peepholes (a non-zero ``P``
        input), ``clip``, ``input_forget=1``, ``activations`` other than
        Sigmoid, Tanh, Tanh (or any ``activation_alpha`` / ``activation_beta``),
        ``direction='reverse'`` alone, nodes that do not stack (other sizes,
        or other operators between them), a ``sequence_lens`` built into the
        model or not the same in every node, a constant initial state other
        than zero, or one computed from an ``LSTM`` node's outputs; a file
        that is not an ONNX model.
    TypeError
        ``path_or_model`` is neither a path, a file object nor a ``ModelProto``.
    """
    config, params, _ = _read_onnx(path_or_model)
    return config, params


def _read_onnx(path_or_model):
    """``from_onnx``'s ``config`` and ``params``, and the layout of the
    model's input (``_onnx_batch_first``)."""
    import functools

    onnx = _require("onnx", "from_onnx")
    if isinstance(path_or_model, onnx.ModelProto):
        model, where = path_or_model, "the ONNX model"
    else:
        from google.protobuf.message import DecodeError

        if hasattr(path_or_model, "read"):  # onnx.load takes a file object too
            path = path_or_model
            check_binary_file("path_or_model", path, "read")
        else:
            path = check_path("path_or_model", path_or_model)
        try:
            model = onnx.load(path)
        except DecodeError as error:
            raise ValueError(f"{path} is not an ONNX model, or is truncated: {error}") from error
        where = f"the ONNX model {getattr(path, 'name', path)!r}"
    graph = model.graph
    if not graph.node:  # protobuf reads an empty file, and some short ones, as an empty model
        raise ValueError(f"{where} has no graph nodes at all: is it empty, or not an ONNX model?")
    lstm_nodes = [n for n in graph.node if n.op_type == "LSTM"]
    if not lstm_nodes:
        raise ValueError(f"{where} has no LSTM node")
    constants = _onnx_constants(graph)
    dynamic = _onnx_dynamic(graph, constants)
    shapes = functools.cache(lambda: _onnx_shapes(model))  # inference copies the model: once

    def value_of(name):
        if name in constants:
            return constants[name]
        return None if name in dynamic else _onnx_evaluate(model, name, dynamic, shapes)

    layers = []
    for k, node in enumerate(lstm_nodes):
        where = f"LSTM node {node.name or k!r}"
        attrs = _onnx_attributes(node)
        if "clip" in attrs:
            raise ValueError(f"{where} has clip={attrs['clip']}: cell clipping has no native equivalent")
        if attrs.get("input_forget", 0):
            raise ValueError(
                f"{where} has input_forget={attrs['input_forget']} (coupled input and forget gates)"
            )
        for attr in ("activation_alpha", "activation_beta"):
            if attr in attrs:
                raise ValueError(f"{where} has {attr}: only the default activations are supported")
        direction = attrs.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        if direction not in ("forward", "bidirectional"):
            raise ValueError(
                f"{where} has direction={direction!r}: a reverse-only layer has no native equivalent "
                "(only 'forward' and 'bidirectional')"
            )
        D = 2 if direction == "bidirectional" else 1
        if "activations" in attrs:
            acts = tuple(
                a.decode().lower() if isinstance(a, bytes) else a.lower() for a in attrs["activations"]
            )
            if acts != _ONNX_DEFAULT_ACTIVATIONS * D:
                raise ValueError(
                    f"{where} has activations={list(acts)}; numba_lstm computes Sigmoid, Tanh, Tanh only"
                )
        ins = list(node.input) + [""] * (8 - len(node.input))

        def tensor(index, label, ins=ins, where=where):
            name = ins[index]
            if not name:
                return None
            value = value_of(name)  # computed from constants too (an export without constant folding)
            if value is None:
                raise ValueError(
                    f"{where}: its {label} input {name!r} is not a constant (an initializer, a Constant, "
                    "or computed from them alone)"
                )
            return _to_numpy(f"{where} {label}", value)

        W, R, B, P = tensor(1, "W"), tensor(2, "R"), tensor(3, "B"), tensor(7, "P")
        for label, value in (("W", W), ("R", R)):
            if value is None:
                raise ValueError(f"{where} has no {label} input: the LSTM operator requires W and R")
        if P is not None and np.any(P != 0):
            raise ValueError(f"{where} has peepholes (a non-zero P input): they have no native equivalent")
        if R.ndim != 3 or R.shape[0] != D or R.shape[1] != 4 * R.shape[2] or R.shape[2] == 0:
            raise ValueError(f"{where} R must have shape (num_directions={D}, 4H, H), got {R.shape}")
        H = R.shape[2]
        if "hidden_size" in attrs and attrs["hidden_size"] != H:
            raise ValueError(f"{where} has hidden_size={attrs['hidden_size']} but R has shape {R.shape}")
        if W.ndim != 3 or W.shape[:2] != (D, 4 * H):
            raise ValueError(f"{where} W must have shape ({D}, {4 * H}, I), got {W.shape}")
        if B is not None:
            _expect_shape(f"{where} B", B, (D, 8 * H), "(num_directions, 8H)")
        _same_dtype({"W": W, "R": R, **({"B": B} if B is not None else {})})
        layers.append((where, D, H, W, R, B))

    _, D, H, W0, _, _ = layers[0]
    config = check_config(
        {
            "input_size": W0.shape[2],
            "hidden_size": H,
            "num_layers": len(layers),
            "bidirectional": D == 2,
            "proj_size": 0,
        }
    )
    params = {}
    for k, (where, D_k, H_k, W, R, B) in enumerate(layers):
        I_k = _layer_sizes(config, k)[0]
        if (D_k, H_k, W.shape[2]) != (D, H, I_k):
            raise ValueError(
                f"{where} does not stack on the layers before it: it has {D_k} direction(s), hidden_size "
                f"{H_k} and input size {W.shape[2]}; expected {D}, {H} and {I_k}"
            )
        for d, sfx in enumerate(_directions(config)):
            Wx = _permute_blocks(W[d], _NATIVE_FROM_ONNX, axis=0).T
            Wh = _permute_blocks(R[d], _NATIVE_FROM_ONNX, axis=0).T
            params[f"W_l{k}{sfx}"] = np.concatenate([Wx, Wh], axis=0)
            if B is None:
                params[f"b_l{k}{sfx}"] = np.zeros(4 * H, W.dtype)
            else:
                b = _sum_of_biases(B[d, : 4 * H], B[d, 4 * H :])
                params[f"b_l{k}{sfx}"] = _permute_blocks(b, _NATIVE_FROM_ONNX, axis=0)
    _same_dtype(params)
    _check_onnx_stack(lstm_nodes, [where for where, *_ in layers], D, H, graph, constants, dynamic, value_of)
    return config, _aligned_params(params), _onnx_batch_first(model, config["input_size"], constants)
