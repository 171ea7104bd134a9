"""timm's two Adafactors: ``timm.optim.Adafactor`` (fairseq's, with timm's choice of factored
dimensions) by the IDs ``timm.adafactor`` and ``timm.cadafactor``, and
``timm.optim.AdafactorBigVision`` (big_vision's) by ``timm.adafactorbv``, ``timm.cadafactorbv``,
``timm.adafactorbvc`` and ``timm.cadafactorbvc``.

Each ID is timm's class with the defaults ``timm.optim.create_optimizer_v2(..., opt=<name>)``
passes (the class's own, then ``weight_decay=0``, AdafactorBigVision's ``momentum=0.9``, and the
registry entry's ``caution`` and, for cadafactor, ``betas=(0.9, 0.999)``); the numbers are those of
timm's single-tensor implementations, the ones it runs on CPU. Neither is ``torch.optim.Adafactor``
(:mod:`jaxsched.optimizers.adafactor`): timm adds eps to ``g²`` rather than clamping, factors other
dimensions (or none), and scales its step otherwise. There is no torch.optim counterpart, so no
torch state conversion (``torch_state`` is empty); the factored moments keep the reduced dimension
as size 1 (timm's Adafactor drops it). Complex parameters are refused: timm takes no real view of
them but runs complex arithmetic (``g**2``, not ``|g|²``), which AdafactorBigVision's momentum then
casts to real, and caution raises for them.

The learning rate of ``timm.adafactor`` and ``timm.cadafactor`` is timm's ``lr``: null (the default,
what ``create_optimizer_v2`` passes when given none, and a config without ``learning_rate``) is timm's
``relative_step``; a number or a schedule is an external LR, with which timm ignores
scale_parameter and refuses warmup_init (a ConfigError at ``init``, where the LR is first seen
with the keywords). AdafactorBigVision's momentum is kept in its ``momentum_dtype``, bfloat16 by
default, rounded as timm's CPU kernel rounds it.

AdafactorBigVision takes timm's ``corrected_weight_decay`` (and ``max_lr``,
:func:`jaxsched.optimizers._registry.with_corrected_decay`), by the IDs ``timm.adafactorbvc`` and
``timm.cadafactorbvc`` too: the decay's ``lr`` becomes ``lr**2 / max_lr``, and with unscaled_wd its
``1`` becomes ``lr / max_lr``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.optimizers import _common, adam
from jaxsched.optimizers._registry import LEARNING_RATE, OptimizerSpec, with_corrected_decay


class FactoredState(NamedTuple):
  """timm's per-parameter ``step``; second moments per parameter, a ``(row, col)`` pair of
  means of ``g² + eps`` where the parameter is factored (each keeps its reduced dimension as
  size 1), else the full ``exp_avg_sq``; and ``exp_avg`` (None without a first moment)."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  nu: Any
  mu: Any = None


Dims = tuple[int, int] | None  # (column, row): the dimension the row moment keeps, the one it reduces


def adafactor_dims(shape: tuple[int, ...], min_dim_size_to_factor: int) -> Dims:
  """``timm.optim.Adafactor._get_options``: the first two dimensions where the tensor has more
  than two and both are larger than ``min_dim_size_to_factor`` (a convolution's out and in
  channels), else the last two where both are larger, else None (not factored)."""
  ndim, m = len(shape), min_dim_size_to_factor
  if ndim > 2 and shape[0] > m and shape[1] > m:
    return 0, 1
  if ndim >= 2 and shape[-2] > m and shape[-1] > m:
    return ndim - 2, ndim - 1
  return None


def big_vision_dims(shape: tuple[int, ...], min_dim_size_to_factor: int) -> Dims:
  """``timm.optim.adafactor_bv._factored_dims``: the two largest dimensions (of equal sizes the
  later is the larger), if the second largest is at least ``min_dim_size_to_factor``; else None."""
  if len(shape) < 2:
    return None
  ranked = sorted((size, i) for i, size in enumerate(shape))
  return None if ranked[-2][0] < min_dim_size_to_factor else (ranked[-2][1], ranked[-1][1])


def _init_second(p: jax.Array, dims: Dims, dtype: Any) -> Any:
  if dims is None:
    return jnp.zeros(p.shape, dtype)
  col, row = dims
  return (
    jnp.zeros(tuple(1 if i == row else n for i, n in enumerate(p.shape)), dtype),
    jnp.zeros(tuple(1 if i == col else n for i, n in enumerate(p.shape)), dtype),
  )


def _rsqrt(x: jax.Array) -> jax.Array:
  # torch's CPU rsqrt is 1 / sqrt(x)
  return 1 / jnp.sqrt(x)


