"""What every example shares: the command line, the training loop, progress bar, timing and the loss plot."""

import argparse
import importlib.util
import math
import pathlib
import time
from collections import namedtuple

import numpy as np

import numba_lstm
from numba_lstm.dense import Dense
from numba_lstm.losses import cross_entropy_backward, cross_entropy_forward, mse_backward, mse_forward
from numba_lstm.optim import clip_grad_norm, merge

OUTPUT_DIR = pathlib.Path(__file__).resolve().parent / "output"

#: The packages of the ``examples`` extra (pyproject.toml), by import name.
EXTRA = ("sklearn", "statsmodels", "tqdm", "matplotlib", "threadpoolctl")


def parser(name, description, *, epochs, hidden, batch, lr, seed=0):
    """An ``argparse`` parser with the options every example has.

    ``--quick`` is the small run of the test suite, ``--out`` the PNG of the
    loss curve.  ``epochs``, ``hidden``, ``batch`` and ``lr`` are the defaults
    of ``--epochs``, ``--hidden``, ``--batch`` and ``--lr``; each is a value,
    or a pair ``(full, quick)`` whose second value is the default with
    ``--quick`` (see ``option``).
    """
    p = argparse.ArgumentParser(prog=f"python -m examples.{name}", description=description)
    p.set_defaults(_quick_defaults={})
    p.add_argument("--quick", action="store_true", help="a small, fast run (the one the test suite runs)")
    option(p, "--epochs", epochs, "epochs")
    p.add_argument("--seed", type=non_negative_int, default=seed, help=f"random seed (default {seed})")
    p.add_argument(
        "--out",
        type=png_path,
        default=OUTPUT_DIR / f"{name}.png",
        help=f"where to save the loss curve, a .png file (default examples/output/{name}.png)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="BLAS threads, for the dense head's and NumPy's products (default 1: these matrices are small, "
        "and one thread does not take a core from Numba's threads)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    option(p, "--hidden", hidden, "hidden units")
    option(p, "--batch", batch, "batch size")
    option(p, "--lr", lr, "Adam learning rate", type=positive_float)
    return p


class UsageError(ValueError):
    """Options that cannot work together or with the data; ``run_example`` reports it as argparse does."""


def positive_int(text):
    """argparse type: an integer >= 1."""
    value = int(text)  # a ValueError is argparse's "invalid positive_int value"
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def positive_float(text):
    """argparse type: a finite number > 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def fraction(text):
    """argparse type: a number strictly between 0 and 1."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def png_path(text):
    """argparse type: a path ending in .png (matplotlib would add .png to a name without it)."""
    path = pathlib.Path(text)
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"must be a .png file, got {text}")
    return path


def option(p, flag, default, help, type=positive_int):
    """Add ``flag`` to ``p``; a ``default`` pair ``(full, quick)`` gives the quick run its own default."""
    if isinstance(default, tuple):
        full, quick = default
        p.add_argument(flag, type=type, default=None, help=f"{help} (default {full}, {quick} with --quick)")
        dest = flag.lstrip("-").replace("-", "_")
        p.set_defaults(_quick_defaults={**p.get_default("_quick_defaults"), dest: default})
    else:
        p.add_argument(flag, type=type, default=default, help=f"{help} (default {default})")


def parse(p, argv):
    """Parse ``argv``, filling the defaults that depend on ``--quick``."""
    args = p.parse_args(argv)
    for dest, (full, quick) in args._quick_defaults.items():
        if getattr(args, dest) is None:
            setattr(args, dest, quick if args.quick else full)
    return args


def run_example(p, run, argv):
    """Parse ``argv`` with the parser ``p``, then ``run(args)`` under the ``--threads`` BLAS limit;
    a ``UsageError`` from ``run`` exits as a bad option does (status 2, with the usage)."""
    args = parse(p, argv)
    missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        p.exit(
            1,
            f"{p.prog}: the examples need their extra: pip install -e '.[examples]' (missing: {', '.join(missing)})\n",
        )
    try:
        with blas_threads(args):
            return run(args)
    except UsageError as error:
        p.error(str(error))


def blas_threads(args):
    """A context in which BLAS (the dense head's products, the LSTM steps of more than 8 rows) uses ``--threads`` threads."""
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
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = figure(figsize=(6.4, 4.0))
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
    return path


def figure(figsize):
    """A matplotlib figure and its axes, drawn without pyplot: a caller's
    backend (a notebook's, say) stays as it was, and nothing stays open."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    return fig, fig.subplots()


Loss = namedtuple("Loss", "forward backward")
MSE = Loss(mse_forward, mse_backward)
CROSS_ENTROPY = Loss(cross_entropy_forward, cross_entropy_backward)


class SequenceModel:
    """An LSTM and a dense head: ``x (T, B, I) -> out (B, K)``, or ``(T, B, K)`` with ``every_step``.

    The head reads the LSTM's last step, or with ``every_step=True`` each of
    its steps.  ``params`` and ``grads`` merge both layers' dicts under the
    prefixes ``"lstm."`` and ``"head."`` (``numba_lstm.optim.merge``), so one
    optimizer trains both; the LSTM's initial-state gradients come along in
    ``grads`` and the optimizer ignores them.
    """

    def __init__(self, input_size, hidden_size, output_size, *, every_step=False, dtype="float32", seed=0):
        self.lstm = numba_lstm.LSTM(input_size, hidden_size, dtype=dtype, seed=seed)
        self.head = Dense(hidden_size, output_size, dtype=dtype, seed=seed + 1)
        self.every_step = every_step
        self.batch_axis = 1 if every_step else 0  # of the output (and the targets)
        self.params = merge({"lstm": self.lstm.params, "head": self.head.params})
        self._y_shape = None

    @property
    def grads(self):
        return merge({"lstm": self.lstm.grads, "head": self.head.grads})

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x, *, cache=True):
        """``cache=False``: inference, nothing kept for ``backward``."""
        y, _ = self.lstm(x, cache=cache)  # (T, B, H)
        self._y_shape = y.shape
        return self.head(y if self.every_step else y[-1])

    def backward(self, dout):
        if self.every_step:
            self.lstm.backward(self.head.backward(dout))
        else:
            dy = np.zeros(self._y_shape, self.lstm.dtype)  # only the last step feeds the head
            dy[-1] = self.head.backward(dout)
            self.lstm.backward(dy)

    def predict(self, x, batch_size=1024):
        """Forward in batches of ``batch_size`` sequences, with ``cache=False`` (nothing kept for a backward)."""
        return np.concatenate(
            [self.forward(x[:, i : i + batch_size], cache=False) for i in range(0, x.shape[1], batch_size)],
            axis=self.batch_axis,
        )


def train_epoch(model, opt, loss, x, target, *, batch, rng, max_norm, on_batch=None):
    """One pass over the training set in shuffled minibatches; return the mean loss per sequence.

    ``x`` is (T, N, I) and ``target`` has the N sequences on ``model.batch_axis``;
    ``loss`` is a ``Loss`` (``MSE``, ``CROSS_ENTROPY``).  Each minibatch runs
    forward, the loss, backward, clips the global gradient norm to
    ``max_norm`` and takes an optimizer step; ``on_batch(value)`` is then
    called with that minibatch's loss.
    """
    n = x.shape[1]
    order = rng.permutation(n)
    total = 0.0
    for start in range(0, n, batch):
        idx = order[start : start + batch]
        y = np.take(target, idx, axis=model.batch_axis)
        out = model(x[:, idx])
        value = loss.forward(out, y)
        model.backward(loss.backward(out, y))
        grads = model.grads
        clip_grad_norm(grads, max_norm, names=model.params)
        opt.step(grads)
        total += value * len(idx)
        if on_batch is not None:
            on_batch(value)
    return total / n
