"""``Dense``: the affine output layer ``y = x @ W + b`` that sits on an LSTM."""

from collections.abc import Mapping

import numpy as np

from numba_lstm._validation import (
    _describe,
    as_float_array,
    as_plain_float_array,
    check_float_array,
    check_float_dtype,
    check_integer,
    check_shape,
    make_rng,
)
from numba_lstm.layer import NotReadyError, _copy_without_cache, _no_forward_yet

__all__ = ["Dense"]


class Dense:
    """A fully connected layer ``y = x @ W + b`` over the last axis.

    Parameters
    ----------
    in_features : int
        Size F of the last axis of ``x`` (the LSTM's hidden size H, say).
    out_features : int
        Size K of the last axis of ``y``.
    dtype : numpy.float32 or numpy.float64, default float32
    seed : int or None
        Seed of the initialisation (``numpy.random.default_rng(seed)``).

    Attributes
    ----------
    params : dict of name -> ndarray
        ``"W"`` of shape (F, K) (the transpose of PyTorch's ``Linear.weight``)
        and ``"b"`` of shape (K,).
    grads : dict of name -> ndarray
        The gradients with the same names, set by ``backward``.

    Notes
    -----
    Initialisation follows PyTorch's ``nn.Linear``: weight and bias uniform
    in ``[-1/sqrt(F), 1/sqrt(F)]``.
    """

    def __init__(self, in_features, out_features, *, dtype=np.float32, seed=None):
        self.in_features = check_integer("in_features", in_features)
        self.out_features = check_integer("out_features", out_features)
        dtype = check_float_dtype("dtype", dtype)
        self.dtype = dtype
        rng = make_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        self.params = {
            "W": rng.uniform(-bound, bound, (self.in_features, self.out_features)).astype(dtype),
            "b": rng.uniform(-bound, bound, self.out_features).astype(dtype),
        }
        self.grads = {}
        self._x = self._W = None
        self._why_no_cache = _no_forward_yet("dense")

    def __getstate__(self):
        """What ``pickle``, ``copy.deepcopy`` and ``copy.copy`` keep: not the
        copies of the last forward's ``x`` and ``W`` (a copy backpropagates
        after a forward of its own)."""
        return {**self.__dict__, "_x": None, "_W": None, "_why_no_cache": _copy_without_cache("dense")}

    @property
    def W(self):
        return self.params["W"]

    @property
    def b(self):
        return self.params["b"]

    @property
    def num_parameters(self):
        return sum(p.size for p in self.params.values())

    def __repr__(self):
        return (
            f"Dense(in_features={self.in_features}, out_features={self.out_features}, "
            f"dtype={self.dtype.name})"
        )

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        """Return ``x @ W + b``.

        Parameters
        ----------
        x : ndarray, shape (..., F)

        Returns
        -------
        y : ndarray, shape (..., K)
        """
        given = x
        # Not yet plain: whether x is given tells whether it is a copy already.
        x = as_float_array("x", x, self.dtype, "the layer")
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have {self.in_features} features on its last axis (in_features), got shape {x.shape}"
            )
        W, b = self._checked_params()
        # As a plain ndarray: ``@`` keeps an np.matrix's subclass, and the
        # losses and the gradients would be matrices.
        plain = np.asarray(x)
        # backward's own copies: the caller may change x (or the parameters)
        # in place before it, and the gradients stay those of this forward.
        self._x = plain.copy() if x is given else plain
        self._W = W.copy()
        return plain @ W + b

    def load_params(self, arrays):
        """Copy saved parameters into ``params``, in place.

        Parameters
        ----------
        arrays : mapping of ``"W"``, ``"b"`` -> ndarray
            ``np.load("head.npz")`` of ``np.savez("head.npz", **head.params)``,
            or a dict.  Each must have its parameter's shape and the head's
            dtype: nothing is cast or broadcast (``params["W"][...] = W``
            would do both), and on an error no parameter changes.

        The arrays in ``params`` stay the same objects, so an optimizer built
        on them goes on updating them.
        """
        if not isinstance(arrays, Mapping):
            raise TypeError(
                f"arrays must be a mapping of name -> array (np.load of a .npz), got {_describe(arrays)}"
            )
        if set(arrays) != set(self.params):
            raise ValueError(f"arrays must hold exactly {sorted(self.params)}, got {sorted(arrays)}")
        shapes = {"W": (self.in_features, self.out_features), "b": (self.out_features,)}
        checked = {}
        for name, shape in shapes.items():
            value = arrays[name]  # np.load's file reads the array here
            check_float_array(f"arrays[{name!r}]", value, self.dtype, "the layer")
            check_shape(f"arrays[{name!r}]", value, shape, f"(params[{name!r}]'s)")
            target = self.params[name]  # replaced by the user, maybe: checked as forward checks it
            check_float_array(f"params[{name!r}]", target, self.dtype, "the layer")
            check_shape(f"params[{name!r}]", target, shape)
            if not target.flags.writeable:
                raise ValueError(f"params[{name!r}] is read-only: load_params copies into it")
            checked[name] = value
        for name, value in checked.items():
            self.params[name][...] = value

    def _checked_params(self):
        """W and b, checked: a parameter replaced with another dtype or shape
        is refused by its name (it would change y's dtype or fail in NumPy)."""
        F, K = self.in_features, self.out_features
        W = as_plain_float_array("params['W']", self.params["W"], self.dtype, "the layer")
        check_shape("params['W']", W, (F, K), "(in_features, out_features)")
        b = as_plain_float_array("params['b']", self.params["b"], self.dtype, "the layer")
        check_shape("params['b']", b, (K,), "(out_features,)")
        return W, b

    def backward(self, dy):
        """Backpropagate through the last ``forward``.

        Parameters
        ----------
        dy : ndarray, shape (..., K), shaped like that forward's ``y``

        Returns
        -------
        dx : ndarray, shape (..., F).  ``self.grads`` gets ``"W"`` (F, K) and
        ``"b"`` (K,), summed over every leading axis.

        Raises
        ------
        numba_lstm.layer.NotReadyError
            No forward ran, or the layer is a copy (``copy``, ``deepcopy`` or
            ``pickle``) on which no forward ran since.
        """
        if self._x is None:
            raise NotReadyError(self._why_no_cache)
        x = self._x
        dy = as_plain_float_array("dy", dy, self.dtype, "the layer")
        check_shape("dy", dy, x.shape[:-1] + (self.out_features,), "the shape of y from the last forward")
        x2 = x.reshape(-1, self.in_features)  # (N, F)
        dy2 = dy.reshape(-1, self.out_features)  # (N, K)
        # The bias gradient summed in float64: NumPy sums down axis 0 one row
        # after another (no pairwise summation), whose float32 error was
        # 100-1000x torch's at a million rows.
        db = dy2.sum(axis=0, dtype=np.float64).astype(self.dtype)
        self.grads = {"W": x2.T @ dy2, "b": db}
        return dy @ self._W.T
