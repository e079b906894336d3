"""Gate nonlinearities that Numba can vectorise.

This numba/llvmlite has no SVML, so ``math.tanh`` and ``math.exp`` compile to
scalar library calls that block vectorisation of the fused gate pass.

* float32: ``tanh`` is a rational minimax approximation, odd polynomial of
  degree 13 over even polynomial of degree 6 (the coefficients Eigen uses for
  its float ``tanh``).  It is evaluated entirely in float32, vectorises to
  AVX/AVX-512, and is accurate to a few float32 ulp (max abs error below
  1e-6, measured in ``tests/test_math.py``).  The argument is clamped to
  +-7.9053111 first, where the float32 result is exactly +-1, so huge inputs
  saturate cleanly; the clamp is written with ``min`` and ``max``, which keep
  a NaN first argument, so that NaN passes through instead of being clamped.
* float64: ``math.tanh`` is a scalar libm call (about 10 ns, and it keeps the
  whole gate loop scalar: the float64 gate pass cost 50 ns per hidden unit).
  Both functions are built on exp written out as Cephes' ``exp`` does: y =
  k ln2 + r with |r| <= ln2 / 2, exp(r) = (Q(r^2) + r P(r^2)) / (Q(r^2) -
  r P(r^2)) (a Pade form, degrees 3 and 2), and 2^k from its exponent bits,
  so that exp(y) = 2^k plus / minus (``_exp_fraction``).
  ``tanh`` follows the classic Cephes split: for |x| < 0.625 the rational
  form x + x^3 P(x^2) / Q(x^2) (degrees 2 and 3, relative error about
  1e-16), above it 1 - 2 / (exp(2|x|) + 1) = 1 - 2 minus / (2^k plus +
  minus), one division.  |x| is clamped at 20, beyond which tanh is exactly
  +-1 in float64.  Within 2 ulp of ``np.tanh`` everywhere.
  ``sigmoid`` on a = |x|: 2^k plus / (2^k plus + minus) for x >= 0 and
  minus / (2^k plus + minus) for x < 0, a quotient of positive terms either
  way, so that it is accurate relative to its size (within 3 ulp, tiny
  results included) and never overflows; below x = -708 it returns 0 (the
  exact value is below 3.3e-308).  Both bounds are measured in
  ``tests/test_math.py``.

``float32`` computes ``sigmoid`` on a = |x| as the float64 one does, with
Cephes' ``expf`` (exp(-a) = 2^k exp(r), a degree-5 polynomial in r): 1 / (1 +
e) or e / (1 + e), within 3 ulp of its size (measured in
``tests/test_math.py``), 0 below x = -87.  It was ``0.5 * tanh(x / 2) +
0.5``, whose absolute error (about 6e-8) was all the digits of a nearly shut
gate (0 below x = -16): float32 gradients with the chrono initialisation came
out 7-44x less accurate than PyTorch's (bench/NOTES.md, "Session 36").

Both dtypes are inlined by Numba (``inline="always"``) and written without
branches: the gate pass is bound by the throughput of its nonlinearities.
The float64 pass went 4.45 -> 2.6 ns per hidden unit with the Pade form,
the bit-built 2^k and the direct sigmoid (before: a Taylor series of exp in
Estrin's form, 2^k as a product of six powers, the sigmoid through tanh);
left to LLVM's inliner the float64 tanh made it scalar, 9x slower
(bench/NOTES.md, "Session 10" and "Session 11").
"""

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

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
# float32 exp for the sigmoid: Cephes' expf (a degree-5 polynomial on |r| <= ln2 / 2).
_EXP_MAX32 = np.float32(87.0)  # exp(-87) = 1.6e-38 > 2^-126: 2^k stays a normal number
_INV_LN2_32 = np.float32(1.44269504088896341)
_LN2_HI32 = np.float32(0.693359375)  # ln 2 split so that k * _LN2_HI32 is exact
_LN2_LO32 = np.float32(-2.12194440e-4)
_E32 = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2))
_E32_4, _E32_5 = np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)
_ONE32 = np.float32(1.0)

