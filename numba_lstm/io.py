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
Both also take a binary file object (``open(..., "wb")``, ``io.BytesIO``,
``gzip.GzipFile``, a member of a ``zipfile.ZipFile``), as ``np.savez`` and
``np.load`` do: ``save`` makes the archive in memory and writes it into the
object from its current position in one ``write`` (no atomic replace; the
object need not seek), ``load`` reads it from its current position to its
end, which must hold one layer file: data before the archive (a second
layer saved after a first) is refused, not skipped.
The new file has the mode of the file it replaces, else that of any new file
(0o666 less the umask); a symbolic link at ``path`` stays, and its target is
replaced.  ``save`` replaces only what ``open(path, "wb")`` could write: not
a directory, a FIFO, a device or a file it may not write.  ``load`` reads a
path that cannot seek (a FIFO) whole, as a file object.
``load`` refuses (``ValueError``) a truncated or corrupted archive, another
format or version, a configuration it cannot build, and arrays whose names,
shapes or dtypes do not match that configuration; nothing is ever cast.
It reads only the members that the format names, each after checking its
declared size against what its array needs, so an archive compressed by
another tool loads too, while a member that would expand past its array's
size is refused before it is read.  Members are stored or deflated (as
``np.savez`` and ``np.savez_compressed`` write them); zipfile expands a
bzip2 or LZMA member a 4 KB chunk at a time without a limit, before it
checks the declared size, so those are refused.
"""

import errno
import gzip
import json
import lzma
import math
import os
import secrets
import stat
import zipfile
import zlib
from contextlib import contextmanager, nullcontext
from io import BytesIO

import numpy as np

from numba_lstm import convert
from numba_lstm._validation import check_binary_file, check_path, some_names

__all__ = ["layer_config", "load", "save"]

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
_NPY_MAGIC = b"\x93NUMPY"
#: Formats that ``load`` may be handed by mistake, by their first bytes.
_OTHER_FORMATS = {
    b"\x89HDF": " (an HDF5 file, such as Keras's .weights.h5: load it in Keras, then LSTM.from_keras)",
    b"\x80": " (a pickle? pickle.load reads those)",
    b"\x08": " (an ONNX model? LSTM.from_onnx reads those)",
}
#: Bytes that a metadata member (format, version, configuration) may declare:
#: ``save`` writes a few hundred.
_META_MAX_BYTES = 64 * 1024
#: Bytes of a ``.npy`` member beyond its array's data that ``load`` accepts:
#: a version 1.0 header has at most 65535 + 10 (``save`` writes 128).
_NPY_HEADER_MAX_BYTES = 65545
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


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

    The file is written exactly at ``path`` (no ``.npz`` suffix is added);
    ``path`` may be a binary file object instead: the archive is made in
    memory and written into it from its current position in one ``write``,
    so the object need not seek (a ``gzip.GzipFile``, a member of a
    ``zipfile.ZipFile``).  TypeError for a text file or one not open to write.
    Parameters are stored in the layer's dtype without any conversion.
    """
    from numba_lstm.layer import LSTM

    if not isinstance(layer, LSTM):
        raise TypeError(f"layer must be a numba_lstm.LSTM, got {type(layer).__name__}")
    file_object = hasattr(path, "write")
    if file_object:
        check_binary_file("path", path, "write")
    else:
        path = check_path("path", path)
    layer._check_options()  # as load checks them: a file load refuses never replaces a good one
    config = layer_config(layer)
    config["dtype"] = np.dtype(layer.dtype).name
    arrays = {
        "__format__": np.array(FORMAT_NAME),
        "__version__": np.array(FORMAT_VERSION, np.int64),
        "__config__": np.array(json.dumps(config, sort_keys=True)),
    }
    # What load checks, checked before writing, so that a file load refuses
    # never replaces a good one: each parameter present, of the layer's dtype
    # (never a converted copy) and shape, and nothing else.
    layer._check_params()
    extra = sorted(set(layer.params) - set(layer._param_shapes))
    if extra:
        raise ValueError(
            f"layer.params has entries {extra} that are not parameters of this layer (it has "
            f"{list(layer._param_shapes)}); load would refuse the file, so it is not written"
        )
    for name, value in layer.params.items():
        arrays[_PARAM_PREFIX + name] = value
    if file_object:
        # np.savez seeks back in what it writes: into the caller's object
        # directly, a stream that cannot (GzipFile) failed half-written.
        archive = BytesIO()
        np.savez(archive, **arrays)
        unwritten = archive.getbuffer()
        while unwritten:  # a raw stream may write part of it
            written = path.write(unwritten)
            if written is None or written >= len(unwritten):  # None: a writer that returns nothing
                break
            unwritten = unwritten[written:]
        return
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
        raise IsADirectoryError(f"path {path!r} names a directory; save writes a file")
    target = os.path.realpath(path)  # a symbolic link stays; its target is replaced
    _check_replaceable(path, target)
    try:
        fd, tmp = _new_file_beside(target)
    except OSError as error:  # it named the temporary file, not the path given
        raise type(error)(
            error.errno,
            f"{error.strerror} (save writes a new file in {os.path.dirname(target)!r}, then renames it to the path)",
            path,
        ) from error
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        _copy_mode(target, tmp)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _check_replaceable(path, target):
    """Refuse to replace what ``open(path, "wb")`` would not have replaced:
    a directory, a FIFO or a device (a root's ``save("/dev/null")`` would have
    put a regular file in the system's /dev/null), a file we may not write."""
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:  # a new file (or a missing folder, which the new file's error names)
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"path {path!r} is a directory; save writes a file")
    if not stat.S_ISREG(mode):
        raise ValueError(
            f"path {path!r} is not a regular file (a FIFO, a device or a socket): save replaces a file with a "
            "new one, atomically; to write into this one, pass it open: with open(path, 'wb') as f: layer.save(f)"
        )
    if not os.access(target, os.W_OK):  # a rename needs only the folder's permission
        raise PermissionError(
            errno.EACCES, "save replaces only a file it may write, and this one is read-only", path
        )


