"""Save and load (numba_lstm.io): exact round trip, atomic writes, refusal of bad files."""

import json
import os
import tracemalloc
import warnings
import zipfile
from io import BytesIO

import numpy as np
import pytest

import numba_lstm
from numba_lstm import io

CONFIGS = [
    dict(input_size=3, hidden_size=5),
    dict(
        input_size=2,
        hidden_size=4,
        num_layers=2,
        bidirectional=True,
        proj_size=3,
        dropout=0.25,
        batch_first=True,
    ),
    dict(input_size=1, hidden_size=1, num_layers=3),
]


def _bits(a):
    return a.dtype.str, a.shape, a.tobytes()


@pytest.mark.parametrize("config", CONFIGS, ids=["plain", "full", "tiny"])
def test_round_trip_keeps_config_dtype_and_every_bit(tmp_path, config, dtype):
    layer = numba_lstm.LSTM(**config, dtype=dtype, seed=1)
    # Values a lossy path would damage: NaN payload, -0.0, subnormals, extremes.
    W0 = layer.params["W_l0"]
    W0.flat[:4] = [np.nan, -0.0, np.finfo(dtype).tiny / 4, np.finfo(dtype).max]
    path = tmp_path / "model.npz"
    io.save(layer, path)
    loaded = io.load(path)
    assert isinstance(loaded, numba_lstm.LSTM)
    assert io.layer_config(loaded) == io.layer_config(layer)
    assert io.layer_config(loaded) == {**io.layer_config(layer), **config}
    assert loaded.dtype == np.dtype(dtype)
    assert sorted(loaded.params) == sorted(layer.params)
    for name, value in layer.params.items():
        assert _bits(loaded.params[name]) == _bits(value), name
    # A loaded layer computes exactly what the original computes.
    W0.flat[:4] = 0.1
    loaded.params["W_l0"].flat[:4] = 0.1
    x = np.random.default_rng(0).standard_normal((4, 2, config["input_size"])).astype(dtype)
    if config.get("batch_first"):
        x = x.transpose(1, 0, 2).copy()
    layer.eval(), loaded.eval()
    y1, (h1, c1) = layer(x)
    y2, (h2, c2) = loaded(x)
    assert _bits(y1) == _bits(y2) and _bits(h1) == _bits(h2) and _bits(c1) == _bits(c2)


def test_load_of_a_subclass_builds_that_subclass(tmp_path):
    # As from_params, from_torch, from_keras and from_onnx do: cls, not LSTM.
    class Tagged(numba_lstm.LSTM):
        pass

    layer = numba_lstm.LSTM(3, 4, num_layers=2, proj_size=2, seed=2)
    path = tmp_path / "model.npz"
    layer.save(path)
    loaded = Tagged.load(path)
    assert type(loaded) is Tagged
    assert io.layer_config(loaded) == io.layer_config(layer)
    for name, value in layer.params.items():
        assert _bits(loaded.params[name]) == _bits(value), name
    assert type(numba_lstm.LSTM.load(path)) is numba_lstm.LSTM
    assert type(io.load(path)) is numba_lstm.LSTM


def test_a_subclass_that_cannot_be_built_from_the_configuration_raises_its_own_error():
    """Its TypeError came out as "<file> has an invalid configuration": the
    file was good, the subclass's constructor wants another argument."""

    class Named(numba_lstm.LSTM):
        def __init__(self, *args, name, **kwargs):
            super().__init__(*args, **kwargs)
            self.name = name

    buffer = BytesIO()
    numba_lstm.LSTM(2, 3, seed=0).save(buffer)
    buffer.seek(0)
    with pytest.raises(TypeError, match=r"^.*__init__\(\) missing 1 required keyword-only argument: 'name'$"):
        Named.load(buffer)


@pytest.mark.parametrize("how", ["load", "from_params"])
def test_a_helper_layer_that_a_subclass_builds_first_keeps_its_drawn_weights(how):
    """The loaders' "zeros, filled afterwards" went to the first layer built,
    whatever its class: a helper LSTM that a subclass's constructor built
    before calling LSTM's came out all zeros from load and from_params."""

    class Encoder(numba_lstm.LSTM):
        def __init__(self, *args, **kwargs):
            self.helper = numba_lstm.LSTM(2, 3, seed=0)
            super().__init__(*args, **kwargs)

    layer = Encoder(4, 8, seed=1)
    if how == "load":
        buffer = BytesIO()
        layer.save(buffer)
        buffer.seek(0)
        built = Encoder.load(buffer)
    else:
        built = Encoder.from_params(layer.config, layer.params)
    for name, value in layer.helper.params.items():
        assert np.abs(value).max() > 0 and _bits(built.helper.params[name]) == _bits(value), name
    for name, value in layer.params.items():
        assert _bits(built.params[name]) == _bits(value), name


