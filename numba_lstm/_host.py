"""What the kernels' split policy reads of the host's CPU: its vendor and one core's L2.

Both are read from Linux's ``/proc`` and ``/sys``; where they cannot be read
(another system, a container that hides them) the reader returns None and the
policy keeps its default (``numba_lstm._kernels.row_split_max_bytes``).
"""

import os

CPUINFO = "/proc/cpuinfo"
CPU0_CACHES = "/sys/devices/system/cpu/cpu0/cache"


def cpu_vendor(cpuinfo=CPUINFO):
    """The CPU's vendor as ``/proc/cpuinfo`` names it ("GenuineIntel", "AuthenticAMD"), or None."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    return value.strip() or None
    except OSError:
        pass
    return None


def l2_cache_bytes(caches=CPU0_CACHES):
    """The size in bytes of the first core's level-2 cache (data or unified), or None."""
    try:
        entries = sorted(os.listdir(caches))
    except OSError:
        return None
    for entry in entries:
        folder = os.path.join(caches, entry)
        try:
            level = _read(folder, "level")
            kind = _read(folder, "type")
            size = _read(folder, "size")
        except OSError:
            continue
        if level == "2" and kind in ("Unified", "Data"):
            return _bytes_of(size)
    return None


def _read(folder, name):
    with open(os.path.join(folder, name), encoding="ascii") as file:
        return file.read().strip()


def _bytes_of(size):
    """Bytes of a sysfs cache size ("2048K", "1M", "524288"), or None if it is not one."""
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1:].upper(), 1)
    digits = size[:-1] if scale > 1 else size
    return int(digits) * scale if digits.isdigit() and int(digits) > 0 else None
