"""Drop-in functional API: ``lstm_forward`` and ``lstm_backward``.

Time-major, one layer, one direction, native layout (README, "The native layout"):
``x (T, B, I)``, ``W (I + P, 4H)`` with rows for x first then h, gate order
i, f, g, o, one bias ``b (4H,)``; P = H unless a projection ``W_hr (H, P)`` is
given.  These functions validate, pack, allocate and call the Numba kernels in
``numba_lstm._kernels``.
"""

from typing import NamedTuple

import numba
import numpy as np

from numba_lstm._kernels import (
    GRAD_ROWS,
    ONE_TILE_GRAD_ROWS,
    PARALLEL_MIN_FLOP,
    PIPELINE_SLOTS,
    ROW_SPLIT_MAX_BYTES,
    SPLIT_STEP_MIN_FLOP,
    _final_rows,
    _lstm_backward,
    _lstm_forward,
    _pack_rows,
    _packing,
    _pipelined,
    _prev_rows,
    _projection_grad,
    _tiles,
    _unpack_rows,
    _unsaved_c_rows,
    _use_threads,
    _z_rows,
)
from numba_lstm._panels import (
    CACHE_LINE,
    aligned_copy,
    aligned_empty,
    aligned_zeros,
    pack_panels,
    pad_columns,
    padded,
    panel_width,
)
from numba_lstm._sync import counters
from numba_lstm._validation import (
    as_float_array,
    byte_bounds,
    check_bool,
    check_lengths,
    check_ndim,
    check_shape,
    check_weights,
)

__all__ = ["LSTMCache", "LSTMGrads", "LSTMProjGrads", "lstm_backward", "lstm_forward"]


class Packing(NamedTuple):
    """Where each row of the packed arrays comes from (see ``numba_lstm._kernels``).

    batch_sizes (T,) rows of each step, non-increasing; (0,) for an empty batch
    order       (B,) original batch index of each sorted row (longest first)
    lengths     (B,) sorted lengths
    packed_row  (T, B) the packed row that holds time t of sequence b (in the
                original batch order), -1 past the sequence's length; None
                when the packed array is the plain reshape of (T, B, ...)
    """

    T: int
    B: int
    batch_sizes: np.ndarray
    order: np.ndarray
    lengths: np.ndarray
    packed_row: np.ndarray | None

    @classmethod
    def build(cls, T, B, lengths, reverse):
        if B == 0:  # no steps to run: no array of T entries (T may be any size when x has no values)
            none = np.zeros(0, np.int64)
            return cls(T, B, none, none, none, None)
        if lengths is None and not reverse:
            full = np.full(T, B, np.int64)
            return cls(T, B, full, np.arange(B), np.full(B, T, np.int64), None)
        lengths = np.full(B, T, np.int64) if lengths is None else lengths
        return cls(T, B, *_packing(lengths, T, reverse))

    @property
    def N(self):
        return int(self.lengths.sum())

    def pack(self, a):
        """(T, B, F) C-contiguous -> (N, F), a view when no reordering is needed."""
        if self.packed_row is None:
            return a.reshape(self.T * self.B, a.shape[2])
        out = np.empty((self.N, a.shape[2]), a.dtype)
        _pack_rows(out, a, self.packed_row)
        return out

    def unpack(self, packed, width=None):
        """(N, >= F) C-contiguous -> (T, B, F), F = ``width`` or all columns; rows past a sequence's length are zero."""
        width = packed.shape[1] if width is None else width
        if self.packed_row is None:
            return np.ascontiguousarray(packed[:, :width]).reshape(self.T, self.B, width)
        out = np.empty((self.T, self.B, width), packed.dtype)
        _unpack_rows(out, packed, self.packed_row)
        return out

    def final_state(self, packed, initial, slots=False):
        """State after each sequence's last step, in the original batch order.

        ``packed`` holds the rows of every step (N, F); with ``slots``, those
        of even steps in its first B rows and of odd steps in the next B
        (2B, F), in the sorted order (the forward without a cache keeps c so).
        Sequences of length 0 keep ``initial``.
        """
        out = np.empty(initial.shape, initial.dtype)
        _final_rows(out, packed, initial, self.order, self.lengths, self.batch_sizes, slots)
        return out

    def sort(self, a):
        return a if self.packed_row is None else a[self.order]

    def unsort(self, a):
        if self.packed_row is None:
            return a
        out = np.empty_like(a)
        out[self.order] = a
        return out


