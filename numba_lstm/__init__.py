"""numba_lstm: a CPU LSTM engine built on Numba."""

from numba_lstm._threading import launch_threads as _launch_threads
from numba_lstm._threading import preload_tbb as _preload_tbb
from numba_lstm._threading import warn_if_started_without_tbb as _warn_if_started_without_tbb

_warn_if_started_without_tbb(_preload_tbb())
_launch_threads()

from numba_lstm import losses, optim  # noqa: E402
from numba_lstm.dense import Dense  # noqa: E402
from numba_lstm.functional import LSTMCache, LSTMGrads, LSTMProjGrads, lstm_backward, lstm_forward  # noqa: E402
from numba_lstm.gates import split_gates  # noqa: E402
from numba_lstm.layer import LSTM  # noqa: E402

__all__ = [
    "Dense",
    "LSTM",
    "LSTMCache",
    "LSTMGrads",
    "LSTMProjGrads",
    "losses",
    "lstm_backward",
    "lstm_forward",
    "optim",
    "split_gates",
]
__version__ = "0.1.0"