def _second_moments(v: Any, g2: jax.Array, dims: Dims, mix: Callable) -> tuple[Any, tuple[jax.Array, ...]]:
  """The moments ``v`` lerped towards ``g2`` (``g² + eps``) by ``mix``, and the factors whose
  product is ``1 / sqrt(V)``: ``rsqrt(v)`` unfactored; factored on ``dims = (col, row)``, the row
  moment ``r`` (the mean over ``row``) and the column moment ``c`` (the mean over ``col``) give
  ``rsqrt(r / mean_col(r))`` and ``rsqrt(c)`` (both timm classes)."""
  if dims is None:
    v = mix(v, g2)
    return v, (_rsqrt(v),)
  col, row = dims
  r, c = v
  r = mix(r, jnp.mean(g2, axis=row, keepdims=True))
  c = mix(c, jnp.mean(g2, axis=col, keepdims=True))
  return (r, c), (_rsqrt(r / jnp.mean(r, axis=col, keepdims=True)), _rsqrt(c))


def _rms(x: jax.Array) -> jax.Array:
  """timm's ``x.norm(2) / (x.numel() ** 0.5)``."""
  return _common.norm(x) / _common.cast(x.size**0.5, x)


def _clipped(u: jax.Array, threshold: Any) -> jax.Array:
  """``u / max(rms(u) / threshold, 1)``."""
  return u / jnp.maximum(_rms(u) / _common.cast(threshold, u), _common.cast(1, u))


def _split(out: Any, tree: Any) -> tuple[Any, ...]:
  """A tree (of structure ``tree``) of tuples as a tuple of trees."""
  return tuple(jax.tree.unflatten(tree, list(x)) for x in zip(*tree.flatten_up_to(out)))


def adafactor(
  learning_rate,
  eps,
  eps_scale,
  clip_threshold,
  decay_rate,
  weight_decay,
  scale_parameter: bool,
  warmup_init: bool,
  min_dim_size_to_factor: int,
  caution: bool,
  b1=None,
  b2=None,
) -> optax.GradientTransformation:
  """Adafactor, as ``timm.optim.Adafactor``.

  The step size: with lr None (timm's ``relative_step``, its default),
  ``min(1e-6 t if warmup_init else 1e-2, 1 / sqrt(t))``, times ``max(eps_scale, rms(p))`` if
  scale_parameter; else lr (scale_parameter ignored, as timm). The second moment lerps towards
  ``g² + eps`` with weight ``1 - (1 - t**decay_rate)``, factored on timm's dimensions
  (:func:`adafactor_dims`, :func:`_second_moments`); ``u = g / sqrt(V)``, clipped to rms
  clip_threshold, times the step size; with betas, ``m = lerp(m, u, 1 - betas[0])`` and
  ``u = m`` (caution as :func:`_common.cautious`; betas[1] is unused, as timm). Then
  ``p += -wd * step_size * p`` and ``p -= u``. float16 and bfloat16 parameters are worked in
  float32 with float32 moments, as timm.
  """
  del b2  # timm reads betas[0] only
  if warmup_init and learning_rate is not None:
    raise ConfigError('timm.optim.Adafactor: warmup_init=True needs the relative step: lr null, as timm requires.')

  def wide(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))

  def init_fn(params):
    def second(p):
      return _init_second(p, adafactor_dims(p.shape, min_dim_size_to_factor), wide(p).dtype)

    mu = jax.tree.map(lambda p: jnp.zeros(p.shape, wide(p).dtype), params) if b1 is not None else None
    return FactoredState(jnp.zeros([], jnp.int32), jax.tree.map(second, params), mu)

  def update_fn(updates, state, params):
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.asarray(eps_scale).dtype)
    mix = _common.lerp(1 - (1 - t**decay_rate))
    momentum = _common.lerp(1 - b1) if b1 is not None else None
    relative = learning_rate is None
    size = jnp.minimum(1e-6 * t if warmup_init else 1e-2, 1 / jnp.sqrt(t)) if relative else learning_rate

    def leaf(g, v, m, p):
      g, p_wide = wide(g), wide(p)
      step = _common.cast(size, p_wide)
      if relative and scale_parameter:
        step = step * jnp.maximum(_common.cast(eps_scale, p_wide), _rms(p_wide))
      v, factors = _second_moments(
        v, g * g + _common.cast(eps, g), adafactor_dims(g.shape, min_dim_size_to_factor), mix
      )
      u = factors[0] * factors[1] * g if len(factors) == 2 else factors[0] * g
      u = _clipped(u, clip_threshold) * step
      if momentum is not None:
        m = momentum(m, u)
        u = _common.cautious(m, g) if caution else m
      new = p_wide
      if weight_decay is not None:
        new = new + -(_common.cast(weight_decay, p_wide) * step) * new
      return (new - u - p_wide).astype(p.dtype), v, m

    mus = state.mu if b1 is not None else jax.tree.map(lambda _: None, params)
    out = jax.tree.map(leaf, updates, state.nu, mus, params, is_leaf=lambda x: x is None)
    u, nu, mu = _split(out, jax.tree.structure(params))
    return u, FactoredState(count, nu, mu if b1 is not None else None)

  return optax.GradientTransformation(init_fn, update_fn)


