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

from examples._common import SequenceModel, Stopwatch, blas_threads, parse, parser, progress, save_curves
from numba_lstm.losses import mse_backward, mse_forward
from numba_lstm.optim import Adam, clip_grad_norm

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
    p = _parser()
    args = parse(p, argv)
    with blas_threads(args):
        return run(args)


def _parser():
    p = parser("adding", "Train an LSTM on the adding problem.", epochs=12, quick_epochs=12)
    p.add_argument(
        "--length", type=int, default=None, help="sequence length T (default 100, 30 with --quick)"
    )
    p.add_argument("--hidden", type=int, default=None, help="hidden units (default 64, 32 with --quick)")
    p.add_argument(
        "--train", type=int, default=None, help="training sequences (default 10000, 4000 with --quick)"
    )
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    p.add_argument(
        "--lr", type=float, default=None, help="Adam learning rate (default 0.01, 0.02 with --quick)"
    )
    return p


def run(args):
    """Train and evaluate; return the figures as a dict."""
    T = args.length or (30 if args.quick else 100)
    H = args.hidden or (32 if args.quick else 64)
    n_train = args.train or (4000 if args.quick else 10000)
    lr = args.lr or (0.02 if args.quick else 0.01)
    n_test = 1000
    clock = Stopwatch()

    rng = np.random.default_rng(args.seed)
    x_train, y_train = make_data(n_train, T, rng)
    x_test, y_test = make_data(n_test, T, rng)
    model = SequenceModel(2, H, 1, seed=args.seed)
    opt = Adam(model.params, lr=lr)

    steps, batch_losses, test_epochs, test_errors = [], [], [0], [mse_forward(model.predict(x_test), y_test)]
    per_epoch = -(-n_train // args.batch)
    bar = progress(range(args.epochs * per_epoch), args, desc=f"adding T={T}", unit="batch")
    for epoch in range(args.epochs):
        order = rng.permutation(n_train)
        for k in range(per_epoch):
            idx = order[k * args.batch : (k + 1) * args.batch]
            x, y = x_train[:, idx], y_train[idx]
            pred = model(x)
            batch_losses.append(mse_forward(pred, y))
            steps.append(epoch + (k + 1) / per_epoch)
            model.backward(mse_backward(pred, y))
            grads = model.grads
            clip_grad_norm(grads, 1.0, names=model.params)
            opt.step(grads)
            bar.update()
            bar.set_postfix(loss=f"{batch_losses[-1]:.4f}", test=f"{test_errors[-1]:.4f}", refresh=False)
        test_epochs.append(epoch + 1)
        test_errors.append(mse_forward(model.predict(x_test), y_test))
    bar.close()
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
