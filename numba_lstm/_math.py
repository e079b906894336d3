"""Gate nonlinearities that Numba can vectorise.

This numba/llvmlite has no SVML, so ``math.tanh`` and ``math.exp`` compile to
scalar library calls that block vectorisation of the fused gate pass.

* float32: ``tanh`` is a rational minimax approximation, odd polynomial of
  degree 13 over even polynomial of degree 6 (the coefficients Eigen uses for
  its float ``tanh``).  It is evaluated entirely in float32, vectorises to
  AVX/AVX-512, and is accurate to a few float32 ulp (max abs error below
  1e-6, measured in ``tests/test_math.py``).  The argument is clamped to
  +-7.9053111 first, where the float32 result is exactly +-1, so huge inputs
  saturate cleanly; the clamp is written with comparisons so that NaN passes
  through instead of being clamped.
* float64: the exact library functions, so float64 keeps float64 accuracy.

``sigmoid(x) = 0.5 * tanh(x / 2) + 0.5`` in both dtypes: it never overflows
(unlike ``1 / (1 + exp(-x))`` at x = -1e4) and shares the vectorised tanh.
"""

import math

import numpy as np
from numba import types
from numba.extending import overload

_CLAMP32 = np.float32(7.90531110763549805)
_A1 = np.float32(4.89352455891786e-03)
_A3 = np.float32(6.37261928875436e-04)
_A5 = np.float32(1.48572235717979e-05)
_A7 = np.float32(5.12229709037114e-08)
_A9 = np.float32(-8.60467152213735e-11)
_A11 = np.float32(2.00018790482477e-13)
_A13 = np.float32(-2.76076847742355e-16)
_B0 = np.float32(4.89352518554385e-03)
_B2 = np.float32(2.26843463243900e-03)
_B4 = np.float32(1.18534705686654e-04)
_B6 = np.float32(1.19825839466702e-06)
_HALF32 = np.float32(0.5)


def tanh(x):
    """Hyperbolic tangent of a float32 or float64 scalar (jitted code only)."""
    raise NotImplementedError("numba_lstm._math.tanh is only callable from jitted code")


def sigmoid(x):
    """Logistic sigmoid of a float32 or float64 scalar (jitted code only)."""
    raise NotImplementedError("numba_lstm._math.sigmoid is only callable from jitted code")


@overload(tanh)
def _tanh_overload(x):
    if x == types.float32:

        def tanh_f32(x):
            # Written so that NaN fails both comparisons and passes through.
            xc = _CLAMP32 if x > _CLAMP32 else x
            xc = -_CLAMP32 if xc < -_CLAMP32 else xc
            x2 = xc * xc
            p = _A13
            p = p * x2 + _A11
            p = p * x2 + _A9
            p = p * x2 + _A7
            p = p * x2 + _A5
            p = p * x2 + _A3
            p = p * x2 + _A1
            q = _B6
            q = q * x2 + _B4
            q = q * x2 + _B2
            q = q * x2 + _B0
            r = (p * xc) / q
            # Exact +-1 beyond the clamp (the rational form rounds to 1 - 2.4e-7
            # there once contracted into FMAs); NaN fails both tests.
            r = np.float32(1.0) if x >= _CLAMP32 else r
            return np.float32(-1.0) if x <= -_CLAMP32 else r

        return tanh_f32
    if x == types.float64:

        def tanh_f64(x):
            return math.tanh(x)

        return tanh_f64
    return None


@overload(sigmoid)
def _sigmoid_overload(x):
    if x == types.float32:

        def sigmoid_f32(x):
            return _HALF32 * tanh(_HALF32 * x) + _HALF32

        return sigmoid_f32
    if x == types.float64:

        def sigmoid_f64(x):
            return 0.5 * math.tanh(0.5 * x) + 0.5

        return sigmoid_f64
    return None
