"""LSTM functions for your own ``@njit`` code: no Python between the steps.

Every function here is compiled with Numba and can be called from other
jitted functions (or from Python).  Arrays are float32 or float64, all of
one dtype, in the native layout: ``W (I + H, 4H)`` with rows for x then h,
gates i, f, g, o, bias ``b (4H,)``.  Any of them may be a strided view
except ``work``, and read-only except ``h_out``, ``c_out`` and ``work``;
``forward`` copies x, h0 and c0 to C-contiguous arrays when they are not.

``step_into`` allocates nothing: use it in tight loops.  Its ``work`` buffer is
a C-contiguous 1-D array of at least ``work_size(B, H) = 10 * B * H`` elements of the
same dtype (a whole array, not a strided view), which shares memory with no
other argument (not checked: the check cost 4-15% of a step at H = 32);
``h_out``/``c_out`` may be the same arrays as ``h``/``c`` (update in place),
but never share memory with each other (refused).  Above ``SMALL_ROWS`` = 8
rows the products go through BLAS, and a strided ``x_t`` or ``h``, or a ``W``
that is not C-contiguous, is copied at every step (an allocation).

Bad arguments are refused, never cast: a non-array, a dtype other than
float32/float64 or mixed dtypes raise ``TypeError``, a wrong rank or shape
``ValueError``, each naming the argument, what was expected and what was
given.  From your ``@njit`` code the dtype and rank errors are raised when it
compiles.

Example (the final state of ``lstm_forward``, bit for bit)::

    @numba.njit
    def last_state(W, b, observations):  # float32, observations (steps, 1, I)
        H = W.shape[1] // 4
        h = np.zeros((1, H), np.float32); c = np.zeros_like(h)
        work = np.empty(numba_lstm.jit.work_size(1, H), np.float32)
        for obs in observations:
            numba_lstm.jit.step_into(obs, h, c, W, b, h, c, work)
        return h, c
"""

import numba
import numpy as np
from numba.core import types
from numba.core.imputils import impl_ret_borrowed
from numba.core.registry import CPUDispatcher
from numba.extending import intrinsic, overload
from numba.np.arrayobj import populate_array

from numba_lstm._kernels import (
    ROW_SPLIT_MAX_BYTES,
    SMALL_ROWS,
    SPLIT_STEP_MIN_FLOP,
    _add_blas_matmul,
    _add_matmul_rows,
    _blas_matmul,
    _copy_columns,
    _fill_columns,
    _gates_forward,
    _lstm_forward,
    _split_step,
    _unsaved_c_rows,
    _use_threads,
    _z_rows,
)
from numba_lstm._options import SERIAL
from numba_lstm._panels import _aligned_vector, _pack_into, _pad_into, _panel_width_of
from numba_lstm._sync import counters, thread_count
from numba_lstm._validation import _describe

__all__ = ["forward", "step", "step_into", "work_size"]

# --- argument checks ---------------------------------------------------------
#
# Kinds, dtypes and ranks are part of Numba's types, so they are checked when a
# call is typed, before anything is compiled: a bad call never gets a
# (silently casting) specialisation.  Each public function starts with a call
# to its ``_check_*_args``: a no-op in compiled code (LLVM removes it) whose
# ``overload`` inspects the argument types.  It raises a plain TypeError or
# ValueError, which Numba's (default, "new style") error capturing lets
# propagate unchanged: a user's ``@njit`` function that calls these with bad
# arrays fails to compile with that exception.  Python callers are checked on
# the values first, by ``_CheckedDispatcher``, which also covers arrays that
# Numba cannot type at all (object arrays).  Shapes are checked at run time.

