"""What the split policy reads of the host (``numba_lstm._host``) and the bound it makes of it."""

import os

import numpy as np
import pytest

from numba_lstm import _host
from numba_lstm._kernels import (
    DEFAULT_ROW_SPLIT_MAX_BYTES,
    ROW_SPLIT_MAX_BYTES,
    _split_by_rows,
    row_split_bound,
)
from numba_lstm._panels import TILE_ROWS

MiB = 1024**2

INTEL_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) Processor

processor\t: 1
vendor_id\t: GenuineIntel
"""

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize(
    ("text", "expected"), [(INTEL_CPUINFO, "GenuineIntel"), (ARM_CPUINFO, None), ("", None)]
)
def test_cpu_vendor(tmp_path, text, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert _host.cpu_vendor(str(cpuinfo)) == expected


def test_cpu_vendor_without_proc(tmp_path):
    assert _host.cpu_vendor(str(tmp_path / "missing")) is None


def _cpus(root, caches, cores, cpu=2):
    """A sysfs ``cpu`` folder: the (package, core) of each CPU in ``cores``, and
    for CPU ``cpu`` one index folder per (level, type, size, shared_cpu_list)
    of ``caches``."""
    for n, (package, core) in cores.items():
        topology = root / f"cpu{n}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n")
        (topology / "core_id").write_text(f"{core}\n")
    for k, (level, kind, size, shared) in enumerate(caches):
        index = root / f"cpu{cpu}" / "cache" / f"index{k}"
        index.mkdir(parents=True)
        for name, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
            (index / name).write_text(f"{value}\n")
    return str(root)


OWN = {2: (0, 1)}  # CPU 2, core 1 of package 0, no SMT sibling online
XEON = [
    (1, "Data", "48K", "2"),
    (1, "Instruction", "32K", "2"),
    (2, "Unified", "2048K", "2"),
    (3, "Unified", "491520K", "0-3"),
]


@pytest.mark.parametrize(
    ("caches", "cores", "expected"),
    [
        (XEON, OWN, 2 * MiB),  # the Xeon of bench/NOTES.md "Session 39": an L2 of its own per core
        ([(2, "Unified", "1M", "2,6")], {2: (0, 1), 6: (0, 1)}, MiB),  # SMT: two CPUs, one core
        ([(2, "Unified", "4096K", "0-3")], {n: (0, n) for n in range(4)}, MiB),  # four E-cores, one L2
        ([(2, "Unified", "2M", "0-2")], {0: (0, 0), 1: (0, 0), 2: (0, 1)}, MiB),  # a sibling offline
        ([(2, "Unified", "2M", "2,3")], {2: (0, 1), 3: (1, 1)}, MiB),  # core 1 of two packages
        ([(2, "Data", "524288", "2")], OWN, 512 * 1024),
        ([(1, "Data", "32K", "2"), (2, "Instruction", "1M", "2")], OWN, None),  # no data cache at level 2
        ([(1, "Data", "32K", "2"), (3, "Unified", "32M", "0-7")], OWN, None),
        ([(2, "Unified", "2048 K", "2")], OWN, None),  # not a size as sysfs writes one
        ([(2, "Unified", "0K", "2")], OWN, None),
        ([(2, "Unified", "²K", "2")], OWN, None),
        ([(2, "Unified", "2048K", "3-1")], OWN, None),  # not a CPU list
        ([(2, "Unified", "2048K", "0-99999999")], OWN, None),
        ([(2, "Unified", "2048K", "2,5")], OWN, None),  # CPU 5's topology missing
    ],
)
def test_l2_cache_bytes(tmp_path, caches, cores, expected):
    assert _host.l2_cache_bytes(_cpus(tmp_path / "cpu", caches, cores), cpu=2) == expected


def test_l2_cache_bytes_reads_the_first_cpu_this_process_may_run_on(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5, 3})
    root = _cpus(tmp_path / "cpu", [(2, "Unified", "2M", "3")], {3: (0, 3)}, cpu=3)
    _cpus(tmp_path / "cpu", [(2, "Unified", "1M", "0")], {0: (0, 0)}, cpu=0)  # not this process's
    assert _host.l2_cache_bytes(root) == 2 * MiB


def test_l2_cache_bytes_without_sysfs(tmp_path):
    assert _host.l2_cache_bytes(str(tmp_path / "missing"), cpu=0) is None
    (tmp_path / "cpu" / "cpu0" / "cache" / "index2").mkdir(parents=True)  # a folder without its files
    assert _host.l2_cache_bytes(str(tmp_path / "cpu"), cpu=0) is None


def test_l2_cache_bytes_passes_over_an_unreadable_index(tmp_path):
    """Bytes the kernel never writes there: that folder is passed over, not an error at import."""
    root = _cpus(tmp_path / "cpu", [(1, "Data", "32K", "2"), (2, "Unified", "1M", "2")], OWN)
    (tmp_path / "cpu" / "cpu2" / "cache" / "index0" / "level").write_bytes(b"\xff\n")
    assert _host.l2_cache_bytes(root, cpu=2) == MiB
    (tmp_path / "cpu" / "cpu2" / "cache" / "index1" / "type").write_bytes(b"Unif\xefed\n")
    assert _host.l2_cache_bytes(root, cpu=2) is None


@pytest.mark.parametrize(
    ("vendor", "l2_bytes", "expected"),
    [
        # The Intel host of bench/NOTES.md "Session 39": 16x100x128x256's
        # 1.5 MB of float32 weights still split by rows, 64x100x256x256's 2 MB not.
        ("GenuineIntel", 2 * MiB, int(1.75 * MiB)),
        ("GenuineIntel", MiB, 896 * 1024),
        ("GenuineIntel", None, 896 * 1024),  # L2 unknown: 1 MB assumed
        ("AuthenticAMD", MiB, 16 * MiB),  # Zen: the weights stream from L3 up to 16 MB
        ("AuthenticAMD", None, DEFAULT_ROW_SPLIT_MAX_BYTES),
        (None, 2 * MiB, 16 * MiB),
        (None, None, 16 * MiB),
    ],
)
def test_row_split_bound(vendor, l2_bytes, expected):
    assert row_split_bound(vendor, l2_bytes) == expected


@pytest.mark.parametrize("bound", [ROW_SPLIT_MAX_BYTES, 1024, 16 * MiB])
def test_the_bound_is_an_argument_of_the_compiled_kernels(bound):
    """The compiled decision follows the bound it is given, not one compiled
    in (a compile cache shared between hosts would keep the first host's)."""
    bound = np.int64(bound)
    assert _split_by_rows(2 * TILE_ROWS, 2, bound, bound)
    assert not _split_by_rows(2 * TILE_ROWS, 2, bound + 1, bound)


def test_the_python_layer_passes_the_hosts_bound(monkeypatch):
    """``lstm_forward`` and ``lstm_backward`` hand ROW_SPLIT_MAX_BYTES, as read
    at call time, to the kernels (the argument before ``sync``, and before
    ``sync, grad_sync``)."""
    import numba_lstm
    from numba_lstm import functional

    seen = {}
    for name, position in (("_lstm_forward", -2), ("_lstm_backward", -3)):
        kernel = getattr(functional, name)

        def spy(*args, kernel=kernel, name=name, position=position):
            seen[name] = args[position]
            return kernel(*args)

        monkeypatch.setattr(functional, name, spy)
    monkeypatch.setattr(functional, "ROW_SPLIT_MAX_BYTES", 12345)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 16, 4)).astype(np.float32)
    W = rng.standard_normal((4 + 8, 32)).astype(np.float32)
    y, _, _, cache = numba_lstm.lstm_forward(x, W, np.zeros(32, np.float32))
    numba_lstm.lstm_backward(np.ones_like(y), cache)
    assert seen == {"_lstm_forward": 12345, "_lstm_backward": 12345}