def test_load_draws_no_initialisation_it_would_overwrite(tmp_path, monkeypatch):
    # As from_params: load built the layer with random parameters first.
    layer = numba_lstm.LSTM(3, 4, num_layers=2, seed=2)
    path = tmp_path / "model.npz"
    layer.save(path)
    generator = np.random.default_rng(7)
    before = generator.bit_generator.state
    monkeypatch.setattr(numba_lstm.layer, "make_rng", lambda seed: generator)
    loaded = io.load(path)
    assert generator.bit_generator.state == before
    for name, value in layer.params.items():
        assert _bits(loaded.params[name]) == _bits(value), name


@pytest.mark.parametrize("source", ["path", "file object"])
def test_load_holds_the_model_at_most_twice(tmp_path, source):
    """The arrays read and the parameters filled from them; from a file
    object, not also the file's bytes (read whole, as the object may not
    seek).  Here a 4.2 MB model: under 2.25x its size (2.0x and a few small
    objects; a file object's load peaked at 3.0x before, as at 96 MB)."""
    layer = numba_lstm.LSTM(256, 256, num_layers=2, seed=0)
    model_bytes = sum(p.nbytes for p in layer.params.values())
    path = tmp_path / "model.npz"
    layer.save(path)
    io.load(path)  # anything imported or compiled on a first load, before tracing
    with open(path, "rb") as f:
        tracemalloc.start()
        try:
            loaded = io.load(path if source == "path" else f)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    for name, value in layer.params.items():
        assert _bits(loaded.params[name]) == _bits(value), name
    assert model_bytes > 4 * 2**20
    assert peak < 2.25 * model_bytes, (peak / model_bytes, model_bytes)


def test_file_is_written_exactly_at_path_and_holds_no_pickle(tmp_path):
    layer = numba_lstm.LSTM(2, 3)
    path = tmp_path / "weights.bin"  # no .npz suffix is appended
    io.save(layer, str(path))
    assert sorted(os.listdir(tmp_path)) == ["weights.bin"]
    with np.load(path, allow_pickle=False) as f:  # would raise on any object array
        assert int(f["__version__"]) == io.FORMAT_VERSION
        assert json.loads(str(f["__config__"]))["dtype"] == "float32"
    io.save(layer, path)  # overwriting an existing file works
    assert sorted(os.listdir(tmp_path)) == ["weights.bin"]


