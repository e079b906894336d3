"""Compile options shared by every numba_lstm kernel (defined once, numbagg style).

* ``cache=True``: compiled machine code is stored beside the sources
  (``__pycache__``) so that a second process loads it instead of compiling.
* ``nogil=True``: kernels release the GIL, so several Python threads can run
  forward and backward passes at once.
* ``fastmath={"contract"}``: only fused multiply-add contraction.  Full
  fastmath would assume no NaN/Inf and break NaN propagation and the
  saturation of the gate nonlinearities.
* ``error_model="numpy"``: no Python-style division checks inside loops (they
  block vectorisation).
"""

#: Options of every serial kernel (the helpers that the sequence kernels call
#: inside and outside their parallel regions).
SERIAL = dict(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")

#: Options of the sequence kernels, whose per-step work is split between
#: threads (``numba.prange``); see ``numba_lstm._kernels``.
PARALLEL = dict(SERIAL, parallel=True)
