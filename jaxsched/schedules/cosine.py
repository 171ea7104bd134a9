"""The cosine schedulers: CosineAnnealingLR, CosineAnnealingWarmRestarts and
DynVision's LinearWarmupCosineAnnealingLR (pl_bolts semantics).

All cosines use ``(1 + cos(pi * r / T)) / 2 == sin(pi * (T - r) / (2 T)) ** 2``
with ``T - r`` an exact integer (see :func:`_numeric.half_cosine`).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.schedules import _numeric
from jaxsched.schedules._numeric import const, half_cosine, mod_period, to_float
from jaxsched.schedules._registry import REQUIRED, Curve, ScheduleSpec


def _cosine_step(lr, eta_min, period, k, shift=0):
  """torch's chainable cosine step k (relative to ``shift``) as ``(a, b)``:
  ``lr <- eta + (lr - eta) * h(k) / h(k - 1)``, and right after a trough
  ``lr <- lr + (base - eta) * (1 - cos(pi / T)) / 2``."""
  j = k - shift
  h = lambda i: half_cosine(period - mod_period(i, 2 * period), 2 * period)
  num, den = h(j), h(j - 1)
  after_trough = (j - 1 - period) % (2 * period) == 0
  ratio = num / jnp.where(den == 0, const(1.0), den)
  bump = (lr - eta_min) * math.sin(math.pi / (2 * period)) ** 2
  a = jnp.where(after_trough, const(1.0), ratio)
  b = jnp.where(after_trough, const(bump), const(eta_min) * (1 - ratio))
  return a, b


def cosine_annealing_lr(lr, T_max, eta_min):
  """CosineAnnealingLR (``torch.optim.lr_scheduler.CosineAnnealingLR``):
  ``eta_min + (lr - eta_min) * (1 + cos(pi * n / T_max)) / 2``.

  As in torch the cosine does not stop at T_max: it rises back to lr at
  2 * T_max and repeats (period 2 * T_max). torch steps it as a ratio on
  ``lr - eta_min``, so inside ChainedScheduler it is not a plain factor.
  """
  t = T_max

  def value(n):
    return const(eta_min) + const(lr - eta_min) * half_cosine(t - mod_period(n, 2 * t), 2 * t)

  def step(k):
    a, b = _cosine_step(lr, eta_min, t, k)
    return jnp.where(k == 0, const(1.0), a), jnp.where(k == 0, const(0.0), b)

  # outside the initial step torch takes the chainable step at last_epoch 0 too
  return Curve(value=value, kind='affine', step=step, first=lambda k: _cosine_step(lr, eta_min, t, k))


def _restart_table(t0: int, mult: int):
  """Cycle starts S_i = T_0 (mult**i - 1) / (mult - 1) up to the int32 range."""
  starts, lengths = [0], [t0]
  while starts[-1] <= _numeric.INT_MAX:
    starts.append(starts[-1] + lengths[-1])
    lengths.append(lengths[-1] * mult)
  return starts, lengths


def cosine_annealing_warm_restarts(lr, T_0, T_mult, eta_min):
  """CosineAnnealingWarmRestarts (``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``):
  ``eta_min + (lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2``.

  Cycle i has length ``T_i = T_0 * T_mult ** i`` and ``T_cur`` counts the steps
  since its start, as torch's ``step()`` without an epoch argument.
  """
  if T_mult == 1:

    def value(n):
      d = T_0 - mod_period(n, T_0)
      return const(eta_min) + const(lr - eta_min) * half_cosine(d, 2 * T_0)
  else:
    starts, lengths = _restart_table(T_0, T_mult)
    ends = starts[1:]  # ends[i] = start of cycle i + 1
    clipped = [min(e, _numeric.INT_MAX) for e in ends]
    extra = [float(max(e - _numeric.INT_MAX, 0)) for e in ends]
    scale = [math.pi / (2 * length) for length in lengths[: len(ends)]]

    def value(n):
      i = jnp.searchsorted(jnp.asarray(starts[1:-1], n.dtype), n, side='right', method='compare_all')
      d = to_float(jnp.asarray(clipped, n.dtype)[i] - n) + jnp.asarray(extra, _numeric.float_dtype())[i]
      s = jnp.sin(d * jnp.asarray(scale, _numeric.float_dtype())[i])
      return const(eta_min) + const(lr - eta_min) * s * s

  return Curve(value=value, kind='absolute', step=lambda k: (jnp.zeros_like(value(k)), value(k)))


def linear_warmup_cosine_annealing_lr(lr, warmup_epochs, max_epochs, warmup_start_lr, eta_min):
  """LinearWarmupCosineAnnealingLR (DynVision's ``dynvision.losses.lr_scheduler``,
  the semantics of ``pl_bolts.optimizers.lr_scheduler.LinearWarmupCosineAnnealingLR``).

  With W = warmup_epochs, M = max_epochs, s = warmup_start_lr:
  ``s + n * (lr - s) / (W - 1)`` for ``n < W`` (s at epoch 0, lr at epoch W - 1),
  then ``eta_min + (lr - eta_min) * (1 + cos(pi * (n - W) / (M - W))) / 2``, so
  the lr holds at lr for epochs W - 1 and W, reaches eta_min at M and, as
  CosineAnnealingLR, rises again after M. W = 1 starts at s and jumps to lr.
  """
  w, m, ws = warmup_epochs, max_epochs, warmup_start_lr
  d = m - w

  def value(n):
    if w >= 2:
      if lr >= ws:
        warm = const(ws) + to_float(n) * const((lr - ws) / (w - 1))
      else:
        warm = const(lr) + to_float(w - 1 - n) * const((ws - lr) / (w - 1))
    else:
      warm = jnp.full(jnp.shape(n), ws, _numeric.float_dtype())
    cos = const(eta_min) + const(lr - eta_min) * half_cosine(d - mod_period(jnp.maximum(n - w, 0), 2 * d), 2 * d)
    return jnp.where(n < w, warm, cos)

  def step(k):
    a, b = _cosine_step(lr, eta_min, d, k, shift=w)
    slope = (lr - ws) / (w - 1) if w >= 2 else 0.0
    a = jnp.where(k == w, const(0.0), a)
    b = jnp.where(k == w, const(lr), b)
    a = jnp.where((k >= 1) & (k < w), const(1.0), a)
    b = jnp.where((k >= 1) & (k < w), const(slope), b)
    a = jnp.where(k == 0, const(0.0), a)
    b = jnp.where(k == 0, const(ws), b)
    return a, b

  return Curve(value=value, kind='affine', step=step)


def _check_warmup(kw):
  if kw['max_epochs'] <= kw['warmup_epochs']:
    raise ConfigError(
      f'LinearWarmupCosineAnnealingLR: max_epochs={kw["max_epochs"]} must be greater than '
      f'warmup_epochs={kw["warmup_epochs"]}: the cosine runs over max_epochs - warmup_epochs '
      f'epochs (0 divides by zero).'
    )


SPECS = (
  ScheduleSpec(
    'CosineAnnealingLR',
    cosine_annealing_lr,
    {
      'T_max': (250, _checks.Integer(1)),  # the reference page's default; torch requires it
      'eta_min': (0.0, _checks.Real()),
    },
  ),
  ScheduleSpec(
    'CosineAnnealingWarmRestarts',
    cosine_annealing_warm_restarts,
    {
      'T_0': (REQUIRED, _checks.Integer(1, _numeric.INT_MAX)),
      'T_mult': (1, _checks.Integer(1)),
      'eta_min': (0.0, _checks.Real()),
    },
  ),
  ScheduleSpec(
    'LinearWarmupCosineAnnealingLR',
    linear_warmup_cosine_annealing_lr,
    {
      # warmup_epochs=0 makes pl_bolts' chainable form start its cosine from
      # warmup_start_lr instead of the lr: not supported (use CosineAnnealingLR).
      'warmup_epochs': (REQUIRED, _checks.Integer(1)),
      'max_epochs': (REQUIRED, _checks.Integer(2)),
      'warmup_start_lr': (0.0, _checks.Real()),
      'eta_min': (0.0, _checks.Real()),
    },
    cross_check=_check_warmup,
  ),
)
