"""Kernels loaded from Numba's on-disk cache in later processes.

``numba_lstm.jit.forward`` calls the parallel sequence kernel from jitted
code.  Loaded from the cache, such a caller used to crash its process
(numba/numba#8578: Numba did not start the threading layer for the parallel
function inside): a segfault from ``jit.forward`` itself, "LLVM ERROR: Symbol
not found: allocate_sched" from a user's cached function that calls it.
numba_lstm now starts the layer at import (``numba_lstm._threading``).

Each run is a new process on a cache directory of its own, in the order that
crashed: the functional API first, then ``jit.forward`` compiled and then
loaded, then a user's cached ``@njit`` function compiled (on the cached
``jit.forward``) and loaded.  About 40 s, most of it compiling.
"""

import os
import subprocess
import sys

import numpy as np

_SCRIPT = """
import sys
import numba
import numpy as np
import numba_lstm
import numba_lstm.jit


@numba.njit(cache=True)
def user_forward(x, W, b, h0, c0):
    return numba_lstm.jit.forward(x, W, b, h0, c0)[0]


rng = np.random.default_rng(0)
T, B, I, H = 20, 1, 16, 64  # B = 1, H = 64: each step split between the threads
x = rng.standard_normal((T, B, I)).astype(np.float32)
W = (rng.standard_normal((I + H, 4 * H)) * 0.2).astype(np.float32)
b = rng.standard_normal(4 * H).astype(np.float32)
h0 = np.zeros((B, H), np.float32)
if sys.argv[1] == "functional":
    y = numba_lstm.lstm_forward(x, W, b, h0, h0, cache=False)[0]
elif sys.argv[1] == "jit":
    y = numba_lstm.jit.forward(x, W, b, h0, h0)[0]
else:
    y = user_forward(x, W, b, h0, h0)
np.save(sys.argv[2], y)
"""


def test_jitted_callers_of_parallel_kernels_run_from_the_cache(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_NUM_THREADS": "2"}
    results = []
    for k, caller in enumerate(["functional", "jit", "jit", "user", "user"]):
        out = tmp_path / f"{k}.npy"
        run = subprocess.run(
            [sys.executable, str(script), caller, str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, f"run {k} ({caller}) exited with {run.returncode}: {run.stderr[-2000:]}"
        results.append(np.load(out))
    for k, y in enumerate(results[1:], 1):
        np.testing.assert_array_equal(y, results[0], err_msg=f"run {k}")