def _copy_mode(target, tmp):
    """Give ``tmp`` the permission bits of the file ``target``, if there is
    one; best effort, as ``shutil.copymode`` (some file systems refuse chmod)."""
    try:
        os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
    except OSError:
        pass


def _new_file_beside(target):
    """A new temporary file in ``target``'s folder, open for writing: ``(fd, path)``.

    Created with mode 0o666 less the umask, as ``open`` creates a file
    (``tempfile.mkstemp`` gives 0o600, which other users could not read).
    """
    folder = os.path.dirname(target)
    while True:
        tmp = os.path.join(folder, f".tmp-{secrets.token_hex(8)}.npz")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def load(path):
    """Read a layer written by ``save``; returns a new ``numba_lstm.LSTM``.

    ``path`` may be a binary file object instead, read from its current
    position to its end.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        ``path`` does not exist, is a directory, or cannot be read.
    TypeError
        ``path`` is neither a path nor a file object, or a file object
        opened in text mode or not for reading.
    ValueError
        The file is truncated or corrupted, is not a numba_lstm layer file,
        has an unsupported format version, or its arrays do not match its
        configuration (names, shapes or dtypes).
    """
    from numba_lstm.layer import LSTM

    return _load(LSTM, path)


def _load(cls, path):
    """``load``, building the layer as ``cls`` (``LSTM.load`` of a subclass)."""
    from numba_lstm.layer import LSTM, _parameters_filled_afterwards

    if hasattr(path, "read"):
        check_binary_file("path", path, "read")
        shown = f"the file object {getattr(path, 'name', type(path).__name__)!r}"
        # A damaged gzip stream or zip member fails here, in its own read();
        # only the errors of damaged data: a stream's own (a timeout, EIO) stay as they are.
        with _read_errors(shown, _DAMAGED_DATA):
            data = path.read()
        if data is None:  # io.RawIOBase: a non-blocking stream with no bytes ready
            raise ValueError(
                f"path as a file object returned None from read(): a non-blocking stream with no data ready; "
                f"load reads the whole file at once: read it yourself and pass io.BytesIO(data): {path!r:.200}"
            )
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(
                f"path as a file object must be opened in binary mode ('rb'), got one whose read() "
                f"returns {type(data).__name__}: {path!r:.200}"
            )
        source = BytesIO(data)
        del data
    else:
        shown = source = check_path("path", path)
    with _read_errors(shown):
        config, dtype, stored = _read_layer_file(shown, source)
    # Neither the file's bytes (read whole from a file object) nor an array
    # once copied is kept while the parameters are filled: a file object's
    # load peaked at 3x the model's size, and now at 2x.
    del source
    try:
        with _parameters_filled_afterwards(cls):
            layer = cls(**config, dtype=dtype)
    except (TypeError, ValueError) as error:
        if cls is not LSTM:  # the configuration passed check_config: the subclass's own error, not the file's
            raise
        raise ValueError(f"{shown} has an invalid configuration {config}: {error}") from error
    for name, target in layer.params.items():
        target[...] = stored.pop(name)
    return layer


