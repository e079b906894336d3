"""Counters that the threads of one parallel region share, for jitted code.

A sequence kernel opens one parallel region for the whole sequence instead of
one per step (a TBB region costs a few microseconds to start, about a step's
work at B = 1).  Inside it the threads hand out each step's work through two
int64 words per phase of a step (phase k uses ``sync[2k]`` and ``sync[2k +
1]`` of an array of zeros):

* the taken shares, as bits: a thread takes share ``q = claim(sync, k,
  shares, first)`` while it is not -1, and computes it.  Worker ``w`` (its
  ``prange`` index) of ``workers`` asks first for ``first = home(w,
  workers, shares)``, the start of its own contiguous block of shares, and
  then for the ones after it, so that, when the threads keep pace, each
  computes the same rows or units at every step and finds their state (c,
  dc, h, the input projection in ``z``) in its own core's cache; a thread that
  arrives late finds the end of its block taken by one that ran out of
  work, and takes what is left;
* the done counter: it then calls ``finish(sync, k)``, and every thread
  calls ``wait_for(sync, k, shares)`` before it reads what the phase wrote.

A thread waits only for shares that another thread has already taken and is
computing, never for a share nobody took, so the region finishes whatever the
threading layer does with its iterations: if one thread runs them all, one
after the other, the first takes every share and the rest find them done.

With a counter handing out shares in order of arrival instead, the two
threads of a B = 1 backward swapped shares at 55% of the steps
(bench/NOTES.md, "Session 12").

The fetch-or and the fetch-add are sequentially consistent and the wait
reads with acquire ordering, so everything a share wrote before its
``done`` increment is visible to the threads that saw the count.  After
``SPIN_LIMIT`` reads a waiting thread gives up its core on every further
read (``sched_yield``), so that a thread descheduled in the middle of a
share gets it back when there are more threads than cores.
"""

import sys

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from numba_lstm._options import SERIAL

#: Shares one phase can have: the shares taken are the bits of one int64.
MAX_SHARES = 63

#: Reads of a counter before a waiting thread starts yielding its core
#: (about 10-20 microseconds of spinning).
SPIN_LIMIT = 2000

_YIELD = "SwitchToThread" if sys.platform == "win32" else "sched_yield"


def _element_pointer(context, builder, array_type, array, index):
    ary = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, ary, [index])


@intrinsic
def fetch_add(typingctx, counters, index, value):
    """``counters[index] += value`` atomically; returns the value before."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64 and counters.ndim == 1):
        return None
    sig = types.int64(counters, index, types.int64)

    def codegen(context, builder, sig, args):
        counters, index, value = args
        pointer = _element_pointer(context, builder, sig.args[0], counters, index)
        return builder.atomic_rmw("add", pointer, value, "seq_cst")

    return sig, codegen


@intrinsic
def fetch_or(typingctx, counters, index, value):
    """``counters[index] |= value`` atomically; returns the value before."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64 and counters.ndim == 1):
        return None
    sig = types.int64(counters, index, types.int64)

    def codegen(context, builder, sig, args):
        counters, index, value = args
        pointer = _element_pointer(context, builder, sig.args[0], counters, index)
        return builder.atomic_rmw("or", pointer, value, "seq_cst")

    return sig, codegen


@intrinsic
def load_acquire(typingctx, counters, index):
    """``counters[index]``, read atomically with acquire ordering."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64 and counters.ndim == 1):
        return None
    sig = types.int64(counters, index)

    def codegen(context, builder, sig, args):
        counters, index = args
        pointer = _element_pointer(context, builder, sig.args[0], counters, index)
        return builder.load_atomic(pointer, "acquire", 8)

    return sig, codegen


@intrinsic
def yield_core(typingctx):
    """Let the operating system run another thread on this core."""
    sig = types.int32()

    def codegen(context, builder, sig, args):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), _YIELD)
        return builder.call(function, [])

    return sig, codegen


@intrinsic
def thread_count(typingctx):
    """``numba.get_num_threads()`` for jitted code that Numba can cache.

    Numba's own jitted ``get_num_threads`` calls the threading layer through
    a ctypes pointer, and a function that holds one is never cached ("uses
    dynamic globals").  This calls the layer's ``get_num_threads`` by its
    symbol, as Numba's parallel regions do; numba_lstm starts the layer at
    import (``numba_lstm._threading``), so the symbol is always there.
    """
    sig = types.intp()

    def codegen(context, builder, sig, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(cgutils.intp_t, []), "get_num_threads"
        )
        return builder.call(function, [])

    return sig, codegen


@numba.njit(**SERIAL)
def counters(phases):
    """The zeroed ``sync`` array of a region with ``phases`` phases (two counters each)."""
    return np.zeros(2 * phases, np.int64)


@numba.njit(**SERIAL)
def reset(sync):
    """Zero ``sync`` again for a new region, in a loop: ``sync[:] = 0`` in a
    parallel function is a parallel region of its own, and Numba's launcher
    of a region takes the GIL, waiting for any Python thread that holds it
    (bench/NOTES.md, "Session 45")."""
    for i in range(sync.size):
        sync[i] = 0


@numba.njit(**SERIAL)
def claim(sync, phase, shares, first):
    """A share of ``phase`` that no thread has taken, or -1 when all are taken.

    The shares taken are the bits of ``sync[2 * phase]``; the search starts
    at share ``first % shares`` and goes on with the ones after it.
    """
    taken = load_acquire(sync, 2 * phase)
    for k in range(shares):
        q = (first + k) % shares
        bit = np.int64(1) << q
        if taken & bit == 0:
            taken = fetch_or(sync, 2 * phase, bit)
            if taken & bit == 0:
                return q
    return -1


@numba.njit(**SERIAL)
def home(worker, workers, shares):
    """The share that ``worker`` of ``workers`` asks for first: the start of
    its own block of the ``shares`` (contiguous blocks, in worker order)."""
    return worker * shares // workers


@numba.njit(**SERIAL)
def finish(sync, phase):
    """Count one share of ``phase`` as done (``sync[2 * phase + 1]``)."""
    fetch_add(sync, 2 * phase + 1, 1)


@numba.njit(**SERIAL)
def is_done(sync, phase, shares):
    """Whether all ``shares`` of ``phase`` are done (``finish`` counted them)."""
    return load_acquire(sync, 2 * phase + 1) >= shares


@numba.njit(**SERIAL)
def pause(spins):
    """One more read of a counter by a waiting thread, ``spins`` so far: from
    SPIN_LIMIT on it gives up its core first.  Returns the new count."""
    if spins >= SPIN_LIMIT:
        yield_core()
    return spins + 1


@numba.njit(**SERIAL)
def wait_for(sync, phase, shares):
    """Return once all ``shares`` of ``phase`` are done."""
    spins = np.int64(0)  # not a literal, which would compile pause once more
    while not is_done(sync, phase, shares):
        spins = pause(spins)
