"""Forecasting yearly sunspot numbers one year ahead.

statsmodels ships the yearly sunspot numbers 1700-2008 (309 values, nothing
is downloaded: ``statsmodels.api.datasets.sunspots``).  An LSTM reads the
previous ``--window`` years and a dense layer predicts the next one.  The
last fifth of the series (1947-2008) is held out; the figure is the root mean
squared error there against two baselines fitted on the same training years:
the naive forecast (next year = this year) and a linear autoregression on the
same window (least squares).  The last 15% of the training years serve as a
validation set: the weights kept are those of the epoch with the lowest
validation error (early stopping), so the held-out tail chooses nothing.

    python -m examples.sunspots            # the full run
    python -m examples.sunspots --quick    # the test suite's run
"""

import numpy as np

from examples._common import (
    MSE,
    SequenceModel,
    Stopwatch,
    UsageError,
    figure,
    fraction,
    option,
    parser,
    progress,
    run_example,
    save_curves,
    train_epoch,
)
from numba_lstm.optim import Adam


def load():
    """Years (309,) and yearly sunspot numbers (309,) as float64."""
    import statsmodels.api as sm

    data = sm.datasets.sunspots.load_pandas().data
    return data["YEAR"].to_numpy(np.float64), data["SUNACTIVITY"].to_numpy(np.float64)


def windows(series, window, targets):
    """For each target index t: the ``window`` values before it, time-major (window, n, 1)."""
    x = np.stack([series[t - window : t] for t in targets], axis=1)
    return x[:, :, None]


def rmse(pred, target):
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(target)) ** 2)))


def main(argv=None):
    p = parser(
        "sunspots",
        "Forecast yearly sunspot numbers one year ahead with an LSTM.",
        epochs=(200, 60),
        hidden=32,
        batch=16,
        lr=3e-3,
    )
    option(p, "--window", 20, "years the model reads")
    option(p, "--test-fraction", 0.2, "held-out tail", type=fraction)
    option(p, "--val-fraction", 0.15, "validation share of the training years", type=fraction)
    return run_example(p, run, argv)


