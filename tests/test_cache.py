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
import pytest

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


_DIGEST_SCRIPT = """
import hashlib
import sys

import numpy as np
import numba_lstm
import numba_lstm._kernels
import numba_lstm._panels
import numba_lstm._sync
import numba_lstm.jit
from numba.core import types
from numba.core.registry import CPUDispatcher

out = []
for dtype in (np.float32, np.float64):
    # B = 5: steps split by units; B = 16: by rows; lengths shrink the batch;
    # B = 1: the pipelined backward (one tile of rows on two threads).
    shapes = ((37, 5, 21, 50, [19, 21, 18, 7, 15]), (9, 16, 12, 40, None), (300, 1, 10, 64, None))
    for T, B, I, H, lengths in shapes:
        rng = np.random.default_rng(1)
        x = rng.standard_normal((T, B, I)).astype(dtype)
        W = (rng.standard_normal((I + H, 4 * H)) * 0.3 / np.sqrt(H)).astype(dtype)
        b = rng.standard_normal(4 * H).astype(dtype)
        dy = rng.standard_normal((T, B, H)).astype(dtype)
        y, h_n, c_n, cache = numba_lstm.lstm_forward(x, W, b, lengths=lengths)
        for a in (y, h_n, c_n, *numba_lstm.lstm_backward(dy, cache)):
            out.append(hashlib.sha256(a.tobytes()).hexdigest()[:16])
    # A projection: dW_hr's shares (_projection_grad) on two threads.
    T, B, I, H, P = 50, 16, 8, 64, 40
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    W = (rng.standard_normal((I + P, 4 * H)) * 0.3 / np.sqrt(H)).astype(dtype)
    W_hr = (rng.standard_normal((H, P)) * 0.3 / np.sqrt(H)).astype(dtype)
    y, h_n, c_n, cache = numba_lstm.lstm_forward(x, W, np.zeros(4 * H, dtype), W_hr=W_hr)
    for a in (y, h_n, c_n, *numba_lstm.lstm_backward(np.ones_like(y), cache)):
        out.append(hashlib.sha256(a.tobytes()).hexdigest()[:16])
    # jit.forward: its own call of _lstm_forward (the split bound compiled in, as int64).
    T, B, I, H = 6, 3, 5, 8
    rng = np.random.default_rng(3)
    x, h0, c0 = (rng.standard_normal(shape).astype(dtype) for shape in ((T, B, I), (B, H), (B, H)))
    W = (rng.standard_normal((I + H, 4 * H)) * 0.3).astype(dtype)
    for a in numba_lstm.jit.forward(x, W, np.zeros(4 * H, dtype), h0, c0):
        out.append(hashlib.sha256(a.tobytes()).hexdigest()[:16])
# Streaming: a small layer (one jitted call a step) without and with projection.
for options in ({}, {"proj_size": 3}):
    layer = numba_lstm.LSTM(6, 7, num_layers=2, seed=0, **options).eval()
    layer.step(np.ones((2, 6), np.float32))
print(" ".join(out))
# The signatures this process compiled (none when the kernels came from the cache).
print(" ".join(str(len(getattr(numba_lstm._kernels, name).signatures)) for name in sys.argv[1:]))
# Functions compiled for a literal argument (f(a, 0) types 0 as Literal[int](0)).
literal = {
    f"{f.py_func.__module__}.{f.__name__}"
    for module in (numba_lstm._kernels, numba_lstm._panels, numba_lstm._sync, numba_lstm.jit)
    for f in vars(module).values()
    if isinstance(f, CPUDispatcher)
    for signature in f.signatures
    if any(isinstance(t, (types.Literal, types.Omitted)) for t in signature)
}
print(" ".join(sorted(literal)) or "none")
# The checks that build error messages, which LSTM.step calls only for a bad shape.
print(" ".join(str(len(getattr(numba_lstm.jit, name).signatures)) for name in _MESSAGE_CHECKS))
"""

#: Jitted checks that format error messages (about 3 s of string code to compile).
_MESSAGE_CHECKS = ("_check_step", "_check_projected_step", "_check_step_into", "step_into")
_DIGEST_SCRIPT = _DIGEST_SCRIPT.replace("_MESSAGE_CHECKS", repr(_MESSAGE_CHECKS))


#: The functions that the parallel kernels call from their ``prange`` loop and
#: from their serial branch (``numba_lstm._kernels``, "Compile time"), and
#: those that two of them call (``_backward_steps`` from the pipelined worker
#: too, ``_grads_share`` from both workers of the weight gradients).
_WORKER_FUNCTIONS = (
    "_forward_steps",
    "_backward_steps",
    "_block_grads_worker",
    "_pipelined_worker",
    "_grads_share",
    "_projection_grad_share",
)


@pytest.fixture(scope="module")
def digest_runs(tmp_path_factory):
    """stdout lines of ``_DIGEST_SCRIPT`` in two processes on one new cache:
    the first compiles the kernels, the second loads them."""
    tmp_path = tmp_path_factory.mktemp("digests")
    script = tmp_path / "digests.py"
    script.write_text(_DIGEST_SCRIPT)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_NUM_THREADS": "2"}
    runs = []
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, str(script), *_WORKER_FUNCTIONS],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        runs.append(run.stdout.splitlines())
    return runs