_STEP_ARGS = (
    ("x_t", 2, "(B, I)"),
    ("h", 2, "(B, H)"),
    ("c", 2, "(B, H)"),
    ("W", 2, "(I + H, 4H)"),
    ("b", 1, "(4H,)"),
)
_ARGS = {
    "step": _STEP_ARGS,
    "step_into": _STEP_ARGS + (("h_out", 2, "(B, H)"), ("c_out", 2, "(B, H)"), ("work", 1, "(10 * B * H,)")),
    "forward": (("x", 3, "(T, B, I)"), *_STEP_ARGS[3:], ("h0", 2, "(B, H)"), ("c0", 2, "(B, H)")),
}
#: Arguments that must be C-contiguous (the others may be strided views).
_CONTIGUOUS = ("work",)
#: Arguments written to: a read-only array is refused by name (Numba's own
#: error, from inside the function, named neither).
_WRITTEN = ("h_out", "c_out", "work")


def _argument_error(function, given):
    """The error for the first bad argument of ``function``, or None.

    ``given`` has one ``(dtype, ndim, description)`` per argument, ``dtype``
    None for something that is not an array.
    """
    first = None
    for (name, ndim, axes), (dtype, rank, what, contiguous, writeable) in zip(
        _ARGS[function], given, strict=True
    ):
        where = f"numba_lstm.jit.{function}: {name}"
        if dtype is None:
            return TypeError(f"{where} must be a numpy array of float32 or float64, got {what}")
        if dtype not in ("float32", "float64"):
            return TypeError(
                f"{where} must have dtype float32 or float64, got {dtype}; numba_lstm never casts arrays silently"
            )
        if first is None:
            first = name, dtype
        elif dtype != first[1]:
            return TypeError(
                f"{where} has dtype {dtype} but {first[0]} is {first[1]}; pass every array in one dtype"
            )
        if rank != ndim:
            return ValueError(f"{where} must be {ndim}-D {axes}, got {rank}-D {what}")
        if name in _CONTIGUOUS and not contiguous:
            return ValueError(f"{where} must be C-contiguous (a whole array, not a strided view), got {what}")
        if name in _WRITTEN and not writeable:
            return ValueError(f"{where} is written to and must be writeable, got a read-only array of {what}")
    return None


def _describe_value(value):
    if isinstance(value, np.ndarray):
        flags = value.flags
        return str(value.dtype), value.ndim, f"shape {value.shape}", flags.c_contiguous, flags.writeable
    return None, 0, _describe(value), False, False


def _describe_type(typ):
    if isinstance(typ, types.Array):
        return str(typ.dtype), typ.ndim, str(typ), typ.layout == "C", typ.mutable
    return None, 0, f"Numba type {typ}", False, False


def _argument_check(function):
    """A no-op for jitted code whose overload checks the argument types."""

    def check(*args):
        # Run in Python, by _CheckedDispatcher, on the values.
        error = _argument_error(function, [_describe_value(a) for a in args])
        if error is not None:
            raise error

    @overload(check)
    def _check_types(*args):
        error = _argument_error(function, [_describe_type(t) for t in args])
        if error is not None:
            raise error
        return lambda *args: None

    return check


_CHECKS = {function: _argument_check(function) for function in _ARGS}
_check_step_args = _CHECKS["step"]
_check_step_into_args = _CHECKS["step_into"]
_check_forward_args = _CHECKS["forward"]


class _CheckedDispatcher(CPUDispatcher):
    """Numba's CPU dispatcher, checking a Python caller's arguments first.

    ``_compile_for_args`` runs only when no compiled specialisation matches
    the arguments (a new type signature), never on the fast path.  It and the
    constructor are Numba internals (stable for years); tests/test_bad_input.py
    fails if a Numba release changes them.
    """

    def _compile_for_args(self, *args, **kws):
        _CHECKS[self.py_func.__name__](*args)
        return super()._compile_for_args(*args, **kws)


def _entry_point(func):
    """``numba.njit(**SERIAL)`` with a ``_CheckedDispatcher``; usable from ``@njit`` code too."""
    options = dict(SERIAL, nopython=True)
    cache = options.pop("cache")
    dispatcher = _CheckedDispatcher(func, targetoptions=options)
    if cache:
        dispatcher.enable_caching()
    return dispatcher


