"""Thread policy: Numba's pool for the steps and the gradients; BLAS's pool stays idle.

The sequence kernels split each large enough step, and the weight gradients
(a projection's ``dW_hr`` included), between Numba's threads, and never call
BLAS (README, "Threads").  These tests run forward and backward of a layer
with a projection in a fresh process and read each thread's CPU time from
``/proc``: (1) Numba's second thread works while the BLAS pools' threads
stay idle, and (2) with ``NUMBA_NUM_THREADS=1`` and ``OPENBLAS_NUM_THREADS=1``
the process uses one core: CPU time over wall time stays near 1 (a second
busy thread would push it towards 2; waiting for the CPU on a loaded machine
can only lower it).
"""

import json
import os
import subprocess
import sys

import pytest

_SCRIPT = """
import json, os, time

def cpu_by_thread():
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return out

before_numpy = set(cpu_by_thread())
import numpy as np
numpys = set(cpu_by_thread()) - before_numpy  # numpy's OpenBLAS pool
import numba, numba_lstm
numbas = set(cpu_by_thread()) - before_numpy - numpys  # import numba_lstm starts Numba's pool

rng = np.random.default_rng(0)
T, B, I, H, P = 50, 64, 128, 128, 96
x = rng.standard_normal((T, B, I)).astype(np.float32)
W = (rng.standard_normal((I + P, 4 * H)) * 0.05).astype(np.float32)
b = np.zeros(4 * H, np.float32)
W_hr = (rng.standard_normal((H, P)) * 0.05).astype(np.float32)
dy = np.ones((T, B, P), np.float32)

def run():
    y, h_n, c_n, cache = numba_lstm.lstm_forward(x, W, b, W_hr=W_hr)
    numba_lstm.lstm_backward(dy, cache)

run()  # compile or load from the cache outside the measurement
start, cpu, wall = cpu_by_thread(), time.process_time(), time.perf_counter()
for _ in range(10):
    run()
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
end = cpu_by_thread()
busy = {tid: (end[tid] - start.get(tid, 0.0)) / wall for tid in end}
others = set(end) - {os.getpid()} - numbas  # numpy's BLAS pool and any thread started later
print(json.dumps({
    "cpu": cpu, "wall": wall, "numba_pool": numba.threading_layer(),
    "numba_workers": max((busy[t] for t in numbas & set(busy)), default=0.0),
    "others": max((busy[t] for t in others), default=0.0),
}))
"""


def _run(**env):
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# The cores this process may run on: TBB follows the affinity (taskset, a
# cpuset container), and with one core Numba's worker got no share of the
# steps, while os.cpu_count() still said 2.
_USABLE_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

needs_two_cores = pytest.mark.skipif(
    _USABLE_CORES < 2 or not os.path.isdir("/proc/self/task"),
    reason="needs 2 cores this process may run on, and Linux's /proc to see which threads are busy",
)


@needs_two_cores
def test_large_steps_run_on_numbas_pool_and_blas_stays_idle():
    # 64 x 96 @ 96 x 512 per step: 6.3 MFLOP, above SPLIT_STEP_MIN_FLOP, so
    # both of Numba's threads work on every step (a waiting one spins, which
    # counts as CPU time too), and so they do on the weight gradients.  The
    # BLAS pools are left at their defaults: a BLAS call (dW_hr went to
    # np.dot until session 38) left OpenBLAS's worker spinning through the
    # next forward and backward, where it took the second core (busy 0.96 of
    # the wall time, against 0.07 for Numba's worker).  0.4 leaves room for
    # a machine whose other core is partly busy; 0.1 for a BLAS thread's
    # start-up.
    out = _run(NUMBA_NUM_THREADS="2")
    assert out["numba_pool"] == "tbb"
    assert out["numba_workers"] > 0.4, out
    assert out["others"] < 0.1, out


@needs_two_cores
def test_one_thread_in_each_pool_means_one_busy_core():
    out = _run(OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    # 1.3 leaves room for the interpreter's own helper threads and timer
    # granularity; two busy threads would give about 2.
    assert out["cpu"] / out["wall"] < 1.3, out


def test_forward_and_backward_split_steps_by_the_rows_of_the_first_step(monkeypatch):
    """Whether a step is split between threads goes by its rows: the
    sequences that are not empty (the kernels share the rows of
    ``batch_sizes[0]``), not the batch with its sequences of length 0.  Here
    the batch of 40 would be split, the one sequence with steps would not."""
    import numpy as np

    import numba_lstm
    from numba_lstm import _kernels, functional

    asked = []

    def spy(rows, K, N, min_flop):
        if min_flop == _kernels.SPLIT_STEP_MIN_FLOP:
            asked.append((rows, _kernels._use_threads(40, K, N, min_flop)))
        return _kernels._use_threads(rows, K, N, min_flop)

    monkeypatch.setattr(functional, "_use_threads", spy)
    rng = np.random.default_rng(0)
    T, B, I, H = 6, 40, 8, 32
    lengths = np.zeros(B, np.int64)
    lengths[17] = 5
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    W = (rng.standard_normal((I + H, 4 * H)) * 0.1).astype(np.float32)
    y, _, _, cache = numba_lstm.lstm_forward(x, W, np.zeros(4 * H, np.float32), lengths=lengths)
    numba_lstm.lstm_backward(np.ones_like(y), cache)
    # Forward, then backward: one sequence's rows, for a product that the
    # whole batch's rows would have split.
    assert asked == [(1, True), (1, True)]


def _import_after(code, **env):
    """Run ``code``, then ``import numba_lstm``, in a fresh process without a
    threading layer chosen in the environment; (threading layer, stderr)."""
    script = f"{code}\nimport numba_lstm, numba\nprint(numba.threading_layer())"
    base = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    result = subprocess.run(
        [sys.executable, "-c", script], env={**base, **env}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1], result.stderr


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the tbb wheel's library is preloaded on Linux"
)
def test_import_warns_when_numbas_threads_started_without_tbb():
    # Numba picks its layer when its threads first start: here before the
    # import could make TBB loadable, so it falls back to another layer;
    # unless TBB loads without the preload (a system libtbb, LD_LIBRARY_PATH).
    started = "import numba; numba.get_num_threads()"
    if _import_after(started)[0] == "tbb":
        pytest.skip("TBB loads here without numba_lstm's preload")
    for first in (started, "import numba; numba.set_num_threads(1)"):
        layer, stderr = _import_after(first)
        assert layer != "tbb"
        assert "RuntimeWarning: Numba's threads were started before numba_lstm was imported" in stderr
        assert f"with the {layer!r} threading layer" in stderr
        assert stderr.startswith("<string>:2: RuntimeWarning"), stderr  # points at the import
        # The risk of the layer in use only (it spoke of workqueue with omp),
        # and no remedy that cannot give TBB here (NUMBA_THREADING_LAYER=tbb
        # fails to load it before the import).
        other = {"omp": "workqueue", "workqueue": "OpenMP"}[layer]
        assert other not in stderr and "Only importing numba_lstm before" in stderr
    # Imported first: TBB and no warning; a layer or an order chosen by the user: no warning.
    assert _import_after("") == ("tbb", "")
    assert _import_after(started, NUMBA_THREADING_LAYER="omp") == ("omp", "")
    assert _import_after(started, NUMBA_THREADING_LAYER_PRIORITY="omp tbb workqueue") == ("omp", "")
