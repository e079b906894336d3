"""Thread policy: BLAS's pool is the only one, and it obeys the user's settings.

numba_lstm's kernels are serial Numba code; the only threads are BLAS's
(README, "Threads").  These tests run forward and backward in a fresh process
and check (1) that Numba's thread pool was never started, so
``NUMBA_NUM_THREADS`` has nothing to oversubscribe, and (2) that with
``OPENBLAS_NUM_THREADS=1`` the process uses one core: CPU time over wall time
stays near 1 (a second busy thread would push it towards 2; waiting for the
CPU on a loaded machine can only lower it).
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
T, B, I, H = 50, 64, 128, 128
x = rng.standard_normal((T, B, I)).astype(np.float32)
W = (rng.standard_normal((I + H, 4 * H)) * 0.05).astype(np.float32)
b = np.zeros(4 * H, np.float32)
dy = np.ones((T, B, H), np.float32)

def run():
    y, h_n, c_n, cache = numba_lstm.lstm_forward(x, W, b)
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


def test_numba_pool_is_never_started():
    out = _run(NUMBA_NUM_THREADS="2")
    assert out["numba_pool"] is None


@pytest.mark.skipif(os.cpu_count() < 2, reason="needs 2 cores to tell one busy thread from two")
def test_one_blas_thread_means_one_busy_core():
    out = _run(OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="2")
    # 1.3 leaves room for the interpreter's own helper threads and timer
    # granularity; two busy threads would give about 2.
    assert out["cpu"] / out["wall"] < 1.3, out
