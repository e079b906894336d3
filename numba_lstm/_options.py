"""Compile options shared by every numba_lstm kernel (defined once, numbagg style).

* ``cache=True``: compiled machine code is stored beside the sources
  (``__pycache__``), or where Numba finds a writable folder, so that a
  second process loads it instead of compiling; ``False`` with a warning
  when there is none.
* ``nogil=True``: kernels release the GIL, so several Python threads can run
  forward and backward passes at once.
* ``fastmath={"contract"}``: only fused multiply-add contraction.  Full
  fastmath would assume no NaN/Inf and break NaN propagation and the
  saturation of the gate nonlinearities.
* ``error_model="numpy"``: no Python-style division checks inside loops (they
  block vectorisation).
"""

import warnings

import numba

from numba_lstm._threading import importer_stacklevel


def _numba_can_cache():
    """Whether Numba finds a folder for this package's cache: beside the
    sources, ``NUMBA_CACHE_DIR`` or the user's cache folder.  With none
    writable (a read-only site-packages and no writable home, as for some
    container users), ``cache=True`` made the import itself fail ("cannot
    cache function ...: no locator available"); the kernels then compile
    in every process instead, with a warning."""

    def probe():  # never called: decorating it finds a locator or raises
        pass

    try:
        numba.njit(cache=True)(probe)
    except RuntimeError as error:
        warnings.warn(
            f"numba_lstm: Numba has no folder to cache the compiled kernels in ({error}): every process "
            "compiles them again, about a minute for a first forward and backward. Set NUMBA_CACHE_DIR "
            "to a writable folder.",
            RuntimeWarning,
            stacklevel=importer_stacklevel(),
        )
        return False
    return True


#: Options of every serial kernel (the helpers that the sequence kernels call
#: inside and outside their parallel regions).
SERIAL = dict(cache=_numba_can_cache(), nogil=True, fastmath={"contract"}, error_model="numpy")

#: Options of the sequence kernels, whose per-step work is split between
#: threads (``numba.prange``); see ``numba_lstm._kernels``.
PARALLEL = dict(SERIAL, parallel=True)
