"""Hugging Face ``transformers`` schedules by name: ``hf.<SchedulerType value>``.

``transformers.get_scheduler(name, optimizer, num_warmup_steps, num_training_steps,
scheduler_specific_kwargs)`` (``transformers/optimization.py``) returns a torch
``LambdaLR`` for each of these, ``lr_n = base_lr * lr_lambda(n)``; here each
``lr_lambda`` is pure jnp of the count, written as HF's Python float formula, and
the Curve is :func:`jaxsched.schedules.basic.lambda_lr`'s. The keywords are HF's:
``num_warmup_steps``, ``num_training_steps`` and the schedule's own
``scheduler_specific_kwargs``, exactly the parameters of the schedule function
(so ``num_training_steps`` is refused where the function takes none). HF's Trainer
steps the scheduler after every optimizer step: the default ``interval`` is 'step'.

``hf.reduce_lr_on_plateau`` (torch's ReduceLROnPlateau with the same keywords)
is an alias of ``ReduceLROnPlateau`` in configs (:data:`ALIASES`); ``hf.greedy``
(``transformers.optimization.GreedyLR``, driven by a metric) is :func:`jaxsched.plateau.metric_scheduler`'s.
"""

from __future__ import annotations

import fractions
import inspect
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.schedules import _numeric, basic
from jaxsched.schedules._numeric import const, half_cosine, to_float
from jaxsched.schedules._registry import REQUIRED, ScheduleSpec

ALIASES = {'hf.reduce_lr_on_plateau': 'ReduceLROnPlateau'}
"""HF names that configs resolve to another scheduler: get_scheduler returns torch's
``ReduceLROnPlateau(optimizer, **scheduler_specific_kwargs)`` for 'reduce_lr_on_plateau'."""

REFUSED: dict[str, str] = {}
"""HF names jaxsched knows but does not support, with why."""

_Kwargs = dict[str, tuple[Any, _checks.Check]]
_COUNT = _checks.Integer(0)
_SHAPES = ('linear', 'cosine', '1-sqrt')


def _ratio(n: jax.Array, d: int | float) -> jax.Array:
  """``float(n) / float(d)`` (as a product with the reciprocal, so jit and eager agree)."""
  return to_float(n) * const(1.0 / d)


def _warmup(n: jax.Array, num_warmup_steps: int) -> jax.Array:
  """HF's linear warmup ``float(current_step) / float(max(1, num_warmup_steps))``."""
  return _ratio(n, max(1, num_warmup_steps))


def _floor(rate: float, factor: jax.Array) -> jax.Array:
  """``max(0, factor * (1 - rate) + rate)``."""
  return jnp.maximum(factor * const(1.0 - rate) + const(rate), const(0.0))


def _quotient(r: jax.Array, d: int, one: bool = False) -> jax.Array:
  """Python's ``float(r) / float(d)``, correctly rounded: the divisor is an array XLA
  cannot turn into a reciprocal (it rewrites division by a constant into a product)."""
  x = to_float(r) + const(1.0) if one else to_float(r)
  return x / jnp.where(r == jnp.iinfo(r.dtype).min, const(1.0), const(d))


def _exact_turns(r: jax.Array, c: float, d: int, one: bool = False) -> jax.Array | None:
  """``c * r / d % 1`` in integers, in float32 only, for ``c == a / q`` with a small q
  (else None): float32's rounding of ``c * (r / d)`` would move the restarts of a cosine
  and lose its phase over many cycles; float64 computes as Python does instead."""
  if jax.config.read('jax_enable_x64'):
    return None
  ratio = fractions.Fraction(c).limit_denominator(64)
  m = ratio.denominator * d
  if float(ratio) != c or (m - 1) ** 2 > _numeric.INT_MAX:
    return None
  return _ratio(ratio.numerator % m * ((r % m + int(one)) % m) % m, m)


def _cosine(r: jax.Array, d: int, num_cycles: float, one: bool = False) -> jax.Array:
  """HF's ``0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))`` for
  ``progress = (r + 1) / d`` if ``one`` else ``r / d`` (r + 1 added as a float: no integer overflow)."""
  c = float(num_cycles)
  turns = _exact_turns(r, c, d, one)
  if turns is None:
    angle = const(math.pi * c * 2.0) * _quotient(r, d, one)
  else:
    angle = const(2.0 * math.pi) * turns
  return const(0.5) * (const(1.0) + jnp.cos(angle))


def linear(lr, num_warmup_steps, num_training_steps):
  """hf.linear (``transformers.get_linear_schedule_with_warmup``): linear warmup from 0
  over num_warmup_steps, then linear decay to 0 at num_training_steps."""
  w, t = num_warmup_steps, num_training_steps
  decay = lambda n: jnp.maximum(_ratio(t - n, max(1, t - w)), const(0.0))
  return basic.lambda_lr(lr, lambda n: jnp.where(n < w, _warmup(n, w), decay(n)))