def _read_layer_file(path, source):
    """The configuration, dtype and parameters (name -> array) of the layer file
    ``source`` (its path, or a binary file object at its start), all checked;
    ``path`` names it in messages.

    The parameters are checked against the configuration before anything
    is built, and each member's declared size before it is read (a
    compressed member's size is known only once expanded), so that absurd
    sizes allocate nothing.
    """
    with open(source, "rb") if isinstance(source, str) else nullcontext(source) as opened:
        # A path that cannot seek (a FIFO, /dev/stdin) is read whole, as a file object is.
        f = opened if opened.seekable() else BytesIO(opened.read())
        head = f.read(8)
        if head.startswith(_NPY_MAGIC):
            raise ValueError(f"{path} is a single .npy array, not a numba_lstm layer file (.npz)")
        if not head:
            at_end = (
                ""
                if isinstance(source, str)
                else " from its position: at its end (seek(0) after writing it)?"
            )
            raise ValueError(f"{path} is empty{at_end}")
        if not head.startswith(b"PK"):  # zipfile said "truncated or corrupted: File is not a zip file"
            known = next((hint for magic, hint in _OTHER_FORMATS.items() if head.startswith(magic)), "")
            raise ValueError(
                f"{path} is not a numba_lstm layer file, an .npz (zip) archive, which starts with b'PK': "
                f"this one starts with {head!r}{known}"
            )
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        with zipfile.ZipFile(f) as archive:
            # zipfile finds the archive from the end, and skips what comes
            # before it: a file object holding two layers gave the second.
            start = min((info.header_offset for info in archive.infolist()), default=0)
            if start:
                raise ValueError(
                    f"{path} has {start} bytes before its archive (a second layer saved after a first?); "
                    "load reads one layer file, from the position to the end"
                )
            return _read_archive(path, archive, size)


def _read_archive(path, archive, size):
    """``_read_layer_file`` of the open zip ``archive``, a file of ``size`` bytes."""
    members = _members(path, archive, size)
    missing = [k for k in _META_KEYS if k not in members]
    if missing:
        raise ValueError(f"{path} is not a numba_lstm layer file: it has no {', '.join(missing)}")
    meta = {
        k: _read_array(path, archive, k, members[k], _META_MAX_BYTES, "a metadata entry") for k in _META_KEYS
    }
    fmt = _scalar(path, meta, "__format__", "U")
    if fmt != FORMAT_NAME:
        raise ValueError(f"{path} is not a numba_lstm layer file: format {fmt!r}, expected {FORMAT_NAME!r}")
    version = _scalar(path, meta, "__version__", "iu")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version}; this numba_lstm reads version {FORMAT_VERSION} only"
        )
    config, dtype = _parse_config(path, _scalar(path, meta, "__config__", "U"))
    unknown = sorted(k for k in members if k not in _META_KEYS and not k.startswith(_PARAM_PREFIX))
    if unknown:
        raise ValueError(f"{path} has unexpected arrays {some_names(unknown, 5)}")
    names = [k[len(_PARAM_PREFIX) :] for k in members if k.startswith(_PARAM_PREFIX)]
    stored = {}
    for name, shape in _expected_shapes(path, config, names).items():
        key = _PARAM_PREFIX + name
        limit = math.prod(shape) * dtype.itemsize + _NPY_HEADER_MAX_BYTES
        value = _read_array(path, archive, key, members[key], limit, f"a {shape} array of {dtype}")
        if value.dtype != dtype:
            raise ValueError(f"{path}: parameter {name} has dtype {value.dtype}, expected {dtype}")
        if value.shape != shape:
            raise ValueError(f"{path}: parameter {name} has shape {value.shape}, expected {shape}")
        stored[name] = value
    return config, dtype, stored


