"""The cyclical schedulers: CyclicLR and OneCycleLR, with momentum cycling.

Both ignore the optimizer's lr (CyclicLR replaces it with ``base_lr``,
OneCycleLR uses ``max_lr / div_factor``), and with ``cycle_momentum=True`` both
write the momentum (SGD, RMSprop) or beta1 (Adam family) at construction and on
every step: the Curve's ``momentum`` gives that value after n steps.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.schedules import _expr, _numeric
from jaxsched.schedules._numeric import const, minus, to_float
from jaxsched.schedules._registry import REQUIRED, Curve, ScheduleSpec


class ScaleFn:
  """Check for CyclicLR's ``scale_fn``: null, a callable, or an expression in ``x``."""

  def __call__(self, key: str, value: Any) -> Any:
    if value is not None:
      _expr.lambda_function(value, key, variable='x')
    return value

  def __str__(self) -> str:
    return 'null, a callable, or an expression string in x'


def cyclic_lr(
  lr,
  base_lr,
  max_lr,
  step_size_up,
  step_size_down,
  mode,
  gamma,
  scale_fn,
  scale_mode,
  cycle_momentum,
  base_momentum,
  max_momentum,
):
  """CyclicLR (``torch.optim.lr_scheduler.CyclicLR``), Smith's cyclical learning rates.

  With ``S = up + down``, ``cycle = 1 + n // S`` and ``r = n % S``: the scale
  is ``r / up`` for ``r <= up`` and ``(S - r) / down`` after, and
  ``lr_n = base_lr + (max_lr - base_lr) * scale * f`` with ``f = 1``
  (triangular), ``1 / 2 ** (cycle - 1)`` (triangular2), ``gamma ** n``
  (exp_range) or ``scale_fn(cycle)`` / ``scale_fn(n)`` (scale_mode). The
  optimizer's lr is replaced by base_lr. With cycle_momentum the momentum is
  ``max_momentum - (max_momentum - base_momentum) * scale * f``.
  """
  del lr  # torch overwrites the optimizer's lr with base_lr
  up = step_size_up
  down = up if step_size_down is None else step_size_down
  total = up + down
  if scale_fn is not None:
    custom, _ = _expr.lambda_function(scale_fn, 'CyclicLR: scale_fn', variable='x')
    by_cycle = scale_mode == 'cycle'
  else:
    custom, by_cycle = None, mode != 'exp_range'

  def shape(n):
    n = jnp.maximum(n, 0)
    r = _numeric.mod_period(n, total)
    rising = to_float(r) * const(1 / up)
    # S - r as down - (r - up): both int32 terms, where S itself may not be.
    falling = to_float(down - jnp.maximum(r - up, 0)) * const(1 / max(down, 1))
    x = jnp.where(r <= up, rising, falling)
    if custom is not None:
      f = custom(1 + _numeric.div_period(n, total) if by_cycle else n)
    elif mode == 'triangular':
      f = const(1.0)
    elif mode == 'triangular2':
      f = jnp.ldexp(const(1.0), -_numeric.div_period(n, total).astype(jnp.int32))
    else:
      f = _numeric.power(gamma, n)
    return x * f

  value = lambda n: const(base_lr) + const(max_lr - base_lr) * shape(n)
  momentum = None
  if cycle_momentum:
    momentum = lambda n: const(max_momentum) - const(max_momentum - base_momentum) * shape(n)
  return Curve(value=value, kind='absolute', step=lambda k: (jnp.zeros_like(value(k)), value(k)), momentum=momentum)


def _one_cycle_phases(kw: dict[str, Any]) -> tuple[int, list[tuple[float, float, Any, Any, bool]]]:
  total = kw['total_steps']
  if total is None:
    if kw['epochs'] is None or kw['steps_per_epoch'] is None:
      missing = [k for k in ('total_steps', 'epochs', 'steps_per_epoch') if kw[k] is None]
      raise ConfigError(
        f'OneCycleLR: missing required keyword total_steps (or both epochs and steps_per_epoch); '
        f'not set: {", ".join(missing)}.'
      )
    total = kw['epochs'] * kw['steps_per_epoch']
  pct = kw['pct_start']
  if kw['three_phase']:
    ends = [float(pct * total) - 1, float(2 * pct * total) - 2, total - 1]
    ends = list(
      zip(
        ends,
        [('initial', 'max'), ('max', 'initial'), ('initial', 'min')],
        [('max', 'base'), ('base', 'max'), ('max', 'max')],
      )
    )
  else:
    ends = [float(pct * total) - 1, total - 1]
    ends = list(zip(ends, [('initial', 'max'), ('max', 'min')], [('max', 'base'), ('base', 'max')]))
  phases = []
  start, lo = 0.0, 0
  for i, (end, lrs, moms) in enumerate(ends):
    last = i == len(ends) - 1
    hi = total if last else min(math.floor(end), total)
    reachable = lo <= hi
    if reachable and end - start == 0:
      raise ConfigError(
        f'OneCycleLR: total_steps={total} with pct_start={pct}'
        f'{" and three_phase" if kw["three_phase"] else ""} cannot run: phase {i + 1} spans '
        f'zero steps (from step {start:g} to {end:g}) and torch divides by zero at step {lo}.'
      )
    phases.append((start, float(end), lrs, moms, reachable))
    if not last:
      lo = max(lo, math.floor(end) + 1)
    start = float(end)
  return total, phases


