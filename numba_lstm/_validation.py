"""Argument checks shared by every public entry point.

Each check raises ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong
rank, shape or value) with a message that names the argument, says what was
expected and what was given.  Nothing here casts a dtype: float32 and float64
are the only accepted dtypes and mixing them is an error.
"""

import codecs
import os
from io import BufferedIOBase, RawIOBase, TextIOBase

import numpy as np

try:  # re-exported for the package: the overlap checks of optim and functional
    from numpy.lib.array_utils import byte_bounds  # NumPy >= 2.0
except ImportError:  # NumPy 1.x
    from numpy import byte_bounds  # noqa: F401 (re-exported)

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return " ".join(f"{type(value).__name__} {value!r}"[:400].split())[:200]  # one line


def c_writeable(a):
    """Whether the array ``a`` is C-contiguous and writeable (one flags object)."""
    flags = a.flags
    return flags.c_contiguous and flags.writeable


def as_float_array(name, value, dtype=None, source=None):
    """Return ``value`` as a C-contiguous float32/float64 array, never cast.

    ``dtype`` (if given) is the dtype every other argument of the call has,
    set by ``source`` (``"W"``, ``"the layer"``: given with ``dtype``, named
    in the message); a different float dtype is refused rather than converted.  Non-contiguous
    and read-only inputs are copied into a fresh C-contiguous array (the
    caller's array is never written).
    """
    check_float_array(name, value, dtype, source)
    if not c_writeable(value):
        # Kernels are compiled for writeable C-contiguous arrays; copying keeps
        # one compiled variant per dtype and never touches the caller's array.
        value = np.array(value, order="C", copy=True)
    return value


def check_float_array(name, value, dtype=None, source=None):
    """``as_float_array``'s checks, without its copy: a float32/float64
    array, of ``dtype`` (set by ``source``) if given (any layout)."""
    if not isinstance(value, np.ndarray):
        if isinstance(value, (list, tuple)):
            raise TypeError(
                f"{name} must be a numpy array of float32 or float64, got a "
                f"{type(value).__name__}; convert it with numpy.asarray(..., dtype=...) first"
            )
        hint = ""
        if type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach"):  # a tensor
            hint = f"; convert it with {name}.detach().cpu().numpy() first"
        elif hasattr(value, "__array__"):
            hint = "; convert it with numpy.asarray(...) first"
        raise TypeError(f"{name} must be a numpy array of float32 or float64, got {_describe(value)}{hint}")
    refuse_masked(name, value)
    if value.dtype not in FLOAT_DTYPES:
        refuse_foreign_byte_order(name, value)
        raise TypeError(
            f"{name} must have dtype float32 or float64, got {value.dtype}; "
            "numba_lstm never casts arrays silently"
        )
    if dtype is not None and value.dtype != dtype:
        wanted = np.dtype(dtype).name
        # A parameter replaced by a new array would part it from an optimizer that holds the old one.
        mend = (
            f"assign in place, {name}[...] = W"
            if name.startswith("params[")
            else f"{name}.astype(np.{wanted})"
        )
        raise TypeError(
            f"{name} has dtype {value.dtype} but {source} has dtype {np.dtype(dtype)}; pass every array in one "
            f"dtype (numba_lstm never casts): {mend}, for one"
        )


def as_plain_float_array(name, value, dtype=None, source=None):
    """``as_float_array`` as a plain ndarray, for code that computes with NumPy's
    operators: an ``np.matrix`` keeps its subclass through them (``@`` returns
    a matrix, ``max`` has no ``keepdims``)."""
    return np.asarray(as_float_array(name, value, dtype, source))


def refuse_foreign_byte_order(name, value):
    """TypeError if ``value`` is float32 or float64 in the other byte order
    (``>f4`` on a little-endian machine): "must have dtype float32, got >f4"
    did not say that the byte order was what was wrong."""
    native = value.dtype.newbyteorder("=")
    if native != value.dtype and native in FLOAT_DTYPES:
        raise TypeError(
            f"{name} is {native.name} in the other byte order (dtype {value.dtype.str!r}); numba_lstm reads "
            f"native byte order: pass {name}.astype({name}.dtype.newbyteorder('='))"
        )