def _expected_shapes(path, config, names):
    """The parameter shapes of ``config`` (name -> shape); ValueError unless the file's ``names`` are exactly those.

    Only as many layers as ``names`` can hold are listed, so that a huge
    ``num_layers`` costs no more than the file's own arrays.
    """
    names = set(names)
    try:
        sizes = convert.check_config(config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} has an invalid configuration {config}: {error}") from error
    per_layer = (2 if sizes["bidirectional"] else 1) * (3 if sizes["proj_size"] else 2)
    num_layers = sizes["num_layers"]
    listed = min(num_layers, len(names) // per_layer + 1)
    shapes = convert.parameter_shapes({**sizes, "num_layers": listed})
    missing = [name for name in shapes if name not in names]
    missing_count = len(missing) + (num_layers - listed) * per_layer
    unexpected = sorted(names - set(shapes))
    if missing_count or unexpected:
        raise ValueError(
            f"{path}: parameters do not match the configuration {config}: "
            f"missing {some_names(missing, 5, missing_count)}, unexpected {some_names(unexpected, 5)}"
        )
    return shapes


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


#: Errors of decompressing damaged data.
_DAMAGED_DATA = (
    EOFError,
    zipfile.BadZipFile,
    gzip.BadGzipFile,
    zlib.error,  # a corrupted deflated member (an archive of another tool)
    lzma.LZMAError,
)
#: Errors of reading a damaged archive.
_DAMAGED_ARCHIVE = (
    OSError,
    *_DAMAGED_DATA,
    UnicodeDecodeError,
    NotImplementedError,
    RuntimeError,  # zipfile: a member flagged as encrypted
)


@contextmanager
def _read_errors(path, errors=_DAMAGED_ARCHIVE):
    """``errors`` as ValueError "truncated or corrupted"; those of opening the
    path (missing, a directory, no permission) as they are."""
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        raise
    except errors as error:
        raise ValueError(f"{path} is truncated or corrupted: {type(error).__name__}: {error}") from error


def _members(path, archive, size):
    """The archive's members by array name (``.npy`` dropped), each declaring no more compressed bytes than the ``size`` of the file."""
    members = {}
    for info in archive.infolist():
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(
                f"{path}: {info.filename!r} is compressed with zip method {info.compress_type}; numba_lstm reads "
                "stored or deflated members (np.savez, np.savez_compressed)"
            )
        if info.compress_size > size:
            raise zipfile.BadZipFile(
                f"{info.filename} declares {info.compress_size} bytes in a file of {size}"
            )
        name = info.filename[: -len(".npy")] if info.filename.endswith(".npy") else info.filename
        if name in members:  # the dict would keep the last one (W and W.npy alike)
            raise ValueError(
                f"{path}: the array {name!r} is stored twice ({members[name].filename!r} and {info.filename!r}); "
                "a numba_lstm layer file holds each array once"
            )
        members[name] = info
    return members


def _read_array(path, archive, name, info, limit, what):
    """The array of member ``info`` (array ``name``), read fully (so that CRC errors surface here).

    A member that declares more than ``limit`` bytes (what ``what`` needs,
    with its ``.npy`` header) is refused before it is read, and no more than
    its declared size is expanded (``_members`` lets only stored and deflated
    members through): ``archive.read`` would expand up to 2 GiB of a member
    whose header understates it before its CRC check failed.
    """
    if info.file_size > limit:
        raise ValueError(
            f"{path}: {name!r} declares {info.file_size} bytes, more than the {limit} that {what} "
            "takes with its .npy header"
        )
    with archive.open(info) as member:
        data = member.read(info.file_size + 1)
    return _npy_array(path, name, data)


def _npy_array(path, name, data):
    """The array held by the ``.npy`` bytes ``data``, a read-only view of them; never a pickle."""
    f = BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)  # ValueError unless the .npy magic string
        if version not in _NPY_HEADERS:
            raise ValueError(f"its .npy format version is {version}, not 1.0 or 2.0")
        shape, fortran_order, dtype = _NPY_HEADERS[version](f)
    except ValueError as error:
        raise ValueError(f"{path} is truncated or corrupted: {name!r}: {error}") from error
    if dtype.hasobject:
        raise ValueError(f"{path} holds pickled objects in {name!r}; numba_lstm never loads pickles")
    count, held = math.prod(shape), len(data) - f.tell()
    if count * dtype.itemsize != held:
        raise ValueError(
            f"{path} is truncated or corrupted: {name!r} declares shape {shape} of {dtype} "
            f"({count * dtype.itemsize} bytes) but holds {held} bytes"
        )
    array = np.frombuffer(data, dtype, count=count, offset=f.tell())
    return array.reshape(shape, order="F" if fortran_order else "C")


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