def cosine(lr, num_warmup_steps, num_training_steps, num_cycles):
  """hf.cosine (``transformers.get_cosine_schedule_with_warmup``): linear warmup, then
  ``max(0, (1 + cos(2 pi num_cycles progress)) / 2)`` with progress 0 -> 1 over the
  remaining steps (a half cosine to 0 for num_cycles=0.5)."""
  w, t = num_warmup_steps, num_training_steps
  decay = lambda n: jnp.maximum(_cosine(n - w, max(1, t - w), num_cycles), const(0.0))
  return basic.lambda_lr(lr, lambda n: jnp.where(n < w, _warmup(n, w), decay(n)))


def cosine_with_restarts(lr, num_warmup_steps, num_training_steps, num_cycles):
  """hf.cosine_with_restarts (``transformers.get_cosine_with_hard_restarts_schedule_with_warmup``):
  linear warmup, then num_cycles half cosines from 1 to 0, each restarting at 1; 0 from
  num_training_steps on.

  HF's phase is ``float(num_cycles) * progress % 1.0``: under x64 with Python's roundings,
  so where ``num_cycles * progress`` is an integer that rounds below it (num_cycles=11/3,
  say) the lr drops to about 0 there as in HF; float32 reduces it exactly (lr = 1 there).
  """
  w, t = num_warmup_steps, num_training_steps
  d = max(1, t - w)
  c = float(num_cycles)

  def decay(n):
    r = jnp.maximum(n - w, 0)
    turns = _exact_turns(r, c, d)
    if turns is None:
      turns = jnp.mod(const(c) * _quotient(r, d), const(1.0))
    value = jnp.maximum(const(0.5) * (const(1.0) + jnp.cos(const(math.pi) * turns)), const(0.0))
    return jnp.where(r >= d, const(0.0), value)  # progress >= 1

  return basic.lambda_lr(lr, lambda n: jnp.where(n < w, _warmup(n, w), decay(n)))


def polynomial(lr, num_warmup_steps, num_training_steps, lr_end, power, optimizer_lr=None):
  """hf.polynomial (``transformers.get_polynomial_decay_schedule_with_warmup``): linear
  warmup, then ``(lr - lr_end) * (1 - progress) ** power + lr_end``, lr_end after
  num_training_steps.

  HF's factor is ``((lr0 - lr_end) * (1 - progress) ** power + lr_end) / lr0`` with lr0 the
  optimizer's own lr (``optimizer.defaults['lr']``: ``optimizer_lr``, else ``lr``), which each
  param group's lr is multiplied by: a group at half the optimizer's lr ends at half of lr_end.
  """
  w, t = num_warmup_steps, num_training_steps
  lr0 = lr if optimizer_lr is None else optimizer_lr
  if not lr0 > lr_end:
    raise ConfigError(
      f"hf.polynomial: lr_end={lr_end!r} must be smaller than the optimizer's learning rate {lr0!r} "
      '(transformers raises ValueError).'
    )
  if lr0 == 0:
    raise ConfigError('hf.polynomial: a learning rate of 0 cannot run: transformers divides by it.')

  def decay(n):
    remaining = _ratio(jnp.clip(t - n, 0, t - w), max(1, t - w))  # 1 - (n - w) / (t - w), exactly
    # (lr - lr_end) * remaining ** power + lr_end, over lr: one constant per term, so that XLA has none to fold
    value = const((lr0 - lr_end) / lr0) * jnp.power(remaining, const(power)) + const(lr_end / lr0)
    return jnp.where(n > t, const(lr_end / lr0), value)

  return basic.lambda_lr(lr, lambda n: jnp.where(n < w, _warmup(n, w), decay(n)))


def _check_polynomial(kw):
  w, t = kw['num_warmup_steps'], kw['num_training_steps']
  if t == w:
    raise ConfigError(
      f'hf.polynomial: num_training_steps={t} equals num_warmup_steps={w}: transformers divides by '
      f'num_training_steps - num_warmup_steps at step {t} (ZeroDivisionError).'
    )


def constant(lr):
  """hf.constant (``transformers.get_constant_schedule``): the learning rate, unchanged."""
  return basic.lambda_lr(lr, lambda n: jnp.ones(jnp.shape(n), _numeric.float_dtype()))


def constant_with_warmup(lr, num_warmup_steps):
  """hf.constant_with_warmup (``transformers.get_constant_schedule_with_warmup``): linear
  warmup from 0 over num_warmup_steps, then the learning rate."""
  w = num_warmup_steps
  return basic.lambda_lr(lr, lambda n: jnp.where(n < w, _ratio(n, max(1.0, w)), const(1.0)))