def one_cycle_lr(
  lr,
  max_lr,
  total_steps,
  epochs,
  steps_per_epoch,
  pct_start,
  anneal_strategy,
  cycle_momentum,
  base_momentum,
  max_momentum,
  div_factor,
  final_div_factor,
  three_phase,
):
  """OneCycleLR (``torch.optim.lr_scheduler.OneCycleLR``), the 1cycle policy.

  ``initial = max_lr / div_factor`` (the optimizer's lr is ignored),
  ``min = initial / final_div_factor``. Phases end at steps
  ``pct_start * T - 1`` and ``T - 1`` (three_phase: ``pct_start * T - 1``,
  ``2 * pct_start * T - 2``, ``T - 1``); in a phase from ``s`` to ``e``,
  ``pct = (n - s) / (e - s)`` and the lr anneals from its start to its end value
  by ``end + (start - end) * (1 + cos(pi * pct)) / 2`` ('cos') or
  ``start + (end - start) * pct`` ('linear'). Momentum anneals the same way
  between max_momentum and base_momentum. Step T is torch's extrapolation of
  the last phase; torch raises beyond T, and here the value holds at step T's
  (``Schedule.max_count`` is T, and ``Schedule.check_steps`` rejects longer runs).
  """
  del lr
  kw = dict(
    total_steps=total_steps,
    epochs=epochs,
    steps_per_epoch=steps_per_epoch,
    pct_start=pct_start,
    three_phase=three_phase,
  )
  total, phases = _one_cycle_phases(kw)
  initial = max_lr / div_factor
  levels = {'initial': initial, 'max': max_lr, 'min': initial / final_div_factor}
  moms = {'max': max_momentum, 'base': base_momentum}

  def anneal(n, table, which):
    n = jnp.clip(n, 0, total)
    out = None
    for i in reversed(range(len(phases))):
      start, end, lr_keys, mom_keys, reachable = phases[i]
      if not reachable:
        continue
      keys = lr_keys if which == 'lr' else mom_keys
      a, b = table[keys[0]], table[keys[1]]
      den = end - start
      # Anneal from the endpoint of smaller magnitude, so that nothing cancels:
      # (1 + cos(pi * pct)) / 2 == sin(pi * (1 - pct) / 2) ** 2 == cos(pi * pct / 2) ** 2,
      # with pct or 1 - pct computed exactly from the nearer phase boundary.
      if abs(a) <= abs(b):
        x, scale = minus(n, start), 1 / den  # pct = x * scale
        lo, hi = a, b
      else:
        x, scale = minus(n, end), -1 / den  # 1 - pct
        lo, hi = b, a
      if anneal_strategy == 'cos':
        s = jnp.sin(x * const(scale * math.pi / 2))
        v = const(lo) + const(hi - lo) * (s * s)
      else:
        v = const(lo) + x * const((hi - lo) * scale)
      if out is None:
        out = v
      else:
        out = jnp.where(n <= min(math.floor(end), total), v, out)
    return out

  momentum = (lambda n: anneal(n, moms, 'mom')) if cycle_momentum else None
  value = lambda n: anneal(n, levels, 'lr')
  return Curve(
    value=value, kind='absolute', step=lambda k: (jnp.zeros_like(value(k)), value(k)), momentum=momentum, horizon=total
  )


def _check_one_cycle(kw):
  _one_cycle_phases(kw)


_MOMENTUM = _checks.Real()

SPECS = (
  ScheduleSpec(
    'CyclicLR',
    cyclic_lr,
    {
      'base_lr': (REQUIRED, _checks.NON_NEGATIVE),
      'max_lr': (REQUIRED, _checks.NON_NEGATIVE),
      'step_size_up': (2000, _checks.Integer(1)),
      'step_size_down': (None, _checks.Optional(_checks.Integer(0))),
      'mode': ('triangular', _checks.Choice(('triangular', 'triangular2', 'exp_range'))),
      'gamma': (1.0, _checks.Real()),
      'scale_fn': (None, ScaleFn()),
      'scale_mode': ('cycle', _checks.Choice(('cycle', 'iterations'))),
      'cycle_momentum': (True, _checks.Boolean()),
      'base_momentum': (0.8, _MOMENTUM),
      'max_momentum': (0.9, _MOMENTUM),
    },
  ),
  ScheduleSpec(
    'OneCycleLR',
    one_cycle_lr,
    {
      'max_lr': (REQUIRED, _checks.NON_NEGATIVE),
      'total_steps': (None, _checks.Optional(_checks.Integer(1))),
      'epochs': (None, _checks.Optional(_checks.Integer(1))),
      'steps_per_epoch': (None, _checks.Optional(_checks.Integer(1))),
      'pct_start': (0.3, _checks.Real(0.0, 1.0)),
      'anneal_strategy': ('cos', _checks.Choice(('cos', 'linear'))),
      'cycle_momentum': (True, _checks.Boolean()),
      'base_momentum': (0.85, _MOMENTUM),
      'max_momentum': (0.95, _MOMENTUM),
      'div_factor': (25.0, _checks.POSITIVE),
      'final_div_factor': (1e4, _checks.POSITIVE),
      'three_phase': (False, _checks.Boolean()),
    },
    cross_check=_check_one_cycle,
  ),
)
