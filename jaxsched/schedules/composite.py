"""The composite schedulers: SequentialLR and ChainedScheduler, from their
config-file form ``schedulers: [{scheduler: NAME, scheduler_kwargs: {...}}, ...]``,
nested as torch nests them.

Members are built with the same learning rate. CyclicLR and OneCycleLR are not
accepted as members: their constructors overwrite the optimizer's lr and
``initial_lr``, which in torch changes the base of every member built after
them. A composite may be a member of a ChainedScheduler, and a ChainedScheduler
the member of a SequentialLR that runs from step 0; what torch cannot run is
refused (see :func:`sequential_lr`).
"""

from __future__ import annotations

import bisect
from typing import Any

import jax.numpy as jnp

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.schedules import _numeric
from jaxsched.schedules._numeric import const
from jaxsched.schedules._registry import REQUIRED, Curve, ScheduleSpec

NOT_MEMBERS = ('CyclicLR', 'OneCycleLR')
TIMM_PREFIX = 'timm.'  # timm's schedulers (timm_schedules.py): not torch LRSchedulers
COMPOSITES = ('SequentialLR', 'ChainedScheduler')
_MEMBER_KEYS = ('scheduler', 'scheduler_kwargs')


class Members:
  """Check for ``schedulers``: a non-empty list of ``{scheduler, scheduler_kwargs}``,
  each checked against its own spec. Returns ``((name, checked_kwargs), ...)``."""

  def __call__(self, key: str, value: Any) -> tuple:
    from jaxsched._errors import unknown
    from jaxsched.schedules import SCHEDULES  # the table imports this module

    if isinstance(value, (str, bytes, dict)) or not hasattr(value, '__iter__') or not list(value):
      raise ConfigError(f'{key}={value!r} is not allowed: expected {self}.')
    out = []
    for i, item in enumerate(value):
      where = f'{key}[{i}]'
      if not isinstance(item, dict):
        raise ConfigError(
          f'{where}={item!r} is not allowed: expected a mapping with keys scheduler and scheduler_kwargs.'
        )
      for k in item:
        if k not in _MEMBER_KEYS:
          raise unknown(f'key in {where}', k, _MEMBER_KEYS)
      if 'scheduler' not in item:
        raise ConfigError(f"{where}: missing required key 'scheduler'.")
      name = item['scheduler']
      if name in NOT_MEMBERS:
        raise ConfigError(
          f'{where}: {name} is not supported inside SequentialLR or ChainedScheduler '
          f"(CyclicLR and OneCycleLR overwrite the optimizer's lr and initial_lr for every "
          f'other member in torch).'
        )
      if isinstance(name, str) and name.startswith(TIMM_PREFIX):
        raise ConfigError(
          f"{where}: {name} is not supported inside SequentialLR or ChainedScheduler (timm's schedulers "
          f'are not torch LRSchedulers: torch cannot step them there).'
        )
      spec = SCHEDULES.get(name) if isinstance(name, str) else None
      if spec is None:
        members = [n for n in SCHEDULES if n not in NOT_MEMBERS and not n.startswith(TIMM_PREFIX)]
        raise unknown(f'scheduler in {where}', name, members)
      kwargs = item.get('scheduler_kwargs') or {}
      if not isinstance(kwargs, dict):
        raise ConfigError(f'{where}.scheduler_kwargs={kwargs!r} must be a mapping.')
      try:
        checked = spec.resolve(kwargs)
      except ConfigError as e:
        raise ConfigError(f'{where}: {e}') from None
      out.append((name, checked))
    return tuple(out)

  def __str__(self) -> str:
    return 'a non-empty list of {scheduler: NAME, scheduler_kwargs: {...}}'


def _build(lr, members):
  from jaxsched.schedules import SCHEDULES

  return [SCHEDULES[name].builder(lr, **kwargs) for name, kwargs in members]


def _holds_sequential(members) -> bool:
  """Whether a SequentialLR is among ``members`` (checked members), at any depth."""
  return any(
    name == 'SequentialLR' or (name in COMPOSITES and _holds_sequential(kw['schedulers'])) for name, kw in members
  )


