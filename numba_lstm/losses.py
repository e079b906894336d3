"""The two standard losses, each a ``*_forward`` / ``*_backward`` pair.

Both average over the batch as PyTorch's default ``reduction="mean"`` does:

- ``mse_forward(pred, target)``: mean of ``(pred - target)**2`` over every
  element (``torch.nn.functional.mse_loss``).
- ``cross_entropy_forward(logits, labels)``: mean over the N rows of
  ``-log softmax(logits)[n, labels[n]]`` with integer labels
  (``torch.nn.functional.cross_entropy``), through a log-softmax that
  subtracts the row maximum first, so huge logits neither overflow nor lose
  the gradient.

The forwards return the loss as a Python float and the backwards the gradient
with respect to ``pred`` / ``logits``, in their dtype.
"""

import numpy as np

from numba_lstm._validation import as_plain_float_array, check_shape, refuse_masked

__all__ = [
    "cross_entropy_backward",
    "cross_entropy_forward",
    "log_softmax",
    "mse_backward",
    "mse_forward",
    "softmax",
]


def _check_pair(pred, target):
    pred = as_plain_float_array("pred", pred)
    target = as_plain_float_array("target", target, pred.dtype, "pred")
    check_shape("target", target, pred.shape, "(the shape of pred)")
    if pred.size == 0:
        raise ValueError(f"pred must not be empty, got shape {pred.shape}")
    return pred, target


def mse_forward(pred, target):
    """Mean squared error ``mean((pred - target)**2)``.

    Parameters
    ----------
    pred, target : ndarray, same shape and dtype (float32 or float64)

    Returns
    -------
    float
    """
    pred, target = _check_pair(pred, target)
    # Squared and summed in float64, as cross_entropy_forward's mean: a
    # float32 dot product lost 4 digits over 16M elements.
    return float(np.square(pred - target, dtype=np.float64).mean())


def mse_backward(pred, target):
    """Gradient of ``mse_forward`` with respect to ``pred``: ``2 (pred - target) / size``."""
    pred, target = _check_pair(pred, target)
    return np.asarray((pred - target) * pred.dtype.type(2.0 / pred.size))  # an array for 0-d pred too


def log_softmax(logits):
    """Numerically stable ``log softmax`` over the last axis (the row maximum is subtracted first)."""
    logits = as_plain_float_array("logits", logits)
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise ValueError(
            f"logits must have at least one class on its last axis (..., C) with C >= 1, got shape {logits.shape}"
        )
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits):
    """``softmax`` over the last axis, as ``exp(log_softmax(logits))``."""
    return np.exp(log_softmax(logits))


def _check_labels(logits, labels):
    logits = as_plain_float_array("logits", logits)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"logits must be 2-D (N, C) with N, C >= 1, got shape {logits.shape}")
    N, C = logits.shape
    # A masked array's min and max skip the masked labels, while indexing reads what lies under the mask.
    refuse_masked("labels", labels)
    if not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer):
        if isinstance(labels, np.ndarray):
            what = f"dtype {labels.dtype}"
        elif isinstance(labels, np.generic):  # "got int64" read as an integer dtype, which is taken
            what = f"a NumPy scalar {labels!r}; pass an array of shape ({N},)"
        else:
            what = type(labels).__name__
        raise TypeError(f"labels must be a numpy array of integers (class indices), got {what}")
    check_shape("labels", labels, (N,), "(N,), one class index per row of logits")
    if labels.min() < 0 or labels.max() >= C:
        raise ValueError(
            f"labels must be class indices in [0, {C}) for logits with C = {C} columns, "
            f"got values from {labels.min()} to {labels.max()}"
        )
    return logits, labels


def cross_entropy_forward(logits, labels):
    """Softmax cross-entropy with integer labels, averaged over the rows.

    Parameters
    ----------
    logits : ndarray, shape (N, C), float32 or float64
        Unnormalised class scores.
    labels : ndarray of integers, shape (N,)
        Class index of each row, in ``[0, C)``.

    Returns
    -------
    float
        ``-mean_n log softmax(logits)[n, labels[n]]``.
    """
    logits, labels = _check_labels(logits, labels)
    logp = log_softmax(logits)
    return 0.0 - float(
        logp[np.arange(len(labels)), labels].mean(dtype=np.float64)
    )  # +0.0 for C = 1, as torch


def cross_entropy_backward(logits, labels):
    """Gradient of ``cross_entropy_forward``: ``(softmax(logits) - onehot(labels)) / N``."""
    logits, labels = _check_labels(logits, labels)
    N = len(labels)
    dlogits = softmax(logits)
    dlogits[np.arange(N), labels] -= 1
    dlogits *= logits.dtype.type(1.0 / N)
    return dlogits