@intrinsic
def _rows(typingctx, a, start, n_rows, n_cols):
    """``a[start : start + n_rows * n_cols].reshape(n_rows, n_cols)`` for a C-contiguous 1-D ``a``.

    The view is built in place, where Numba's ``reshape`` calls its runtime
    (30 ns, four times in a ``step_into`` of 0.74 us at H = 32).  The caller
    has checked that ``a`` holds the elements.
    """
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"):
        return None
    view = a.copy(ndim=2, layout="C")

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        source = context.make_array(array_type)(context, builder, args[0])
        start, n_rows, n_cols = args[1:]
        itemsize = source.itemsize
        out = context.make_array(view)(context, builder)
        populate_array(
            out, data=builder.gep(source.data, [start]), shape=[n_rows, n_cols],
            strides=[builder.mul(n_cols, itemsize), itemsize], itemsize=itemsize, meminfo=source.meminfo,
            parent=source.parent,
        )  # fmt: skip
        return impl_ret_borrowed(context, builder, view, out._getvalue())

    return view(a, types.intp, types.intp, types.intp), codegen


@intrinsic
def _address(typingctx, a):
    """The address of array ``a``'s first element, as an integer.

    ``a.ctypes.data`` builds a ctypes object that holds a reference to the
    array: an NRT incref and decref each time.
    """
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.ptrtoint(array.data, context.get_value_type(types.intp))

    return types.intp(a), codegen


@numba.njit(**SERIAL)
def _work_elements(B, H):
    return 10 * B * H


#: B * H past this and 11 * B * H would wrap around in int64: only views with
#: zero strides have so many elements.
_MAX_STEP_UNITS = (2**63 - 1) // 11


@numba.njit(**SERIAL, inline="always")
def _work_holds(work, B, H, extra):
    """Whether ``work`` has the 10 * B * H elements of a step and ``extra``
    * B * H more, computed without wrapping around (then it cannot)."""
    return B * H <= _MAX_STEP_UNITS and work.size >= (10 + extra) * B * H


def _check_sizes(B, H):
    """A no-op for jitted code whose overload refuses a ``B`` or ``H`` that is not an integer."""


@overload(_check_sizes)
def _check_sizes_overload(B, H):
    for name, given in (("B", B), ("H", H)):
        if not isinstance(given, types.Integer):
            raise TypeError(f"numba_lstm.jit.work_size: {name} must be an integer, got Numba type {given}")
    return lambda B, H: None


@numba.njit(**SERIAL)
def work_size(B, H):
    """Length of the ``work`` buffer of ``step_into`` for batch B and H units."""
    _check_sizes(B, H)
    if B < 0 or H < 0:
        raise ValueError("numba_lstm.jit.work_size: B and H must be >= 0")
    if H > 0 and B > (2**63 - 1) // 10 // H:
        raise ValueError("numba_lstm.jit.work_size: 10 * B * H is past the largest int64")
    return _work_elements(B, H)


@numba.njit(**SERIAL)
def _shape(a):
    """``a.shape`` as Python prints it, for error messages."""
    text = "("
    for k, d in enumerate(a.shape):
        text += (", " if k > 0 else "") + str(d)
    return text + (",)" if a.ndim == 1 else ")")


# The run-time checks below start their messages with ``where``, the
# function the user called ("numba_lstm.jit.step_into: "): from a user's
# ``@njit`` code, Numba's traceback shows neither that function nor the line.
# Jitted callers pass it as ``str("...")``, a plain string: a literal is a
# type of its own (``Literal[str]``), for which Numba would compile the
# checks' string code once more for each caller (bench/NOTES.md, "Session 23").


@numba.njit(**SERIAL)
def _check_step(where, x_t, h, c, W, b):
    _check_shapes(
        where, x_t, x_t.shape[0], x_t.shape[1], h, c, W, b, ("x_t (B, I)", "x_t.shape[0]", "h", "c")
    )


