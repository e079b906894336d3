"""Where the four gates live inside one kernel, and a table of every parameter.

The native ``W`` of shape ``(I + H_out, 4H)`` holds, for each gate ``q`` in
i, f, g, o (column block ``j``), an input matrix ``W[:I, jH:(j+1)H]`` of
shape ``(I, H)`` and a recurrent matrix ``W[I:, jH:(j+1)H]`` of shape
``(H_out, H)`` (``H_out = H`` without projection); ``b[jH:(j+1)H]`` is its
bias.
"""

from typing import NamedTuple

import numpy as np

from numba_lstm._validation import FLOAT_DTYPES, refuse_masked
from numba_lstm.convert import _layer_sizes, check_params

__all__ = ["GateParams", "parameter_table", "split_gates"]

GATES = ("i", "f", "g", "o")
GATE_NAMES = {"i": "input", "f": "forget", "g": "candidate", "o": "output"}


class GateParams(NamedTuple):
    """Views of one gate's parameters inside ``W`` and ``b``."""

    input: np.ndarray  # (I, H)      multiplies x_t
    recurrent: np.ndarray  # (H_out, H)  multiplies h_{t-1}
    bias: np.ndarray  # (H,)


def split_gates(W, b, input_size):
    """Views of each gate's input weights, recurrent weights and bias.

    Parameters
    ----------
    W : ndarray, shape (I + H_out, 4H), float32 or float64
        Native kernel (``H_out = H``, or ``P`` for a projected layer).
    b : ndarray, shape (4H,), same dtype
    input_size : int
        ``I``, the number of rows of ``W`` that multiply ``x_t``.

    Returns
    -------
    dict
        ``'i'``, ``'f'``, ``'g'``, ``'o'`` -> ``GateParams(input (I, H),
        recurrent (H_out, H), bias (H,))``.  These are views: writing through
        them changes ``W`` and ``b`` (nothing is copied, even for a
        non-contiguous ``W``).
    """
    for name, value in (("W", W), ("b", b)):
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{name} must be a numpy array (views need one), got {type(value).__name__}")
        refuse_masked(name, value)
        if value.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must have dtype float32 or float64, got {value.dtype}")
    if W.ndim != 2 or W.shape[1] == 0 or W.shape[1] % 4:
        raise ValueError(f"W must have shape (I + H, 4H) with 4H a positive multiple of 4, got {W.shape}")
    H = W.shape[1] // 4
    if b.shape != (4 * H,):
        raise ValueError(f"b must have shape ({4 * H},) (4H,) to match W {W.shape}, got {b.shape}")
    if b.dtype != W.dtype:
        raise TypeError(f"b has dtype {b.dtype} but W has {W.dtype}; pass both in one dtype")
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)):
        raise TypeError(f"input_size must be an integer, got {type(input_size).__name__} {input_size!r}")
    if W.shape[0] < 2:
        raise ValueError(
            f"W must have at least 2 rows (I + H_out: at least one input and one recurrent row), got shape {W.shape}"
        )
    if not 1 <= input_size < W.shape[0]:
        raise ValueError(
            f"input_size must be in [1, {W.shape[0] - 1}] for W of shape {W.shape} (I + H_out rows), "
            f"got {input_size}"
        )
    I = int(input_size)
    return {
        q: GateParams(W[:I, j * H : (j + 1) * H], W[I:, j * H : (j + 1) * H], b[j * H : (j + 1) * H])
        for j, q in enumerate(GATES)
    }


def _shape(shape):
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def parameter_table(config, params):
    """A text table of every parameter: name, shape, count, the per-gate split and the total.

    Parameters
    ----------
    config : dict
        ``input_size``, ``hidden_size`` (and ``num_layers``, ``bidirectional``,
        ``proj_size``), see ``numba_lstm.convert``.
    params : dict of name -> ndarray
        The native parameters of ``config`` (``W_l0``, ``b_l0``, ...).

    Returns
    -------
    str
        One row per parameter; under each ``W`` its four gates' input and
        recurrent blocks, under each ``b`` its four gate biases; last row
        ``total``.  For 4 inputs and 2 units: 48 + 8 = 56 parameters.
    """
    config, params = check_params(config, params)
    rows = [("parameter", "shape", "count")]
    total = 0
    for name, value in params.items():
        rows.append((name, _shape(value.shape), f"{value.size:,}"))
        total += value.size
        if name.startswith("W_hr"):
            continue
        H = value.shape[-1] // 4
        if name.startswith("W"):
            k = int(name[3:].split("_")[0])
            I_k = _layer_sizes(config, k)[0]
            for q in GATES:
                label = f"  {q} ({GATE_NAMES[q]})"
                rows.append((f"{label} x", _shape((I_k, H)), f"{I_k * H:,}"))
                rows.append(
                    (f"{label} h", _shape((value.shape[0] - I_k, H)), f"{(value.shape[0] - I_k) * H:,}")
                )
        else:
            for q in GATES:
                rows.append((f"  {q} ({GATE_NAMES[q]})", _shape((H,)), f"{H:,}"))
    dtype = next(iter(params.values())).dtype
    rows.append(("total", "", f"{total:,}"))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}".rstrip() for r in rows]
    rule = "-" * len(lines[0])
    header = (
        f"LSTM(input_size={config['input_size']}, hidden_size={config['hidden_size']}, "
        f"num_layers={config['num_layers']}, bidirectional={config['bidirectional']}, "
        f"proj_size={config['proj_size']}), {dtype.name}"
    )
    return "\n".join([header, lines[0], rule, *lines[1:-1], rule, lines[-1]])
