"""pytest-benchmark benchmarks of every registered implementation and of the GEMM ceiling.

Run through ``make bench`` / ``bench/run.py``, which renders the tables.  Each
item times one round of one implementation on one case (see ``conftest.py`` for
the interleaved order), right after a pause and, for a call of up to
``LEAD_IN_MAX_S``, one untimed call of the same implementation; compile and
warm-up happen in ``_prepared``, untimed.
"""

import functools
import math
import time

import numba
import numpy as np
import pytest
from conftest import GEMM, record_skip

from bench import implementations as registry

_PREPARED = {"group": None, "problem": None, "runs": {}}

#: A timed round lasts at least this long: shorter calls are repeated within
#: the round (pytest-benchmark's ``iterations``) and the mean call is kept.
MIN_ROUND_S = 0.02

#: A call that lasts longer than this is timed without the untimed call
#: before it (``_lead_in``; the rows record ``lead_in``): what that call
#: evens out, memory touched again after another implementation's call
#: (bench/NOTES.md, "Session 7"), is a small part of such a call, and the
#: lead-ins of the NumPy reference's training at 128x50x1024x1024 (38-56 s
#: a call on the Intel Xeon of the README's known gaps) took about 4 of make
#: bench's 20 minutes.  The longest calls of numba_lstm and PyTorch in make
#: bench's shapes took up to 2.3 s (training at 128x50x1024x1024 on a Zen 3),
#: the reference's others up to 8.1 s.
LEAD_IN_MAX_S = 10.0


def _iterations(run):
    """``(calls per round, seconds a call)``: calls so that a round lasts ``MIN_ROUND_S``, from one untimed call."""
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return min(1000, max(1, math.ceil(MIN_ROUND_S / seconds))), seconds


def _prepared(case):
    """The case's ``(run, iterations, seconds a call)``, prepared and warmed up on first use.

    Every implementation of a group (workload, shape, dtype) gets the same
    problem; moving to the next group frees the previous one's buffers.  The
    first call compiles and warms up; the second sets the iterations and
    measures a call (``_iterations``).
    """
    if _PREPARED["group"] != case.group:
        B, T, I, H = case.shape
        _PREPARED.update(group=case.group, runs={}, problem=None)
        _PREPARED["problem"] = registry.make_problem(case.workload, T, B, I, H, np.dtype(case.dtype))
    runs = _PREPARED["runs"]
    if case.impl.name not in runs:
        run, _ = case.impl.prepare(_PREPARED["problem"])
        run()
        runs[case.impl.name] = run, *_iterations(run)
    return runs[case.impl.name]


def _extra_info(benchmark, **info):
    benchmark.extra_info.update(info)
    benchmark.group = info["group"]


def test_lstm(benchmark, case, request):
    if case.impl is GEMM:
        return _gemm_round(benchmark, case, request.config)
    reason = case.impl.skip_reason(case.dtype)
    if reason is not None:
        record_skip(request.config, case, reason)
        pytest.skip(reason)
    run, iterations, call_s = _prepared(case)
    steps, flops = registry.work(case.workload, _PREPARED["problem"])
    lead_in = call_s <= LEAD_IN_MAX_S
    _extra_info(
        benchmark, group=case.group, workload=case.workload, shape=list(case.shape), dtype=case.dtype,
        implementation=case.impl.name, position=case.position, baseline=case.impl.baseline, repeat=case.repeat,
        flops=flops, sequence_steps=steps, iterations=iterations, lead_in=lead_in,
    )  # fmt: skip
    _lead_in(request.config, run, untimed_call=lead_in)
    benchmark.pedantic(run, rounds=1, iterations=iterations)


def _lead_in(config, run, *args, untimed_call=True):
    """Idle, then one untimed call (unless ``untimed_call`` is false): the timed
    round is measured as the next call of a loop.

    The pause lets the previous implementation's spinning thread pools go quiet.
    The untimed call touches the memory the timed one will use again: on a VM
    that hands freed guest memory back to its host, first touching memory after
    another implementation's long call costs several times more (bench/NOTES.md,
    "Session 7"), a cost a loop of calls does not pay.
    """
    time.sleep(config.getoption("--bench-pause"))
    if untimed_call:
        run(*args)


@numba.njit
def _gemm(out, a, b):
    np.dot(a, b, out)


@functools.cache
def _gemm_operands(n, dtype):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    out = np.empty((n, n), dtype)
    _gemm(out, a, b)  # compile and warm up
    return out, a, b


def _gemm_round(benchmark, case, config):
    """The machine's GEMM rate through Numba's BLAS (``np.dot`` inside ``@njit``), within ``case``'s group.

    An outside reference: numba_lstm's sequence kernels use their own tiles
    (only a step of more than 8 rows calls BLAS).  ``within`` names the
    group whose rounds this one ran among, for that group's "% of GEMM".
    """
    n = config.getoption("--bench-gemm-size")
    operands = _gemm_operands(n, case.dtype)
    _extra_info(
        benchmark, group=f"gemm {case.dtype}", workload="gemm", shape=[n, n, n], dtype=case.dtype,
        implementation=GEMM.name, position=case.position, baseline=False, repeat=case.repeat, flops=2 * n**3,
        sequence_steps=0, iterations=1, within=case.group,
    )  # fmt: skip
    _lead_in(config, _gemm, *operands)
    benchmark.pedantic(_gemm, operands, rounds=1, iterations=1)
