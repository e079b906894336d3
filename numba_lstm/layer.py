"""``LSTM``: a layer object that owns its parameters and calls the kernels."""

import copy
import threading
from collections.abc import Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
from numba.core.errors import TypingError

from numba_lstm import jit
from numba_lstm._kernels import SMALL_ROWS, STEP_SPLIT_MIN_BYTES, STEP_SPLIT_MIN_ROWS, STEP_SPLIT_SHARES
from numba_lstm._panels import aligned_copy, aligned_empty, aligned_zeros
from numba_lstm._sync import counters
from numba_lstm._validation import (
    FLOAT_DTYPES,
    as_float_array,
    c_writeable,
    check_bool,
    check_float_array,
    check_float_dtype,
    check_integer,
    check_lengths,
    check_ndim,
    check_shape,
    is_real,
    make_rng,
)
from numba_lstm.convert import parameter_shapes
from numba_lstm.functional import _cache_rows, _forward, _SpareArrays, lstm_backward

__all__ = ["LSTM", "NotReadyError"]


#: The class that ``from_params`` or ``load`` is building, whose parameters it
#: then overwrites: the constructor of the first layer of that class built
#: leaves them zero instead of drawing them.
_FILLED_AFTERWARDS = ContextVar("numba_lstm_parameters_filled_afterwards", default=None)


@contextmanager
def _parameters_filled_afterwards(cls):
    """The first layer of class ``cls`` built inside this block starts with
    zero parameters, not random ones: for the loaders, which copy every
    parameter in right after (a draw of 96 MB of parameters took 155 ms and
    1.7x their memory, for nothing, and advanced the generator that ``seed``
    gave).  Of that class only: a helper layer that a subclass's constructor
    builds before its own stays drawn (it was left all zeros)."""
    token = _FILLED_AFTERWARDS.set(cls)
    try:
        yield
    finally:
        _FILLED_AFTERWARDS.reset(token)


def _no_forward_yet(owner):
    """NotReadyError's message when no forward ran on ``owner`` ("layer", "dense")."""
    return f"backward called before forward: run {owner}.forward(x) first"


_WITHOUT_CACHE = "backward needs a forward that keeps its cache: the last forward ran with cache=False"
_UNFINISHED = "backward needs a forward that returned: the last forward raised an error"


#: Held while a layer's forward takes its last cache or a backward marks it
#: in use: the arrays of one cache go to one forward, and to none while a
#: backward (of another thread) reads them.
_CACHE_SWAP = threading.Lock()


def _copy_without_cache(owner):
    """NotReadyError's message for a copy (``__getstate__``) on which no forward ran."""
    return (
        "this layer is a copy (copy, deepcopy or pickle), which keeps no forward cache: "
        f"run {owner}.forward(x) on it before backward"
    )