def test_compiled_and_cached_kernels_give_the_same_bits(digest_runs):
    """The process that compiles the kernels and the next one, which loads them
    from the cache, compute the same bits, in float32 and float64.

    With ``fastmath={"contract"}`` LLVM chooses which product of ``f * c_prev
    + i * g`` to fuse into an FMA; the compiling process and the loading one
    chose differently, and float64 outputs and gradients differed in their
    last bits (bench/NOTES.md, "Session 16").  Such sums now name the fused
    product (``numba_lstm._math.fma``).
    """
    compiled, loaded = (run[0].split() for run in digest_runs)
    # Per dtype: 3 shapes of 8 arrays, a projection's 9, jit.forward's 3.
    assert len(compiled) == 2 * (3 * 8 + 9 + 3)
    assert loaded == compiled, [k for k, (a, c) in enumerate(zip(compiled, loaded, strict=True)) if a != c]


def test_each_worker_function_compiles_once_per_dtype(digest_runs):
    """A kernel's ``prange`` loop and its serial branch call the worker function
    with the same argument types, so Numba compiles it once per dtype, not
    three times (loop variable int64 while typing, uint64 in the region,
    literals in the serial branch: bench/NOTES.md, "Session 22"); so do the
    two callers of ``_backward_steps`` and of ``_grads_share``."""
    compiled, loaded = ([int(n) for n in run[1].split()] for run in digest_runs)
    assert dict(zip(_WORKER_FUNCTIONS, compiled, strict=True)) == dict.fromkeys(_WORKER_FUNCTIONS, 2)
    assert loaded == [0] * len(_WORKER_FUNCTIONS)  # the second process compiled nothing


def test_no_function_compiles_for_a_literal_argument(digest_runs):
    """No jitted function of the kernels, panels, counters or ``jit`` was
    compiled for a literal argument: a call such as ``claim(sync, 0, ...)``
    compiles ``claim`` once more, for ``Literal[int](0)``, beside its int64
    signature (``numba_lstm._kernels``, "Compile time"; bench/NOTES.md,
    "Session 23")."""
    assert digest_runs[0][2] == "none"


_STEP_CHECKS_SCRIPT = """
import numpy as np
from numba.core import types
from numba_lstm import jit

x_t, h = np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32)
W, b = np.zeros((6, 16), np.float32), np.zeros(16, np.float32)  # W one row short
calls = (
    lambda: jit.step(x_t, h, h, W, b),
    lambda: jit.step_into(x_t, h, h, W, b, h.copy(), h.copy(), np.zeros(80, np.float32)),
)
for call in calls:
    try:
        call()
    except ValueError as error:
        print(str(error).split(":")[0])
for check in (jit._check_step, jit._check_shapes):
    print(len(check.signatures), any(isinstance(t, types.Literal) for s in check.signatures for t in s))
"""


def test_jit_step_checks_compile_once_for_the_names_of_their_callers(tmp_path):
    """jit.step and jit.step_into pass their names to the same run-time
    check as plain strings: as literals (``Literal[str]``) each caller
    compiled the check's string code once more (two signatures of
    ``_check_step``, not one).  A new cache, so that the checks compile here
    (loaded from the cache, their callers leave them without signatures)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, "-c", _STEP_CHECKS_SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == [
        "numba_lstm.jit.step",
        "numba_lstm.jit.step_into",
        "1 False",  # _check_step
        "1 False",  # _check_shapes
    ]


def test_layer_step_compiles_no_error_messages(digest_runs):
    """``LSTM.step`` compiled none of the jitted checks that format messages:
    its jitted step reports a bad shape by returning False, and the message
    is built then (bench/NOTES.md, "Session 23": the first step of a small
    layer compiled in 7.3 s instead of 14.7)."""
    counts = dict(zip(_MESSAGE_CHECKS, map(int, digest_runs[0][3].split()), strict=True))
    assert counts == dict.fromkeys(_MESSAGE_CHECKS, 0)


@pytest.mark.parametrize(
    "importing", ["import numba_lstm", "import importlib; importlib.import_module('numba_lstm')"]
)
def test_import_works_without_a_writable_cache_folder(importing):
    """With no folder Numba can cache in (a read-only site-packages and no
    writable home; simulated with a locator that never applies), the import
    raised "no locator available".  Now it warns, at the user's import line
    (it pointed at ``_options.py``, which the package imports first), through
    ``importlib.import_module`` too, and the kernels compile without a
    cache."""
    script = (
        f"{importing}\n"
        "import numpy as np\n"
        "from numba_lstm._options import SERIAL\n"
        "from numba_lstm._panels import _panel_width_of\n"
        "print(SERIAL['cache'], _panel_width_of(np.zeros(1, np.float32)) > 0)"
    )
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "ZipCacheLocator"}
    env.pop("NUMBA_CACHE_DIR", None)
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["False", "True"]
    assert (
        "<string>:1: RuntimeWarning: numba_lstm: Numba has no folder to cache the compiled kernels in"
        in run.stderr
    )
    assert "Set NUMBA_CACHE_DIR to a writable folder" in run.stderr
