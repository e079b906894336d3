"""What the kernels' split policy reads of the host's CPU: its vendor and one core's L2.

Both are read from Linux's ``/proc`` and ``/sys``; where they cannot be read
(another system, a container that hides them, a value not in the kernel's
format) the reader returns None and the policy decides without it
(``numba_lstm._kernels.row_split_bound``).
"""

import os

CPUINFO = "/proc/cpuinfo"
CPUS = "/sys/devices/system/cpu"


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


def l2_cache_bytes(cpus=CPUS, cpu=None):
    """One core's share in bytes of the level-2 cache (data or unified) of ``cpu``, or None.

    ``cpu``: by default the first CPU this process may run on.  sysfs gives
    the size of the whole cache, which a cluster of cores may share (Intel's
    E-cores, four to an L2): it is divided by the cores in its
    ``shared_cpu_list``, counting a core's SMT siblings once.
    """
    if cpu is None:
        cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    caches = os.path.join(cpus, f"cpu{cpu}", "cache")
    try:
        entries = os.listdir(caches)
        siblings = _count_cpus(_read(os.path.join(cpus, f"cpu{cpu}", "topology"), "thread_siblings_list"))
        for entry in entries:
            folder = os.path.join(caches, entry)
            if not entry.startswith("index") or _read(folder, "level") != "2":
                continue
            if _read(folder, "type") not in ("Unified", "Data"):
                continue
            size, sharing = _bytes_of(_read(folder, "size")), _count_cpus(_read(folder, "shared_cpu_list"))
            if size is None or sharing is None or siblings is None:
                return None
            return size // max(1, sharing // siblings)
    except (OSError, ValueError):  # a file missing or not in the kernel's format
        pass
    return None


def _read(folder, name):
    with open(os.path.join(folder, name), encoding="ascii") as file:
        return file.read().strip()


def _bytes_of(size):
    """Bytes of a sysfs cache size ("2048K", "1M", "524288"), or None if it is not one."""
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1:].upper(), 1)
    digits = size[:-1] if scale > 1 else size
    return int(digits) * scale if digits.isascii() and digits.isdigit() and int(digits) > 0 else None


def _count_cpus(cpu_list):
    """How many CPUs a sysfs CPU list names ("0-3,8,10-11": 7), or None if it is not one."""
    count = 0
    for part in cpu_list.split(","):
        first, _, last = part.partition("-")
        if not (first.isascii() and first.isdigit() and (not last or (last.isascii() and last.isdigit()))):
            return None
        if int(last or first) < int(first):
            return None
        count += int(last or first) - int(first) + 1
    return count if count > 0 else None