@numba.njit(**SERIAL)
def _check_shapes(where, x, B, I, h, c, W, b, names):
    """Refuse a state (h, c) or weights (W, b) that do not fit an input x of
    B rows and I features; ``names``: x with its axes, where B is in x, and
    the names of h and c, as the caller's arguments are called."""
    x_axes, B_axis, h_name, c_name = names
    H = h.shape[1]
    if h.shape[0] != B or c.shape[0] != B or c.shape[1] != H:
        raise ValueError(
            where + h_name + " and " + c_name + " must both have shape (B, H) with B = " + B_axis + " = "
            + str(B) + "; got " + h_name + " " + _shape(h) + ", " + c_name + " " + _shape(c)
        )  # fmt: skip
    if W.shape[0] != I + H or W.shape[1] != 4 * H:
        raise ValueError(
            where + "W must have shape (I + H, 4H) = (" + str(I + H) + ", " + str(4 * H) + ") for " + x_axes
            + " = " + _shape(x) + " and " + h_name + " (B, H) = " + _shape(h) + "; got " + _shape(W)
        )  # fmt: skip
    if b.shape[0] != 4 * H:
        raise ValueError(where + "b must have shape (4H,) = (" + str(4 * H) + ",); got " + _shape(b))


@numba.njit(**SERIAL)
def _check_step_into(x_t, h, c, W, b, h_out, c_out, work):
    where = str("numba_lstm.jit.step_into: ")  # noqa: UP018
    _check_step(where, x_t, h, c, W, b)
    B = x_t.shape[0]
    H = h.shape[1]
    if h_out.shape != h.shape or c_out.shape != c.shape:
        raise ValueError(
            where + "h_out and c_out must have the shapes of h and c, " + _shape(h) + " and " + _shape(c)
            + "; got " + _shape(h_out) + " and " + _shape(c_out)
        )  # fmt: skip
    if not _work_holds(work, B, H, 0):
        needed = str(_work_elements(B, H)) if B * H <= _MAX_STEP_UNITS else "more than 2**63 - 1"
        raise ValueError(
            where + "work must have at least work_size(B, H) = 10 * B * H = " + needed + " elements; got "
            + str(work.size)
        )  # fmt: skip
    if not _outputs_apart(h_out, c_out):
        raise ValueError(
            where + "h_out and c_out must not share memory (or, with strides of their own, must not span "
            "overlapping bytes): the step writes both, element by element"
        )


@numba.njit(**SERIAL, inline="always")
def _extent(a):
    """The addresses [low, high) of the bytes that array ``a`` spans, for any strides ((0, 0) if empty)."""
    if a.size == 0:
        return 0, 0
    low = high = _address(a)
    for k in range(a.ndim):
        span = (a.shape[k] - 1) * a.strides[k]
        if span < 0:
            low += span
        else:
            high += span
    return low, high + a.itemsize


@numba.njit(**SERIAL, inline="always")
def _outputs_apart(h_out, c_out):
    """Whether the outputs h_out and c_out, both (B, H), share no element."""
    h_low, h_high = _extent(h_out)
    c_low, c_high = _extent(c_out)
    return h_high <= c_low or c_high <= h_low or _interleaved_apart(h_out, c_out)


@numba.njit(**SERIAL)
def _interleaved_apart(h_out, c_out):
    """``_outputs_apart`` for outputs whose byte ranges overlap: columns of
    one buffer side by side, or interleaved.  Exact for outputs of the same
    strides (element (i, j) of one and (k, l) of the other overlap when
    their offsets differ by less than an item); outputs of other strides
    whose ranges overlap count as sharing memory."""
    if h_out.strides != c_out.strides:
        return False
    B, H = h_out.shape
    row, col = h_out.strides
    item = h_out.itemsize
    offset = _address(c_out) - _address(h_out)
    for rows in range(1 - B, B):  # k - i
        r = offset + rows * row  # + (l - j) * col, for l - j in (-H, H)
        if col == 0:
            if abs(r) < item:
                return False
            continue
        nearest = -r // col
        for cols in (nearest, nearest + 1):
            cols = min(max(cols, 1 - H), H - 1)
            if abs(r + cols * col) < item:
                return False
    return True


