"""Sequential digits: classify 8x8 handwritten digits read one row per time step.

scikit-learn ships the UCI digits (1797 images of 8x8 pixels, 10 classes)
inside the package (``sklearn.datasets.load_digits``, nothing is downloaded).
Each image is read as a sequence of T = 8 rows of I = 8 pixels; an LSTM reads
the rows and a dense layer turns its last hidden state into 10 class scores,
trained with softmax cross-entropy and Adam.  A stratified quarter of the
images is held out for the reported accuracy.

    python -m examples.digits            # the full run
    python -m examples.digits --quick    # the test suite's run
"""

import numpy as np

from examples._common import (
    CROSS_ENTROPY,
    SequenceModel,
    Stopwatch,
    parser,
    progress,
    run_example,
    save_curves,
    train_epoch,
)
from numba_lstm.losses import cross_entropy_forward
from numba_lstm.optim import Adam


def load(seed):
    """Train and held-out splits: x (8, N, 8) time-major float32 in [0, 1], labels (N,)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    images = (images / 16.0).astype(np.float32).reshape(-1, 8, 8)  # (N, rows = T, pixels = I)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=seed
    )
    as_sequences = lambda a: np.ascontiguousarray(a.transpose(1, 0, 2))  # noqa: E731  (N, T, I) -> (T, N, I)
    return as_sequences(x_train), y_train, as_sequences(x_test), y_test


def accuracy(model, x, labels):
    return float(np.mean(model.predict(x).argmax(axis=1) == labels))


def main(argv=None):
    p = parser(
        "digits",
        "Classify scikit-learn's 8x8 digits, read row by row, with an LSTM.",
        epochs=(30, 6),
        hidden=(128, 64),
        batch=32,
        lr=5e-3,
    )
    return run_example(p, run, argv)


def run(args):
    """Train and evaluate; return the figures as a dict."""
    H = args.hidden
    clock = Stopwatch()

    x_train, y_train, x_test, y_test = load(args.seed)
    rng = np.random.default_rng(args.seed)
    model = SequenceModel(8, H, 10, seed=args.seed)
    opt = Adam(model.params, lr=args.lr)

    epochs, train_losses, test_losses, test_accuracies = [], [], [], []
    bar = progress(range(args.epochs), args, desc="digits", unit="epoch")
    for epoch in bar:
        loss = train_epoch(
            model, opt, CROSS_ENTROPY, x_train, y_train, batch=args.batch, rng=rng, max_norm=5.0
        )
        epochs.append(epoch + 1)
        train_losses.append(loss)
        test_losses.append(cross_entropy_forward(model.predict(x_test), y_test))
        test_accuracies.append(accuracy(model, x_test, y_test))
        bar.set_postfix(loss=f"{train_losses[-1]:.3f}", test_acc=f"{test_accuracies[-1]:.3f}", refresh=False)
    seconds, cpu_seconds = clock(), clock.cpu()

    save_curves(
        args.out,
        {"training cross-entropy": (epochs, train_losses), "held-out cross-entropy": (epochs, test_losses)},
        f"Digits as 8 steps of 8 pixels, H = {H}: {test_accuracies[-1]:.1%} held-out accuracy",
        ylabel="cross-entropy",
    )
    result = {
        "test_accuracy": test_accuracies[-1],
        "test_loss": test_losses[-1],
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }
    print(
        f"sequential digits: held-out accuracy {result['test_accuracy']:.2%} on {len(y_test)} images "
        f"(cross-entropy {result['test_loss']:.3f}) in {seconds:.1f} s wall time ({cpu_seconds:.1f} s CPU); "
        f"{args.epochs} epochs of {len(y_train)} images; loss curve in {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
