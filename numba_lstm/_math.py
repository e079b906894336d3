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
* float64: ``math.tanh`` is a scalar libm call (about 10 ns, and it keeps the
  whole gate loop scalar: the float64 gate pass cost 50 ns per hidden unit).
  The vectorisable version follows the classic Cephes split: for |x| < 0.625
  the rational form x + x^3 P(x^2) / Q(x^2) (degrees 2 and 3, relative error
  about 1e-16), above it 1 - 2 / (exp(2|x|) + 1) with exp written out:
  2|x| = k ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor series to r^13
  (truncation below 1e-17), and 2^k as a product of the powers selected by
  the bits of k, so that no table or bit cast is needed.  |x| is clamped at
  20, beyond which tanh is exactly +-1 in float64.  Measured against
  ``np.tanh``: within 2 ulp everywhere (``tests/test_math.py``).

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

# float64 tanh (see the module docstring); P, Q are Cephes' tanh coefficients.
_SMALL64 = 0.625
_CLAMP64 = 20.0
_P0, _P1, _P2 = -9.64399179425052238628e-01, -9.92877231001918586564e01, -1.61468768441708447952e03
_Q0, _Q1, _Q2 = 1.12811678491632931402e02, 2.23548839060100448583e03, 4.84406305325125486048e03
_INV_LN2 = 1.44269504088896338700e00
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10


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
            # Computed on a = |x|, the sign is restored at the end (so that
            # tanh(-0.0) is -0.0 and the function is exactly odd).
            a = abs(x)
            # Small a: odd rational form.
            z = a * a
            p = (_P0 * z + _P1) * z + _P2
            q = ((z + _Q0) * z + _Q1) * z + _Q2
            small = a + a * z * (p / q)
            # Large a: 1 - 2 / (exp(2a) + 1).  NaN fails the comparison and
            # flows through r into the result.
            a = _CLAMP64 if a > _CLAMP64 else a
            y = a + a
            k = math.floor(y * _INV_LN2 + 0.5)
            r = (y - k * _LN2_HI) - k * _LN2_LO
            e = 1.0 / 6227020800.0
            e = e * r + 1.0 / 479001600.0
            e = e * r + 1.0 / 39916800.0
            e = e * r + 1.0 / 3628800.0
            e = e * r + 1.0 / 362880.0
            e = e * r + 1.0 / 40320.0
            e = e * r + 1.0 / 5040.0
            e = e * r + 1.0 / 720.0
            e = e * r + 1.0 / 120.0
            e = e * r + 1.0 / 24.0
            e = e * r + 1.0 / 6.0
            e = e * r + 0.5
            e = e * r + 1.0
            e = e * r + 1.0
            n = np.int64(k) if k == k else np.int64(0)
            two_k = 2.0 if n & 1 else 1.0
            two_k *= 4.0 if n & 2 else 1.0
            two_k *= 16.0 if n & 4 else 1.0
            two_k *= 256.0 if n & 8 else 1.0
            two_k *= 65536.0 if n & 16 else 1.0
            two_k *= 4294967296.0 if n & 32 else 1.0
            large = 1.0 - 2.0 / (e * two_k + 1.0)
            return math.copysign(small if a < _SMALL64 else large, x)

        return tanh_f64
    return None


# Inlined by Numba so that tanh is one call deep in the gate loops: nested one
# level further, LLVM did not inline the float64 tanh and the float64 gate pass
# stayed scalar (62 ns against 7.6 ns per hidden unit at B = 64, H = 256).
# (tanh itself cannot be inlined this way: Numba's SSA pass warns on its
# branches.)
@overload(sigmoid, inline="always")
def _sigmoid_overload(x):
    if x == types.float32:

        def sigmoid_f32(x):
            return _HALF32 * tanh(_HALF32 * x) + _HALF32

        return sigmoid_f32
    if x == types.float64:

        def sigmoid_f64(x):
            return 0.5 * tanh(0.5 * x) + 0.5

        return sigmoid_f64
    return None