@_entry_point
def step_into(x_t, h, c, W, b, h_out, c_out, work):
    """One LSTM step without allocating.

    x_t (B, I), h (B, H), c (B, H), W (I + H, 4H), b (4H,) in;
    h_out (B, H), c_out (B, H) out (may be ``h`` and ``c`` themselves, not
    each other's memory); work (at least 10 * B * H,) scratch, apart from the others.

    W is read in place, row by row: a W that starts 16 or 48 bytes past a
    64-byte line, as NumPy may place a large array, made a step 15-17%
    slower at H = 32 and 4-19% at H = 128 (bench/NOTES.md, "Session 19").
    An ``LSTM`` layer's parameters start on a line, as do the arrays of
    ``convert``'s ``from_*``.  A W in Fortran order gives the same bits
    but is read across its rows: 1.9 against 0.57 us a step at H = 32
    (bench/NOTES.md, "Session 32").  Up to ``SMALL_ROWS`` rows, a loop of
    steps gives the bits of ``lstm_forward`` over the sequence.
    """
    _check_step_into_args(x_t, h, c, W, b, h_out, c_out, work)
    # The shapes are compared here and the messages built only on failure,
    # in a call: an unconditional call of the check, or its raise statements
    # here, cost 0.1-0.2 us of a 0.6-0.8 us step (H = 32, float32).
    if not (
        _unprojected_step_fits(x_t, h, c, W, b, work) and h_out.shape == h.shape and c_out.shape == c.shape
        and _outputs_apart(h_out, c_out)
    ):  # fmt: skip
        _check_step_into(x_t, h, c, W, b, h_out, c_out, work)
    _step_body(x_t, h, c, W, b, h_out, c_out, work)


@numba.njit(**SERIAL, inline="always")
def _step_body(x_t, h, c, W, b, m, c_out, work):
    """``step_into`` after its checks, for h (B, P) of any width P: W (I + P, 4H),
    and ``m`` (B, H) gets o * tanh(c_t) (h_t itself when P = H, no projection).

    Inlined by Numba: called, it made ``step_into`` 5-14% slower at H = 32
    (0.60-0.68 against 0.68-0.71 us a step in an ``@njit`` loop).
    """
    B, I = x_t.shape
    H = c.shape[1]
    G = 4 * H
    z = _rows(work, 0, B, G)
    gates = _rows(work, B * G, B, G)
    tanh_c = _rows(work, 2 * B * G, B, H)
    # A copy of c, so that the gate pass never reads the array it writes when
    # c_out is c: LLVM's overlap check then keeps the vectorised loop (in
    # place, the scalar loop cost 1.9 us against 0.4 us at H = 32, float64).
    c_prev = _rows(work, 2 * B * G + B * H, B, H)
    _copy_columns(c_prev, c, np.int64(0), H)
    # z = b + x_t @ W_x + h @ W_h, accumulated in one array, in the order of
    # the sequence kernels (one pass over z per product: at H = 32 float32,
    # 0.82 -> 0.60 us a step against two products and a pass summing them).
    _fill_columns(z, b, np.int64(0), G)
    if B <= SMALL_ROWS:
        _add_matmul_rows(z, x_t, W[:I])
        _add_matmul_rows(z, h, W[I:])
    else:  # ``gates`` is free until the gate pass: BLAS's work
        _add_blas_matmul(z, x_t, W[:I], gates)
        _add_blas_matmul(z, h, W[I:], gates)
    # Activations into their own array, not over the pre-activations:
    # distinct arrays keep the gate loop vectorised.
    _gates_forward(gates, c_out, tanh_c, m, z, c_prev, np.int64(0), H)


# The layer's step functions below return False, having written nothing,
# when a shape differs (a parameter the user replaced in ``layer.params``);
# ``LSTM.step`` then raises the error of ``_refuse_layer_step``.  Calling the
# checks that build the messages from here instead compiled about 3 s of
# string code into the first ``LSTM.step`` (bench/NOTES.md, "Session 23").


@numba.njit(**SERIAL, inline="always")
def _step_fits(x, h, c, W, b, work):
    """Whether the shapes of one step (h (B, P), c (B, H)) fit together, and ``work`` holds its buffers."""
    B, I = x.shape
    P, H = h.shape[1], c.shape[1]
    return (
        h.shape[0] == B and c.shape[0] == B and W.shape == (I + P, 4 * H) and b.shape[0] == 4 * H
        and _work_holds(work, B, H, 0)
    )  # fmt: skip