# float64 (see the module docstring): P, Q are Cephes' tanh coefficients, _EP*, _EQ* its exp's.
_SMALL64 = 0.625
_CLAMP64 = 20.0
_P0, _P1, _P2 = -9.64399179425052238628e-01, -9.92877231001918586564e01, -1.61468768441708447952e03
_Q0, _Q1, _Q2 = 1.12811678491632931402e02, 2.23548839060100448583e03, 4.84406305325125486048e03
_INV_LN2 = 1.44269504088896338700e00
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_EXP_MAX = 708.0  # exp(708) < 2^1022: 2^k stays a normal number (and sigmoid(-708) = 3.3e-308)
_EP0, _EP1, _EP2 = 1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1
_EQ0, _EQ1 = 3.00198505138664455042e-6, 2.52448340349684104192e-3
_EQ2, _EQ3 = 2.27265548208155028766e-1, 2.00000000000000000009e0


@intrinsic
def _select(typingctx, condition, if_true, if_false):
    """``if_true if condition else if_false`` without a branch in Numba's IR (LLVM's ``select``)."""
    if isinstance(condition, types.Boolean) and isinstance(if_true, types.Float) and if_true == if_false:

        def codegen(context, builder, signature, args):
            return builder.select(*args)

        return if_true(condition, if_true, if_false), codegen
    return None


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c with one rounding (LLVM's ``llvm.fma``), for three floats of one type.

    ``fastmath={"contract"}`` lets LLVM fuse a product into an add, and where
    an add has two products (``f * c_prev + i * g``), or a product with two
    uses, which one it fuses is up to the code generator: a process that
    compiled the kernels and one that loaded them from the cache rounded
    float64 results differently (bench/NOTES.md, "Session 16").  Such sums
    name their fused product with this.
    """
    if a in (types.float32, types.float64) and a == b == c:

        def codegen(context, builder, signature, args):
            t = args[0].type
            name = "llvm.fma.f64" if a == types.float64 else "llvm.fma.f32"
            function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t, t, t]), name)
            return builder.call(function, args)

        return a(a, b, c), codegen
    return None


@intrinsic
def _two_to32(typingctx, k):
    """The float32 2^k for a float32 whole number k in [-126, 127]: its exponent bits, (k + 127) << 23."""
    if k == types.float32:

        def codegen(context, builder, signature, args):
            i32 = ir.IntType(32)
            n = builder.fptosi(args[0], i32)
            bits = builder.shl(builder.add(n, ir.Constant(i32, 127)), ir.Constant(i32, 23))
            return builder.bitcast(bits, ir.FloatType())

        return types.float32(k), codegen
    return None


@intrinsic
def _two_to(typingctx, n):
    """The float64 2^n for an int64 n in [-1022, 1023]: its exponent bits, (n + 1023) << 52."""
    if n == types.int64:

        def codegen(context, builder, signature, args):
            i64 = ir.IntType(64)
            bits = builder.shl(builder.add(args[0], ir.Constant(i64, 1023)), ir.Constant(i64, 52))
            return builder.bitcast(bits, ir.DoubleType())

        return types.float64(n), codegen
    return None


def _exp_fraction(y):
    """exp(y) = two_k * plus / minus, for a float64 y in [0, _EXP_MAX] (jitted code only)."""
    raise NotImplementedError("numba_lstm._math._exp_fraction is only callable from jitted code")


@overload(_exp_fraction, inline="always")
def _exp_fraction_overload(y):
    if y == types.float64:

        def exp_fraction(y):
            # y = k ln2 + r with |r| <= ln2 / 2, and exp(r) = (Q + r P) / (Q - r P),
            # Cephes' Pade form (P, Q in r^2).  NaN flows through r; k is
            # computed from a clamp that turns NaN into the bound (min keeps
            # its first argument unless the second is smaller), so that its
            # conversion to an integer is defined.
            k = math.floor(min(_EXP_MAX, y) * _INV_LN2 + 0.5)
            r = (y - k * _LN2_HI) - k * _LN2_LO
            r2 = r * r
            p = (_EP0 * r2 + _EP1) * r2 + _EP2
            eq = ((_EQ0 * r2 + _EQ1) * r2 + _EQ2) * r2 + _EQ3
            return _two_to(np.int64(k)), fma(r, p, eq), fma(-r, p, eq)

        return exp_fraction
    return None


def tanh(x):
    """Hyperbolic tangent of a float32 or float64 scalar (jitted code only)."""
    raise NotImplementedError("numba_lstm._math.tanh is only callable from jitted code")


def sigmoid(x):
    """Logistic sigmoid of a float32 or float64 scalar (jitted code only)."""
    raise NotImplementedError("numba_lstm._math.sigmoid is only callable from jitted code")


@overload(tanh, inline="always")
def _tanh_overload(x):
    # Inlined by Numba into every caller: LLVM's own inliner left the float64
    # tanh (and so the whole gate loop) scalar once its exp was written in
    # Estrin's form.  The bodies have no branches (``min``/``max`` and
    # ``_select`` instead of conditional expressions, on which Numba's
    # inliner raised NumbaIRAssumptionWarning).
    if x == types.float32:

        def tanh_f32(x):
            # min(x, c) is x unless c < x, max likewise: NaN passes through.
            xc = max(min(x, _CLAMP32), -_CLAMP32)
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
            r = _select(x >= _CLAMP32, np.float32(1.0), r)
            return _select(x <= -_CLAMP32, np.float32(-1.0), r)

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
            # Large a: 1 - 2 / (exp(2a) + 1), with exp(2a) = 2^k plus / minus:
            # 2 minus / (2^k plus + minus).  NaN stays in a (min keeps its
            # first argument unless the second is smaller).
            a = min(a, _CLAMP64)
            two_k, plus, minus = _exp_fraction(a + a)
            small = a + a * z * (p / q)
            large = 1.0 - 2.0 * minus / (two_k * plus + minus)
            return math.copysign(_select(a < _SMALL64, small, large), x)

        return tanh_f64
    return None


# Inlined by Numba, like tanh: left to LLVM's inliner, the float64 gate pass
# stayed scalar (62 ns against 7.6 ns per hidden unit at B = 64, H = 256).
@overload(sigmoid, inline="always")
def _sigmoid_overload(x):
    if x == types.float32:

        def sigmoid_f32(x):
            # On a = |x|, with e = exp(-a): sigmoid(a) = 1 / (1 + e) and
            # sigmoid(-a) = e / (1 + e), accurate relative to its size (the
            # form 0.5 tanh(x / 2) + 0.5 lost the digits of small results:
            # 0 below x = -16).  exp(-a) = 2^k exp(r), -a = k ln2 + r, with
            # k from a clamp that turns NaN into the bound (NaN stays in r).
            # Below -_EXP_MAX32 the result is 0 (the exact value is below
            # 1.7e-38).
            a = min(abs(x), _EXP_MAX32)
            k = np.floor(_HALF32 - min(_EXP_MAX32, a) * _INV_LN2_32)
            r = (k * -_LN2_HI32 - a) - k * _LN2_LO32
            p = ((((_E32[0] * r + _E32[1]) * r + _E32[2]) * r + _E32[3]) * r + _E32_4) * r + _E32_5
            e = ((p * (r * r) + r) + _ONE32) * _two_to32(k)
            s = _select(x < np.float32(0.0), e, _ONE32) / (_ONE32 + e)
            return _select(x < -_EXP_MAX32, np.float32(0.0), s)

        return sigmoid_f32
    if x == types.float64:

        def sigmoid_f64(x):
            # On a = |x|, with exp(a) = 2^k plus / minus: sigmoid(a) =
            # 2^k plus / (2^k plus + minus) and sigmoid(-a) = minus / (the
            # same), a quotient of positive terms either way, so that the
            # result is accurate relative to its size, small ones included.
            # Below -_EXP_MAX the result is 0.  NaN stays in a.
            a = min(abs(x), _EXP_MAX)
            two_k, plus, minus = _exp_fraction(a)
            s = _select(x < 0.0, minus, two_k * plus) / fma(two_k, plus, minus)
            return _select(x < -_EXP_MAX, 0.0, s)

        return sigmoid_f64
    return None
