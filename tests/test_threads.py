"""Thread policy: Numba's pool for the steps and the weight gradients, BLAS's for dW_hr, never both.

The sequence kernels split each large enough step, and the products after
the step loop, between Numba's threads; BLAS only runs a projection's
``dW_hr``, after the loop (README, "Threads").  These tests run forward and
backward of a layer with a projection (so both pools have work) in a fresh process
and check (1) that such a problem does start Numba's pool, and (2) that with
``NUMBA_NUM_THREADS=1`` and ``OPENBLAS_NUM_THREADS=1`` the process uses one
core: CPU time over wall time stays near 1 (a second busy thread would push
it towards 2; waiting for the CPU on a loaded machine can only lower it).
"""

import json
import os
import subprocess
import sys

import pytest

_SCRIPT = """
import json, time
import numba, numpy as np, numba_lstm

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
cpu, wall = time.process_time(), time.perf_counter()
for _ in range(10):
    run()
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
try:
    layer = numba.threading_layer()
except ValueError:  # raised while Numba's pool has never been started
    layer = None
print(json.dumps({"cpu": cpu, "wall": wall, "numba_pool": layer}))
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


@pytest.mark.skipif(os.cpu_count() < 2, reason="needs 2 cores to tell one busy thread from two")
def test_large_steps_run_on_numbas_pool():
    # 64 x 96 @ 96 x 512 per step: 6.3 MFLOP, above SPLIT_STEP_MIN_FLOP, so
    # both of Numba's threads work on every step (a waiting one spins, which
    # counts as CPU time too).  The pool itself is started at import
    # (numba_lstm._threading.launch_threads), so its existence proves
    # nothing: CPU time over wall time does.  1.4 leaves room for a machine
    # whose other core is partly busy; one thread gives about 1.
    out = _run(NUMBA_NUM_THREADS="2")
    assert out["numba_pool"] == "tbb"
    assert out["cpu"] / out["wall"] > 1.4, out


@pytest.mark.skipif(os.cpu_count() < 2, reason="needs 2 cores to tell one busy thread from two")
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