@numba.njit(**SERIAL, inline="always")
def _unprojected_step_fits(x, h, c, W, b, work):
    """``_step_fits`` for a step without projection: h and c both (B, H)."""
    return h.shape[1] == c.shape[1] and _step_fits(x, h, c, W, b, work)


@numba.njit(**SERIAL, inline="always")
def _layer_inputs(x_t, state, W, b, new_state, work, k):
    """Layer k's input, h and c, ``(x, state[0, k], state[1, k])``, for
    ``LSTM.step`` without projection, and whether the shapes fit."""
    x = x_t if k == 0 else new_state[0, k - 1]
    h, c = state[0, k], state[1, k]
    _check_step_args(x, h, c, W, b)
    return x, h, c, _unprojected_step_fits(x, h, c, W, b, work)


@numba.njit(**SERIAL)
def _layer_step_into(x_t, state, W, b, new_state, work, k):
    """``step_into`` for layer k of a stack: ``LSTM.step`` without projection.

    ``state`` and ``new_state`` (2, L, B, H) hold h and c of every layer;
    layer k's input is x_t for k = 0, else ``new_state[0, k - 1]``.  One
    array for h and c and the row views taken here saved about 0.2 us of a
    3 us call from Python at H = 32 (Numba unboxes each array argument,
    about 55 ns, and each view made in Python costs about 50 ns;
    bench/NOTES.md, "Session 8").  False when a shape differs.
    """
    x, h, c, fits = _layer_inputs(x_t, state, W, b, new_state, work, k)
    if not fits:
        return False
    _step_body(x, h, c, W, b, new_state[0, k], new_state[1, k], work)
    return True


def _refuse_layer_step(x_t, h, c, W, b, h_new, k, W_hr=None):
    """Raise the error for layer k of ``LSTM.step`` whose jitted step returned False.

    h (L, B, P), c (L, B, H) the state in, h_new the new h (layer k's input
    is x_t for k = 0, else ``h_new[k - 1]``); W_hr None without projection.
    """
    x = x_t if k == 0 else h_new[k - 1]
    where = f"numba_lstm.LSTM.step, layer {k}: "
    if W_hr is None:
        _check_step(where, x, h[k], c[k], W, b)
    else:
        _check_projected_step(where, x, h[k], c[k], W, b, W_hr)
    raise AssertionError(f"numba_lstm: the step of layer {k} refused shapes that its checks accept")


def _check_projection_type(W_hr, like):
    """A no-op for jitted code whose overload refuses a ``W_hr`` that is not a 2-D array of ``like``'s dtype."""


@overload(_check_projection_type)
def _check_projection_type_overload(W_hr, like):
    if not (isinstance(W_hr, types.Array) and W_hr.ndim == 2 and W_hr.dtype == like.dtype):
        raise TypeError(
            f"numba_lstm.LSTM.step: W_hr must be a 2-D {like.dtype} array (H, P), as x_t; got {_describe_type(W_hr)[2]}"
        )
    return lambda W_hr, like: None


@numba.njit(**SERIAL)
def _check_projected_step(where, x, h, c, W, b, W_hr):
    B, I = x.shape
    P, H = h.shape[1], c.shape[1]
    if h.shape[0] != B or c.shape[0] != B:
        raise ValueError(
            where + "h and c must have B = x_t.shape[0] = " + str(B) + " rows; got h " + _shape(h) + ", c "
            + _shape(c)
        )  # fmt: skip
    if W.shape != (I + P, 4 * H):
        raise ValueError(
            where + "W must have shape (I + P, 4H) = (" + str(I + P) + ", " + str(4 * H) + ") for x_t (B, I) = "
            + _shape(x) + ", h (B, P) = " + _shape(h) + " and c (B, H) = " + _shape(c) + "; got " + _shape(W)
        )  # fmt: skip
    if b.shape[0] != 4 * H:
        raise ValueError(where + "b must have shape (4H,) = (" + str(4 * H) + ",); got " + _shape(b))
    if W_hr.shape != (H, P):
        raise ValueError(
            where + "W_hr must have shape (H, P) = (" + str(H) + ", " + str(P) + "); got " + _shape(W_hr)
        )