def _compose(maps):
  """The maps ``lr <- a * lr + b`` applied in order, as one ``(a, b)``."""
  a, b = const(1.0), const(0.0)
  for ca, cb in maps:
    a, b = ca * a, ca * b + cb
  return a, b


def _restart_map(curve: Curve, k):
  """The member's ``_update_lr(0)`` at a milestone as ``(a, b)``: its closed form at 0,
  or for :attr:`Curve.restart` (affine in the lr before the restart) its slope and offset."""
  zero = jnp.zeros_like(k)
  if curve.restart is None:
    return jnp.zeros_like(curve.value(zero)), curve.value(zero)
  b = curve.restart(zero, const(0.0))
  return curve.restart(zero, const(1.0)) - b, b


def sequential_lr(lr, schedulers, milestones):
  """SequentialLR (``torch.optim.lr_scheduler.SequentialLR``): scheduler i runs
  from milestone i - 1 (0 for the first) until milestone i.

  As torch does, at each milestone m the next scheduler is restarted
  (``_update_lr(0)``: its closed form at 0) and stepped from there, so its value
  at n is its own value at ``n - m``. MultiplicativeLR has no closed form: torch
  continues from the current lr times ``lr_lambda(0)``; LinearLR and PolynomialLR
  with total_iters=0 cannot be restarted (ConfigError).

  A ChainedScheduler member may run from step 0 (the member that torch starts,
  at ``bisect_right(milestones, 0)``): torch starts it by stepping its members at
  ``last_epoch`` 0 outside their initial step, so ExponentialLR, MultiplicativeLR,
  PolynomialLR and CosineAnnealingLR take one step more there than on their own.
  With a composite member the lr is computed by folding torch's per-step maps (O(n)
  work per call). ConfigError where torch raises or counts otherwise: a composite
  restarted at a milestone (``_update_lr(0)`` calls ``LRScheduler.get_lr``:
  NotImplementedError), a SequentialLR inside a SequentialLR (its ``recursive_undo``
  leaves the inner SequentialLR's own count one step ahead of its members').
  """
  if _holds_sequential(schedulers):
    raise ConfigError(
      'SequentialLR: a SequentialLR inside a SequentialLR (directly or in a ChainedScheduler) is not supported: '
      "torch's recursive_undo rewinds only the inner members, not the inner SequentialLR's own count, so "
      'its milestones fall one step early. Flatten it into one SequentialLR.'
    )
  curves = _build(lr, schedulers)
  composite = [name in COMPOSITES for name, _ in schedulers]
  ms = list(milestones)
  starts = [0] + ms
  first = bisect.bisect_right(ms, 0)  # the member torch starts at step 0

  def active(i):  # members that own at least one step
    return i == len(curves) - 1 or (ms[i] > starts[i] if i > 0 else ms[0] > 0)

  for i, curve in enumerate(curves):
    if i > 0 and starts[i] > 0 and active(i) and curve.restart_error:
      raise ConfigError(
        f'SequentialLR: schedulers[{i}] cannot be restarted at milestone {starts[i]}: '
        f'torch raises {curve.restart_error}.'
      )
  if composite[first] and curves[first].first_error:
    raise ConfigError(
      f'SequentialLR: schedulers[{first}] cannot be started at step 0: torch raises {curves[first].first_error}.'
    )

  def start(k):  # construction: the lr reset to the base lr, then the first member's step 0
    curve = curves[first]
    a, b = (curve.first if composite[first] and curve.first is not None else curve.step)(jnp.zeros_like(k))
    return jnp.zeros_like(a), a * const(lr) + b

  def step(k):
    idx = jnp.searchsorted(jnp.asarray(ms, k.dtype), k, side='right', method='compare_all') if ms else jnp.zeros_like(k)
    a, b = start(k)
    for i, curve in enumerate(curves):
      if not active(i):
        continue
      ca, cb = curve.step(jnp.maximum(k - starts[i], 0))
      if i > 0 and starts[i] > 0:
        ra, rb = _restart_map(curve, k)
        restarted = k == starts[i]
        ca, cb = jnp.where(restarted, ra, ca), jnp.where(restarted, rb, cb)
      on = (idx == i) & (k > 0)
      a, b = jnp.where(on, ca, a), jnp.where(on, cb, b)
    return a, b

  if any(composite):

    def value(n):
      return _numeric.fold_affine(step, n, start(jnp.zeros((), n.dtype))[1])

    return Curve(value=value, kind='affine', step=step, restart_error='NotImplementedError for a SequentialLR')

  def segment(i, n):
    rel = jnp.maximum(n - starts[i], 0)
    curve = curves[i]
    if i == 0 or starts[i] == 0 or curve.restart is None:
      return curve.value(rel)
    before = starts[i] - 1
    j = bisect.bisect_right(ms, before)
    prev = segment(j, jnp.full(jnp.shape(n), before, n.dtype))
    return curve.restart(rel, prev)

  def value(n):
    idx = jnp.searchsorted(jnp.asarray(ms, n.dtype), n, side='right', method='compare_all') if ms else jnp.zeros_like(n)
    out = segment(len(curves) - 1, n)
    for i in reversed(range(len(curves) - 1)):
      if active(i):
        out = jnp.where(idx == i, segment(i, n), out)
    return out

  return Curve(value=value, kind='affine', step=step, restart_error='NotImplementedError for a SequentialLR')