def test_crash_while_writing_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    old = numba_lstm.LSTM(2, 3, seed=0)
    io.save(old, path)
    before = path.read_bytes()

    def crash(file, **arrays):
        file.write(b"PK\x03\x04 half written")
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(io.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save(numba_lstm.LSTM(2, 3, seed=1), path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    # And with no previous file, nothing appears under the final name.
    with pytest.raises(KeyboardInterrupt):
        io.save(old, tmp_path / "new.npz")
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


def test_save_refuses_non_layers_and_converted_parameters(tmp_path):
    with pytest.raises(TypeError, match="layer must be a numba_lstm.LSTM"):
        io.save({"W": np.zeros(3)}, tmp_path / "x.npz")
    layer = numba_lstm.LSTM(2, 3)
    layer.params["b_l0"] = layer.params["b_l0"].astype(np.float64)
    with pytest.raises(TypeError, match=r"b_l0.*float32"):
        io.save(layer, tmp_path / "x.npz")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda p: p.update(W_l0=np.zeros((2, 2), np.float32)), ValueError, r"params\['W_l0'\] must have shape \(5, 12\)"),
        (lambda p: p.pop("b_l0"), KeyError, r"params\['b_l0'\] is missing"),
        (lambda p: p.update(h0=np.zeros(3, np.float32)), ValueError, r"entries \['h0'\] that are not parameters"),
    ],
)  # fmt: skip
def test_save_refuses_what_load_would_refuse_and_keeps_the_old_file(tmp_path, change, error, message):
    path = tmp_path / "model.npz"
    layer = numba_lstm.LSTM(2, 3, seed=0)
    io.save(layer, path)
    before = path.read_bytes()
    change(layer.params)
    with pytest.raises(error, match=message):
        io.save(layer, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


@pytest.fixture
def saved(tmp_path):
    layer = numba_lstm.LSTM(3, 4, num_layers=2, proj_size=2, dtype=np.float64, seed=3)
    path = tmp_path / "m.npz"
    io.save(layer, path)
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return path, arrays


def _rewrite(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_truncated_file_is_refused(saved):
    path, _ = saved
    data = path.read_bytes()
    for n in (10, len(data) // 2, len(data) - 1):  # 0: "is empty" (below)
        path.write_bytes(data[:n])
        with pytest.raises(ValueError, match="truncated or corrupted"):
            io.load(path)


def test_corrupted_array_bytes_are_refused(saved):
    path, _ = saved
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("param/W_l1.npy")
    # Flip a byte inside the stored array data (past the local header and .npy header).
    offset = info.header_offset + 30 + len(info.filename) + 200
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or corrupted"):
        io.load(path)


def test_a_path_that_cannot_be_opened_raises_the_error_of_opening_it(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "nope.npz")
    with pytest.raises(IsADirectoryError):  # not "truncated or corrupted"
        io.load(tmp_path)


def test_other_files_are_refused(tmp_path):
    npy = tmp_path / "a.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match="not a numba_lstm layer file"):
        io.load(npy)
    other = tmp_path / "b.npz"
    np.savez(other, W=np.zeros(3))
    with pytest.raises(ValueError, match="not a numba_lstm layer file"):
        io.load(other)
    pickled = tmp_path / "c.npz"
    np.savez(pickled, obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a numba_lstm layer file"):
        io.load(pickled)


def test_pickled_objects_are_never_loaded(saved):
    path, arrays = saved
    arrays["__config__"] = np.array([{"a": 1}], dtype=object)
    _rewrite(path, arrays)
    with pytest.raises(
        ValueError, match="holds pickled objects in '__config__'; numba_lstm never loads pickles"
    ):
        io.load(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(__version__=np.array(2)), "format version 2"),
        (lambda a: a.update(__version__=np.array(0)), "format version 0"),
        (lambda a: a.update(__format__=np.array("something else")), "not a numba_lstm layer file"),
        (lambda a: a.pop("__config__"), "has no __config__"),
        (lambda a: a.update(__config__=np.array("{not json")), "not valid JSON"),
        (lambda a: a.pop("param/W_hr_l1"), r"parameters do not match.*W_hr_l1"),
        (lambda a: a.update({"param/extra": np.zeros(2)}), r"parameters do not match.*extra"),
        (lambda a: a.update({"junk": np.zeros(2)}), "unexpected arrays"),
        (
            lambda a: a.update({"param/W_l0": a["param/W_l0"][:-1]}),
            r"W_l0 has shape \(4, 16\), expected \(5, 16\)",
        ),
        (lambda a: a.update({"param/b_l1": a["param/b_l1"].astype(np.float32)}), "b_l1 has dtype float32"),
        (lambda a: a.update({"param/b_l1": a["param/b_l1"].astype(np.int64)}), "b_l1 has dtype int64"),
    ],
)
def test_inconsistent_files_are_refused(saved, change, message):
    path, arrays = saved
    change(arrays)
    _rewrite(path, arrays)
    with pytest.raises(ValueError, match=message):
        io.load(path)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("dtype", "float16", "dtype must be"),
        ("hidden_size", 5, r"parameters do not match|has shape"),
        ("proj_size", 0, "parameters do not match"),
        ("proj_size", 9, "invalid configuration"),
        ("num_layers", "2", "wrong type"),
        ("bidirectional", 1, "wrong type"),
        ("dropout", 1.5, "invalid configuration"),
        ("seed", 3, "must have the keys"),
    ],
)
def test_inconsistent_configs_are_refused(saved, key, value, message):
    path, arrays = saved
    config = json.loads(str(arrays["__config__"]))
    config[key] = value
    arrays["__config__"] = np.array(json.dumps(config))
    _rewrite(path, arrays)
    with pytest.raises(ValueError, match=message):
        io.load(path)


@pytest.mark.parametrize(
    ("key", "value"),
    [("num_layers", 10**5), ("hidden_size", 10**9), ("input_size", 10**12)],
)
def test_huge_configs_are_refused_before_the_layer_is_built(saved, key, value):
    # The stored arrays are compared with the configuration first: nothing of
    # the configuration's size is allocated and the message stays short.
    path, arrays = saved
    config = json.loads(str(arrays["__config__"]))
    config[key] = value
    arrays["__config__"] = np.array(json.dumps(config))
    _rewrite(path, arrays)
    with pytest.raises(ValueError, match="parameters do not match|has shape") as error:
        io.load(path)
    assert len(str(error.value)) < 1000