class LSTMCache(NamedTuple):
    """What ``lstm_forward`` saves for ``lstm_backward`` (packed rows, N of them).

    Its own arrays, none shared with the caller's: changing x, h0, c0, W,
    W_hr or the returned y in place before ``lstm_backward`` leaves the
    gradients those of the forward.

    x      (N, I)    the packed input
    W_xT   W[:I].T, W_hT W[I:].T, W_hrT W_hr.T (None without projection),
                     each in panels (``pack_panels``), as the backward reads them
    h0     (B, P), c0 (B, H): sorted initial state
    y      (N, P)    h_t;  m (N, H): o * tanh(c_t) (``y`` itself without projection)
    c      (N, H)    c_t;  gates (N, 4H): activations i, f, g, o;  tanh_c (N, H)
    packing          the ``Packing`` of the call
    """

    x: np.ndarray
    W_xT: np.ndarray
    W_hT: np.ndarray
    W_hrT: np.ndarray | None
    h0: np.ndarray
    c0: np.ndarray
    y: np.ndarray
    m: np.ndarray
    c: np.ndarray
    gates: np.ndarray
    tanh_c: np.ndarray
    packing: Packing


class LSTMGrads(NamedTuple):
    """Gradients returned by ``lstm_backward``, shaped like the forward's inputs."""

    dx: np.ndarray
    dW: np.ndarray
    db: np.ndarray
    dh0: np.ndarray
    dc0: np.ndarray


class LSTMProjGrads(NamedTuple):
    """``lstm_backward``'s result when the forward had a projection ``W_hr``."""

    dx: np.ndarray
    dW: np.ndarray
    db: np.ndarray
    dh0: np.ndarray
    dc0: np.ndarray
    dW_hr: np.ndarray


class _SpareArrays:
    """Arrays of an earlier forward's cache that nothing else holds any more,
    which a forward takes for its cache instead of new ones of the same
    shape and dtype (``LSTM.forward`` passes its last cache's).

    A training loop then writes its activations into the same memory at
    every call: new arrays of tens of MB came from pages the system mapped
    and zeroed again at each call once the last cache was freed first (1
    layer, I = H = 256, T = 100, B = 64: 2,900-5,300 page faults and 1.25x
    the time of an iteration).  Only C-contiguous, writeable arrays on a
    cache line are kept (``aligned_empty``'s), none that overlaps one of the
    arrays ``avoid`` (the caller's inputs), and an array that overlaps one
    kept already (a layer's x is the layer below's y) is left out.
    """

    def __init__(self, arrays=(), avoid=()):
        self._arrays = []
        usable = [
            a
            for a in arrays
            if a is not None and a.size and a.flags.c_contiguous and a.flags.writeable
            and a.ctypes.data % CACHE_LINE == 0
        ]  # fmt: skip
        if not usable:
            return
        avoided = [byte_bounds(v) for v in avoid]  # (first byte, one past the last) of each
        kept_end = 0
        for (start, end), a in sorted(((byte_bounds(a), a) for a in usable), key=lambda pair: pair[0]):
            if start >= kept_end and all(end <= lo or hi <= start for lo, hi in avoided):
                self._arrays.append(a)
                kept_end = end

    def take(self, shape, dtype):
        """A spare array of ``shape`` and ``dtype``, else a new one (``aligned_empty``)."""
        for i, a in enumerate(self._arrays):
            if a.shape == shape and a.dtype == dtype:
                return self._arrays.pop(i)
        return aligned_empty(shape, dtype)


def _cache_rows(caches, rows):
    """The arrays of the ``LSTMCache`` objects ``caches`` that have ``rows``
    rows, a row per step and sequence (x, y, m, c, gates and tanh_c; not the
    packed weights nor the states): what ``_SpareArrays`` can hand out."""
    arrays = (a for saved in caches for a in (saved.x, saved.y, saved.m, saved.c, saved.gates, saved.tanh_c))
    return [a for a in arrays if a is not None and a.shape[0] == rows]


def _threads(threaded):
    """How many of Numba's threads a kernel splits its work between: all, or 1 (serial)."""
    return numba.get_num_threads() if threaded else 1