class DtypeName(str):
  """A dtype's name (``'bfloat16'``) that also equals torch's dtype of that name
  (``torch.bfloat16``), as timm turns the name into in its param group."""

  def __eq__(self, other: object) -> bool:
    return str.__eq__(self, other) if isinstance(other, str) else str(other) == f'torch.{self}'

  __hash__ = str.__hash__


@dataclasses.dataclass(frozen=True)
class MomentumDtype:
  """AdafactorBigVision's ``momentum_dtype``: one of timm's names, or the torch dtype of one."""

  names: _checks.Choice = _checks.Choice(('float16', 'bfloat16', 'float32'))

  def __call__(self, key: str, value: Any) -> DtypeName:
    text = str(value)
    return DtypeName(self.names(key, text[len('torch.') :] if text.startswith('torch.') else value))

  def __str__(self) -> str:
    return str(self.names)


def _momentum_average(weight: Any, md: Any, exact: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """``(m, u) -> m.lerp_(u.to(md), weight)`` as torch's CPU kernel computes it for a momentum ``m`` in
  ``md`` (float16, bfloat16 or float32): in float32, as one fused multiply-add
  ``base + coef * (end - start)`` with torch's two formulas (:func:`_common.lerp`), rounded to
  ``md``. Exactly so where ``exact`` (the hyperparameters' dtype) is float64: a product of float32
  values is exact there, so rounding the sum to float32 once gives the fused result."""
  work = jnp.promote_types(md, jnp.float32)
  w = jnp.asarray(weight, work)
  near_start = jnp.abs(w) < 0.5
  coef = jnp.where(near_start, w, w - 1).astype(exact)

  def apply(m: jax.Array, u: jax.Array) -> jax.Array:
    start, end = m.astype(work), u.astype(md).astype(work)
    fused = coef * (end - start).astype(exact) + jnp.where(near_start, start, end).astype(exact)
    return (_common.float32_rounded(fused) if fused.dtype != work else fused).astype(md)

  return apply


def adafactor_big_vision(
  learning_rate,
  min_dim_size_to_factor: int,
  decay_rate,
  decay_offset: int,
  beta2_cap,
  momentum,
  momentum_dtype: str,
  eps,
  weight_decay,
  clipping_threshold,
  unscaled_wd: bool,
  caution: bool,
  corrected_weight_decay: bool,
  max_lr,
) -> optax.GradientTransformation:
  """Adafactor, as ``timm.optim.AdafactorBigVision``.

  The second moment lerps towards ``g² + eps`` (eps null: 1e-7 for float16 gradients, else
  1e-30) with weight ``1 - min(beta2_cap, 1 - max(t - decay_offset, 1)**-decay_rate)``, factored
  on the two largest dimensions (:func:`big_vision_dims`, :func:`_second_moments`);
  ``u = g / sqrt(V)``, clipped to rms clipping_threshold if set. With momentum (not null; 0
  keeps the term): ``m = lerp(m, u, 1 - momentum)`` with ``m`` in momentum_dtype
  (:func:`_momentum_average`), ``u = m``
  in the gradient's dtype, caution as :func:`_common.cautious`. Then
  ``p *= 1 - lr * wd`` (``1 - wd`` with unscaled_wd; with corrected_weight_decay
  ``1 - lr**2 / max_lr * wd`` and ``1 - lr / max_lr * wd``) and ``p -= lr * u``.
  """
  md = jnp.dtype(momentum_dtype)

  def init_fn(params):
    def second(p):
      return _init_second(p, big_vision_dims(p.shape, min_dim_size_to_factor), p.dtype)

    mu = jax.tree.map(lambda p: jnp.zeros(p.shape, md), params) if momentum is not None else None
    return FactoredState(jnp.zeros([], jnp.int32), jax.tree.map(second, params), mu)

  def update_fn(updates, state, params):
    count = optax.safe_increment(state.count)
    lr = jnp.asarray(learning_rate)
    t = count.astype(lr.dtype)
    beta2 = jnp.minimum(beta2_cap, 1 - jnp.maximum(t - decay_offset, 1) ** -decay_rate)
    mix = _common.lerp(1 - beta2)
    ema = _momentum_average(1 - momentum, md, lr.dtype) if momentum is not None else None
    decay = None
    if weight_decay is not None:
      if unscaled_wd:
        decay = 1 - (lr / max_lr * weight_decay if corrected_weight_decay else weight_decay)
      else:
        decay = 1 - _common.decay_learning_rate(lr, corrected_weight_decay, max_lr) * weight_decay

    def leaf(g, v, m, p):
      floor = eps if eps is not None else (1e-7 if g.dtype == jnp.float16 else 1e-30)
      v, factors = _second_moments(
        v, jnp.square(g) + _common.cast(floor, g), big_vision_dims(g.shape, min_dim_size_to_factor), mix
      )
      u = g
      for f in factors:
        u = u * f
      if clipping_threshold is not None:
        u = _clipped(u, clipping_threshold)
      if ema is not None:
        m = ema(m, u)
        u = m.astype(g.dtype)
        if caution:
          u = _common.cautious(u, g)
      u = u * _common.cast(lr, u)
      new = p if decay is None else p * _common.cast(decay, p)
      return new - u - p, v, m

    mus = state.mu if momentum is not None else jax.tree.map(lambda _: None, params)
    out = jax.tree.map(leaf, updates, state.nu, mus, params, is_leaf=lambda x: x is None)
    u, nu, mu = _split(out, jax.tree.structure(params))
    return u, FactoredState(count, nu, mu if momentum is not None else None)

  return optax.GradientTransformation(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class Betas:
  """timm.optim.Adafactor's ``betas``: null (no first moment) or two numbers in [0, 1), of which
  timm reads the first. Null is checked as no items, so that jaxsched passes no b1 and b2."""

  def __call__(self, key: str, value: Any) -> tuple:
    try:
      return () if value is None else adam.BETAS(key, value)
    except ConfigError:
      raise ConfigError(f'{key}={_checks.shown(value)} is not allowed: expected {self}.') from None

  def __str__(self) -> str:
    return f'null or {adam.BETAS}'


_FLAG = _checks.Boolean()
_WEIGHT_DECAY = (0.0, adam.WEIGHT_DECAY)  # create_optimizer_v2 passes weight_decay=0


def _adafactor_spec(name: str, caution: bool) -> OptimizerSpec:
  return OptimizerSpec(
    name=f'timm.{name}',
    factory=adafactor,
    class_name='Adafactor',
    lr=None,  # timm's default: the relative step
    lr_check=_checks.Optional(LEARNING_RATE),
    kwargs={
      'eps': (1e-30, _checks.NON_NEGATIVE),
      'eps_scale': (1e-3, _checks.NON_NEGATIVE),
      'clip_threshold': (1.0, _checks.POSITIVE),
      'decay_rate': (-0.8, _checks.Real(hi=0.0)),
      'betas': ((0.9, 0.999) if caution else None, Betas()),
      'weight_decay': _WEIGHT_DECAY,
      'scale_parameter': (True, _FLAG),
      'warmup_init': (False, _FLAG),
      'min_dim_size_to_factor': (16, _checks.Integer()),
      'caution': (caution, _FLAG),
    },
    switchable=('weight_decay',),
    complex_params=False,  # timm runs complex arithmetic (g**2), and caution raises
    lr_linear=False,  # the relative step has no lr; with betas the momentum sums lr-scaled steps
  )


def _big_vision_spec(name: str, caution: bool, corrected: bool) -> OptimizerSpec:
  spec = OptimizerSpec(
    name=f'timm.{name}',
    factory=adafactor_big_vision,
    class_name='AdafactorBigVision',
    lr=1.0,
    kwargs={
      'min_dim_size_to_factor': (16, _checks.Integer()),
      'decay_rate': (0.8, _checks.Real(lo=0.0)),
      'decay_offset': (0, _checks.Integer(lo=0)),
      'beta2_cap': (0.999, _checks.PROBABILITY),
      'momentum': (0.9, _checks.Optional(_checks.PROBABILITY)),
      'momentum_dtype': (DtypeName('bfloat16'), MomentumDtype()),
      'eps': (None, _checks.Optional(_checks.NON_NEGATIVE)),
      'weight_decay': _WEIGHT_DECAY,
      'clipping_threshold': (None, _checks.Optional(_checks.POSITIVE)),
      'unscaled_wd': (False, _FLAG),
      'caution': (caution, _FLAG),
    },
    switchable=('weight_decay',),
    complex_params=False,  # timm runs complex arithmetic; the momentum's cast drops the imaginary part
    lr_linear=False,  # unscaled_wd: p *= 1 - wd whatever the lr
  )
  return with_corrected_decay(spec, corrected)


SPECS = (
  _adafactor_spec('adafactor', caution=False),
  _adafactor_spec('cadafactor', caution=True),
  _big_vision_spec('adafactorbv', caution=False, corrected=False),
  _big_vision_spec('cadafactorbv', caution=True, corrected=False),
  _big_vision_spec('adafactorbvc', caution=False, corrected=True),
  _big_vision_spec('cadafactorbvc', caution=True, corrected=True),
)
