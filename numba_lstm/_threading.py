"""Choose Numba's threading layer before the first parallel kernel runs.

numba_lstm uses Intel TBB as Numba's threading layer, for two reasons measured
on the development machine (tests/test_reliability.py checks both):

* ``omp`` (GNU OpenMP) makes a ``multiprocessing`` child forked after a
  parallel call die ("fork() called from a process already using GNU OpenMP");
* ``workqueue`` is not safe for concurrent calls from several Python threads.

The PyPI ``tbb`` wheel installs ``libtbb.so.12`` into ``<prefix>/lib``, which
the dynamic loader does not search, so Numba would report "No threading layer
could be loaded".  Loading the library once with ``RTLD_GLOBAL`` makes it
visible to Numba's ``tbbpool`` extension.  Numba's default priority list
already prefers ``tbb`` when it loads, so nothing else is changed: a user who
sets ``NUMBA_THREADING_LAYER`` (or ``numba.config.THREADING_LAYER``) keeps
their choice.
"""

import ctypes
import importlib
import os
import site
import sys
import warnings

import numba
import numba.np.ufunc.parallel

_TBB_SONAME = "libtbb.so.12"
#: Numba's own order of threading layers (``NUMBA_THREADING_LAYER_PRIORITY`` unset).
_NUMBAS_ORDER = ["tbb", "omp", "workqueue"]


def _candidate_dirs():
    """The ``lib`` folders where pip puts a wheel's data files: the
    environment's, and the user base's for ``pip install --user``."""
    seen = []
    user = (site.getuserbase(),) if site.ENABLE_USER_SITE else ()  # not in a venv, nor with -s
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix, *user):
        path = os.path.join(prefix, "lib")
        if path not in seen:
            seen.append(path)
    return seen


def preload_tbb():
    """Load ``libtbb.so.12`` globally if the ``tbb`` wheel installed it.

    Returns the path that was loaded, or None when no library was found (Numba
    then falls back to its next threading layer, see ``threading_layer()``).
    """
    if not sys.platform.startswith("linux"):
        return None
    for folder in _candidate_dirs():
        path = os.path.join(folder, _TBB_SONAME)
        if os.path.exists(path):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                return None
            return path
    return None


def launch_threads():
    """Start Numba's threading layer now rather than at the first parallel call.

    ``numba_lstm.jit.forward`` runs the parallel sequence kernel from inside
    jitted code.  When such a caller is loaded from Numba's on-disk cache,
    Numba does not start the threading layer for the parallel function it
    calls (numba/numba#8578), and the call crashed the process: a segfault,
    or "LLVM ERROR: Symbol not found: allocate_sched" from a user's cached
    function (``tests/test_cache.py``).  Starting the layer at import, as
    the issue's maintainers suggest, leaves nothing to start later.  It
    costs a few milliseconds (8 ms here), and the layer is the one a first
    parallel call would have chosen (``NUMBA_THREADING_LAYER`` is still
    respected).
    """
    numba.np.ufunc.parallel._launch_threads()


def importer_stacklevel():
    """The ``stacklevel`` of an import-time warning given by the caller that points at the
    first frame outside this package and importlib: the user's import line
    (or ``importlib.import_module`` call), however deep in the package's own
    imports this module was first imported.  ``warnings`` steps over
    importlib's ``_bootstrap`` frames itself, so they are not counted; those
    of ``importlib/__init__.py`` (``import_module``) are."""
    inside = (
        os.path.dirname(os.path.abspath(__file__)) + os.sep,
        os.path.dirname(os.path.abspath(importlib.__file__)) + os.sep,
    )
    level, frame = 1, sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if not ("importlib" in name and "_bootstrap" in name):
            level += 1
            if not os.path.abspath(name).startswith(inside):
                break
        frame = frame.f_back
    return level


def warn_if_started_without_tbb(tbb_path):
    """Warn when Numba's threads were started before ``import numba_lstm``
    with another layer than TBB, though ``preload_tbb`` found TBB
    (``tbb_path``) and the user chose no layer nor order of layers.

    Numba picks its threading layer once, when its threads first start:
    ``numba.set_num_threads``, ``numba.get_num_threads`` or a parallel call
    before the import start them before ``preload_tbb`` could make TBB
    loadable, and Numba falls back to the next layer it can load without a
    word.  Call before ``preload_tbb``'s load can change the answer of
    ``numba.threading_layer()``: that is, first.
    """
    if tbb_path is None or not numba.np.ufunc.parallel._is_initialized:
        return
    layer = numba.threading_layer()
    config = numba.config
    chosen = config.THREADING_LAYER != "default" or config.THREADING_LAYER_PRIORITY != _NUMBAS_ORDER
    if layer != "tbb" and not chosen:
        risk = {
            "omp": "a process forked after a parallel call may be killed (GNU OpenMP)",
            "workqueue": "concurrent calls from Python threads are not safe with it",
        }.get(layer, "numba_lstm is tested with TBB")
        warnings.warn(
            f"Numba's threads were started before numba_lstm was imported, with the {layer!r} threading "
            f"layer, not TBB: {risk}. Only importing numba_lstm before numba.set_num_threads, "
            "numba.get_num_threads or a parallel function gets TBB (it makes the tbb package's library "
            "loadable); to keep this layer knowingly, set NUMBA_THREADING_LAYER to it.",
            RuntimeWarning,
            stacklevel=importer_stacklevel(),
        )
