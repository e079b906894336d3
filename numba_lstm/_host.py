"""What the kernels' split policy reads of the host's CPU: its vendor and one core's L2.

Both are read from Linux's ``/proc`` and ``/sys``; where they cannot be read
(another system, a container that hides them, a value not in the kernel's
format) the reader returns None and the policy decides without it
(``numba_lstm._kernels.row_split_bound``).
"""

import os

CPUINFO = "/proc/cpuinfo"
CPUS = "/sys/devices/system/cpu"

#: More CPUs than a CPU list may name (Linux's NR_CPUS is at most 8192).
MAX_CPUS = 65536


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
    E-cores, four to an L2): it is divided by the cores (distinct
    ``core_id`` of a package) of the CPUs in its ``shared_cpu_list``.  An
    index folder that cannot be read is passed over.
    """
    if cpu is None:
        cpu = _first_cpu()
    caches = os.path.join(cpus, f"cpu{cpu}", "cache")
    try:
        entries = sorted(os.listdir(caches))
    except OSError:
        return None
    for entry in entries:
        folder = os.path.join(caches, entry)
        try:
            if not entry.startswith("index") or _read(folder, "level") != "2":
                continue
            if _read(folder, "type") not in ("Unified", "Data"):
                continue
            size, sharing = _bytes_of(_read(folder, "size")), _cpu_list(_read(folder, "shared_cpu_list"))
            if size is None or sharing is None:
                return None
            cores = {_core(cpus, other) for other in sharing}
        except (OSError, ValueError):  # a file missing or not in the kernel's format
            continue
        return size // len(cores)
    return None


def _first_cpu():
    """The lowest-numbered CPU this process may run on (0 where that cannot be asked)."""
    try:
        return min(os.sched_getaffinity(0))
    except (AttributeError, OSError, ValueError):
        return 0


def _core(cpus, cpu):
    """(package, core) of CPU ``cpu``: its SMT siblings share it."""
    topology = os.path.join(cpus, f"cpu{cpu}", "topology")
    return _read(topology, "physical_package_id"), _read(topology, "core_id")


def _read(folder, name):
    with open(os.path.join(folder, name), encoding="ascii") as file:
        return file.read().strip()


def _bytes_of(size):
    """Bytes of a sysfs cache size ("2048K", "1M", "524288"), or None if it is not one."""
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1:].upper(), 1)
    count = _number(size[:-1] if scale > 1 else size)
    return count * scale if count else None


def _cpu_list(text):
    """The CPUs a sysfs CPU list names ("0-2,8": [0, 1, 2, 8]), or None if it is not one."""
    listed = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        lo = _number(first)
        hi = _number(last) if last else lo
        if lo is None or hi is None or hi < lo:
            return None
        listed.extend(range(lo, hi + 1))
        if len(listed) > MAX_CPUS:
            return None
    return listed or None


def _number(text):
    """The whole number that ``text`` writes in ASCII digits, or None (int() also takes
    other scripts' digits, signs, spaces and underscores)."""
    return int(text) if text.isascii() and text.isdigit() else None
