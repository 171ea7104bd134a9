"""Small transformations shared by the torch-faithful optimizers.

Every scalar hyperparameter lives in the optimizer state in float32 or wider;
before it meets a tensor it is cast to that tensor's dtype, as torch applies its
Python-float hyperparameters to float32 or bfloat16 tensors, so moments and
updates keep the parameters' dtype.

Scalar work (``1 - beta``, ``-lr``, a lerp's branch) is done once per update,
outside the per-leaf maps, so a step's traced size and compile time grow with
the parameters only by their tensor arithmetic (tests/test_trace_cost.py).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


def cast(x: Any, like: jax.Array) -> jax.Array:
  """``x`` as a scalar of ``like``'s dtype."""
  return jnp.asarray(x, dtype=like.dtype)


def lerp(weight: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """``torch.lerp(start, end, weight)`` as a function of ``(start, end)``, with torch's
  two formulas, exact at both ends: ``start + w (end - start)`` for ``|w| < 0.5``,
  else ``end - (end - start)(1 - w)``, ``w`` rounded to the tensors' dtype first.

  The one-sided form loses ``end`` to cancellation when ``w = 1`` (Adafactor's
  first steps, RMSprop with alpha=0): ``v + (g**2 - v)`` is off by an ulp of ``v``.
  The scalar part (which formula, its coefficient) is worked out once per dtype,
  so a ``jax.tree.map`` of the result costs one pass per leaf and no per-leaf
  scalar work. Call it inside the update: the returned function keeps those
  scalars for as long as it lives.
  """

  @functools.cache
  def scalars(dtype):
    w = jnp.asarray(weight, dtype)
    near_start = jnp.abs(w) < 0.5
    # the scalar picks the anchor and the coefficient (w, or w - 1 == -(1 - w) exactly),
    # so both of torch's formulas round as torch's do without computing both
    return near_start, jax.lax.select(near_start, w, w - 1)

  def apply(start: jax.Array, end: jax.Array) -> jax.Array:
    near_start, coef = scalars(start.dtype)
    return jax.lax.select(near_start, start, end) + coef * (end - start)

  return apply


def square_average(decay: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """``(avg, x) -> decay * avg + (1 - decay) * x * x`` as torch's
  ``avg.mul_(decay).addcmul_(x, x, value=1 - decay)``, with ``1 - decay``
  computed once, in the hyperparameter's precision (Adam's v, RMSprop, Adadelta)."""
  rest = 1 - decay
  return lambda avg, x: avg * cast(decay, avg) + cast(rest, x) * x * x


def zeros_like(params: Any) -> Any:
  return jax.tree.map(jnp.zeros_like, params)


def negate() -> optax.GradientTransformation:
  """Negates the gradient: torch's ``maximize=True``, applied before L2 decay."""
  return optax.stateless(lambda g, _: jax.tree.map(jnp.negative, g))


def l2(weight_decay: Any) -> optax.GradientTransformation:
  """``g + weight_decay * p``: torch's coupled ``weight_decay`` (L2 added to the
  gradient before the optimizer's own math), as in ``torch.optim.SGD``."""

  def fn(g, p):
    return jax.tree.map(lambda gi, pi: gi + cast(weight_decay, gi) * pi, g, p)

  return optax.stateless(fn)


def gradient(maximize: bool, weight_decay: Any) -> tuple[optax.GradientTransformation | None, ...]:
  """torch's first lines of a step, ``g = -g`` if maximize, then ``g += weight_decay * p``
  (L2; None: none), as optional terms for :func:`chain`."""
  return negate() if maximize else None, l2(weight_decay) if weight_decay is not None else None


def descend(learning_rate: Any) -> optax.GradientTransformation:
  """``-lr * u``: the final step of every torch optimizer, ``p.add_(u, alpha=-lr)``."""

  def fn(u, _):
    step = -jnp.asarray(learning_rate)  # negation is exact: the same as negating after the cast
    return jax.tree.map(lambda ui: cast(step, ui) * ui, u)

  return optax.stateless(fn)


def decoupled_decay(learning_rate: Any, weight_decay: Any) -> optax.GradientTransformation:
  """Adds ``-lr * weight_decay * p``: torch's decoupled decay ``p.mul_(1 - lr * wd)``
  (``torch.optim.AdamW``), placed after :func:`descend` in a chain."""

  def fn(u, p):
    decay = learning_rate * weight_decay
    return jax.tree.map(lambda ui, pi: ui - cast(decay, ui) * pi, u, p)

  return optax.stateless(fn)


def decay_learning_rate(learning_rate: Any, corrected: bool, max_lr: Any) -> jax.Array:
  """The LR factor of timm's decoupled weight decay ``p *= 1 - factor * wd`` (``wd_scale`` in
  ``timm.optim.Lion``, ``NAdamW``, ``Adopt``, ``LaProp``, ``Lamb``, ``NvNovoGrad``): the LR, or with
  ``corrected_weight_decay`` ``lr**2 / max_lr``, max_lr being the peak LR (timm's ``max_lr_snapshot``,
  the constructor's lr), so that the decay per step follows the schedule as ``(lr / max_lr) * lr``."""
  lr = jnp.asarray(learning_rate)
  return lr**2 / max_lr if corrected else lr


def chain(*transforms: optax.GradientTransformation | None) -> optax.GradientTransformationExtraArgs:
  """``optax.chain`` that skips None, so factories can write optional terms inline."""
  return optax.chain(*(t for t in transforms if t is not None))


def cautious(update: jax.Array, grad: jax.Array) -> jax.Array:
  """timm's ``caution`` ('Cautious Optimizers', arXiv:2411.16085): ``update`` kept where it
  agrees in sign with ``grad``, zeroed elsewhere, and the kept part rescaled by the fraction
  kept: ``mask = (update * grad > 0) / max(mean(mask), 1e-3)``, ``update * mask`` (as
  ``timm.optim.Lamb``, ``Lion`` and ``Adan`` write it)."""
  mask = (update * grad > 0).astype(grad.dtype)
  return update * (mask / jnp.maximum(jnp.mean(mask), cast(1e-3, mask)))


def norm(x: jax.Array) -> jax.Array:
  """``x.norm(2.0)``: the Euclidean norm of all of ``x``'s elements, in ``x``'s dtype."""
  return jnp.sqrt(jnp.sum(x * x))


def float32_rounded(x: Any) -> jax.Array:
  """``x`` (float32 or wider) rounded to float32's precision, in its own dtype: the value of a
  torch float32 scalar tensor's arithmetic, done in float64 where the hyperparameters are (a
  product or sum of float32 values is exact there, so rounding once gives float32's result).
  ``reduce_precision``, because XLA drops a float64 -> float32 -> float64 convert pair."""
  return jax.lax.reduce_precision(x, exponent_bits=8, mantissa_bits=23)
