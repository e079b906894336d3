"""Save and load an ``LSTM`` layer: configuration, dtype and every parameter, exactly.

File format (``FORMAT_VERSION`` 1): an uncompressed ``.npz`` archive, read
with ``allow_pickle=False`` (it never holds a pickled object) containing

* ``__format__``   0-d unicode array, the string ``"numba_lstm.LSTM"``;
* ``__version__``  0-d int64 array, the format version;
* ``__config__``   0-d unicode array, JSON of the layer's configuration
  (input_size, hidden_size, num_layers, bidirectional, proj_size, dropout,
  batch_first) and its dtype name;
* ``param/<name>`` one array per entry of ``layer.params``, stored in the
  layer's dtype, bit for bit.

``save`` writes a temporary file in the destination folder, flushes it to
disk and renames it over ``path`` with ``os.replace``, so a crash leaves
either the old file or the new one under ``path``, never a half-written one.
``load`` refuses (``ValueError``) a truncated or corrupted archive, another
format or version, a configuration it cannot build, and arrays whose names,
shapes or dtypes do not match that configuration; nothing is ever cast.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT_NAME = "numba_lstm.LSTM"
FORMAT_VERSION = 1
CONFIG_KEYS = (
    "input_size",
    "hidden_size",
    "num_layers",
    "bidirectional",
    "proj_size",
    "dropout",
    "batch_first",
)
_PARAM_PREFIX = "param/"
_META_KEYS = ("__format__", "__version__", "__config__")


def layer_config(layer):
    """The constructor arguments of ``layer`` (without dtype and seed), as plain Python values."""
    return {
        "input_size": int(layer.input_size),
        "hidden_size": int(layer.hidden_size),
        "num_layers": int(layer.num_layers),
        "bidirectional": bool(layer.bidirectional),
        "proj_size": int(layer.proj_size),
        "dropout": float(layer.dropout),
        "batch_first": bool(layer.batch_first),
    }


def save(layer, path):
    """Write ``layer`` (an ``numba_lstm.LSTM``) to ``path`` atomically.

    The file is written exactly at ``path`` (no ``.npz`` suffix is added).
    Parameters are stored in the layer's dtype without any conversion.
    """
    from numba_lstm.layer import LSTM

    if not isinstance(layer, LSTM):
        raise TypeError(f"layer must be a numba_lstm.LSTM, got {type(layer).__name__}")
    path = os.fspath(path)
    config = layer_config(layer)
    config["dtype"] = np.dtype(layer.dtype).name
    arrays = {
        "__format__": np.array(FORMAT_NAME),
        "__version__": np.array(FORMAT_VERSION, np.int64),
        "__config__": np.array(json.dumps(config, sort_keys=True)),
    }
    for name, value in layer.params.items():
        if not isinstance(value, np.ndarray) or value.dtype != layer.dtype:
            raise TypeError(
                f"layer.params[{name!r}] must be a {layer.dtype} array, got {_describe(value)}; "
                "refusing to save a converted copy"
            )
        arrays[_PARAM_PREFIX + name] = value
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load(path):
    """Read a layer written by ``save``; returns a new ``numba_lstm.LSTM``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is truncated or corrupted, is not a numba_lstm layer file,
        has an unsupported format version, or its arrays do not match its
        configuration (names, shapes or dtypes).
    """
    from numba_lstm.layer import LSTM

    path = os.fspath(path)
    arrays = _read_arrays(path)
    missing = [k for k in _META_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{path} is not a numba_lstm layer file: it has no {', '.join(missing)}")
    fmt = _scalar(path, arrays, "__format__", "U")
    if fmt != FORMAT_NAME:
        raise ValueError(f"{path} is not a numba_lstm layer file: format {fmt!r}, expected {FORMAT_NAME!r}")
    version = _scalar(path, arrays, "__version__", "iu")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version}; this numba_lstm reads version {FORMAT_VERSION} only"
        )
    config, dtype = _parse_config(path, _scalar(path, arrays, "__config__", "U"))
    try:
        layer = LSTM(**config, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} has an invalid configuration {config}: {error}") from error
    stored = {k[len(_PARAM_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_PARAM_PREFIX)}
    unknown = sorted(k for k in arrays if k not in _META_KEYS and not k.startswith(_PARAM_PREFIX))
    if unknown:
        raise ValueError(f"{path} has unexpected arrays {unknown}")
    expected, got = sorted(layer.params), sorted(stored)
    if expected != got:
        raise ValueError(
            f"{path}: parameters do not match the configuration {config}: expected {expected}, got {got}"
        )
    for name, target in layer.params.items():
        value = stored[name]
        if value.dtype != target.dtype:
            raise ValueError(f"{path}: parameter {name} has dtype {value.dtype}, expected {target.dtype}")
        if value.shape != target.shape:
            raise ValueError(f"{path}: parameter {name} has shape {value.shape}, expected {target.shape}")
    for name, target in layer.params.items():
        target[...] = stored[name]
    return layer


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


def _read_arrays(path):
    """Every array of the archive, read fully (so that CRC errors surface here)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is truncated or corrupted: {type(error).__name__}: {error}") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array, not a numba_lstm layer file (.npz)")
    try:
        with archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise ValueError(f"{path} holds pickled objects; numba_lstm never loads pickles") from error
        raise ValueError(f"{path} is truncated or corrupted: {error}") from error
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is truncated or corrupted: {type(error).__name__}: {error}") from error


def _scalar(path, arrays, key, kinds):
    value = arrays[key]
    if value.shape != () or value.dtype.kind not in kinds:
        raise ValueError(f"{path}: {key} must be a scalar of kind {kinds!r}, got {_describe(value)}")
    return value.item()


def _parse_config(path, text):
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: __config__ is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path}: __config__ must be a JSON object, got {type(config).__name__}")
    keys = set(CONFIG_KEYS) | {"dtype"}
    if set(config) != keys:
        raise ValueError(f"{path}: __config__ must have the keys {sorted(keys)}, got {sorted(config)}")
    types = {"bidirectional": bool, "batch_first": bool, "dropout": (int, float)}
    for key in CONFIG_KEYS:
        want = types.get(key, int)
        value = config[key]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ValueError(f"{path}: __config__[{key!r}] has the wrong type: {value!r}")
    dtype_name = config.pop("dtype")
    if dtype_name not in ("float32", "float64"):
        raise ValueError(f"{path}: dtype must be 'float32' or 'float64', got {dtype_name!r}")
    return config, np.dtype(dtype_name)
