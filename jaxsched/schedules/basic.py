"""The multiplicative schedulers: LambdaLR, MultiplicativeLR, StepLR,
MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR.

torch steps them in chainable form (the new lr is the current one times a
factor); here ``value(n) = lr * factor(n)`` with ``factor`` the product of
torch's step factors in closed form, and ``step(k)`` that one factor, which the
composites reuse.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.schedules import _expr, _numeric
from jaxsched.schedules._numeric import const, power, to_float
from jaxsched.schedules._registry import REQUIRED, Curve, ScheduleSpec


def _zero(k: jax.Array) -> jax.Array:
  return jnp.zeros(jnp.shape(k), _numeric.float_dtype())


def factor_curve(lr: float, factor, step_factor, **extra: Any) -> Curve:
  """A Curve whose chainable step multiplies the current lr by ``step_factor(k)``."""
  return Curve(
    value=lambda n: const(lr) * factor(n),
    kind='factor',
    factor=factor,
    step=lambda k: (step_factor(k), _zero(k)),
    **extra,
  )


class LrLambda:
  """Check for ``lr_lambda``: a callable, a number or an expression in ``epoch``."""

  def __call__(self, key: str, value: Any) -> Any:
    _expr.lambda_function(value, key)  # raises ConfigError with the position
    return value

  def __str__(self) -> str:
    return 'a callable of the step, a number, or an expression string in epoch'


def lambda_lr(lr, lr_lambda):
  """LambdaLR (``torch.optim.lr_scheduler.LambdaLR``): ``lr_n = lr * lr_lambda(n)``.

  Absolute: each step overwrites the lr from ``base_lr``. ``lr_lambda`` is a
  jnp-traceable callable of the (integer array) step, a number, or an
  expression string in ``epoch``.
  """
  fn, _ = _expr.lambda_function(lr_lambda, 'LambdaLR: lr_lambda')
  value = lambda n: const(lr) * fn(n)
  return Curve(value=value, kind='absolute', step=lambda k: (_zero(k), value(k)))


def multiplicative_lr(lr, lr_lambda):
  """MultiplicativeLR (``torch.optim.lr_scheduler.MultiplicativeLR``):
  ``lr_n = lr_{n-1} * lr_lambda(n)``, so ``lr_n = lr * prod_{j=1..n} lr_lambda(j)``.

  A constant factor (a number, or an expression without ``epoch``) has the
  closed form ``lr * c ** n``. A factor that depends on the step has none: the
  product is computed by a loop over the steps (O(n) work per call).
  Restarted by SequentialLR at a milestone, torch continues from the current
  lr times ``lr_lambda(0)``.
  """
  fn, c = _expr.lambda_function(lr_lambda, 'MultiplicativeLR: lr_lambda')
  step_factor = lambda k: jnp.where(k == 0, const(1.0), fn(k))
  if c is not None:
    factor = lambda n: power(c, n)
  else:
    factor = lambda n: _numeric.fold_affine(lambda ks: (fn(ks), 0.0), n, const(1.0))
  restart = lambda r, prev: prev * fn(jnp.zeros_like(r)) * factor(r)
  # outside the initial step torch multiplies by lr_lambda(0) at last_epoch 0
  first = lambda k: (
    jnp.broadcast_to(jnp.asarray(fn(jnp.zeros_like(k)), _numeric.float_dtype()), jnp.shape(k)),
    _zero(k),
  )
  return factor_curve(lr, factor, step_factor, restart=restart, first=first)


def step_lr(lr, step_size, gamma):
  """StepLR (``torch.optim.lr_scheduler.StepLR``): ``lr_n = lr * gamma ** (n // step_size)``."""
  factor = lambda n: power(gamma, n // step_size)
  step_factor = lambda k: jnp.where((k > 0) & (k % step_size == 0), const(gamma), const(1.0))
  return factor_curve(lr, factor, step_factor)


def multi_step_lr(lr, milestones, gamma):
  """MultiStepLR (``torch.optim.lr_scheduler.MultiStepLR``):
  ``lr_n = lr * gamma ** #{m in milestones : 0 <= m <= n}`` (repeated milestones count
  repeatedly).

  torch steps it chainably, so negative milestones never apply; its closed form
  (used when SequentialLR restarts it) counts them too.
  """
  reachable = sorted(m for m in milestones if 0 <= m <= _numeric.INT_MAX)
  negative = sum(1 for m in milestones if m < 0)

  def count(n):
    if not reachable:
      return jnp.zeros_like(n)
    return jnp.searchsorted(jnp.asarray(reachable, n.dtype), n, side='right', method='compare_all').astype(n.dtype)

  def hits(k):
    if not reachable:
      return jnp.zeros_like(k)
    ms = jnp.asarray(reachable, k.dtype)
    return (
      jnp.searchsorted(ms, k, side='right', method='compare_all')
      - jnp.searchsorted(ms, k, side='left', method='compare_all')
    ).astype(k.dtype)

  factor = lambda n: power(gamma, count(n))
  step_factor = lambda k: power(gamma, hits(k))
  restart = None
  if negative:
    restart = lambda r, prev: const(lr) * power(gamma, count(r) + negative)
  return factor_curve(lr, factor, step_factor, restart=restart)


def constant_lr(lr, factor, total_iters):
  """ConstantLR (``torch.optim.lr_scheduler.ConstantLR``): ``lr * factor`` for
  ``n < total_iters``, then ``lr * factor * (1 / factor)``.

  torch's chainable form multiplies by ``1 / factor`` at ``n == total_iters``;
  with ``total_iters=0`` that step never comes and the lr stays at
  ``lr * factor`` (restarted by SequentialLR it is ``lr`` instead).
  """
  if total_iters == 0:
    c = lambda n: jnp.full(jnp.shape(n), factor, _numeric.float_dtype())
    s = lambda k: jnp.where(k == 0, const(factor), const(1.0))
    return factor_curve(
      lr, c, s, restart=lambda r, prev: jnp.full(jnp.shape(r), lr * (factor + (1.0 - factor)), _numeric.float_dtype())
    )
  inv = 1.0 / factor
  c = lambda n: jnp.where(n < total_iters, const(factor), const(factor * inv))
  s = lambda k: jnp.where(k == 0, const(factor), jnp.where(k == total_iters, const(inv), const(1.0)))
  return factor_curve(lr, c, s)


def _check_constant(kw):
  if kw['factor'] == 0 and kw['total_iters'] > 0:
    raise ConfigError(
      'ConstantLR: factor=0 cannot run: torch divides by factor at step total_iters '
      f'(={kw["total_iters"]}) and raises ZeroDivisionError.'
    )


def linear_lr(lr, start_factor, end_factor, total_iters):
  """LinearLR (``torch.optim.lr_scheduler.LinearLR``):
  ``lr * (start + (end - start) * min(n, total_iters) / total_iters)``.

  With ``total_iters=0`` torch's chainable form keeps ``lr * start_factor``
  forever (its closed form would divide by zero, so SequentialLR cannot restart
  it: ConfigError there).
  """
  s0, e0, t = start_factor, end_factor, total_iters
  if t == 0:
    c = lambda n: jnp.full(jnp.shape(n), s0, _numeric.float_dtype())
    return factor_curve(
      lr,
      c,
      lambda k: jnp.where(k == 0, const(s0), const(1.0)),
      restart_error='ZeroDivisionError for LinearLR with total_iters=0 (its closed form divides by zero)',
    )

  def c(n):
    m = jnp.clip(n, 0, t)
    if s0 <= e0:  # both terms non-negative: no cancellation
      return const(s0) + to_float(m) * const((e0 - s0) / t)
    return const(e0) + to_float(t - m) * const((s0 - e0) / t)

  def s(k):
    d = e0 - s0
    inner = const(1.0) + const(d) / (const(t * s0) + to_float(k - 1) * const(d))
    return jnp.where(k == 0, const(s0), jnp.where((k >= 1) & (k <= t), inner, const(1.0)))

  return factor_curve(lr, c, s)


def exponential_lr(lr, gamma):
  """ExponentialLR (``torch.optim.lr_scheduler.ExponentialLR``): ``lr_n = lr * gamma ** n``."""
  return factor_curve(
    lr,
    lambda n: power(gamma, n),
    lambda k: jnp.where(k == 0, const(1.0), const(gamma)),
    first=lambda k: (jnp.full(jnp.shape(k), gamma, _numeric.float_dtype()), _zero(k)),
  )


def polynomial_lr(lr, total_iters, power):
  """PolynomialLR (``torch.optim.lr_scheduler.PolynomialLR``):
  ``lr * (1 - min(n, total_iters) / total_iters) ** power``.

  With ``total_iters=0`` torch's chainable form never changes the lr (its
  closed form would divide by zero, so SequentialLR cannot restart it).
  """
  t, p = total_iters, power
  if t == 0:
    one = lambda n: jnp.ones(jnp.shape(n), _numeric.float_dtype())
    why = 'ZeroDivisionError for PolynomialLR with total_iters=0 (its {} divides by zero)'
    return factor_curve(
      lr,
      one,
      one,
      restart_error=why.format('closed form'),
      first_error=why.format('step at last_epoch 0 outside the initial step'),
    )
  end = 0.0 if p > 0 else 1.0  # 0.0 ** p, also for p too small for float32

  def c(n):
    m = jnp.clip(n, 0, t)
    pf = const(min(p, float(jnp.finfo(_numeric.float_dtype()).max)))  # no inf * 0 at m = 0
    # (1 - m / t) ** p from log1p(-m / t) while 1 - m / t >= 1/2, so that the
    # rounding of 1 - m / t (all of m / t below the float epsilon) is not raised to p.
    near = jnp.exp(pf * jnp.log1p(to_float(m) * const(-1 / t)))
    far = jnp.power(to_float(t - m) * const(1 / t), pf)
    return jnp.where(m == t, const(end), jnp.where(m <= t // 2, near, far))

  def s(k):
    kk = jnp.clip(k, 1, t)
    f = jnp.where(kk == t, const(end), jnp.power(to_float(t - kk) / to_float(t - kk + 1), const(p)))
    return jnp.where((k >= 1) & (k <= t), f, const(1.0))

  # torch's decay factor at last_epoch 0, outside the initial step
  first_factor = ((1.0 - 0 / t) / (1.0 - (-1) / t)) ** p
  first = lambda k: (jnp.full(jnp.shape(k), first_factor, _numeric.float_dtype()), _zero(k))
  return factor_curve(lr, c, s, first=first)


SPECS = (
  ScheduleSpec('LambdaLR', lambda_lr, {'lr_lambda': (REQUIRED, LrLambda())}),
  ScheduleSpec('MultiplicativeLR', multiplicative_lr, {'lr_lambda': (REQUIRED, LrLambda())}),
  ScheduleSpec(
    'StepLR',
    step_lr,
    {
      'step_size': (REQUIRED, _checks.Integer(1)),
      'gamma': (0.1, _checks.Real()),
    },
  ),
  ScheduleSpec(
    'MultiStepLR',
    multi_step_lr,
    {
      'milestones': (REQUIRED, _checks.Sequence(_checks.Integer())),
      'gamma': (0.1, _checks.Real()),
    },
  ),
  ScheduleSpec(
    'ConstantLR',
    constant_lr,
    {
      'factor': (1.0 / 3, _checks.Real(0.0, 1.0)),
      'total_iters': (5, _checks.Integer(0)),
    },
    cross_check=_check_constant,
  ),
  ScheduleSpec(
    'LinearLR',
    linear_lr,
    {
      'start_factor': (1.0 / 3, _checks.Real(0.0, 1.0, lo_open=True)),
      'end_factor': (1.0, _checks.Real(0.0, 1.0)),
      'total_iters': (5, _checks.Integer(0)),
    },
  ),
  ScheduleSpec('ExponentialLR', exponential_lr, {'gamma': (REQUIRED, _checks.Real())}),
  ScheduleSpec(
    'PolynomialLR',
    polynomial_lr,
    {
      'total_iters': (5, _checks.Integer(0)),
      # torch raises ZeroDivisionError at n == total_iters for a negative power.
      'power': (1.0, _checks.NON_NEGATIVE),
    },
  ),
)
