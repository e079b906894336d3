"""What every example shares: the command line, the progress bar, timing and the loss plot."""

import argparse
import pathlib
import time

import numpy as np

import numba_lstm
from numba_lstm.dense import Dense
from numba_lstm.optim import merge

OUTPUT_DIR = pathlib.Path(__file__).resolve().parent / "output"


def parser(name, description, epochs, quick_epochs, seed=0):
    """An ``argparse`` parser with the options every example has.

    ``--quick`` is the small run of the test suite, ``--epochs`` overrides the
    number of epochs (``epochs`` for a full run, ``quick_epochs`` with
    ``--quick``), ``--out`` is the PNG of the loss curve.
    """
    p = argparse.ArgumentParser(prog=f"python -m examples.{name}", description=description)
    p.add_argument("--quick", action="store_true", help="a small, fast run (the one the test suite runs)")
    p.add_argument(
        "--epochs", type=int, default=None, help=f"epochs (default {epochs}, {quick_epochs} with --quick)"
    )
    p.add_argument("--seed", type=int, default=seed, help=f"random seed (default {seed})")
    p.add_argument(
        "--out",
        type=pathlib.Path,
        default=OUTPUT_DIR / f"{name}.png",
        help=f"where to save the loss curve (default examples/output/{name}.png)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS threads (default 1: these matrices are small, one thread does not fight other processes)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(_epochs=(epochs, quick_epochs))
    return p


def parse(p, argv):
    args = p.parse_args(argv)
    full, quick = args._epochs
    if args.epochs is None:
        args.epochs = quick if args.quick else full
    if args.epochs < 1:
        p.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    return args


def blas_threads(args):
    """A context in which BLAS (the GEMMs inside the LSTM kernels) uses ``--threads`` threads."""
    import scipy.linalg.cython_blas  # noqa: F401  (load the OpenBLAS Numba calls, so that it is limited too)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=args.threads, user_api="blas")


def progress(iterable, args, **kwargs):
    """``tqdm`` over ``iterable`` unless ``--no-progress``."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=args.no_progress, dynamic_ncols=True, **kwargs)


class Stopwatch:
    """Wall time since creation, in seconds; ``cpu()`` is this process's CPU time (all threads)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.start_cpu = time.process_time()

    def __call__(self):
        return time.perf_counter() - self.start

    def cpu(self):
        return time.process_time() - self.start_cpu


def save_curves(path, curves, title, xlabel="epoch", ylabel="loss", logy=True, hlines=None, vlines=None):
    """Plot ``curves`` (label -> (x, y)) and optional ``hlines`` (label -> y), ``vlines`` (label -> x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, (x, y) in curves.items():
        ax.plot(x, y, label=label)
    for k, (label, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, linestyle=("--", ":", "-.")[k % 3], color="gray", linewidth=1, label=label)
    for label, x in (vlines or {}).items():
        ax.axvline(x, color="black", linewidth=0.8, alpha=0.5, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


class SequenceModel:
    """An LSTM read at its last step by a dense layer: ``x (T, B, I) -> out (B, K)``.

    ``params`` and ``grads`` merge both layers' dicts under the prefixes
    ``"lstm."`` and ``"head."`` (``numba_lstm.optim.merge``), so one optimizer
    trains both; the LSTM's initial-state gradients come along in ``grads``
    and the optimizer ignores them.
    """

    def __init__(self, input_size, hidden_size, output_size, *, dtype="float32", seed=0):
        self.lstm = numba_lstm.LSTM(input_size, hidden_size, dtype=dtype, seed=seed)
        self.head = Dense(hidden_size, output_size, dtype=dtype, seed=seed + 1)
        self.params = merge({"lstm": self.lstm.params, "head": self.head.params})
        self._y_shape = None

    @property
    def grads(self):
        return merge({"lstm": self.lstm.grads, "head": self.head.grads})

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        y, _ = self.lstm(x)  # (T, B, H)
        self._y_shape = y.shape
        return self.head(y[-1])  # (B, K)

    def backward(self, dout):
        dy = np.zeros(self._y_shape, self.lstm.dtype)  # only the last step feeds the head
        dy[-1] = self.head.backward(dout)
        self.lstm.backward(dy)

    def predict(self, x, batch_size=1024):
        """Forward in batches of ``batch_size`` sequences (no gradients kept)."""
        return np.concatenate(
            [self.forward(x[:, i : i + batch_size]) for i in range(0, x.shape[1], batch_size)]
        )