def refuse_masked(name, value):
    """TypeError if ``value`` is a NumPy masked array: numba_lstm would ignore its mask."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array, whose mask numba_lstm would ignore; pass {name}.filled(value)"
        )


def is_real(value):
    """Whether ``value`` is a real number (Python or NumPy), not a bool nor a string."""
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def check_bool(name, value):
    """Return ``value`` as a bool; TypeError unless it is True or False (a
    NumPy bool too): a string such as ``"False"`` is refused, not read as true."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r:.200}")
    return bool(value)


def check_path(name, value):
    """Return the file path ``value`` (str, bytes or os.PathLike) as a str;
    TypeError otherwise: an int given to ``open`` is a file descriptor, which
    would be read or written and then closed."""
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str, bytes or os.PathLike), got {_describe(value)}")
    path = os.fsdecode(value)
    if "\0" in path:  # open's "embedded null byte" names nothing
        raise ValueError(
            f"{name} must be a file path, got {type(value).__name__} holding a NUL "
            "character (a file's contents? pass them as a file object, io.BytesIO(data))"
        )
    return path


_CODECS_STREAMS = (codecs.StreamReader, codecs.StreamWriter, codecs.StreamReaderWriter)


def check_binary_file(name, f, operation):
    """TypeError naming ``name`` unless the file object ``f`` is binary and open for ``operation`` ("read" or "write")."""
    mode = "'rb'" if operation == "read" else "'wb'"
    # A mode without "b" marks a text file, except on the io module's binary
    # streams: a zipfile member's mode is "r", a GzipFile's an int.  A codecs
    # stream is text whatever its mode (codecs.open adds "b" to it).
    given_mode = getattr(f, "mode", "b")
    binary_stream = isinstance(f, (BufferedIOBase, RawIOBase))
    text_mode = isinstance(given_mode, str) and "b" not in given_mode and not binary_stream
    if isinstance(f, (TextIOBase, *_CODECS_STREAMS)) or text_mode:
        raise TypeError(
            f"{name} as a file object must be opened in binary mode ({mode}), got a text file {f!r:.200}"
        )
    able = getattr(f, "readable" if operation == "read" else "writable", None)
    if callable(able) and not able():
        raise TypeError(f"{name} as a file object must be open to {operation} ({mode}), got {f!r:.200}")


def check_integer(name, value, minimum=1):
    """Return ``value`` as an int: TypeError unless it is an integer (a
    NumPy one too; not a bool, nor a float such as 2.0), ValueError unless it
    is at least ``minimum``."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be {what}, got {value!r:.200} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_float_dtype(name, dtype):
    """Return ``np.dtype(dtype)``; TypeError unless it is float32 or float64
    (``None``, which NumPy reads as float64, too)."""
    try:
        given = None if dtype is None else np.dtype(dtype)
    except (TypeError, ValueError):  # not a dtype at all
        given = None
    if given is None:  # first: np.dtype("float64") == None is True; e.g. torch.float32
        raise TypeError(
            f"{name} must be float32 or float64, got {repr(dtype)[:200]}, which is not a NumPy dtype "
            "(pass np.float32 or 'float32')"
        )
    if given not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {given}")
    return given


def make_rng(seed):
    """``numpy.random.default_rng(seed)``; its TypeError or ValueError, naming ``seed``, if it refuses it."""
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as error:
        raise type(error)(
            f"seed must be None, a non-negative integer, a numpy SeedSequence or Generator, got {seed!r:.200} ({error})"
        ) from error


def check_shape(name, value, expected, meaning=""):
    """Raise ValueError unless ``value.shape == expected``."""
    if value.shape != tuple(expected):
        what = f" {meaning}" if meaning else ""
        raise ValueError(f"{name} must have shape {tuple(expected)}{what}, got {value.shape}")


def check_ndim(name, value, ndim, letters):
    """Raise ValueError unless ``value`` has ``ndim`` axes (named by ``letters``)."""
    if value.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {letters}, got {value.ndim}-D shape {value.shape}")


def _transposed_hint(W):
    """For a W whose rows, not columns, hold the 4H gates: PyTorch's layout."""
    if 0 in W.shape or W.shape[0] % 4:
        return ""
    return (
        "; W looks transposed: PyTorch stores (4H, I) and (4H, H) weights, which "
        "numba_lstm.convert.from_torch (or LSTM.from_torch) turns into the native (I + H, 4H)"
    )


