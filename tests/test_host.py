"""What the split policy reads of the host (``numba_lstm._host``) and the bound it makes of it."""

import pytest

from numba_lstm import _host
from numba_lstm._kernels import (
    DEFAULT_ROW_SPLIT_MAX_BYTES,
    ROW_SPLIT_MAX_BYTES,
    row_split_max_bytes,
)

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


def _caches(root, *levels):
    """A sysfs cache folder: one index folder per (level, type, size)."""
    for k, (level, kind, size) in enumerate(levels):
        index = root / f"index{k}"
        index.mkdir(parents=True)
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (index / name).write_text(f"{value}\n")
    return str(root)


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        (
            [
                (1, "Data", "48K"),
                (1, "Instruction", "32K"),
                (2, "Unified", "2048K"),
                (3, "Unified", "491520K"),
            ],
            2 * MiB,
        ),
        ([(1, "Data", "32K"), (2, "Unified", "1M")], MiB),
        ([(2, "Data", "524288")], 512 * 1024),
        ([(1, "Data", "32K"), (2, "Instruction", "1M")], None),  # no data cache at level 2
        ([(1, "Data", "32K"), (3, "Unified", "32M")], None),
        ([(2, "Unified", "2048 K")], None),  # not a size sysfs writes
        ([(2, "Unified", "0K")], None),
    ],
)
def test_l2_cache_bytes(tmp_path, levels, expected):
    assert _host.l2_cache_bytes(_caches(tmp_path / "cache", *levels)) == expected


def test_l2_cache_bytes_without_sysfs(tmp_path):
    assert _host.l2_cache_bytes(str(tmp_path / "missing")) is None
    (tmp_path / "cache" / "index0").mkdir(parents=True)  # a folder without its files
    assert _host.l2_cache_bytes(str(tmp_path / "cache")) is None


@pytest.mark.parametrize(
    ("vendor", "l2_bytes", "expected"),
    [
        # The Intel host of bench/NOTES.md "Session 39": 16x100x128x256's
        # 1.5 MB of float32 weights still split by rows, 64x100x256x256's 2 MB not.
        ("GenuineIntel", 2 * MiB, int(1.5 * MiB)),
        ("GenuineIntel", MiB, 768 * 1024),
        ("GenuineIntel", None, DEFAULT_ROW_SPLIT_MAX_BYTES),
        ("AuthenticAMD", MiB, 16 * MiB),  # Zen: the weights stream from L3 up to 16 MB
        (None, 2 * MiB, 16 * MiB),
        (None, None, 16 * MiB),
    ],
)
def test_row_split_max_bytes(vendor, l2_bytes, expected):
    assert row_split_max_bytes(vendor, l2_bytes) == expected


def test_this_hosts_bound():
    assert ROW_SPLIT_MAX_BYTES == row_split_max_bytes(_host.cpu_vendor(), _host.l2_cache_bytes())
