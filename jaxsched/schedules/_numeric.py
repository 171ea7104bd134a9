"""Exact-count arithmetic shared by the closed forms.

Every schedule computes in the float type of the current JAX mode (float64 when
``jax_enable_x64`` is on, float32 otherwise), chosen when the schedule is
called, i.e. at trace time. Counts are cast to int64 (x64) or int32 before any
arithmetic, period arithmetic (``//``, ``%``) stays in integers, and the
quantities that float32 would round badly are rewritten:

* ``gamma ** m`` for an integer ``m`` up to 2**31 - 1 is ``exp(m * log(gamma))``
  with the product carried in two words and the exponential scaled by ``2**k``
  from its bits (:func:`power`), so it is 0 or inf, not NaN, out of range;
* ``(1 + cos(pi * r / T)) / 2`` is ``sin(pi * (T - r) / (2 T)) ** 2`` with
  ``T - r`` an exact integer (:func:`half_cosine`), which keeps full relative
  precision near the trough where the cosine form cancels;
* ``k - c`` for a fractional constant ``c`` subtracts the integer part exactly
  (:func:`minus`).

A value is the same called eagerly, under vmap and under jit, where XLA
rewrites ``x / c`` into ``x * (1 / c)`` and ``c1 * (x * c2)`` into
``x * (c1 * c2)``: so the closed forms divide by a constant only as a product
with its reciprocal and fold constant factors into one constant themselves.
What XLA still fuses differently is ``a * b + c`` (one rounding under jit,
two eagerly): at most an ulp of the larger term.
"""

from __future__ import annotations

import decimal
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsched import _checks
from jaxsched._errors import ConfigError

INT_MAX = 2**31 - 1


def float_dtype() -> jnp.dtype:
  """float64 under x64, else float32 (decided at call time)."""
  return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def int_dtype() -> jnp.dtype:
  """int64 under x64, else int32 (decided at call time)."""
  return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.int64))


def as_count(count: Any) -> jax.Array:
  """The step count as an integer array of the mode's width (int64 under x64).

  Raises:
    ConfigError: a Python or NumPy count beyond that width (JAX would raise an
      OverflowError for a Python int and wrap a NumPy one to a wrong step).
  """
  if isinstance(count, (int, float, np.integer, np.floating, np.ndarray)) and not isinstance(count, bool):
    limit = np.iinfo(int_dtype()).max
    values = np.asarray(count) if not isinstance(count, int) else None
    if values is None:
      inside = -limit - 1 <= count <= limit
    else:
      inside = values.size == 0 or bool(values.min() >= -limit - 1) and bool(values.max() <= limit)
    if not inside:
      hint = '' if jax.config.read('jax_enable_x64') else ' (enable jax_enable_x64 for int64 counts)'
      raise ConfigError(
        f"step count {_checks.shown(count)} is not a count the schedule's counter holds: |count| <= {limit}{hint}."
      )
  count = jnp.asarray(count)
  if not jnp.issubdtype(count.dtype, jnp.integer):
    count = jnp.floor(count)
  return count.astype(int_dtype())


def const(x: float) -> jax.Array:
  return jnp.asarray(x, float_dtype())


def to_float(n: jax.Array) -> jax.Array:
  return n.astype(float_dtype())


def mod_period(n: jax.Array, period: int) -> jax.Array:
  """``n % period`` in integers; a period beyond the int32 range leaves n as is."""
  return n if period > INT_MAX else n % period


def div_period(n: jax.Array, period: int) -> jax.Array:
  """``n // period`` in integers (0 when the period exceeds every valid count)."""
  return jnp.zeros_like(n) if period > INT_MAX else n // period


def power(gamma: float, m: jax.Array) -> jax.Array:
  """``gamma ** m`` for a Python float gamma and an integer array m >= 0.

  Relative error of a few ulps for every m up to 2**31 - 1 in both modes, 0 or
  inf (never NaN) where the power under- or overflows: ``m * log|gamma|`` is
  carried as an exact float sum plus a small correction (no rounding of m or
  of gamma is amplified by m) and exponentiated by :func:`exp_sum`.
  """
  dt = float_dtype()
  m = jnp.maximum(m, 0)
  if gamma == 0.0:
    return jnp.where(m == 0, 1.0, 0.0).astype(dt)
  sign = jnp.where(m % 2 == 1, -1.0, 1.0).astype(dt) if gamma < 0 else jnp.asarray(1.0, dt)
  if abs(gamma) == 1.0:
    return sign
  # log|gamma| = head + tail, head with 8 significant bits, so that hi * head and
  # lo * head are exact for the 16-bit halves of m (m < 2**32 in float32).
  head, tail = split_log(abs(gamma), 8)
  hi = to_float(m >> 16)
  lo = to_float(m & 0xFFFF)
  p1 = hi * const(head * 65536.0)
  p2 = lo * const(head)
  s = p1 + p2
  bb = s - p1
  err = (p1 - (s - bb)) + (p2 - bb)  # two-sum: p1 + p2 == s + err exactly
  return sign * exp_sum(s, err + to_float(m) * const(tail))