def _state(name, value, B, size, dtype, source):
    if value is None:
        return np.zeros((B, size), dtype)
    value = as_float_array(name, value, dtype, source)
    check_shape(name, value, (B, size), f"(B, {'P' if name.startswith(('h', 'dh')) else 'H'})")
    return value


def lstm_forward(x, W, b, h0=None, c0=None, *, W_hr=None, lengths=None, reverse=False, cache=True):
    """Run one LSTM layer over a time-major sequence.

    Parameters
    ----------
    x : ndarray, shape (T, B, I), float32 or float64
    W : ndarray, shape (I + P, 4H), same dtype
        Rows 0..I-1 multiply x_t, rows I.. multiply h_{t-1}; columns are the
        gates i, f, g, o.  P = H without projection.
    b : ndarray, shape (4H,), same dtype
    h0 : ndarray, shape (B, P), optional
    c0 : ndarray, shape (B, H), optional
        Initial state (zeros when omitted).
    W_hr : ndarray, shape (H, P), optional
        Recurrent projection: ``h_t = (o * tanh(c_t)) @ W_hr`` (PyTorch's
        ``proj_size``, TF1's ``num_proj``).
    lengths : integer ndarray (or a list of ints), shape (B,), optional
        Valid steps of each sequence, 0..T.  Outputs past a sequence's length
        are zero and its final state is the one after its last valid step.
    reverse : bool
        Run each sequence backwards in time (within its own length).
    cache : bool
        Save what ``lstm_backward`` needs (the default).  False is inference:
        the gate activations of each step are kept only until the next step
        and c_t until the one after (about 6H fewer values written per row,
        and no c that grows with the sequence); the fourth result is None.

    Returns
    -------
    y : ndarray, shape (T, B, P)
    h_n : ndarray, shape (B, P)
    c_n : ndarray, shape (B, H)
        Final state (the initial state for sequences of length 0).
    cache : LSTMCache, or None with ``cache=False``
        What ``lstm_backward`` needs.
    """
    return _forward(x, W, b, h0, c0, W_hr, lengths, reverse, cache, private_x=False, private_y=False)


