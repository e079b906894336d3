"""``LSTM``: a layer object that owns its parameters and calls the kernels."""

import numpy as np

from numba_lstm._validation import as_float_array, check_ndim, check_shape
from numba_lstm.functional import lstm_backward, lstm_forward


class LSTM:
    """A single-layer LSTM in the native layout.

    Parameters
    ----------
    input_size : int
        Number of input features I.
    hidden_size : int
        Number of hidden units H.
    batch_first : bool, default False
        If True, ``x`` and ``y`` are ``(B, T, ...)`` instead of ``(T, B, ...)``.
    dtype : numpy.float32 or numpy.float64, default float32
    seed : int or None
        Seed of the initialisation (``numpy.random.default_rng(seed)``).

    Attributes
    ----------
    params : dict of name -> ndarray
        ``"W"`` of shape (I + H, 4H) and ``"b"`` of shape (4H,), gate order
        i, f, g, o.  ``layer.W`` and ``layer.b`` are the same arrays.
    grads : dict of name -> ndarray
        Gradients with the same names, filled by ``backward`` (plus ``"h0"``
        and ``"c0"``, the gradients of the initial state).

    Notes
    -----
    Initialisation follows PyTorch's ``nn.LSTM``: every weight and bias is
    uniform in ``[-1/sqrt(H), 1/sqrt(H)]``, so a model initialised here trains
    like the same model in PyTorch.
    """

    def __init__(self, input_size, hidden_size, *, batch_first=False, dtype=np.float32, seed=None):
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.batch_first = bool(batch_first)
        self.dtype = dtype
        I, H = self.input_size, self.hidden_size
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(H)
        self.params = {
            "W": rng.uniform(-bound, bound, (I + H, 4 * H)).astype(dtype),
            "b": rng.uniform(-bound, bound, 4 * H).astype(dtype),
        }
        self.grads = {}
        self._cache = None

    @property
    def W(self):
        return self.params["W"]

    @property
    def b(self):
        return self.params["b"]

    @property
    def dW(self):
        return self.grads.get("W")

    @property
    def db(self):
        return self.grads.get("b")

    @property
    def num_parameters(self):
        """``4 * ((I + H) * H + H)``: 56 for 4 inputs and 2 units."""
        return sum(p.size for p in self.params.values())

    def __repr__(self):
        return (
            f"LSTM(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"batch_first={self.batch_first}, dtype={self.dtype.name})"
        )

    def __call__(self, x, state=None):
        return self.forward(x, state)

    def forward(self, x, state=None):
        """Run the layer over a sequence.

        Parameters
        ----------
        x : ndarray, shape (T, B, I), or (B, T, I) with ``batch_first``
        state : tuple (h0, c0) of arrays of shape (B, H), optional

        Returns
        -------
        y : ndarray, shape (T, B, H), or (B, T, H) with ``batch_first``
        (h_n, c_n) : arrays of shape (B, H)
        """
        x = as_float_array("x", x, self.dtype)
        check_ndim("x", x, 3, "(B, T, I)" if self.batch_first else "(T, B, I)")
        if self.batch_first:
            x = np.ascontiguousarray(x.transpose(1, 0, 2))
        h0 = c0 = None
        if state is not None:
            if not isinstance(state, tuple) or len(state) != 2:
                raise TypeError(f"state must be a tuple (h0, c0), got {type(state).__name__}")
            h0, c0 = state
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"x must have {self.input_size} features on its last axis (input_size), got shape {x.shape}"
            )
        y, h_n, c_n, self._cache = lstm_forward(x, self.W, self.b, h0, c0)
        if self.batch_first:
            y = y.transpose(1, 0, 2)
        return y, (h_n, c_n)

    def backward(self, dy, dh_n=None, dc_n=None):
        """Backpropagate through the last ``forward``.

        Parameters
        ----------
        dy : ndarray shaped like that forward's ``y``, or None
        dh_n, dc_n : ndarray, shape (B, H), optional

        Returns
        -------
        dx : ndarray shaped like that forward's ``x``.  The parameter gradients
        go to ``self.grads`` (``layer.dW``, ``layer.db``), the initial-state
        gradients to ``self.grads["h0"]`` and ``self.grads["c0"]``.
        """
        if self._cache is None:
            raise RuntimeError("backward called before forward: run layer.forward(x) first")
        if dy is not None:
            dy = as_float_array("dy", dy, self.dtype)
            T, B = self._cache.x.shape[:2]
            expected = (B, T, self.hidden_size) if self.batch_first else (T, B, self.hidden_size)
            check_shape("dy", dy, expected, "the shape of y from the last forward")
            if self.batch_first:
                dy = dy.transpose(1, 0, 2)
        grads = lstm_backward(dy, self._cache, dh_n, dc_n)
        self.grads = {"W": grads.dW, "b": grads.db, "h0": grads.dh0, "c0": grads.dc0}
        dx = grads.dx
        return dx.transpose(1, 0, 2) if self.batch_first else dx