def inverse_sqrt(lr, num_warmup_steps, timescale):
  """hf.inverse_sqrt (``transformers.get_inverse_sqrt_schedule``): linear warmup, then
  ``1 / sqrt((n + timescale - num_warmup_steps) / timescale)``; timescale defaults to
  num_warmup_steps, or 10000 when that is 0."""
  w = num_warmup_steps
  ts = timescale if timescale is not None else (w or 10_000)
  decay = lambda n: const(1.0) / jnp.sqrt((to_float(jnp.maximum(n - w, 0)) + const(ts)) * const(1.0 / ts))
  return basic.lambda_lr(lr, lambda n: jnp.where(n < w, _warmup(n, w), decay(n)))


def _min_lr_rate(name: str, lr: float, min_lr: float | None, min_lr_rate: float | None) -> float:
  """HF's ``min_lr / optimizer.defaults['lr']`` or ``min_lr_rate`` (the check is in :func:`_check_min_lr`)."""
  if min_lr is None:
    assert min_lr_rate is not None
    return min_lr_rate
  if lr == 0:
    raise ConfigError(f'{name}: min_lr={min_lr!r} with a learning rate of 0: transformers divides min_lr by it.')
  return min_lr / lr


def _check_min_lr(name: str):
  def check(kw):
    if (kw['min_lr'] is None) == (kw['min_lr_rate'] is None):
      raise ConfigError(
        f'{name}: give exactly one of min_lr and min_lr_rate (got min_lr={kw["min_lr"]!r}, '
        f'min_lr_rate={kw["min_lr_rate"]!r}; transformers raises ValueError).'
      )

  return check


def cosine_with_min_lr(lr, num_warmup_steps, num_training_steps, num_cycles, min_lr, min_lr_rate, optimizer_lr=None):
  """hf.cosine_with_min_lr (``transformers.get_cosine_with_min_lr_schedule_with_warmup``):
  hf.cosine scaled to end at min_lr (or min_lr_rate times the learning rate) instead of 0.

  HF divides min_lr by the optimizer's own lr (``optimizer.defaults['lr']``: ``optimizer_lr``,
  else ``lr``), so a param group at half the optimizer's lr ends at half of min_lr.
  """
  w, t = num_warmup_steps, num_training_steps
  rate = _min_lr_rate('hf.cosine_with_min_lr', lr if optimizer_lr is None else optimizer_lr, min_lr, min_lr_rate)
  decay = lambda n: _floor(rate, _cosine(n - w, max(1, t - w), num_cycles))
  return basic.lambda_lr(lr, lambda n: jnp.where(n < w, _warmup(n, w), decay(n)))


def cosine_warmup_with_min_lr(
  lr, num_warmup_steps, num_training_steps, num_cycles, min_lr, min_lr_rate, warmup_lr_rate, optimizer_lr=None
):
  """hf.cosine_warmup_with_min_lr (``transformers.get_cosine_with_min_lr_schedule_with_warmup_lr_rate``):
  a warmup that starts above 0 (``(n + 1) / num_warmup_steps``, or from warmup_lr_rate),
  then hf.cosine_with_min_lr one step ahead (``progress = (n - num_warmup_steps + 1) / ...``);
  min_lr over the optimizer's own lr as there."""
  w, t = num_warmup_steps, num_training_steps
  lr0 = lr if optimizer_lr is None else optimizer_lr
  rate = _min_lr_rate('hf.cosine_warmup_with_min_lr', lr0, min_lr, min_lr_rate)
  if warmup_lr_rate is None:
    warmup = lambda n: _ratio(n + 1, max(1.0, w))
  else:
    wr = warmup_lr_rate
    warmup = lambda n: const(wr) + const(1.0 - wr) * _ratio(n, max(1, w - 1))
  decay = lambda n: _floor(rate, _cosine(n - w, max(1, t - w), num_cycles, one=True))
  return basic.lambda_lr(lr, lambda n: jnp.where(n < w, warmup(n), decay(n)))


def _shape(kind: str, r: jax.Array, d: int, rising: bool, num_cycles: float) -> jax.Array:
  """HF's warmup (rising) or decay factor of warmup_type / decay_type at ``progress = r / d``,
  without cancellation: ``(1 - cos(pi p)) / 2 = sin(pi p / 2) ** 2``, ``1 - sqrt(1 - p) =
  p / (1 + sqrt(1 - p))``, ``1 - sqrt(p) = (1 - p) / (1 + sqrt(p))``, with ``1 - p = (d - r) / d``."""
  progress, rest = _ratio(r, d), _ratio(d - r, d)
  if kind == 'linear':
    return progress if rising else rest
  if kind == 'cosine':
    return half_cosine(r, 2 * d) if rising else _cosine(r, d, num_cycles)
  return progress / (const(1.0) + jnp.sqrt(rest)) if rising else rest / (const(1.0) + jnp.sqrt(progress))