def _step_shares(rows, H, P, dtype):
    """Shares of ``LSTM.step``'s split step for a layer with ``rows`` rows of
    W (I + P, 4H) and a W_hr (H, P): 0 (no split) below STEP_SPLIT_MIN_BYTES
    of W and W_hr or under two shares of STEP_SPLIT_MIN_ROWS rows, else at
    most STEP_SPLIT_SHARES."""
    if (rows * 4 * H + H * P) * np.dtype(dtype).itemsize < STEP_SPLIT_MIN_BYTES:
        return 0
    shares = min(rows // STEP_SPLIT_MIN_ROWS, STEP_SPLIT_SHARES)
    return shares if shares > 1 else 0


class NotReadyError(RuntimeError, ValueError):
    """``backward`` has no forward to differentiate: none ran, or the last one
    ran with ``cache=False`` (``LSTM``).  Raised by ``LSTM.backward`` and
    ``Dense.backward``; a ``RuntimeError`` and a ``ValueError``, so either
    ``except`` catches it."""


def _check_dropout(name, dropout):
    """``dropout`` as a float in [0, 1); TypeError or ValueError naming ``name`` otherwise."""
    if not is_real(dropout):
        raise TypeError(f"{name} must be a number in [0, 1), got {dropout!r:.200}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {dropout!r}")
    return float(dropout)


class LSTM:
    """A stacked, optionally bidirectional LSTM in the native layout.

    Parameters
    ----------
    input_size : int
        Number of input features I.
    hidden_size : int
        Number of hidden units H (the size of the cell state c).
    num_layers : int, default 1
        Stacked layers; layer k > 0 takes the previous layer's output.
    bidirectional : bool, default False
        Add a reverse direction per layer; outputs are concatenated
        (forward, reverse) on the last axis.
    proj_size : int, default 0
        If > 0, ``h_t = (o * tanh(c_t)) @ W_hr`` has size P = proj_size
        (PyTorch's ``proj_size``); otherwise P = H.
    dropout : float, default 0
        Dropout on the outputs of every layer but the last, in training mode.
    batch_first : bool, default False
        If True, ``x`` and ``y`` are ``(B, T, ...)`` instead of ``(T, B, ...)``.
    dtype : numpy.float32 or numpy.float64, default float32
    seed : int or None
        Seeds the initialisation and the dropout masks.

    Attributes
    ----------
    params : dict of name -> ndarray
        PyTorch-like names: ``W_l{k}`` (I_k + P, 4H), ``b_l{k}`` (4H,),
        ``W_hr_l{k}`` (H, P) with a projection, and the same with suffix
        ``_reverse`` for the reverse direction.  Gate order i, f, g, o.
    grads : dict of name -> ndarray
        Gradients with the same names, filled by ``backward``, plus ``h0`` and
        ``c0`` (the gradients of the initial state).

    Notes
    -----
    Initialisation follows PyTorch's ``nn.LSTM``: every weight and bias is
    uniform in ``[-1/sqrt(H), 1/sqrt(H)]``.  A new layer is in training mode
    (as in PyTorch); ``eval()`` switches dropout off.
    """

    #: Backward calls running on this layer (other threads'): while any runs,
    #: a forward leaves the cache it reads alone.  A class attribute, so that
    #: layers unpickled from before it count from 0 too.
    _backward_calls = 0

    def __init__(
        self, input_size, hidden_size, num_layers=1, *, bidirectional=False, proj_size=0,
        dropout=0.0, batch_first=False, dtype=np.float32, seed=None,
    ):  # fmt: skip
        self.input_size = check_integer("input_size", input_size)
        self.hidden_size = check_integer("hidden_size", hidden_size)
        self.num_layers = check_integer("num_layers", num_layers)
        self.proj_size = check_integer("proj_size", proj_size, minimum=0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size, got {proj_size} >= {hidden_size}")
        dropout = _check_dropout("dropout", dropout)
        dtype = check_float_dtype("dtype", dtype)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        self.dropout = dropout
        self.batch_first = check_bool("batch_first", batch_first)
        self.dtype = dtype
        self.training = True
        self._rng = make_rng(seed)
        H, P = self.hidden_size, self.output_size
        bound = 1.0 / np.sqrt(H)
        # The shapes of convert's native layout, kept: forward checks the
        # parameters against them at every call (_check_params).
        self._param_shapes = parameter_shapes(self.config)
        # Inside _parameters_filled_afterwards the caller copies every
        # parameter in next: zeros, no draw.  Only for the first layer of the
        # class it builds, not for one that a subclass's constructor builds besides.
        filled_afterwards = _FILLED_AFTERWARDS.get() is type(self)
        if filled_afterwards:
            _FILLED_AFTERWARDS.set(None)
        self.params = {
            name: aligned_zeros(shape, dtype) if filled_afterwards else self._uniform(bound, shape)
            for name, shape in self._param_shapes.items()
        }
        self.grads = {}
        self._caches = None
        self._why_no_cache = _no_forward_yet("layer")
        # step() is called once per time step: its per-call work is kept small.
        # A layer whose W (and W_hr) have STEP_SPLIT_MIN_BYTES or more splits
        # its step into shares that Numba's threads take (jit._layer_step_split,
        # or _layer_step_projected_split): the last entry is the number of
        # shares, or 0 for a step in one call of step_into's body.  It depends
        # on the layer's shape alone, so that the step's result does not
        # depend on the number of threads.
        rows = [I_k + P for I_k in [self.input_size] + [P * self.num_directions] * (self.num_layers - 1)]
        self._step_keys = [
            (f"W_l{k}", f"b_l{k}", f"W_hr_l{k}", _step_shares(K, H, self.proj_size, dtype))
            for k, K in enumerate(rows)
        ]
        self.__dict__.update(self._no_step_buffers())

    @staticmethod
    def _no_step_buffers():
        """The step's buffers before any step: the work buffer and the batch
        it holds, the split step's buffers, and the state returned last with
        the stacked array (2, L, B, H) whose halves it is."""
        return {
            "_step_work": None,
            "_step_work_rows": -1,
            "_split_buffers": {},
            "_last_step_state": None,
            "_last_step_stacked": None,
        }

    def __getstate__(self):
        """What ``pickle``, ``copy.deepcopy`` and ``copy.copy`` keep: not the
        last forward's cache (the activations of every step, often many
        times the parameters' size: a copy backpropagates after a forward of
        its own), nor the step's work buffers (made again when needed, so
        that a shallow copy does not share them either), nor the link by
        which ``step`` takes back the state it returned as the halves of its
        own stacked array (a copy of that state is two arrays of their own)."""
        return {
            **self.__dict__,
            **self._no_step_buffers(),
            "_caches": None,
            "_why_no_cache": _copy_without_cache("layer"),
            "_backward_calls": 0,
        }

    def __deepcopy__(self, memo):
        """``copy.deepcopy``: the state of ``__getstate__``, with the
        parameters copied onto cache lines as the constructor makes them
        (NumPy's copies start 16 or 32 bytes off a line, and ``step`` on such
        a copy took 10.8 against 7.6 us at H = 128, bench/NOTES.md "Session
        44").  The copies go into ``memo``, so that an optimizer copied in
        the same call updates the copy's own arrays; a parameter that the
        call copied before the layer (an optimizer first in a tuple) is
        taken from ``memo`` as NumPy copied it.  ``pickle`` keeps NumPy's
        copies: replacing them on load would part a layer from an
        optimizer pickled with it."""
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        originals = memo.setdefault(id(memo), [])  # as copy.deepcopy's own memo: alive while memo is
        for array in self.params.values():
            # Other dtypes (a parameter replaced by a big-endian or integer
            # array, which forward refuses by name) are NumPy's to copy.
            if type(array) is np.ndarray and array.dtype in FLOAT_DTYPES and id(array) not in memo:
                memo[id(array)] = aligned_copy(array)
                originals.append(array)
        state = copy.deepcopy(self.__getstate__(), memo)
        setstate = getattr(copied, "__setstate__", None)
        if setstate is None:
            copied.__dict__.update(state)
        else:
            setstate(state)
        return copied

    def _uniform(self, bound, shape):
        # On a cache line, as the kernels' own arrays: step() reads W row by
        # row in place, and a W 16 or 48 bytes off a line made LSTM.step
        # 7-11% slower at H = 128 (bench/NOTES.md, "Session 19").  Loading
        # weights copies into these arrays, so they stay aligned.
        out = aligned_empty(shape, self.dtype)
        out[...] = self._rng.uniform(-bound, bound, shape)
        return out

    def _suffixes(self):
        return ("", "_reverse") if self.bidirectional else ("",)

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def output_size(self):
        """P: the size of h (``proj_size`` if set, else ``hidden_size``)."""
        return self.proj_size or self.hidden_size

    @property
    def num_parameters(self):
        """Total parameter count; ``4 * ((I + H) * H + H)`` for one plain layer."""
        return sum(p.size for p in self.params.values())

    def _single(self, name):
        if self.num_layers != 1 or self.bidirectional:
            raise AttributeError(f"layer.{name} exists for one unidirectional layer; use layer.params")
        return name

    W = property(lambda self: self.params[self._single("W") + "_l0"], doc="W_l0 of a single layer")
    b = property(lambda self: self.params[self._single("b") + "_l0"], doc="b_l0 of a single layer")
    dW = property(lambda self: self.grads.get(self._single("W") + "_l0"), doc="gradient of W")
    db = property(lambda self: self.grads.get(self._single("b") + "_l0"), doc="gradient of b")

    @property
    def config(self):
        """The architecture: ``input_size, hidden_size, num_layers, bidirectional, proj_size``."""
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "proj_size": self.proj_size,
        }

    @classmethod
    def from_params(cls, config, params, **options):
        """A layer holding copies of native ``params`` for ``config``.

        ``options`` are the constructor's keyword options (``dropout``,
        ``batch_first``, ``seed``); the dtype is the parameters' own (a
        ``dtype`` option must be the same).  A
        ``dropout`` or ``batch_first`` in ``config`` is used as well, unless
        ``options`` gives another value (an error).  ``layer.config`` holds
        the architecture alone: a copy of a ``batch_first`` layer is
        ``from_params(layer.config, layer.params, batch_first=True)``.
        """
        from numba_lstm.convert import check_params

        for key in ("dropout", "batch_first"):
            if isinstance(config, Mapping) and key in config:
                if key in options and options[key] != config[key]:
                    raise ValueError(
                        f"{key} is {config[key]!r} in config but {options[key]!r} in the options; give one value"
                    )
                options[key] = config[key]
        config, params = check_params(config, params)
        dtype = next(iter(params.values())).dtype
        if "dtype" in options:  # the constructor's option, given twice
            wanted = check_float_dtype("dtype", options.pop("dtype"))
            if wanted != dtype:
                raise TypeError(
                    f"dtype {wanted} was given but the parameters are {dtype}: numba_lstm never casts "
                    f"them; convert them first (a torch module: module.to(torch.{wanted}))"
                )
        with _parameters_filled_afterwards(cls):
            layer = cls(**config, dtype=dtype, **options)
        for name, value in params.items():
            layer.params[name][...] = value
        return layer

    @classmethod
    def from_torch(cls, module_or_state_dict, **options):
        """Build from a ``torch.nn.LSTM`` or its state dict (the two biases are summed).

        A module's ``batch_first`` and ``dropout`` carry over, so the layer
        reads the inputs the module reads, unless ``options`` give them
        (a state dict has neither: the defaults, time-major and no dropout).
        So does its mode: a module in ``eval()`` gives a layer in ``eval()``
        (no dropout), one in training mode a layer in training mode.
        """
        from numba_lstm import convert

        config, params = convert.from_torch(module_or_state_dict)
        if not isinstance(module_or_state_dict, Mapping):  # an nn.LSTM: convert checked it
            module = module_or_state_dict
            if "dropout" not in options and not 0.0 <= module.dropout < 1.0:  # torch takes 1.0 too
                raise ValueError(
                    f"the module has dropout={module.dropout!r}; the layer takes a dropout in [0, 1): "
                    "pass dropout=... to from_torch"
                )
            options = {"batch_first": bool(module.batch_first), "dropout": float(module.dropout), **options}
            return cls.from_params(config, params, **options).train(bool(module.training))
        return cls.from_params(config, params, **options)

    def to_torch_state_dict(self, *, bias=True):
        """A state dict that ``torch.nn.LSTM(...).load_state_dict(..., strict=True)`` accepts.

        ``bias=False`` for a module built with ``bias=False`` (the layer's
        biases must then be zero), as ``convert.to_torch_state_dict``.
        """
        from numba_lstm import convert

        self._check_params()  # as forward: a parameter of another dtype exported as it was
        return convert.to_torch_state_dict(self.config, self.params, bias=bias)

    @classmethod
    def from_keras(cls, layer_or_weights, **options):
        """Build from a Keras 3 ``LSTM`` / ``Bidirectional`` layer or its ``get_weights()`` list.

        Built from a layer, it reads batch-major input (B, T, I) as Keras
        layers do (``batch_first=True``), unless ``options`` say otherwise;
        built from a list of weights, the default time-major (T, B, I).
        """
        from numba_lstm import convert

        config, params = convert.from_keras(layer_or_weights)
        if not isinstance(layer_or_weights, (list, tuple)):  # a Keras layer: convert checked it
            options = {"batch_first": True, **options}
        return cls.from_params(config, params, **options)

    def to_keras_weights(self, **kwargs):
        """The list for Keras ``layer.set_weights`` (see ``numba_lstm.convert.to_keras_weights``)."""
        from numba_lstm import convert

        self._check_params()
        return convert.to_keras_weights(self.config, self.params, **kwargs)

    def to_onnx(self, path=None, **options):
        """Write (and return) an ONNX model with one ``LSTM`` node per layer.

        ``options`` are those of ``convert.to_onnx``; ``batch_first`` is the
        layer's own unless given, so the model reads the inputs the layer reads.
        """
        from numba_lstm import convert

        self._check_options()
        self._check_params()
        options = {"batch_first": self.batch_first, **options}
        return convert.to_onnx(self.config, self.params, path, **options)

    @classmethod
    def from_onnx(cls, path_or_model, **options):
        """Build from the ``LSTM`` nodes of an ONNX model (file path or ``ModelProto``).

        Where the first node reads a graph input through layout operators
        alone, the layer reads what the model reads: ``batch_first=True`` for
        an input (B, T, I) (a torch export of a ``batch_first`` module, a
        node of ``layout = 1``), unless ``options`` say otherwise; otherwise
        the default time-major (T, B, I).
        """
        from numba_lstm import convert

        config, params, batch_first = convert._read_onnx(path_or_model)
        if batch_first:
            options = {"batch_first": True, **options}
        return cls.from_params(config, params, **options)

    def save(self, path):
        """Save configuration, dtype and parameters to an ``.npz`` (atomic; no pickle), or into a binary file object."""
        from numba_lstm import io

        io.save(self, path)

    @classmethod
    def load(cls, path):
        """Load a layer written by ``save`` (a path or a binary file object) as
        an instance of ``cls``; refuses corrupt or mismatched files (``numba_lstm.io.load``)."""
        from numba_lstm import io

        return io._load(cls, path)

    def summary(self):
        """Print a table of every parameter with its per-gate split and the total.

        Returns None, as Keras's ``summary``: a returned string would show
        again at an interactive prompt.  The table as a string is
        ``numba_lstm.gates.parameter_table(layer.config, layer.params)``.
        """
        from numba_lstm.gates import parameter_table

        print(parameter_table(self.config, self.params))

    def train(self, mode=True):
        """Training mode (dropout on) for ``mode=True``, inference mode (dropout
        off, as ``eval()``) for ``mode=False``; returns the layer.  ``mode`` must
        be a bool (``TypeError`` otherwise)."""
        self.training = check_bool("mode", mode)
        return self

    def eval(self):
        """Switch dropout off (inference mode); returns the layer."""
        return self.train(False)

    _DEFAULTS = {
        "num_layers": 1,
        "bidirectional": False,
        "proj_size": 0,
        "dropout": 0.0,
        "batch_first": False,
    }

    def __repr__(self):
        extras = "".join(
            f", {name}={getattr(self, name)!r}"
            for name, default in self._DEFAULTS.items()
            if getattr(self, name) != default
        )
        return f"LSTM({self.input_size}, {self.hidden_size}{extras}, dtype={self.dtype.name})"

    def _layer_params(self, k, suffix):
        return (
            self.params[f"W_l{k}{suffix}"],
            self.params[f"b_l{k}{suffix}"],
            self.params.get(f"W_hr_l{k}{suffix}"),
        )

    def _check_params(self):
        """Refuse, by its name, a parameter replaced in ``self.params`` with
        another dtype or shape (the kernels' own messages would name their
        arguments, W or b or x, not the parameter)."""
        for name, shape in self._param_shapes.items():
            if name not in self.params:
                raise KeyError(f"params[{name!r}] is missing")
            check_float_array(f"params[{name!r}]", self.params[name], self.dtype, "the layer")
            check_shape(f"params[{name!r}]", self.params[name], shape)

    def _check_options(self):
        """Refuse ``dropout`` and ``batch_first`` set on the layer to what its
        constructor refuses: a dropout of 1.5 ran, scaling the kept values by
        -2, and ``save`` wrote a file that ``load`` refuses over a good one."""
        _check_dropout("layer.dropout", self.dropout)
        check_bool("layer.batch_first", self.batch_first)

    def _time_major(self, a):
        return np.ascontiguousarray(a.transpose(1, 0, 2)) if self.batch_first else a

    def _initial_state(self, state, B, names=("h0", "c0")):
        """``state`` checked (zeros if None); ``names``: h and c as the caller calls them."""
        LD, H, P = self.num_layers * self.num_directions, self.hidden_size, self.output_size
        h_name, c_name = names
        if state is None:
            return np.zeros((LD, B, P), self.dtype), np.zeros((LD, B, H), self.dtype)
        if not isinstance(state, tuple) or len(state) != 2:
            given = f"a tuple of {len(state)}" if isinstance(state, tuple) else type(state).__name__
            raise TypeError(f"state must be a tuple of 2 arrays ({h_name}, {c_name}), got {given}")
        h0 = as_float_array(h_name, state[0], self.dtype, "the layer")
        c0 = as_float_array(c_name, state[1], self.dtype, "the layer")
        check_shape(h_name, h0, (LD, B, P), "(num_layers * num_directions, B, P)")
        check_shape(c_name, c0, (LD, B, H), "(num_layers * num_directions, B, H)")
        return h0, c0

    def __call__(self, x, state=None, lengths=None, *, cache=True):
        return self.forward(x, state, lengths, cache=cache)

    def forward(self, x, state=None, lengths=None, *, cache=True):
        """Run the layer over a sequence.

        Parameters
        ----------
        x : ndarray, shape (T, B, I), or (B, T, I) with ``batch_first``
        state : tuple (h0, c0), optional
            h0 (L * D, B, P) and c0 (L * D, B, H), L layers, D directions, in
            PyTorch's order (layer by layer, forward before reverse).
        lengths : integer ndarray (or a list of ints), shape (B,), optional
            Valid steps of each sequence (PyTorch's packed sequences).
        cache : bool
            Keep what ``backward`` needs (the default).  False is inference
            (PyTorch's ``torch.inference_mode``): less memory written, faster,
            and ``backward`` then refuses to run until the next forward that
            keeps a cache.

        Returns
        -------
        y : ndarray, shape (T, B, D * P), or (B, T, D * P) with ``batch_first``
            Zero past each sequence's length.
        (h_n, c_n) : ndarrays (L * D, B, P) and (L * D, B, H)
            From each sequence's last valid step.
        """
        self._check_options()
        given_x = x
        x = as_float_array("x", x, self.dtype, "the layer")
        check_ndim("x", x, 3, "(B, T, I)" if self.batch_first else "(T, B, I)")
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"x must have {self.input_size} features on its last axis (input_size), got shape {x.shape}"
            )
        x = self._time_major(x)
        T, B = x.shape[:2]
        self._check_params()
        h0, c0 = self._initial_state(state, B)
        lengths = check_lengths(lengths, T, B)
        # Plain arrays: np.empty_like(h0) took the subclass of the state given (a memmap).
        h_n, c_n = np.empty(h0.shape, self.dtype), np.empty(c0.shape, self.dtype)
        # The last forward's cache goes before this one's is made, not when it
        # is replaced: a training loop holds one cache at a time, not two.
        # Its arrays of this call's rows (N) are this one's where their shapes
        # match (``_SpareArrays``); the others are freed first.  Until this
        # forward returns, backward refuses (it would take the last call's
        # activations).  A backward running on another thread keeps its cache.
        with _CACHE_SWAP:
            last = None if self._backward_calls else self._caches
            self._caches = None
            self._why_no_cache = _UNFINISHED
        N = T * B if lengths is None else int(lengths.sum())
        spare = _SpareArrays(_cache_rows(last[0] if last else [], N), avoid=(given_x, x, h0, c0))
        del last
        caches, masks = [], []
        layer_input = x
        for k in range(self.num_layers):
            # The layer never changes a layer's input (its own copy of the
            # caller's x, or the layer below's y) nor the y of an inner layer
            # or of a direction (concatenated into a new array), so their
            # caches keep them without copies; only the y returned to the
            # caller is copied from the cache.  (A batch_first x of one
            # sequence or one step is time-major as it is: ``_time_major``
            # returns a view of the caller's array, which must be copied.)
            private_x = k > 0 or not np.may_share_memory(x, given_x)
            private_y = k < self.num_layers - 1 or self.num_directions > 1
            outputs = []
            for d, suffix in enumerate(self._suffixes()):
                idx = k * self.num_directions + d
                W, b, W_hr = self._layer_params(k, suffix)
                y, h_n[idx], c_n[idx], saved = _forward(
                    layer_input, W, b, h0[idx], c0[idx], W_hr, lengths, d == 1, cache,
                    private_x=private_x, private_y=private_y, spare=spare,
                )  # fmt: skip
                outputs.append(y)
                caches.append(saved)
            layer_input = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=2)
            mask = None
            if self.training and self.dropout > 0 and k < self.num_layers - 1:
                keep = 1.0 - self.dropout
                mask = (self._rng.random(layer_input.shape) < keep).astype(self.dtype) / self.dtype.type(keep)
                layer_input = layer_input * mask
            masks.append(mask)
        self._caches = (caches, masks, (T, B)) if cache else None
        self._why_no_cache = None if cache else _WITHOUT_CACHE
        y = layer_input.transpose(1, 0, 2) if self.batch_first else layer_input
        return y, (h_n, c_n)

    def backward(self, dy, dh_n=None, dc_n=None):
        """Backpropagate through the last ``forward``.

        Parameters
        ----------
        dy : ndarray shaped like that forward's ``y``, or None
        dh_n, dc_n : ndarrays shaped like ``h_n``, ``c_n``, optional

        Returns
        -------
        dx : ndarray shaped like that forward's ``x``.  Parameter gradients go
        to ``self.grads`` under the names of ``self.params``; the gradients of
        the initial state to ``self.grads["h0"]`` and ``self.grads["c0"]``.

        Raises
        ------
        NotReadyError
            No forward ran, the last one ran with ``cache=False`` or raised
            an error, or the layer is a copy (``copy``, ``deepcopy`` or
            ``pickle``) on which no forward ran since.
        """
        with _CACHE_SWAP:
            saved = self._caches
            if saved is not None:
                self._backward_calls += 1  # no forward takes these arrays meanwhile
        if saved is None:
            raise NotReadyError(self._why_no_cache)
        try:
            return self._backward(saved, dy, dh_n, dc_n)
        finally:
            with _CACHE_SWAP:
                self._backward_calls -= 1

    def _backward(self, saved, dy, dh_n, dc_n):
        """``backward`` through the cache ``saved`` (``_caches`` of a forward)."""
        self._check_options()
        caches, masks, (T, B) = saved
        D, P, H = self.num_directions, self.output_size, self.hidden_size
        LD = self.num_layers * D
        if dy is None:
            d_out = np.zeros((T, B, D * P), self.dtype)
        else:
            dy = as_float_array("dy", dy, self.dtype, "the layer")
            expected = (B, T, D * P) if self.batch_first else (T, B, D * P)
            check_shape("dy", dy, expected, "the shape of y from the last forward")
            d_out = self._time_major(dy)
        dh_n = (
            np.zeros((LD, B, P), self.dtype)
            if dh_n is None
            else as_float_array("dh_n", dh_n, self.dtype, "the layer")
        )
        dc_n = (
            np.zeros((LD, B, H), self.dtype)
            if dc_n is None
            else as_float_array("dc_n", dc_n, self.dtype, "the layer")
        )
        check_shape("dh_n", dh_n, (LD, B, P), "the shape of h_n")
        check_shape("dc_n", dc_n, (LD, B, H), "the shape of c_n")
        grads = {"h0": np.empty((LD, B, P), self.dtype), "c0": np.empty((LD, B, H), self.dtype)}
        for k in reversed(range(self.num_layers)):
            if masks[k] is not None:
                d_out = d_out * masks[k]
            d_in = None
            for d, suffix in enumerate(self._suffixes()):
                idx = k * D + d
                g = lstm_backward(d_out[:, :, d * P : (d + 1) * P], caches[idx], dh_n[idx], dc_n[idx])
                grads[f"W_l{k}{suffix}"], grads[f"b_l{k}{suffix}"] = g.dW, g.db
                if self.proj_size:
                    grads[f"W_hr_l{k}{suffix}"] = g.dW_hr
                grads["h0"][idx], grads["c0"][idx] = g.dh0, g.dc0
                d_in = g.dx if d_in is None else d_in + g.dx
            d_out = d_in
        self.grads = grads
        return d_out.transpose(1, 0, 2) if self.batch_first else d_out

    def _split_step_buffers(self, B, shares):
        """The split step's partial pre-activations (shares, B, 4H), partial
        projections (shares, B, P) and counters, kept per (B, shares): B is
        at most SMALL_ROWS (8), so there are few."""
        buffers = self._split_buffers.get((B, shares))
        if buffers is None:
            z_parts = aligned_empty((shares, B, 4 * self.hidden_size), self.dtype)
            h_parts = aligned_empty((shares, B, self.proj_size), self.dtype)
            buffers = self._split_buffers[B, shares] = (z_parts, h_parts, counters(3))
        return buffers

    def step(self, x_t, state=None):
        """Advance every layer by one time step (streaming inference).

        Parameters
        ----------
        x_t : ndarray, shape (B, I)
        state : tuple (h, c) of shapes (L, B, P) and (L, B, H), optional

        Returns
        -------
        y_t : ndarray, shape (B, P)
        (h, c) : the new state, new arrays

        A loop of ``step`` equals one ``forward`` over the sequence (in eval
        mode): bit for bit up to 8 rows, unless the step is split (below);
        with more rows the products go through BLAS, a few ulp apart.
        ``step`` applies no dropout and keeps nothing for
        ``backward``.  Bidirectional layers cannot stream (the reverse
        direction needs the future) and are refused.

        A layer whose W and W_hr have 4 MiB or more (float32 I = H >= 363
        without projection) splits each step of up to 8 rows between Numba's
        threads, in blocks fixed by the layer: any thread count gives the
        same bits.  The others run on the calling thread.  A layer keeps its
        step's work buffers (one, for the largest batch so far): step one
        layer object from one Python thread at a time; for concurrent streams
        make one layer each, ``LSTM.from_params(layer.config, layer.params)``.
        """
        if self.bidirectional:
            raise ValueError(
                "step is not defined for a bidirectional LSTM: its reverse direction needs the future"
            )
        # This runs once per time step, so the checks that pass are kept
        # cheap (one shape comparison); the messages come from the usual ones.
        dtype = self.dtype
        if type(x_t) is not np.ndarray or x_t.dtype is not dtype or not c_writeable(x_t):
            x_t = as_float_array("x_t", x_t, dtype, "the layer")
        shape = x_t.shape
        if len(shape) != 2 or shape[1] != self.input_size:
            check_ndim("x_t", x_t, 2, "(B, I)")
            check_shape("x_t", x_t, (shape[0], self.input_size), "(B, input_size)")
        B = shape[0]
        # The state this method returned last time, for the same batch size,
        # is taken back as it is: our own arrays, of our dtype and shapes,
        # C-contiguous.
        returned = state is not None and state is self._last_step_state and state[0].shape[1] == B
        # One work buffer, that of the largest batch so far (the steps take
        # a larger one): a buffer per batch size held 412 MB after 200 of
        # them, and one for the last only was remade at every call of a
        # stream whose batch size alternates (15-20% slower at H = 128).
        if B > self._step_work_rows:
            size = jit.work_size(B, self.hidden_size) + (B * self.hidden_size if self.proj_size else 0)
            self._step_work, self._step_work_rows = aligned_empty((size,), dtype), B
        work = self._step_work
        try:
            params = self.params
            if self.proj_size == 0:
                # h and c of every layer in one array (2, L, B, H): the state
                # returned is its two halves.
                if returned:
                    stacked = self._last_step_stacked
                else:
                    stacked = np.stack(self._initial_state(state, B, ("h", "c")))
                new_stacked = np.empty_like(stacked)
                layer_step_into = jit._layer_step_into
                k = 0
                for W_key, b_key, _, shares in self._step_keys:
                    W, b = params[W_key], params[b_key]
                    if shares and B <= SMALL_ROWS:
                        z_parts, _, sync = self._split_step_buffers(B, shares)
                        done = jit._layer_step_split(x_t, stacked, W, b, new_stacked, z_parts, work, sync, k)
                    else:
                        done = layer_step_into(x_t, stacked, W, b, new_stacked, work, k)
                    if not done:  # a parameter replaced with another shape
                        self._check_params()
                        jit._refuse_layer_step(x_t, stacked[0], stacked[1], W, b, new_stacked[0], k)
                    k += 1
                h_new, c_new = new_stacked[0], new_stacked[1]
                y_t = h_new[k - 1].copy()
                self._last_step_stacked = new_stacked
            else:
                h, c = state if returned else self._initial_state(state, B, ("h", "c"))
                h_new, c_new = np.empty(h.shape, dtype), np.empty(c.shape, dtype)
                for k, (W_key, b_key, W_hr_key, shares) in enumerate(self._step_keys):
                    W, b, W_hr = params[W_key], params[b_key], params[W_hr_key]
                    if shares and B <= SMALL_ROWS:
                        z_parts, h_parts, sync = self._split_step_buffers(B, shares)
                        done = jit._layer_step_projected_split(
                            x_t, h, c, W, b, W_hr, h_new, c_new, z_parts, h_parts, work, sync, k
                        )
                    else:
                        done = jit._layer_step_projected(x_t, h, c, W, b, W_hr, h_new, c_new, work, k)
                    if not done:  # a parameter replaced with another shape
                        self._check_params()
                        jit._refuse_layer_step(x_t, h, c, W, b, h_new, k, W_hr)
                y_t = h_new[-1].copy()
        except (TypeError, ValueError, KeyError, TypingError):
            # A parameter replaced with another dtype, rank or byte order (the
            # jitted step's messages name its own arguments, W or b; a
            # non-native array fails Numba's typing), or removed.
            self._check_params()
            raise
        self._last_step_state = (h_new, c_new)
        return y_t, self._last_step_state
