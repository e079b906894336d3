"""Options, the interleaved case list and the machine information of the benchmarks.

``bench/run.py`` passes the options; ``pytest bench`` alone runs the quick set.
Cases are ordered so that the implementations are interleaved: for each
workload, shape and dtype, repeat r of every implementation (and of the GEMM
that measures the ceiling, in that dtype) runs before repeat r + 1 of any, so
drift on a shared machine hits them all alike.  Within a group each repeat
runs the implementations in another order (``_order``, the rows of a
Williams square), so that none runs right after the same other one at
every repeat: OpenBLAS's threads spin for about 0.1 s after a call, and a
fixed order always put numba_lstm after the GEMM and torch after the NumPy
reference (bench/NOTES.md, "Session 44").
Each pytest item is one pytest-benchmark round; the runner takes the median
of an implementation's repeats.
"""

import importlib.metadata
import os
import pathlib
import platform
import sys
from typing import NamedTuple

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # the repository root, for bench/
from bench import implementations as registry  # noqa: E402
from bench import sizes  # noqa: E402

#: The GEMM ceiling, timed like an implementation inside every group (``n x n x n``, n = --bench-gemm-size).
GEMM = registry.Implementation("BLAS GEMM (ceiling)", "gemm", prepare=None)

QUICK = {"shapes": "16x100x128x256", "shapes64": "16x100x128x256", "stream_hidden": "32,128"}

#: Seconds of idle before each timed round: OpenBLAS's threads spin for 2^28
#: TSC ticks after a call (0.10 s at 2.6 GHz, 0.13 s at 2 GHz), and a pause
#: of 0.1 s left numba_lstm's B = 1 forward 4-9% slower after the GEMM
#: (bench/NOTES.md, "Session 44").
PAUSE_S = 0.25

THREADS = pytest.StashKey[int]()
SKIPPED = pytest.StashKey[dict]()

#: Packages whose versions go into the results.
PACKAGES = (
    "numba_lstm", "numba", "llvmlite", "numpy", "scipy", "tbb", "torch", "onnx", "onnxruntime",
    "threadpoolctl", "pytest-benchmark", "matplotlib",
)  # fmt: skip


class Case(NamedTuple):
    workload: str
    shape: tuple  # (B, T, I, H)
    dtype: str
    repeat: int
    impl: registry.Implementation

    @property
    def group(self):
        B, T, I, H = self.shape
        return f"{self.workload} B={B} T={T} I={I} H={H} {self.dtype}"

    @property
    def position(self):
        """The implementation's place in the registry (the GEMM ceiling last): the tables' row order."""
        return next(
            (k for k, impl in enumerate(registry.REGISTRY) if impl is self.impl), len(registry.REGISTRY)
        )

    @property
    def id(self):
        return f"{self.group.replace(' ', '-')}-r{self.repeat}-{self.impl.name.replace(' ', '_')}"


def pytest_addoption(parser):
    group = parser.getgroup("numba_lstm benchmarks")
    group.addoption("--bench-shapes", default=QUICK["shapes"], help="float32 shapes BxTxIxH, comma-separated")
    group.addoption("--bench-shapes64", default=QUICK["shapes64"], help="float64 shapes BxTxIxH")
    group.addoption(
        "--bench-stream-hidden", default=QUICK["stream_hidden"], help="streaming H values (I = H), or 'none'"
    )
    group.addoption("--bench-stream-steps", type=int, default=100, help="steps per streaming call")
    group.addoption("--bench-lengths", default="64x100x256x256", help="variable-lengths shape, or 'none'")
    group.addoption("--bench-repeats", type=int, default=5, help="timed calls per implementation and case")
    group.addoption("--bench-threads", type=int, default=0, help="threads for everyone (0: torch's default)")
    group.addoption("--bench-gemm-size", type=int, default=2048, help="n of the n x n x n GEMM ceiling")
    group.addoption(
        "--bench-pause", type=float, default=PAUSE_S, help="seconds of idle before each timed round"
    )


def cases(config):
    """Every timed call, in run order (implementations interleaved)."""
    option = config.getoption
    groups = [("inference", s, "float32") for s in sizes.parse(option("--bench-shapes"), 4)]
    groups += [("inference", s, "float64") for s in sizes.parse(option("--bench-shapes64"), 4)]
    groups = groups + [("training", s, d) for _, s, d in groups]
    steps = option("--bench-stream-steps")
    hidden = [H for (H,) in sizes.parse(option("--bench-stream-hidden"), 1)]
    groups += [("streaming", (1, steps, H, H), "float32") for H in hidden]
    groups += [("lengths", s, "float32") for s in sizes.parse(option("--bench-lengths"), 4)]
    return [
        Case(workload, shape, dtype, repeat, impl)
        for workload, shape, dtype in groups
        for repeat in range(option("--bench-repeats"))
        for impl in _order([*registry.implementations(workload), GEMM], repeat)
    ]


def _order(items, repeat):
    """``items`` in the order of row ``repeat`` of a Williams square of their count n.

    Row 0 is 0, 1, n - 1, 2, n - 2, ...; row r adds r to each index (mod n).
    Over n rows of an even n each item runs right after every other exactly
    once; over up to n rows of an odd n, right after the same one at most
    twice.  A rotation of one order kept every item's predecessor but one.
    """
    n = len(items)
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    return [items[(k + repeat) % n] for k in first]


def pytest_configure(config):
    threads = registry.configure_threads(config.getoption("--bench-threads") or None)
    config.stash[THREADS] = threads
    config.stash[SKIPPED] = {}


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "case" in metafunc.fixturenames:
        all_cases = cases(config)
        metafunc.parametrize("case", all_cases, ids=[c.id for c in all_cases])


def record_skip(config, case, reason):
    config.stash[SKIPPED][(case.group, case.impl.name)] = {
        "workload": case.workload, "shape": list(case.shape), "dtype": case.dtype,
        "implementation": case.impl.name, "position": case.position, "reason": reason,
    }  # fmt: skip


def _numba_threading_layer():
    """Start Numba's pool with a one-line parallel function and name the layer it loaded."""
    import numba

    @numba.njit(parallel=True)
    def touch(a):
        for i in numba.prange(a.size):
            a[i] = i

    touch(np.empty(4))
    return numba.threading_layer()


def _versions():
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def pytest_benchmark_update_machine_info(config, machine_info):
    from threadpoolctl import threadpool_info

    info = {
        "cpu_model": machine_info.get("cpu", {}).get("brand_raw") or platform.processor(),
        "logical_cpus": os.cpu_count(),
        "threads_per_implementation": config.stash[THREADS],
        "numba_threading_layer": _numba_threading_layer(),
        "threadpools": [
            {
                k: pool.get(k)
                for k in ("user_api", "internal_api", "num_threads", "version", "architecture", "filepath")
            }
            for pool in threadpool_info()
        ],
        # OpenBLAS picks its kernels by CPU unless this variable forces a type.
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "versions": _versions(),
    }
    torch = registry._import("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)
    machine_info["numba_lstm_bench"] = info


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["skipped"] = list(config.stash[SKIPPED].values())