def warmup_stable_decay(
  lr,
  num_warmup_steps,
  num_decay_steps,
  num_training_steps,
  num_stable_steps,
  warmup_type,
  decay_type,
  min_lr_ratio,
  num_cycles,
):
  """hf.warmup_stable_decay (``transformers.get_wsd_schedule``): warmup from min_lr_ratio
  to 1 over num_warmup_steps (warmup_type), 1 for num_stable_steps (by default
  num_training_steps - num_warmup_steps - num_decay_steps), decay to min_lr_ratio over
  num_decay_steps (decay_type), then min_lr_ratio."""
  w, dc = num_warmup_steps, num_decay_steps
  s = num_stable_steps if num_stable_steps is not None else num_training_steps - w - dc
  m = min_lr_ratio

  def fn(n):
    up = _floor(m, _shape(warmup_type, jnp.clip(n, 0, w), max(1, w), True, num_cycles))
    down = _floor(m, _shape(decay_type, jnp.clip(n - w - s, 0, dc), max(1, dc), False, num_cycles))
    out = jnp.where(n - w - s < dc, down, const(m))  # differences: no sum beyond the counter's range
    out = jnp.where(n - w < s, const(1.0), out)
    return jnp.where(n < w, up, out)

  return basic.lambda_lr(lr, fn)


def _check_wsd(kw):
  t, s = kw['num_training_steps'], kw['num_stable_steps']
  if t is None and s is None:
    raise ConfigError(
      'hf.warmup_stable_decay: give num_training_steps or num_stable_steps (transformers raises ValueError).'
    )
  if s is None and t - kw['num_warmup_steps'] - kw['num_decay_steps'] < 0:
    raise ConfigError(
      f'hf.warmup_stable_decay: num_training_steps={t} is less than num_warmup_steps + num_decay_steps '
      f'({kw["num_warmup_steps"]} + {kw["num_decay_steps"]}): the stable phase would be negative.'
    )


def _spec(builder, kwargs: _Kwargs, cross_check=None) -> ScheduleSpec:
  reads = 'optimizer_lr' in inspect.signature(builder).parameters
  return ScheduleSpec(
    f'hf.{builder.__name__}',
    builder,
    kwargs,
    cross_check=cross_check,
    default_interval='step',
    reads_optimizer_lr=reads,
  )


_WARMUP: _Kwargs = {'num_warmup_steps': (REQUIRED, _COUNT)}
_RUN: _Kwargs = {**_WARMUP, 'num_training_steps': (REQUIRED, _COUNT)}
_MIN_LR: _Kwargs = {
  'num_cycles': (0.5, _checks.Real()),
  'min_lr': (None, _checks.Optional(_checks.Real())),
  'min_lr_rate': (None, _checks.Optional(_checks.Real())),
}

SPECS = (
  _spec(linear, _RUN),
  _spec(cosine, {**_RUN, 'num_cycles': (0.5, _checks.Real())}),
  _spec(cosine_with_restarts, {**_RUN, 'num_cycles': (1, _checks.Real())}),
  # a negative power raises ZeroDivisionError (0.0 ** power) at num_training_steps
  _spec(
    polynomial,
    {**_RUN, 'lr_end': (1e-7, _checks.Real()), 'power': (1.0, _checks.NON_NEGATIVE)},
    cross_check=_check_polynomial,
  ),
  _spec(constant, {}),
  _spec(constant_with_warmup, _WARMUP),
  _spec(inverse_sqrt, {**_WARMUP, 'timescale': (None, _checks.Optional(_checks.Integer(1)))}),
  _spec(cosine_with_min_lr, {**_RUN, **_MIN_LR}, cross_check=_check_min_lr('hf.cosine_with_min_lr')),
  _spec(
    cosine_warmup_with_min_lr,
    {**_RUN, **_MIN_LR, 'warmup_lr_rate': (None, _checks.Optional(_checks.Real()))},
    cross_check=_check_min_lr('hf.cosine_warmup_with_min_lr'),
  ),
  _spec(
    warmup_stable_decay,
    {
      **_WARMUP,
      'num_decay_steps': (REQUIRED, _COUNT),
      'num_training_steps': (None, _checks.Optional(_COUNT)),
      'num_stable_steps': (None, _checks.Optional(_COUNT)),
      'warmup_type': ('linear', _checks.Choice(_SHAPES)),
      'decay_type': ('cosine', _checks.Choice(_SHAPES)),
      'min_lr_ratio': (0.0, _checks.Real()),
      'num_cycles': (0.5, _checks.Real()),
    },
    cross_check=_check_wsd,
  ),
)