def check_weights(W, b, input_size=None, W_hr=None):
    """Validate the native weights; return ``(W, b, W_hr, I, H, P)``.

    ``W`` is (I + P, 4H), ``b`` is (4H,) and the optional projection ``W_hr``
    is (H, P); without it P = H.  ``I`` comes from ``input_size`` when given
    (the layer knows it), else from ``W`` and ``P``.
    """
    W = as_float_array("W", W)
    check_ndim("W", W, 2, "(I + P, 4H)")
    G = W.shape[1]
    if G == 0 or G % 4:
        raise ValueError(
            f"W must have shape (I + H, 4H) with 4H a positive multiple of 4, got {W.shape}{_transposed_hint(W)}"
        )
    H = G // 4
    b = as_float_array("b", b, W.dtype, "W")
    if b.ndim == 1 and b.shape[0] == W.shape[0] != G:
        raise ValueError(
            f"b must have shape ({G},) (4H,) to match W {W.shape}, got {b.shape}{_transposed_hint(W)}"
        )
    check_shape("b", b, (G,), "(4H,) to match W")
    P = H
    if W_hr is not None:
        W_hr = as_float_array("W_hr", W_hr, W.dtype, "W")
        check_ndim("W_hr", W_hr, 2, "(H, P)")
        if W_hr.shape[0] != H or W_hr.shape[1] < 1:
            raise ValueError(f"W_hr must have shape (H, P) with H = {H} from W, got {W_hr.shape}")
        P = W_hr.shape[1]
    if input_size is None:
        if W.shape[0] <= P:  # no row left for the inputs
            raise ValueError(
                f"W must have shape (I + P, 4H) with I >= 1 inputs, so more than P = {P} rows, got {W.shape}"
            )
        input_size = W.shape[0] - P
    if input_size < 1 or W.shape[0] != input_size + P:
        raise ValueError(f"W must have shape (I + P, 4H) = ({input_size} + {P}, {G}), got {W.shape}")
    return W, b, W_hr, input_size, H, P


def check_lengths(lengths, T, B):
    """Validate per-sequence lengths: integers in 0..T, shape (B,); None stays None."""
    if lengths is None:
        return None
    refuse_masked("lengths", lengths)
    if not isinstance(lengths, np.ndarray):
        given = lengths
        try:
            lengths = np.asarray(lengths)
        except ValueError as error:  # a ragged list
            raise ValueError(f"lengths must be an integer array of shape (B,), got {given!r:.200}") from error
        if lengths.size == 0 and lengths.dtype == np.float64:  # [] (B = 0): NumPy's default dtype
            lengths = lengths.astype(np.int64)
        elif lengths.dtype.kind in "iu" and any(
            isinstance(v, (bool, np.bool_)) for v in np.ravel(np.asarray(given, dtype=object))
        ):
            # [True, 3] is int64 to NumPy: a bool would be read as 1 or 0.
            raise TypeError(f"lengths must hold integers, not bools, got {given!r:.200}")
    if lengths.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an integer array of shape (B,), got dtype {lengths.dtype}")
    check_shape("lengths", lengths, (B,), "(B,), one length per sequence")
    if lengths.size and (lengths.min() < 0 or lengths.max() > T):
        raise ValueError(
            f"lengths must be between 0 and T = {T}, got values from {lengths.min()} to {lengths.max()}"
        )
    return lengths.astype(np.int64)


def some_names(names, shown=10, total=None):
    """``names`` (a list) for a message: all of them if few, else the first
    few and how many in all, ``total`` if given (a config of 10**5 layers
    listed 4.7 MB of names)."""
    total = len(names) if total is None else total
    if total <= shown:
        return str(names)
    return f"[{', '.join(map(repr, names[:shown]))}, ... {total} in all]"