@functools.lru_cache(maxsize=None)
def split_log(x: float, bits: int) -> tuple[float, float]:
  """``log(x)`` as ``head + tail``: head with ``bits`` significant bits, tail the
  rest to double precision (the log is taken to 40 digits)."""
  with decimal.localcontext() as ctx:
    ctx.prec = 40
    exact = decimal.Decimal(x).ln()
    mant, exp = math.frexp(float(exact))
    head = math.ldexp(round(mant * 2**bits), exp - bits)
    return head, float(exact - decimal.Decimal(head))


def exp_sum(s: jax.Array, rest: jax.Array) -> jax.Array:
  """``exp(s + rest)`` for a correction ``|rest| <= |s| / 64``, to a few ulps.

  ``s + rest`` is reduced by ``k * log(2)`` (Cody-Waite, exact for the ``|s|``
  of every finite non-zero result) and the result scaled by ``2**k`` built from
  its bits, so no exp under- or overflows alone: a power that is out of range
  is 0 or inf, never ``0 * inf``. One ``exp`` of the reduced argument also keeps
  XLA from rewriting ``exp(a) * exp(b)`` into a rounded ``exp(a + b)`` under jit.
  """
  info = jnp.finfo(float_dtype())
  kmax = 2 * (info.maxexp - 2)  # each half of k stays a normal exponent
  ln2_hi, ln2_lo = split_log(2.0, info.nmant + 1 - kmax.bit_length())  # k * ln2_hi exact
  k = jnp.clip(jnp.round((s + rest) * const(1 / math.log(2))), -kmax, kmax)
  r = (s - k * const(ln2_hi)) + (rest - k * const(ln2_lo))
  k = k.astype(int_dtype())
  half = k >> 1
  return jnp.exp(r) * _exp2(half) * _exp2(k - half)


def _exp2(k: jax.Array) -> jax.Array:
  """``2.0 ** k`` for integers k of normal exponents, exactly (from the bits)."""
  info = jnp.finfo(float_dtype())
  return jax.lax.bitcast_convert_type((k + (info.maxexp - 1)) << info.nmant, float_dtype())


def half_cosine(distance: jax.Array, period2: int | float) -> jax.Array:
  """``(1 + cos(pi * r / T)) / 2`` given ``distance = T - r`` and ``period2 = 2 T``.

  Equal to ``sin(pi * (T - r) / (2 T)) ** 2``; ``distance`` is an exact integer
  (or an accurate float), so the value keeps its relative precision near the
  trough (r near T) where ``1 + cos`` cancels.
  """
  s = jnp.sin(distance.astype(float_dtype()) * const(math.pi / period2))
  return s * s


def minus(n: jax.Array, c: float) -> jax.Array:
  """``n - c`` as a float, accurate for a fractional Python constant c."""
  ci = math.floor(c)
  cf = c - ci
  return (n - ci).astype(float_dtype()) - const(cf)


def fold_affine(
  step: Callable[[jax.Array], tuple[jax.Array, jax.Array]], n: jax.Array, start: jax.Array, block: int = 256
) -> jax.Array:
  """Applies ``lr <- a(k) * lr + b(k)`` for k = 1..n to ``start``: torch's chainable
  recursion where no closed form exists.

  Pure jnp with a traced n (a ``while_loop`` over blocks of ``block`` steps,
  each block evaluated as vectors and composed with suffix products), so the
  cost is O(n), not O(1): fine for a training loop's count, slow for long
  curves under vmap.
  """
  dt = float_dtype()
  it = n.dtype
  offsets = jnp.arange(block, dtype=it)

  def body(carry):
    first, lr = carry
    ks = first + offsets
    a, b = step(ks)
    live = ks <= n
    a = jnp.where(live, jnp.broadcast_to(a, ks.shape).astype(dt), 1.0)
    b = jnp.where(live, jnp.broadcast_to(b, ks.shape).astype(dt), 0.0)
    # lr_end = prod(a) * lr + sum_k b_k * prod_{j>k} a_j
    rev = jnp.cumprod(a[::-1])[::-1]  # prod_{j>=k} a_j
    after = jnp.concatenate([rev[1:], jnp.ones((1,), dt)])
    return first + block, rev[0] * lr + jnp.sum(b * after)

  def cond(carry):
    return carry[0] <= n

  _, lr = jax.lax.while_loop(cond, body, (jnp.ones((), it), jnp.asarray(start, dt)))
  return lr