def test_npy_header_declaring_more_data_than_the_file_holds_is_refused(saved):
    path, arrays = saved
    del arrays["param/W_l0"]
    _rewrite(path, arrays)
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,), }"
    npy = b"\x93NUMPY\x01\x00" + (len(header) + 1).to_bytes(2, "little") + header + b"\n" + bytes(16)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("param/W_l0.npy", npy)
    with pytest.raises(
        ValueError, match=r"truncated or corrupted: 'param/W_l0' declares shape \(100000000000,\)"
    ):
        io.load(path)
    path.write_bytes(npy)  # the same as a lone .npy file
    with pytest.raises(ValueError, match="a single .npy array, not a numba_lstm layer file"):
        io.load(path)


@pytest.mark.parametrize("second_name", ["param/W_l0.npy", "param/W_l0"])
def test_an_array_stored_twice_is_refused(saved, second_name):
    """np.savez writes each name once; a crafted archive with a second member
    of the same array name loaded the last one silently."""
    path, arrays = saved
    other = BytesIO()
    np.save(other, np.zeros_like(arrays["param/W_l0"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        with zipfile.ZipFile(path, "a") as z:
            z.writestr(second_name, other.getvalue())
    with pytest.raises(ValueError, match=r"the array 'param/W_l0' is stored twice \('param/W_l0.npy' and"):
        io.load(path)


def test_compressed_archive_loads(saved):
    # save writes stored members; a file compressed by other tools loads the same.
    path, arrays = saved
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    loaded = io.load(path)
    for name, value in loaded.params.items():
        assert _bits(value) == _bits(arrays["param/" + name]), name


def test_compressed_member_declaring_more_than_its_array_is_refused_before_it_is_read(saved):
    # 24 MB of zeros deflate to about 24 KB: the member's declared size is
    # checked against what its array needs (W_l0 of this layer is (3 + 2, 16)
    # float64, 640 bytes) before anything is expanded.  Before, the whole
    # member was read into memory first.
    path, arrays = saved
    del arrays["param/W_l0"]
    _rewrite(path, arrays)
    big = np.zeros(3_000_000)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("param/W_l0.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, big)
    with pytest.raises(
        ValueError,
        match=r"'param/W_l0' declares 24000128 bytes, more than the \d+ that a \(5, 16\) array of float64",
    ):
        io.load(path)


COMPRESSIONS = pytest.mark.parametrize(
    "compression",
    [zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2],
    ids=["deflate", "lzma", "bzip2"],
)


@COMPRESSIONS
def test_compressed_member_understating_its_size_is_refused_without_expanding_it(saved, compression):
    # A member that really expands to 24 MB, its headers patched to declare
    # the 768 bytes W_l0's array takes: before, zipfile expanded all of it
    # (up to 2 GiB a member) before the CRC check refused it.  It expands
    # bzip2 and LZMA members 4 KB of input at a time without any limit, so
    # those are refused by their method, before anything is read.
    path, arrays = saved
    del arrays["param/W_l0"]
    _rewrite(path, arrays)
    big = BytesIO()
    np.lib.format.write_array(big, np.zeros(3_000_000))
    with zipfile.ZipFile(path, "a", compression=compression) as z:
        z.writestr("param/W_l0.npy", big.getvalue())
        info = z.getinfo("param/W_l0.npy")
    data = bytearray(path.read_bytes())
    declared = (768).to_bytes(4, "little")
    data[info.header_offset + 22 : info.header_offset + 26] = declared  # local header
    central = data.rindex(b"PK\x01\x02")  # the last central directory entry: the member appended
    assert data[central + 46 : central + 46 + len(info.filename)] == info.filename.encode()
    data[central + 24 : central + 28] = declared
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as z:
        assert z.getinfo("param/W_l0.npy").file_size == 768
    refusal = (
        "truncated or corrupted.*CRC" if compression == zipfile.ZIP_DEFLATED else "reads stored or deflated"
    )
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=refusal):
            io.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, f"load allocated {peak} bytes for a member that declares 768"


@COMPRESSIONS
def test_corrupted_compressed_member_is_refused(saved, compression):
    """Before, zlib.error and lzma.LZMAError came out as they were (bzip2 and
    LZMA members are refused by their method now, whole or not)."""
    path, _ = saved
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(path.with_suffix(".z"), "w", compression) as out:
        for info in source.infolist():
            out.writestr(info.filename, source.read(info))
    data = bytearray(path.with_suffix(".z").read_bytes())
    with zipfile.ZipFile(path.with_suffix(".z")) as z:
        info = z.getinfo("param/W_l1.npy")
    start = info.header_offset + 30 + len(info.filename)  # the member's compressed bytes
    for i in range(start + 5, start + 25):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    refusal = "truncated or corrupted" if compression == zipfile.ZIP_DEFLATED else "reads stored or deflated"
    with pytest.raises(ValueError, match=refusal):
        io.load(path)


def test_member_flagged_as_encrypted_is_refused(saved):
    """zipfile raises RuntimeError ("password required") for it."""
    path, _ = saved
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")  # the first central directory entry
    entry = data.index(b"param/W_l1.npy", entry) - 46  # W_l1's entry: 46 bytes, then its name
    assert data[entry : entry + 4] == b"PK\x01\x02"
    data[entry + 8] |= 0x01  # general purpose flag bit 0: encrypted
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or corrupted"):
        io.load(path)


def test_saved_file_has_the_mode_of_a_new_file_or_of_the_file_it_replaces(tmp_path):
    """tempfile.mkstemp made every saved file 0o600, unreadable by other users."""
    layer = numba_lstm.LSTM(2, 3)
    old_umask = os.umask(0o022)
    try:
        io.save(layer, tmp_path / "new.npz")
        (tmp_path / "old.npz").write_bytes(b"")
        os.chmod(tmp_path / "old.npz", 0o640)
        io.save(layer, tmp_path / "old.npz")
    finally:
        os.umask(old_umask)
    assert oct(os.stat(tmp_path / "new.npz").st_mode & 0o777) == oct(0o644)
    assert oct(os.stat(tmp_path / "old.npz").st_mode & 0o777) == oct(0o640)


def test_save_through_a_symbolic_link_replaces_its_target(tmp_path):
    layer = numba_lstm.LSTM(2, 3, seed=0)
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real" / "model.npz", tmp_path / "link.npz")
    for mode in (None, 0o604):  # a dangling link, then one to the file the first save wrote
        if mode is not None:
            os.chmod(tmp_path / "real" / "model.npz", mode)
        io.save(layer, tmp_path / "link.npz")
        assert os.path.islink(tmp_path / "link.npz")
        assert sorted(os.listdir(tmp_path / "real")) == ["model.npz"]
        assert _bits(io.load(tmp_path / "real" / "model.npz").params["W_l0"]) == _bits(layer.params["W_l0"])
    assert oct(os.stat(tmp_path / "real" / "model.npz").st_mode & 0o777) == oct(
        0o604
    )  # the target's mode kept


def test_save_to_a_path_ending_in_a_separator_is_refused(tmp_path):
    """os.path.realpath drops the separator: "m.npz/" replaced the file m.npz."""
    layer = numba_lstm.LSTM(2, 3, seed=0)
    io.save(layer, tmp_path / "m.npz")
    before = (tmp_path / "m.npz").read_bytes()
    with pytest.raises(IsADirectoryError, match="names a directory"):
        io.save(numba_lstm.LSTM(2, 3, seed=1), str(tmp_path / "m.npz") + os.sep)
    assert (tmp_path / "m.npz").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_save_refuses_to_replace_a_fifo_or_a_device_and_load_reads_one(tmp_path):
    """save renamed its new file over whatever the path named: a FIFO became
    a regular file (and a root's save("/dev/null") would have replaced the
    system's /dev/null: not tried here, where a regression would do it).
    load of a FIFO's path called a good layer "truncated or corrupted" (it
    cannot seek): it is read whole, as a file object is."""
    import stat
    import threading

    layer = numba_lstm.LSTM(2, 3, seed=0)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.symlink(fifo, tmp_path / "link")
    for path in (fifo, tmp_path / "link"):
        with pytest.raises(
            ValueError, match=r"is not a regular file .* pass it open: with open\(path, 'wb'\)"
        ):
            io.save(layer, path)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["fifo", "link"]

    buffer = BytesIO()
    io.save(layer, buffer)

    def write():
        with open(fifo, "wb") as f:
            f.write(buffer.getvalue())

    writer = threading.Thread(target=write, daemon=True)  # blocked in open() for good if load never opens it
    writer.start()
    loaded = io.load(fifo)
    writer.join(timeout=60)
    assert _bits(loaded.params["W_l0"]) == _bits(layer.params["W_l0"])


def test_save_refuses_a_file_it_may_not_write(tmp_path, monkeypatch):
    """A rename needs only the folder's permission: a read-only checkpoint
    was replaced where open(path, "wb") raises PermissionError.  (Root may
    write any file, so the permission check is stood in for here.)"""
    layer = numba_lstm.LSTM(2, 3, seed=0)
    path = tmp_path / "m.npz"
    io.save(layer, path)
    before = path.read_bytes()
    real = os.path.realpath(path)
    monkeypatch.setattr(io.os, "access", lambda target, mode: not (target == real and mode == os.W_OK))
    with pytest.raises(PermissionError, match=r"save replaces only a file it may write.*m\.npz"):
        io.save(numba_lstm.LSTM(2, 3, seed=1), path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_save_errors_name_the_path_given_not_a_temporary_file(tmp_path, monkeypatch):
    """A missing folder's error named ".tmp-<hex>.npz"; save(".") made its
    temporary file in the folder above and failed renaming it."""
    layer = numba_lstm.LSTM(2, 3, seed=0)
    missing = tmp_path / "no_such_folder" / "model.npz"
    with pytest.raises(
        FileNotFoundError, match=r"save writes a new file in .*no_such_folder.*: '.*model\.npz'$"
    ):
        io.save(layer, missing)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    for path in (".", tmp_path / "here"):
        with pytest.raises(IsADirectoryError, match=r"is a directory; save writes a file"):
            io.save(layer, path)
    assert sorted(os.listdir(tmp_path)) == ["here"] and not os.listdir(tmp_path / "here")


def test_load_names_an_empty_file_and_another_format(tmp_path):
    """Each was "truncated or corrupted: BadZipFile: File is not a zip file"."""
    import pickle

    path = tmp_path / "model"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"model is empty$"):
        io.load(path)
    with pytest.raises(
        ValueError, match=r"is empty from its position: at its end \(seek\(0\) after writing it\)\?"
    ):
        io.load(BytesIO())
    cases = [
        (b"\x89HDF\r\n\x1a\n" + bytes(100), r"an HDF5 file, such as Keras's \.weights\.h5"),
        (pickle.dumps({"W": [1.0]}), r"a pickle\? pickle\.load reads those"),
        (b"\x08\x07\x12\x07pytorch" + bytes(100), r"an ONNX model\? LSTM\.from_onnx reads those"),
        (b"not a model at all", r"starts with b'not a mo'$"),
    ]
    for data, hint in cases:
        path.write_bytes(data)
        with pytest.raises(
            ValueError, match=r"model is not a numba_lstm layer file, an \.npz \(zip\) archive, .*" + hint
        ):
            io.load(path)


def test_save_where_chmod_is_refused_still_saves(tmp_path, monkeypatch):
    """Some file systems refuse chmod: the mode is copied on a best-effort basis."""
    layer = numba_lstm.LSTM(2, 3, seed=0)
    io.save(layer, tmp_path / "m.npz")

    def refuse(*args, **kwargs):
        raise PermissionError("chmod refused")

    monkeypatch.setattr(io.os, "chmod", refuse)
    io.save(numba_lstm.LSTM(2, 3, seed=1), tmp_path / "m.npz")
    assert _bits(io.load(tmp_path / "m.npz").params["W_l0"]) == _bits(
        numba_lstm.LSTM(2, 3, seed=1).params["W_l0"]
    )
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_paths_may_be_bytes_but_not_integers(tmp_path):
    """An int is a file descriptor to ``open``: it was read and closed.  bytes
    paths failed inside tempfile and zipfile."""
    layer = numba_lstm.LSTM(2, 3, seed=0)
    path = os.fsencode(tmp_path / "model.npz")
    io.save(layer, path)
    assert _bits(io.load(path).params["W_l0"]) == _bits(layer.params["W_l0"])
    with open(tmp_path / "model.npz", "rb") as f:
        for bad in (f.fileno(), True):
            with pytest.raises(TypeError, match="path must be a file path .*, got (int|bool)"):
                io.load(bad)
            with pytest.raises(TypeError, match="path must be a file path .*, got (int|bool)"):
                io.save(layer, bad)
        os.fstat(f.fileno())  # still open


def test_file_objects_round_trip_from_their_position(tmp_path, dtype):
    """As np.savez and np.load: a binary file object is written from its
    position (no atomic replace) and read from there to its end."""
    import io as std_io

    layer = numba_lstm.LSTM(2, 3, num_layers=2, proj_size=1, batch_first=True, dtype=dtype, seed=4)
    buffer = std_io.BytesIO()
    buffer.write(b"a header of the caller's own")
    start = buffer.tell()
    layer.save(buffer)
    buffer.seek(start)
    loaded = numba_lstm.LSTM.load(buffer)
    assert io.layer_config(loaded) == io.layer_config(layer) and loaded.dtype == np.dtype(dtype)
    for name, value in layer.params.items():
        assert _bits(loaded.params[name]) == _bits(value), name
    with open(tmp_path / "model.npz", "wb") as f:
        io.save(layer, f)
    with open(tmp_path / "model.npz", "rb") as f:
        assert _bits(io.load(f).params["W_l1"]) == _bits(layer.params["W_l1"])
    assert _bits(io.load(tmp_path / "model.npz").params["W_hr_l0"]) == _bits(layer.params["W_hr_l0"])


def test_binary_streams_of_the_standard_library_hold_a_layer(tmp_path):
    """A gzip stream and a zip archive's member are binary file objects whose
    ``mode`` has no "b" (an int, "r"): load refused them as text files (and
    read GzipFile's int mode with an internal TypeError), and save into
    them failed half-written, as np.savez seeks back in its archive."""
    import gzip

    layer = numba_lstm.LSTM(3, 4, num_layers=2, proj_size=2, seed=0)
    with gzip.open(tmp_path / "model.npz.gz", "wb") as f:
        io.save(layer, f)
    with gzip.open(tmp_path / "model.npz.gz", "rb") as f:
        from_gzip = io.load(f)
    archive = BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        with z.open("model.npz", "w") as f:
            io.save(layer, f)
    with zipfile.ZipFile(archive) as z, z.open("model.npz") as f:
        from_zip = io.load(f)
    for loaded in (from_gzip, from_zip):
        assert loaded.config == layer.config
        for name, value in layer.params.items():
            assert _bits(loaded.params[name]) == _bits(value), name


def test_a_damaged_gzip_or_zip_member_is_refused_as_corrupted():
    """load read a file object's bytes outside the check that turns the
    errors of a damaged archive into ValueError: a truncated or flipped gzip
    stream raised EOFError or zlib.error, a zip member's bad CRC BadZipFile."""
    import gzip

    layer = numba_lstm.LSTM(8, 16, num_layers=2, seed=0)
    stream = BytesIO()
    with gzip.GzipFile(fileobj=stream, mode="wb") as f:
        io.save(layer, f)
    good = stream.getvalue()
    flipped = good[:10] + bytes(b ^ 0xFF for b in good[10:40]) + good[40:]
    for damaged in (good[: len(good) // 2], flipped):
        with (
            gzip.GzipFile(fileobj=BytesIO(damaged)) as f,
            pytest.raises(ValueError, match="truncated or corrupted"),
        ):
            io.load(f)
    archive = BytesIO()
    with zipfile.ZipFile(archive, "w") as z, z.open("model.npz", "w") as f:
        io.save(layer, f)
    raw = bytearray(archive.getvalue())
    raw[200] ^= 0xFF  # inside the stored member: its CRC no longer matches
    with zipfile.ZipFile(BytesIO(bytes(raw))) as z, z.open("model.npz") as f:
        with pytest.raises(ValueError, match="truncated or corrupted: BadZipFile"):
            io.load(f)


@pytest.mark.parametrize(
    ("name", "value", "error", "message"),
    [
        ("dropout", 1.5, ValueError, r"layer.dropout must be in \[0, 1\), got 1.5"),
        ("dropout", float("nan"), ValueError, r"layer.dropout must be in \[0, 1\)"),
        ("dropout", -0.1, ValueError, r"layer.dropout must be in \[0, 1\)"),
        ("dropout", "0.5", TypeError, r"layer.dropout must be a number"),
        ("batch_first", "False", TypeError, r"layer.batch_first must be True or False"),
    ],
)  # fmt: skip
def test_options_set_on_a_layer_are_checked_before_saving(tmp_path, name, value, error, message):
    """save checked the parameters alone: a layer whose dropout was set to
    1.5 replaced a good file with one that load refuses."""
    path = tmp_path / "model.npz"
    good = numba_lstm.LSTM(3, 4, num_layers=2, seed=0)
    good.save(path)
    before = path.read_bytes()
    layer = numba_lstm.LSTM(3, 4, num_layers=2, seed=1)
    setattr(layer, name, value)
    with pytest.raises(error, match=message):
        layer.save(path)
    assert path.read_bytes() == before
    loaded = io.load(path)  # still the good layer's file
    for key, value in good.params.items():
        assert _bits(loaded.params[key]) == _bits(value), key


def test_a_stream_of_two_layers_loads_the_one_at_its_position_or_refuses():
    """zipfile finds an archive from its end and skips what precedes it: from
    a stream holding two saved layers, load returned the second from the
    position of the first."""
    first, second = numba_lstm.LSTM(3, 4, seed=1), numba_lstm.LSTM(3, 4, seed=2)
    stream = BytesIO()
    io.save(first, stream)
    first_end = stream.tell()
    io.save(second, stream)
    stream.seek(0)
    with pytest.raises(
        ValueError, match=rf"has {first_end} bytes before its archive \(a second layer saved after"
    ):
        io.load(stream)
    stream.seek(first_end)
    assert _bits(io.load(stream).params["W_l0"]) == _bits(second.params["W_l0"])


def test_file_contents_or_a_text_stream_given_as_path_are_refused_by_name(tmp_path):
    import codecs

    layer = numba_lstm.LSTM(2, 3, seed=0)
    io.save(layer, tmp_path / "model.npz")
    contents = (tmp_path / "model.npz").read_bytes()
    # open() said "embedded null byte", naming nothing.
    with pytest.raises(
        ValueError, match=r"path must be a file path, got bytes holding a NUL .*io.BytesIO\(data\)"
    ):
        io.load(contents)
    # codecs.open adds "b" to its mode: load got str from its read(), and
    # save an internal TypeError from its write.
    with codecs.open(tmp_path / "model.npz", "r", "latin-1") as f:
        with pytest.raises(TypeError, match=r"binary mode \('rb'\), got a text file"):
            io.load(f)
    with codecs.open(tmp_path / "other.npz", "w", "latin-1") as f:
        with pytest.raises(TypeError, match=r"binary mode \('wb'\), got a text file"):
            io.save(layer, f)

    class ReadsText:  # a file object of no known kind whose read() returns str
        def read(self):
            return contents.decode("latin-1")

    with pytest.raises(TypeError, match=r"binary mode \('rb'\), got one whose read\(\) returns str"):
        io.load(ReadsText())

    class NotReady:  # a non-blocking stream with no bytes ready: io.RawIOBase.read returns None
        def read(self):
            return None

    # It was called "not in binary mode" (read() returns NoneType).
    with pytest.raises(ValueError, match=r"returned None from read\(\): a non-blocking stream .*io.BytesIO"):
        io.load(NotReady())


def test_file_objects_that_cannot_hold_a_layer_are_refused(tmp_path):
    import io as std_io

    layer = numba_lstm.LSTM(2, 3, seed=0)
    buffer = std_io.BytesIO()
    io.save(layer, buffer)
    with pytest.raises(ValueError, match="the file object 'BytesIO' is truncated or corrupted"):
        io.load(std_io.BytesIO(buffer.getvalue()[:-10]))
    with pytest.raises(ValueError, match="the file object 'BytesIO' is empty"):
        io.load(std_io.BytesIO())
    io.save(layer, tmp_path / "model.npz")
    # Text mode (the default encoding failed on the archive's bytes with a
    # UnicodeDecodeError), or open for the other operation.
    for encoding in (None, "latin-1"):
        with open(tmp_path / "model.npz", encoding=encoding) as f:
            with pytest.raises(TypeError, match=r"opened in binary mode \('rb'\), got a text file"):
                io.load(f)
    with open(tmp_path / "other.npz", "w") as f:
        with pytest.raises(TypeError, match=r"opened in binary mode \('wb'\), got a text file"):
            io.save(layer, f)
    with open(tmp_path / "model.npz", "rb") as f:
        with pytest.raises(TypeError, match=r"must be open to write \('wb'\)"):
            io.save(layer, f)
    with open(tmp_path / "other.npz", "wb") as f:
        with pytest.raises(TypeError, match=r"must be open to read \('rb'\)"):
            io.load(f)
    np.save(tmp_path / "one.npy", np.zeros(3))
    with open(tmp_path / "one.npy", "rb") as f:
        with pytest.raises(ValueError, match=r"the file object '.*one.npy' is a single .npy array"):
            io.load(f)