def _check_sequential(kw):
  n, ms = len(kw['schedulers']), kw['milestones']
  if len(ms) != n - 1:
    raise ConfigError(
      f'SequentialLR: expected {n - 1} milestone(s) for {n} schedulers (one fewer), got milestones={list(ms)}.'
    )
  if any(b < a for a, b in zip(ms, ms[1:])):
    raise ConfigError(f'SequentialLR: milestones={list(ms)} must be non-decreasing.')


def chained_scheduler(lr, schedulers):
  """ChainedScheduler (``torch.optim.lr_scheduler.ChainedScheduler``): every step
  calls each member's chainable ``step()`` in order on the same lr.

  Factor members multiply (``lr * prod_i factor_i(n)``); an absolute member
  (LambdaLR, CosineAnnealingWarmRestarts) overwrites, so only the step factors
  of the members after the last one apply on top of it. CosineAnnealingLR and
  LinearWarmupCosineAnnealingLR act on ``lr - eta_min`` and restart from their
  base after each trough, and a composite member (a SequentialLR, which resets
  the lr to the base lr when it is built and steps only its current member, or
  a ChainedScheduler) is no factor either: a chain with them has no closed form
  and is computed by folding torch's per-step maps (O(n) work per call).
  """
  curves = _build(lr, schedulers)

  def step(k):
    return _compose(c.step(k) for c in curves)

  if any(c.kind == 'affine' for c in curves):

    def value(n):
      a0, b0 = step(jnp.zeros((), n.dtype))
      return _numeric.fold_affine(step, n, a0 * const(lr) + b0)
  else:
    last = max((i for i, c in enumerate(curves) if c.kind == 'absolute'), default=None)

    def value(n):
      if last is None:
        out = jnp.full(jnp.shape(n), lr, _numeric.float_dtype())
        for c in curves:
          out = out * c.factor(n)
        return out
      out = curves[last].value(n)
      for c in curves[last + 1 :]:
        out = out * c.step(n)[0]
      return out

  return Curve(
    value=value,
    kind='affine',
    step=step,
    first=lambda k: _compose((c.first or c.step)(k) for c in curves),
    first_error=next((c.first_error for c in curves if c.first_error), None),
    restart_error='NotImplementedError for a ChainedScheduler (_update_lr(0) calls LRScheduler.get_lr)',
  )


SPECS = (
  ScheduleSpec(
    'SequentialLR',
    sequential_lr,
    {
      'schedulers': (REQUIRED, Members()),
      'milestones': (REQUIRED, _checks.Sequence(_checks.Integer(0, _numeric.INT_MAX))),
    },
    cross_check=_check_sequential,
  ),
  ScheduleSpec(
    'ChainedScheduler',
    chained_scheduler,
    {
      'schedulers': (REQUIRED, Members()),
    },
  ),
)