def run(args):
    """Train and evaluate; return the figures as a dict."""
    L = args.window
    clock = Stopwatch()

    years, spots = load()
    n = len(spots)
    split = int(round(n * (1 - args.test_fraction)))  # first held-out index
    val_start = int(round(split * (1 - args.val_fraction)))
    train_t = np.arange(L, val_start)  # targets fitted by gradient descent
    val_t = np.arange(val_start, split)  # targets that choose the epoch
    test_t = np.arange(split, n)  # held-out targets (their inputs may reach back into earlier years)
    if min(len(train_t), len(val_t), len(test_t)) < 1:
        raise UsageError(
            f"--window {L}, --test-fraction {args.test_fraction} and --val-fraction {args.val_fraction} leave "
            f"{len(train_t)} training, {len(val_t)} validation and {len(test_t)} held-out targets "
            f"of the {n} years: each needs at least one"
        )
    mean, std = spots[:split].mean(), spots[:split].std()
    scaled = ((spots - mean) / std).astype(np.float32)
    x_train, y_train = windows(scaled, L, train_t), scaled[train_t, None]
    x_val, x_test = windows(scaled, L, val_t), windows(scaled, L, test_t)
    truth = spots[test_t]

    # Baselines, fitted on the training years only.
    naive = spots[test_t - 1]

    def design(t):  # the L previous values and a constant, for each target index t
        return np.column_stack([spots[t - k] for k in range(1, L + 1)] + [np.ones(len(t))])

    fit_t = np.arange(L, split)  # the linear model has no epochs to choose: it fits all training years
    coef, *_ = np.linalg.lstsq(design(fit_t), spots[fit_t], rcond=None)
    linear = design(test_t) @ coef

    rng = np.random.default_rng(args.seed)
    model = SequenceModel(1, args.hidden, 1, seed=args.seed)
    opt = Adam(model.params, lr=args.lr)
    unscale = lambda z: z[:, 0].astype(np.float64) * std + mean  # noqa: E731
    epochs, train_losses, val_rmses, test_rmses = [], [], [], []
    best = (np.inf, 0, None)  # validation RMSE, epoch, copy of the parameters
    bar = progress(range(args.epochs), args, desc="sunspots", unit="epoch")
    for epoch in bar:
        mse = train_epoch(model, opt, MSE, x_train, y_train, batch=args.batch, rng=rng, max_norm=1.0)
        epochs.append(epoch + 1)
        train_losses.append(np.sqrt(mse) * std)  # RMSE in sunspot units
        val_rmses.append(rmse(unscale(model.predict(x_val)), spots[val_t]))
        test_rmses.append(rmse(unscale(model.predict(x_test)), truth))  # plotted, never used to choose
        if val_rmses[-1] < best[0]:
            best = (val_rmses[-1], epoch + 1, {name: p.copy() for name, p in model.params.items()})
        bar.set_postfix(train=f"{train_losses[-1]:.1f}", val=f"{val_rmses[-1]:.1f}", refresh=False)
    if best[2] is None:  # no epoch's validation RMSE was a number below inf
        raise SystemExit(
            f"sunspots: training diverged at --lr {args.lr}: no epoch had a finite validation RMSE"
        )
    for name, p in model.params.items():  # early stopping: back to the best validation epoch
        p[...] = best[2][name]
    seconds, cpu_seconds = clock(), clock.cpu()

    forecast = unscale(model.predict(x_test))
    result = {
        "test_rmse": rmse(forecast, truth),
        "naive_rmse": rmse(naive, truth),
        "linear_rmse": rmse(linear, truth),
        "test_mae": float(np.mean(np.abs(forecast - truth))),
        "naive_mae": float(np.mean(np.abs(naive - truth))),
        "best_epoch": best[1],
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }
    save_curves(
        args.out,
        {
            "training RMSE": (epochs, train_losses),
            f"validation RMSE ({years[val_start]:.0f}-{years[split - 1]:.0f})": (epochs, val_rmses),
            f"held-out RMSE ({years[split]:.0f}-{years[-1]:.0f})": (epochs, test_rmses),
        },
        f"Sunspots one year ahead, window {L}, H = {args.hidden}",
        ylabel="root mean squared error (sunspot number)",
        logy=False,
        vlines={f"epoch kept (best validation, {best[1]})": best[1]},
        hlines={
            f"naive last value ({result['naive_rmse']:.1f})": result["naive_rmse"],
            f"linear AR({L}) ({result['linear_rmse']:.1f})": result["linear_rmse"],
        },
    )
    _save_forecast(args.out, years[test_t], truth, forecast, naive)
    print(
        f"sunspots {years[split]:.0f}-{years[-1]:.0f} one year ahead: LSTM RMSE {result['test_rmse']:.1f} "
        f"(MAE {result['test_mae']:.1f}), naive last value {result['naive_rmse']:.1f} "
        f"(MAE {result['naive_mae']:.1f}), linear AR({L}) {result['linear_rmse']:.1f}; "
        f"{result['test_rmse'] / result['naive_rmse']:.2f}x the naive error, "
        f"in {seconds:.1f} s wall time ({cpu_seconds:.1f} s CPU); "
        f"weights of epoch {best[1]} of {args.epochs} (best validation), {len(train_t)} training windows; "
        f"loss curve in {args.out}"
    )
    return result


def _save_forecast(out, years, truth, forecast, naive):
    """A second PNG beside the loss curve: the held-out years, forecast against truth."""
    fig, ax = figure(figsize=(6.4, 3.2))
    ax.plot(years, truth, "k-", label="observed")
    ax.plot(years, forecast, "C0-", label="LSTM, one year ahead")
    ax.plot(years, naive, "C1:", label="naive last value")
    ax.set_xlabel("year")
    ax.set_ylabel("sunspot number")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_name(out.stem + "_forecast.png"))


if __name__ == "__main__":
    main()