@numba.njit(**SERIAL, inline="always")
def _projected_layer_inputs(x_t, h, c, W, b, W_hr, h_new, work, k):
    """Layer k's input, h and c, ``(x, h[k], c[k])``, for ``LSTM.step`` with a
    projection, and whether the shapes fit (``_step_fits``, W_hr (H, P), and
    ``work`` holds m's B * H more)."""
    x = x_t if k == 0 else h_new[k - 1]
    h_k, c_k = h[k], c[k]
    _check_step_args(x, h_k, c_k, W, b)
    _check_projection_type(W_hr, x)
    B, H = c_k.shape
    fits = (
        W_hr.shape == (H, h_k.shape[1]) and _step_fits(x, h_k, c_k, W, b, work)
        and _work_holds(work, B, H, 1)
    )  # fmt: skip
    return x, h_k, c_k, fits


@numba.njit(**SERIAL)
def _layer_step_projected(x_t, h, c, W, b, W_hr, h_new, c_new, work, k):
    """``LSTM.step`` for layer k of a stack with a projection.

    h (L, B, P) and c (L, B, H) in, h_new and c_new likewise out; layer k's
    input is x_t for k = 0, else ``h_new[k - 1]``.  ``work``: ``work_size(B,
    H) + B * H`` elements, whose last B * H take m = o * tanh(c_t) before
    h_t = m @ W_hr.  A step without a sequence kernel: ``lstm_forward`` of
    one step packed the weights at every call.
    """
    x, h_k, c_k, fits = _projected_layer_inputs(x_t, h, c, W, b, W_hr, h_new, work, k)
    if not fits:
        return False
    B, H = c_k.shape
    h_out = h_new[k]
    m = _rows(work, _work_elements(B, H), B, H)
    _step_body(x, h_k, c_k, W, b, m, c_new[k], work)
    if B <= SMALL_ROWS:
        h_out[:, :] = 0
        _add_matmul_rows(h_out, m, W_hr)
    else:
        _blas_matmul(h_out, m, W_hr)
    return True


@numba.njit(**SERIAL)
def _layer_step_split(x_t, state, W, b, new_state, z_parts, work, sync, k):
    """``_layer_step_into`` split into ``z_parts.shape[0]`` shares that
    Numba's threads take (``_split_step``): ``LSTM.step`` for a layer whose
    W has at least STEP_SPLIT_MIN_BYTES.  ``work`` as for ``step_into``, on
    a cache line; ``z_parts`` (S, B, 4H) likewise; ``sync`` (6,) int64,
    ``counters(3)`` (the first four used)."""
    x, h, c, fits = _layer_inputs(x_t, state, W, b, new_state, work, k)
    if not fits:
        return False
    h_out, c_out = new_state[0, k], new_state[1, k]
    B, H = h.shape
    sync[:] = 0
    _split_step(
        h_out, c_out, z_parts, _rows(work, 0, B, 4 * H), _rows(work, 4 * B * H, B, H),
        _rows(work, 5 * B * H, B, H), x, h, c, W, b, h_out, W[:0], z_parts[:0], sync,
    )  # fmt: skip
    return True


@numba.njit(**SERIAL)
def _layer_step_projected_split(x_t, h, c, W, b, W_hr, h_new, c_new, z_parts, h_parts, work, sync, k):
    """``_layer_step_projected`` split into ``z_parts.shape[0]`` shares that
    Numba's threads take (``_split_step``): ``LSTM.step`` for a layer with a
    projection whose W and W_hr have at least STEP_SPLIT_MIN_BYTES.
    ``work`` as for ``_layer_step_projected``, ``z_parts`` (S, B, 4H) and
    ``h_parts`` (S, B, P) on cache lines; ``sync`` (6,) int64."""
    x, h_k, c_k, fits = _projected_layer_inputs(x_t, h, c, W, b, W_hr, h_new, work, k)
    if not fits:
        return False
    B, H = c_k.shape
    sync[:] = 0
    _split_step(
        h_new[k], c_new[k], z_parts, _rows(work, 0, B, 4 * H), _rows(work, 4 * B * H, B, H),
        _rows(work, 5 * B * H, B, H), x, h_k, c_k, W, b, _rows(work, _work_elements(B, H), B, H), W_hr, h_parts, sync,
    )  # fmt: skip
    return True