def _forward(x, W, b, h0, c0, W_hr, lengths, reverse, cache, *, private_x, private_y, spare=None):
    """``lstm_forward``, for a caller inside numba_lstm that may skip the cache's copies.

    private_x: ``x`` is the caller's own array, which nothing changes before
    the backward: the cache keeps it as it is.  private_y: the returned
    ``y`` goes only to code that never changes it (the next layer of a
    stack, or a concatenation): it may be the cache's own array.  A stacked
    ``LSTM`` passes both for its inner layers, which otherwise copied each
    layer's output twice (once as y, once as the next layer's x).  spare:
    a ``_SpareArrays`` from which the arrays that have a row per step and
    sequence are taken (the cache's, and ``y``, which is the caller's with
    ``cache=False``).
    """
    cache, reverse = check_bool("cache", cache), check_bool("reverse", reverse)
    W, b, W_hr, I, H, P = check_weights(W, b, W_hr=W_hr)
    dtype = W.dtype
    given_x = x
    x = as_float_array("x", x, dtype, "W")
    check_ndim("x", x, 3, "(T, B, I)")
    T, B = x.shape[:2]
    if x.shape[2] != I:  # the message is built only for the error
        if W_hr is None:
            projection = W.shape[0] > x.shape[2]  # W's rows would fit x and a projection of P >= 1
            hint = " (a W (I + P, 4H) of a projection goes with its W_hr (H, P))" if projection else ""
            check_shape("x", x, (T, B, I), f"(T, B, I) with I = {I} from W (I + H, 4H) = {W.shape}{hint}")
        raise ValueError(  # any of the three may be the wrong one
            f"x, W and W_hr do not agree: x (T, B, I) = {x.shape} has I = {x.shape[2]} and W_hr (H, P) = "
            f"{W_hr.shape} has P = {P}, so W (I + P, 4H) must have {x.shape[2] + P} rows; got {W.shape}"
        )
    h0 = _state("h0", h0, B, P, dtype, "W")
    c0 = _state("c0", c0, B, H, dtype, "W")
    lengths = check_lengths(lengths, T, B)
    packing = Packing.build(T, B, lengths, reverse)
    N = packing.N

    x_packed = packing.pack(x)
    h0_sorted, c0_sorted = packing.sort(h0), packing.sort(c0)
    # The cache keeps arrays of its own: without reordering, the packed x
    # and the sorted states are the caller's arrays, and y (below) is the
    # cache's, so they are copied (x unless as_float_array made a copy, or
    # the caller keeps it private; y unless the caller keeps it private).
    copies = cache and packing.packed_row is None
    spare = _SpareArrays() if spare is None else spare

    def take(shape):
        return spare.take(shape, dtype)

    if copies:
        if x is given_x and not private_x:
            x_copy = take(x_packed.shape)
            np.copyto(x_copy, x_packed)
            x_packed = x_copy
        h0_sorted, c0_sorted = h0_sorted.copy(), c0_sorted.copy()
    saved_rows = N if cache else B  # without a cache, one step's work
    # Without a cache, c_t of even and odd steps go to two slots of B rows:
    # inference keeps two states; and the gates and tanh(c_t) are not stored.
    c_rows = N if cache else _unsaved_c_rows(N, B)
    y = take((N, P))
    m = take((saved_rows, H)) if W_hr is not None else y
    c = take((c_rows, H))
    gates = take((N if cache else 0, 4 * H))
    tanh_c = take((N if cache else 0, H))
    if N > 0:
        Hp, Pp = padded(H, dtype), padded(P, dtype)
        projected = W_hr is not None
        # The policy goes by the rows of the first step, the sequences not
        # empty, as the kernel's shares do and as ``lstm_backward`` decides.
        B_steps = int(packing.batch_sizes[0])
        _lstm_forward(
            y, m, c, gates, tanh_c, aligned_empty((_z_rows(B, Hp, np.dtype(dtype).itemsize), 4 * Hp), dtype), np.empty((B, Pp) if projected else (0, 0), dtype),
            x_packed, pack_panels(W[:I], groups=4), pack_panels(W[I:], groups=4), pad_columns(b, groups=4),
            pack_panels(W_hr) if projected else np.empty((0, 0, 0), dtype), h0_sorted, c0_sorted,
            packing.batch_sizes, _threads(_use_threads(B_steps, P, 4 * H, SPLIT_STEP_MIN_FLOP)), ROW_SPLIT_MAX_BYTES,
            counters(2 * packing.batch_sizes.size),
        )  # fmt: skip
    h_n = packing.final_state(y, h0)
    c_n = packing.final_state(c, c0, slots=c_rows < N)
    if not cache:
        return packing.unpack(y), h_n, c_n, None
    # The backward's weights, packed here: the values of this call (moved
    # from the backward, so a training step packs them once as before).
    W_xT, W_hT = pack_panels(W[:I].T), pack_panels(W[I:].T)
    W_hrT = pack_panels(W_hr.T) if W_hr is not None else None
    saved = LSTMCache(x_packed, W_xT, W_hT, W_hrT, h0_sorted, c0_sorted, y, m, c, gates, tanh_c, packing)
    y_out = packing.unpack(y)
    return aligned_copy(y_out) if copies and not private_y else y_out, h_n, c_n, saved


def _unpad_gate_columns(a, H):
    """``a`` (..., 4Hp) without the padding of each gate block: ``a`` itself when Hp = H."""
    Hp = a.shape[-1] // 4
    if Hp == H:
        return a
    return np.ascontiguousarray(a.reshape(*a.shape[:-1], 4, Hp)[..., :H]).reshape(*a.shape[:-1], 4 * H)


