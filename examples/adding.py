"""The adding problem (Hochreiter & Schmidhuber, 1997) with T = 100 steps.

Each input step carries two numbers: a value drawn uniformly from [0, 1] and
a marker that is 1 at exactly two steps (one in each half of the sequence)
and 0 elsewhere.  The target is the sum of the two marked values.  Always
answering 1 (the mean of the target) scores a mean squared error of
Var(U + U') = 2/12 = 0.167; a model has solved the task when its error falls
well below that, here below 0.01 on sequences it never saw.

    python -m examples.adding            # T = 100, the full run
    python -m examples.adding --quick    # T = 30, the test suite's run
"""

import numpy as np

from examples._common import (
    MSE,
    SequenceModel,
    Stopwatch,
    UsageError,
    option,
    parser,
    progress,
    run_example,
    save_curves,
    train_epoch,
)
from numba_lstm.losses import mse_forward
from numba_lstm.optim import Adam

BASELINE = 2 / 12  # error of the best constant guess, 1


def make_data(n, T, rng, dtype=np.float32):
    """``n`` adding-problem sequences: x (T, n, 2), target (n, 1)."""
    x = np.zeros((T, n, 2), dtype)
    x[:, :, 0] = rng.uniform(0.0, 1.0, (T, n))
    rows = np.arange(n)
    first = rng.integers(0, T // 2, n)
    second = rng.integers(T // 2, T, n)
    x[first, rows, 1] = 1
    x[second, rows, 1] = 1
    target = (x[first, rows, 0] + x[second, rows, 0])[:, None]
    return x, target


def main(argv=None):
    p = parser(
        "adding",
        "Train an LSTM on the adding problem.",
        epochs=12,
        hidden=(64, 32),
        batch=64,
        lr=(0.01, 0.02),
    )
    option(p, "--length", (100, 30), "sequence length T")
    option(p, "--train", (10000, 4000), "training sequences")
    return run_example(p, run, argv)


def run(args):
    """Train and evaluate; return the figures as a dict."""
    T, H, n_train, n_test = args.length, args.hidden, args.train, 1000
    if T < 2:
        raise UsageError(f"--length must be at least 2 (one marker in each half of a sequence), got {T}")
    clock = Stopwatch()

    rng = np.random.default_rng(args.seed)
    x_train, y_train = make_data(n_train, T, rng)
    x_test, y_test = make_data(n_test, T, rng)
    model = SequenceModel(2, H, 1, seed=args.seed)
    opt = Adam(model.params, lr=args.lr)

    batch_losses, test_epochs, test_errors = [], [0], [mse_forward(model.predict(x_test), y_test)]
    per_epoch = -(-n_train // args.batch)
    bar = progress(range(args.epochs * per_epoch), args, desc=f"adding T={T}", unit="batch")

    def batch_done(loss):  # a progress bar by the batch: an epoch takes a while at T = 100
        batch_losses.append(loss)
        bar.update()
        bar.set_postfix(loss=f"{loss:.4f}", test=f"{test_errors[-1]:.4f}", refresh=False)

    for epoch in range(args.epochs):
        train_epoch(
            model, opt, MSE, x_train, y_train, batch=args.batch, rng=rng, max_norm=1.0, on_batch=batch_done
        )
        test_epochs.append(epoch + 1)
        test_errors.append(mse_forward(model.predict(x_test), y_test))
    bar.close()
    steps = np.arange(1, len(batch_losses) + 1) / per_epoch  # in epochs
    seconds, cpu_seconds = clock(), clock.cpu()

    save_curves(
        args.out,
        {"training batch MSE": (steps, batch_losses), "held-out MSE": (test_epochs, test_errors)},
        f"Adding problem, T = {T}, H = {H}",
        ylabel="mean squared error",
        hlines={"best constant guess (0.167)": BASELINE, "solved (0.01)": 0.01},
    )
    result = {
        "test_mse": test_errors[-1],
        "baseline_mse": BASELINE,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "T": T,
    }
    print(
        f"adding problem T={T}: held-out MSE {result['test_mse']:.4f} "
        f"(best constant guess {BASELINE:.3f}) in {seconds:.1f} s wall time ({cpu_seconds:.1f} s CPU); "
        f"{args.epochs} epochs of {n_train} sequences; loss curve in {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