@_entry_point
def step(x_t, h, c, W, b):
    """One LSTM step; returns new arrays ``(h_new, c_new)``, each (B, H)."""
    _check_step_args(x_t, h, c, W, b)
    h_new = np.empty_like(h)
    c_new = np.empty_like(c)
    work = np.empty(_work_elements(h.shape[0], h.shape[1]), h.dtype)
    # step_into's body without its checks: the outputs and work are new, of
    # the right sizes, so the shapes of the inputs are all there is to check.
    if not _unprojected_step_fits(x_t, h, c, W, b, work):
        _check_step(str("numba_lstm.jit.step: "), x_t, h, c, W, b)  # noqa: UP018
    _step_body(x_t, h, c, W, b, h_new, c_new, work)
    return h_new, c_new


@_entry_point
def forward(x, W, b, h0, c0):
    """A whole sequence: x (T, B, I) -> ``(y (T, B, H), h_n (B, H), c_n (B, H))``."""
    _check_forward_args(x, W, b, h0, c0)
    # Views of any layout (x of a batch-major array transposed, a reversed
    # sequence) are read through contiguous copies, and C-contiguous arrays
    # as they are: one specialisation of the kernel serves them all.
    x, h0, c0 = np.ascontiguousarray(x), np.ascontiguousarray(h0), np.ascontiguousarray(c0)
    T, B, I = x.shape
    where = str("numba_lstm.jit.forward: ")  # noqa: UP018
    _check_shapes(where, x, B, I, h0, c0, W, b, ("x (T, B, I)", "x.shape[1]", "h0", "c0"))
    H = h0.shape[1]
    N = T * B
    if N == 0:
        return np.empty((T, B, H), x.dtype), h0.copy(), c0.copy()
    # On cache lines, as in lstm_forward: the threads write these by units.
    y = _aligned_vector(N * H, x).reshape((N, H))
    c_rows = _unsaved_c_rows(N, B)  # c_t of even and odd steps in two slots
    c = _aligned_vector(c_rows * H, x).reshape((c_rows, H))
    gates = np.empty((0, 4 * H), x.dtype)  # none: nothing is saved for a backward
    tanh_c = np.empty((0, H), x.dtype)
    batch_sizes = np.full(T, B, np.int64)
    NR = _panel_width_of(x)
    Hp = -(-H // NR) * NR
    W_x = _aligned_vector(4 * Hp * I, x).reshape((4 * Hp // NR, I, NR))
    W_h = _aligned_vector(4 * Hp * H, x).reshape((4 * Hp // NR, H, NR))
    b_pad = np.empty(4 * Hp, x.dtype)
    groups = np.int64(4)  # int64 values, not literals, as from Python (_kernels, "Compile time")
    _pack_into(W_x, W[:I], groups)
    _pack_into(W_h, W[I:], groups)
    _pad_into(b_pad, b, groups)
    _lstm_forward(
        y, y, c, gates, tanh_c, _aligned_vector(_z_rows(B, Hp, x.itemsize) * 4 * Hp, x).reshape((-1, 4 * Hp)),
        np.empty((0, 0), x.dtype),
        x.reshape(N, I), W_x, W_h, b_pad, np.empty((0, 0, 0), x.dtype), h0, c0, batch_sizes,
        thread_count() if _use_threads(B, H, 4 * H, SPLIT_STEP_MIN_FLOP) else 1,
        np.int64(ROW_SPLIT_MAX_BYTES),  # compiled in (see its comment); int64, not a literal
        counters(2 * T),
    )  # fmt: skip
    last = N - B if c_rows == N else (T - 1) % 2 * B  # c's rows of the last step
    return y.reshape(T, B, H), y[N - B :].copy(), c[last : last + B].copy()