def _check_cache(cache):
    """``(T, B, N, I, H, P)`` of an ``LSTMCache``, after checking that its
    arrays have the dtype, layout and shapes that its packing implies: the
    kernels index them by those shapes."""
    pk = cache.packing
    T, B, N = pk.T, pk.B, pk.N
    x, y, c = cache.x, cache.y, cache.c
    arrays = [a for a in cache[:-1] if a is not None]
    fits = all(isinstance(a, np.ndarray) and a.dtype == x.dtype and a.flags.c_contiguous for a in arrays)
    if not fits or x.ndim != 2 or y.ndim != 2 or c.ndim != 2:
        raise ValueError(
            "cache is not one that lstm_forward returned: its arrays differ in kind, dtype or rank"
        )
    I, P, H = x.shape[1], y.shape[1], c.shape[1]
    NR = panel_width(x.dtype)
    expected = {
        "x": (N, I), "W_xT": (-(-I // NR), 4 * H, NR), "W_hT": (-(-P // NR), 4 * H, NR),
        "W_hrT": None if cache.W_hrT is None else (-(-H // NR), P, NR), "h0": (B, P), "c0": (B, H),
        "y": (N, P), "m": (N, H), "c": (N, H), "gates": (N, 4 * H), "tanh_c": (N, H),
    }  # fmt: skip
    wrong = [
        name for name, shape in expected.items() if shape is not None and getattr(cache, name).shape != shape
    ]
    sizes = pk.batch_sizes
    steps = T if B > 0 else 0  # Packing.build: no batch, no steps
    if (
        not _int64_array(sizes)
        or sizes.shape != (steps,)
        or int(sizes.sum()) != N
        or (steps > 0 and not 0 <= sizes.min() <= sizes.max() <= B)
        or np.any(sizes[1:] > sizes[:-1])  # the kernels walk steps of non-increasing rows
    ):
        wrong.append("packing.batch_sizes")
    rows = pk.packed_row  # the jitted pack and unpack write by it
    if rows is not None and (
        not _int64_array(rows)
        or rows.shape != (T, B)
        or (rows.size > 0 and not -1 <= rows.min() <= rows.max() < N)
    ):
        wrong.append("packing.packed_row")
    order = pk.order  # unsort's scatter
    if rows is not None and (not _int64_array(order) or not np.array_equal(np.sort(order), np.arange(B))):
        wrong.append("packing.order")
    if wrong:
        raise ValueError(
            f"cache is not one that lstm_forward returned: {', '.join(wrong)} do not fit its "
            f"packing (T = {T}, B = {B}, N = {N} rows) and sizes (I = {I}, H = {H}, P = {P})"
        )
    return T, B, N, I, H, P


def _int64_array(a):
    """Whether ``a`` is an int64 ndarray, as the packing's index arrays are made."""
    return isinstance(a, np.ndarray) and a.dtype == np.int64


def _projection_grad_of(m, dh_all):
    """dW_hr = m.T @ dh_all (m (N, H), dh_all (N, P)) on Numba's threads,
    in blocks of GRAD_ROWS rows (fixed: the work arrays do not grow with the
    batch, and the bits do not depend on the threads)."""
    (N, H), P = m.shape, dh_all.shape[1]
    dtype, NR = m.dtype, panel_width(m.dtype)
    Hp, rows = padded(H, dtype), min(N, GRAD_ROWS)
    workers = min(_threads(_use_threads(N, H, P, PARALLEL_MIN_FLOP)), Hp // NR)
    dW_hrT_pad = aligned_zeros((P, Hp), dtype)
    _projection_grad(
        dW_hrT_pad, aligned_empty((workers, P, rows), dtype), aligned_empty((Hp // NR, rows, NR), dtype), m, dh_all,
        workers,
    )  # fmt: skip
    return np.ascontiguousarray(dW_hrT_pad[:, :H].T)


def lstm_backward(dy, cache, dh_n=None, dc_n=None):
    """Backpropagate through the sequence run by ``lstm_forward``.

    Parameters
    ----------
    dy : ndarray, shape (T, B, P), or None
        Gradient of the loss with respect to ``y``; None means zero (only the
        final-state gradients flow).  Entries past a sequence's length are
        ignored (those outputs are constant zeros).
    cache : LSTMCache
        The fourth result of ``lstm_forward``.
    dh_n : ndarray, shape (B, P), optional
    dc_n : ndarray, shape (B, H), optional
        Gradients with respect to the final state ``h_n``, ``c_n``.

    Returns
    -------
    LSTMGrads
        ``(dx, dW, db, dh0, dc0)`` with the shapes of ``x, W, b, h0, c0``;
        ``LSTMProjGrads`` with ``dW_hr`` as well when the forward had ``W_hr``.
    """
    if cache is None:
        raise ValueError("cache is None: the forward ran with cache=False and saved nothing for the backward")
    if not isinstance(cache, LSTMCache):
        raise TypeError(f"cache must be the LSTMCache returned by lstm_forward, got {type(cache).__name__}")
    pk = cache.packing
    T, B, N, I, H, P = _check_cache(cache)
    dtype = cache.x.dtype
    projected = cache.W_hrT is not None
    if dy is None:
        dy_packed = np.zeros((N, P), dtype)
    else:
        dy = as_float_array("dy", dy, dtype, "the forward's x")
        check_shape("dy", dy, (T, B, P), "(T, B, P), the shape of y")
        dy_packed = pk.pack(dy)
    dh_n = _state("dh_n", dh_n, B, P, dtype, "the forward's x")
    dc_n = _state("dc_n", dc_n, B, H, dtype, "the forward's x")

    if N == 0:
        dW_hr = np.zeros((H, P), dtype) if projected else None
        dx = np.zeros((T, B, I), dtype)
        dW, db = np.zeros((I + P, 4 * H), dtype), np.zeros(4 * H, dtype)
        dh0, dc0 = np.array(dh_n), np.array(dc_n)  # plain arrays, as the kernel's (not an np.matrix given)
    else:
        Hp, Ip, NR = padded(H, dtype), padded(I, dtype), panel_width(dtype)
        # The policy goes by the rows of the first step, the sequences not
        # empty, as the kernel's shares do (sequences of length 0 only pass
        # dh_n and dc_n on).  A block holds at least one whole step; its rows
        # do not depend on the threads, so that every thread count sums dW in
        # the same order.
        B_steps = int(pk.batch_sizes[0])
        rows = min(N, max(ONE_TILE_GRAD_ROWS if _tiles(B_steps) <= 1 else GRAD_ROWS, B_steps))
        step_workers = _threads(_use_threads(B_steps, 4 * H, P, SPLIT_STEP_MIN_FLOP))
        grad_workers = _threads(_use_threads(rows, I + P, 4 * H, PARALLEL_MIN_FLOP))
        W_hT, W_xT = cache.W_hT, cache.W_xT
        W_hrT = cache.W_hrT if projected else np.empty((0, 0, 0), dtype)
        pipelined = _pipelined(B_steps, step_workers, grad_workers, (W_hT.size + W_hrT.size) * W_hT.itemsize)
        # The arrays that threads write by shares of columns start on a cache line (``aligned_empty``).
        dh_pad = aligned_empty((B, padded(P, dtype)), dtype)
        dh_pad[:, :P] = pk.sort(dh_n)
        dc0 = aligned_empty((B, H), dtype)
        dc0[...] = pk.sort(dc_n)
        dx_pad = aligned_zeros((N, Ip), dtype)
        dW_pad = aligned_zeros((I + P, 4 * Hp), dtype)
        db_pad = np.zeros(4 * Hp, dtype)
        prev = np.empty(N, np.int64)
        _prev_rows(prev, pk.batch_sizes)
        dh_all = aligned_empty((N, P) if projected else (0, 0), dtype)
        _lstm_backward(
            dx_pad, dW_pad, db_pad, dh_pad, dc0, dh_all, aligned_empty((B, Hp) if projected else (0, 0), dtype),
            aligned_empty((PIPELINE_SLOTS if pipelined else 2, rows, 4 * H), dtype),
            aligned_empty((I + P, rows), dtype), aligned_empty((4 * Hp // NR, rows, NR), dtype), prev,
            dy_packed, cache.x, cache.h0, cache.y, cache.m, cache.c0, cache.c, cache.gates, cache.tanh_c,
            W_hT, W_hrT, W_xT, pk.batch_sizes, step_workers, grad_workers, pipelined, ROW_SPLIT_MAX_BYTES,
            counters(2 * (pk.batch_sizes.size + 1)), counters(4 * pk.batch_sizes.size),
        )  # fmt: skip
        dW_hr = _projection_grad_of(cache.m, dh_all) if projected else None
        dh0 = dh_pad[:, :P].copy()
        dW, db = _unpad_gate_columns(dW_pad, H), _unpad_gate_columns(db_pad, H)
        dx = pk.unpack(dx_pad, I)
        dh0, dc0 = pk.unsort(dh0), pk.unsort(dc0)
    if not projected:
        return LSTMGrads(dx, dW, db, dh0, dc0)
    return LSTMProjGrads(dx, dW, db, dh0, dc0, dW_hr)
