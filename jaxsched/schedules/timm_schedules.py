"""timm's schedulers (``timm.scheduler``, timm 1.0) by the IDs ``timm.cosine``, ``timm.tanh``,
``timm.step``, ``timm.multistep`` and ``timm.poly``, with their classes' keywords.

timm sets the lr absolutely from a step index t: its training loop calls ``scheduler.step(t)`` at the
end of each epoch with t the next epoch (``t_in_epochs=True``, the default), or
``scheduler.step_update(t)`` after each optimizer update with t the number of updates so far
(``t_in_epochs=False``); either call sets the lr to ``_get_lr(t)``. So ``sched(n)``, the lr after n
scheduler steps, is ``_get_lr(n)`` for n >= 1, and for n = 0 the lr timm's constructor leaves:
``warmup_lr_init`` with a warm-up, else the optimizer's lr (timm's ``base_values``, the group's
``initial_lr``). Stepped once per epoch (Lightning's ``interval: epoch``, these IDs' default), that is
the lr during epoch n; with ``t_in_epochs: false`` step it after every update (``interval: step``).

All five share timm's linear warm-up: ``warmup_lr_init + n * (lr - warmup_lr_init) / warmup_t`` for
``n < warmup_t`` (TanhLRScheduler without ``warmup_prefix`` ramps to ``_get_lr(warmup_t)`` instead of
lr); after it, t is n, or ``n - warmup_t`` with ``warmup_prefix``.

timm's lr noise (``Scheduler._add_noise``): for t in ``noise_range_t`` (``[a, b)`` as a list, t >= a
as a number) ``step(t)`` sets ``lr + lr * noise(t)``, ``noise(t)`` the first ``randn * noise_std``
below ``noise_pct`` in magnitude from a torch generator seeded with ``noise_seed + t``. jaxsched
draws those on the host at construction (:mod:`jaxsched.schedules.timm_noise`, the same numbers
without torch) into a table of at most ``MAX_NOISE`` steps and looks step n up in it; a range
without end stops at the schedule's last step where timm has one (``cycle_mul < 1``), and is
refused otherwise.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.schedules import _numeric
from jaxsched.schedules._numeric import const, power, to_float
from jaxsched.schedules._registry import REQUIRED, Curve, ScheduleSpec
from jaxsched.schedules.timm_noise import normal_noise, uniform_noise

MAX_CYCLES = 4096  # cycles tabulated for cycle_mul != 1
_EXACT = 2**53  # the largest step index whose float64 timm's arithmetic holds exactly
MAX_NOISE = 10**6  # steps of lr noise tabulated

# A cycle's shape from (t_curr, t_i, lr_max) to the lr, in jnp.
Shape = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


class NoiseRange:
  """Check for ``noise_range_t``: null (no noise), a number a (noise for t >= a) or a list [a, b]
  (noise for a <= t < b), as timm's ``_is_apply_noise`` reads it."""

  def __call__(self, key: str, value: Any) -> Any:
    if value is None:
      return None
    try:
      if isinstance(value, (list, tuple)):
        return _checks.Sequence(_REAL, 2)(key, value)
      return _REAL(key, value)
    except ConfigError:
      raise ConfigError(f'{key}={_checks.shown(value)} is not allowed: expected {self}.') from None

  def __str__(self) -> str:
    return 'null, a number a (noise for steps t >= a) or a list [a, b] (noise for a <= t < b)'


def noise_table(noise, horizon: int | None, noise_type: str = 'normal'):
  """``(lo, noise)`` from ``noise = (noise_range_t, noise_pct, noise_std, noise_seed)``: timm's noise of
  steps ``lo, lo + 1, ...`` (the integers t >= 1 in the range; t = 0 is the constructor's lr, without
  noise), or None where no step has noise. ``noise_type``: 'normal', or 'uniform' (timm's
  ``_calculate_noise`` draws a uniform for any other type; only PlateauLRScheduler passes one)."""
  noise_range_t, noise_pct, noise_std, noise_seed = noise
  if noise_range_t is None:
    return None
  if isinstance(noise_range_t, tuple):
    a, b = noise_range_t
    hi = math.ceil(b)
  else:
    a = noise_range_t
    if horizon is None:
      raise ConfigError(
        f'noise_range_t={_checks.shown(a)}: timm adds noise at every step t >= {a:g}, without end, and this '
        f'schedule has no last step to stop the table of noise at: give noise_range_t: [{a:g}, b] (noise '
        f'for {a:g} <= t < b).'
      )
    hi = horizon + 1
  lo = max(math.ceil(a), 1)
  if hi - lo > MAX_NOISE:
    raise ConfigError(
      f'noise_range_t={_checks.shown(noise_range_t)} has lr noise at {hi - lo} steps; jaxsched tabulates at '
      f'most {MAX_NOISE}: narrow the range.'
    )
  if hi <= lo:
    return None
  if noise_pct <= 0 and noise_type == 'normal':
    raise ConfigError(
      f'noise_pct={noise_pct:g} with noise_range_t={_checks.shown(noise_range_t)}: timm redraws the noise '
      f'until its magnitude is below noise_pct, forever for noise_pct <= 0; expected noise_pct > 0.'
    )
  seeds = (np.arange(hi - lo, dtype=np.int64) + (noise_seed + lo) % 2**32) % 2**32  # torch keeps 32 bits
  if noise_type == 'normal':
    return lo, normal_noise(seeds, noise_pct, noise_std)
  return lo, uniform_noise(seeds, noise_pct)


def _timm_cycle(t: int, t_initial: int, cycle_mul: float) -> int:
  """timm's cycle index of step t for ``cycle_mul != 1``, in its float64 arithmetic (ValueError
  where timm's log has no value)."""
  return math.floor(math.log(1 - t / t_initial * (1 - cycle_mul), cycle_mul))


def _past(t: int, cycle: int, t_initial: int, cycle_mul: float) -> bool:
  return _timm_cycle(t, t_initial, cycle_mul) > cycle


def _first(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
  """The smallest t in [lo, hi] with ``ok(t)`` for a monotone ``ok``, or None."""
  if not ok(hi):
    return None
  while lo < hi:
    mid = (lo + hi) // 2
    lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
  return lo


def _cycle_table(t_initial: int, cycle_mul: float, cycle_limit: int, base: float, cycle_decay: float):
  """timm's cycles for ``cycle_mul != 1``: the steps where they start, as timm's
  ``floor(log(1 - t / t_initial * (1 - cycle_mul), cycle_mul))`` places them (a cycle shorter than a
  step is skipped, as in timm), each with ``start - offset`` (timm's ``t_curr`` at its start), its
  length ``t_i`` and ``lr * cycle_decay ** i``, up to the first cycle at ``cycle_limit`` (lr_min from
  there); and the last step timm can compute (``cycle_mul < 1``: the log's argument reaches 0 at
  ``t_initial / (1 - cycle_mul)``, where timm raises), or None."""
  last = None
  hi = _EXACT
  if cycle_mul < 1:
    last = _first(0, _EXACT, lambda t: 1 - t / t_initial * (1 - cycle_mul) <= 0)
    hi = _EXACT if last is None else last - 1
    last = hi
  starts, corrections, lengths, peaks, active = [], [], [], [], []
  t = 0
  while True:
    i = _timm_cycle(t, t_initial, cycle_mul)
    offset = (1 - cycle_mul**i) / (1 - cycle_mul) * t_initial
    starts.append(t)
    corrections.append(t - offset)
    lengths.append(cycle_mul**i * t_initial)
    peaks.append(base * cycle_decay**i)
    active.append(i < cycle_limit)
    if i >= cycle_limit:
      break
    nxt = _first(t, hi, functools.partial(_past, cycle=i, t_initial=t_initial, cycle_mul=cycle_mul))
    if nxt is None:
      break
    if len(starts) == MAX_CYCLES:
      raise ConfigError(
        f'cycle_mul={cycle_mul} with cycle_limit={cycle_limit} has more than {MAX_CYCLES} cycles, which '
        f'jaxsched tabulates: lower cycle_limit or move cycle_mul away from 1.'
      )
    t = nxt
  return starts, corrections, lengths, peaks, active, last


def _cycles(lr, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, shape: Shape):
  """``(value(t), last)``: timm's lr at step index t (after any warm-up prefix) of a cycling
  scheduler (CosineLRScheduler, TanhLRScheduler, PolyLRScheduler), and the last t timm can compute
  (None: unbounded). Cycle i has length ``t_initial * cycle_mul ** i`` and peak
  ``lr * cycle_decay ** i``; from cycle ``cycle_limit`` on the lr is lr_min."""
  if cycle_mul == 1:

    def periodic(t):
      i = t // t_initial
      t_curr = to_float(t - i * t_initial)  # exact, as timm's integers
      lr_i = shape(t_curr, const(float(t_initial)), const(lr) * power(cycle_decay, i))
      return jnp.where(i < cycle_limit, lr_i, const(lr_min))

    return periodic, None

  starts, corrections, lengths, peaks, active, last = _cycle_table(t_initial, cycle_mul, cycle_limit, lr, cycle_decay)

  def tabulated(t):
    if last is not None:
      t = jnp.minimum(t, last)  # past timm's last step the lr holds
    j = jnp.searchsorted(jnp.asarray(starts[1:], t.dtype), t, side='right', method='compare_all')
    table = lambda xs: jnp.asarray(xs, _numeric.float_dtype())[j]
    t_curr = to_float(t - jnp.asarray(starts, t.dtype)[j]) + table(corrections)
    lr_i = shape(t_curr, table(lengths), table(peaks))
    return jnp.where(jnp.asarray(active)[j], lr_i, const(lr_min))

  return tabulated, last


def _fraction(t_curr, t_i, k_decay):
  """timm's ``t_curr ** k / t_i ** k``."""
  if k_decay == 1:
    return t_curr / t_i
  return jnp.power(t_curr, const(k_decay)) / jnp.power(t_i, const(k_decay))


def _warmup(lr, warmup_t, warmup_lr_init, warmup_prefix, main, noise, last=None, target: float | None = None) -> Curve:
  """The Curve of a timm scheduler whose lr after the warm-up is ``main(t)``: the warm-up's line
  to ``target`` (default: lr) for ``n < warmup_t``, the constructor's lr at n = 0, and t = n, or
  ``n - warmup_t`` with ``warmup_prefix``; ``noise`` is ``(noise_range_t, noise_pct, noise_std,
  noise_seed)``, timm's lr noise on top."""
  shift = warmup_t if warmup_prefix else 0
  slope = (lr if target is None else target) - warmup_lr_init
  slope = slope / warmup_t if warmup_t else 0.0
  horizon = None if last is None else max(last + shift, warmup_t - 1)
  table = noise_table(noise, horizon)

  def plain(n):
    after = main(jnp.maximum(n - shift, 0))
    if not warmup_t:
      return jnp.where(n == 0, const(lr), after)
    warm = const(warmup_lr_init) + to_float(n) * const(slope)
    return jnp.where(n < warmup_t, warm, after)

  def value(n):
    n = jnp.maximum(n, 0)
    v = plain(n)
    if table is None or table[0] > np.iinfo(n.dtype).max:
      return v
    lo, factors = table
    d = n - lo  # no overflow: lo >= 1
    f = jnp.take(jnp.asarray(factors, _numeric.float_dtype()), jnp.clip(d, 0, len(factors) - 1))
    return jnp.where((d >= 0) & (d < len(factors)), v + v * f, v)

  return Curve(value=value, kind='absolute', step=lambda k: (jnp.zeros_like(value(k)), value(k)), horizon=horizon)


def timm_cosine(
  lr,
  t_initial,
  lr_min,
  cycle_mul,
  cycle_decay,
  cycle_limit,
  warmup_t,
  warmup_lr_init,
  warmup_prefix,
  t_in_epochs,
  noise_range_t,
  noise_pct,
  noise_std,
  noise_seed,
  k_decay,
):
  """timm.cosine (``timm.scheduler.CosineLRScheduler``): cosine decay with warm-up, restarts and k-decay.

  In cycle i (length ``t_i = t_initial * cycle_mul ** i``, t_curr steps into it):
  ``lr_min + 0.5 * (lr * cycle_decay ** i - lr_min) * (1 + cos(pi * t_curr ** k / t_i ** k))``
  with ``k = k_decay``; lr_min from cycle ``cycle_limit`` on. With ``cycle_mul != 1`` the cycle
  index is timm's ``floor(log(1 - t / t_initial * (1 - cycle_mul), cycle_mul))``; with
  ``cycle_mul < 1`` timm raises from ``t = t_initial / (1 - cycle_mul)`` on (``max_count``).
  """
  del t_in_epochs  # how it is stepped
  noise = (noise_range_t, noise_pct, noise_std, noise_seed)

  def shape(t_curr, t_i, lr_max):
    x = _fraction(t_curr, t_i, k_decay)
    return const(lr_min) + const(0.5) * (lr_max - const(lr_min)) * (1 + jnp.cos(const(math.pi) * x))

  main, last = _cycles(lr, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, shape)
  return _warmup(lr, warmup_t, warmup_lr_init, warmup_prefix, main, noise, last)


def timm_tanh(
  lr,
  t_initial,
  lb,
  ub,
  lr_min,
  cycle_mul,
  cycle_decay,
  cycle_limit,
  warmup_t,
  warmup_lr_init,
  warmup_prefix,
  t_in_epochs,
  noise_range_t,
  noise_pct,
  noise_std,
  noise_seed,
):
  """timm.tanh (``timm.scheduler.TanhLRScheduler``): hyperbolic-tangent decay with warm-up and restarts.

  In cycle i, with ``tr = t_curr / t_i``:
  ``lr_min + 0.5 * (lr * cycle_decay ** i - lr_min) * (1 - tanh(lb * (1 - tr) + ub * tr))``, cycles
  as timm.cosine's. Without ``warmup_prefix`` the warm-up ramps to ``_get_lr(warmup_t)``, not to lr.
  """
  del t_in_epochs
  noise = (noise_range_t, noise_pct, noise_std, noise_seed)

  def shape(t_curr, t_i, lr_max):
    tr = t_curr / t_i
    return const(lr_min) + const(0.5) * (lr_max - const(lr_min)) * (
      1 - jnp.tanh(const(lb) * (1.0 - tr) + const(ub) * tr)
    )

  main, last = _cycles(lr, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, shape)
  target = None
  if warmup_t and not warmup_prefix:
    if last is not None and warmup_t > last:
      raise ConfigError(
        f'timm.tanh: warmup_t={warmup_t} without warmup_prefix ramps to the lr of step {warmup_t}, past the '
        f'last step timm can compute with cycle_mul={cycle_mul} ({last}); timm raises at construction.'
      )
    with jax.enable_x64(True), jax.ensure_compile_time_eval():  # timm computes it in float64, at construction
      target = float(main(jnp.asarray(warmup_t)))
  return _warmup(lr, warmup_t, warmup_lr_init, warmup_prefix, main, noise, last, target)


def timm_poly(
  lr,
  t_initial,
  power,
  lr_min,
  cycle_mul,
  cycle_decay,
  cycle_limit,
  warmup_t,
  warmup_lr_init,
  warmup_prefix,
  t_in_epochs,
  noise_range_t,
  noise_pct,
  noise_std,
  noise_seed,
  k_decay,
):
  """timm.poly (``timm.scheduler.PolyLRScheduler``): polynomial decay with warm-up, restarts and k-decay.

  In cycle i: ``lr_min + (lr * cycle_decay ** i - lr_min) * (1 - t_curr ** k / t_i ** k) ** power``,
  cycles as timm.cosine's.
  """
  del t_in_epochs
  noise = (noise_range_t, noise_pct, noise_std, noise_seed)
  exponent = power

  def shape(t_curr, t_i, lr_max):
    x = _fraction(t_curr, t_i, k_decay)
    return const(lr_min) + (lr_max - const(lr_min)) * jnp.power(1 - x, const(exponent))

  main, last = _cycles(lr, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, shape)
  return _warmup(lr, warmup_t, warmup_lr_init, warmup_prefix, main, noise, last)


def timm_step(
  lr,
  decay_t,
  decay_rate,
  warmup_t,
  warmup_lr_init,
  warmup_prefix,
  t_in_epochs,
  noise_range_t,
  noise_pct,
  noise_std,
  noise_seed,
):
  """timm.step (``timm.scheduler.StepLRScheduler``): ``lr * decay_rate ** (t // decay_t)`` after a warm-up.

  ``decay_t`` may be fractional (timm floors ``t / decay_t`` as Python's ``//``). ``warmup_prefix``
  defaults to true here.
  """
  del t_in_epochs
  noise = (noise_range_t, noise_pct, noise_std, noise_seed)

  def main(t):
    if float(decay_t).is_integer():
      q = t // int(decay_t)
    else:
      q = jnp.floor_divide(to_float(t), const(decay_t)).astype(t.dtype)
    return const(lr) * power(decay_rate, q)

  return _warmup(lr, warmup_t, warmup_lr_init, warmup_prefix, main, noise)


def timm_multistep(
  lr,
  decay_t,
  decay_rate,
  warmup_t,
  warmup_lr_init,
  warmup_prefix,
  t_in_epochs,
  noise_range_t,
  noise_pct,
  noise_std,
  noise_seed,
):
  """timm.multistep (``timm.scheduler.MultiStepLRScheduler``): ``lr * decay_rate ** m`` after a warm-up.

  m counts the milestones ``decay_t`` at or below ``t + 1`` (timm's convention: milestone 10 applies
  from step index 9, unlike torch's MultiStepLR). ``warmup_prefix`` defaults to true here.
  """
  del t_in_epochs
  noise = (noise_range_t, noise_pct, noise_std, noise_seed)

  def main(t):
    if not decay_t:
      return jnp.full(jnp.shape(t), lr, _numeric.float_dtype())
    before = jnp.asarray([d - 1 for d in decay_t], t.dtype)  # d <= t + 1, without t + 1 overflowing
    m = jnp.sum(before <= t[..., None], axis=-1)
    return const(lr) * power(decay_rate, m)

  return _warmup(lr, warmup_t, warmup_lr_init, warmup_prefix, main, noise)


def _sorted_milestones(kw):
  d = kw['decay_t']
  if list(d) != sorted(d):
    raise ConfigError(
      f'timm.multistep: decay_t={list(d)} must be sorted: timm bisects it (MultiStepLRScheduler assumes '
      f'it sorted and gives a wrong lr otherwise).'
    )


def _bounds(kw):
  if not kw['lb'] < kw['ub']:
    raise ConfigError(f'timm.tanh: lb={kw["lb"]} must be less than ub={kw["ub"]} (timm asserts lb < ub).')


_REAL = _checks.Real()
Keys = dict[str, tuple[Any, _checks.Check]]
_NOISE: Keys = {
  'noise_range_t': (None, NoiseRange()),
  'noise_pct': (0.67, _REAL),
  'noise_std': (1.0, _REAL),
  'noise_seed': (42, _checks.Integer()),
}


def _warmup_keys(prefix: bool, init: _checks.Check = _REAL) -> Keys:
  return {
    'warmup_t': (0, _checks.Integer(0)),
    'warmup_lr_init': (0.0, init),
    'warmup_prefix': (prefix, _checks.Boolean()),
    't_in_epochs': (True, _checks.Boolean()),
    **_NOISE,
  }


_CYCLE: Keys = {
  'cycle_mul': (1.0, _checks.POSITIVE),
  'cycle_decay': (1.0, _checks.Real()),
  'cycle_limit': (1, _checks.Integer(0)),
}
_T_INITIAL: tuple[Any, _checks.Check] = (REQUIRED, _checks.Integer(1))
_LR_MIN: tuple[Any, _checks.Check] = (0.0, _checks.NON_NEGATIVE)
_K_DECAY: Keys = {'k_decay': (1.0, _checks.POSITIVE)}

SPECS = (
  ScheduleSpec(
    'timm.cosine',
    timm_cosine,
    {'t_initial': _T_INITIAL, 'lr_min': _LR_MIN, **_CYCLE, **_warmup_keys(False), **_K_DECAY},
  ),
  ScheduleSpec(
    'timm.tanh',
    timm_tanh,
    {
      't_initial': _T_INITIAL,
      'lb': (-7.0, _checks.Real()),
      'ub': (3.0, _checks.Real()),
      'lr_min': _LR_MIN,
      **_CYCLE,
      **_warmup_keys(False, _checks.NON_NEGATIVE),
    },
    cross_check=_bounds,
  ),
  ScheduleSpec(
    'timm.step',
    timm_step,
    {'decay_t': (REQUIRED, _checks.POSITIVE), 'decay_rate': (1.0, _checks.Real()), **_warmup_keys(True)},
  ),
  ScheduleSpec(
    'timm.multistep',
    timm_multistep,
    {
      'decay_t': (REQUIRED, _checks.Sequence(_checks.Integer())),
      'decay_rate': (1.0, _checks.Real()),
      **_warmup_keys(True),
    },
    cross_check=_sorted_milestones,
  ),
  ScheduleSpec(
    'timm.poly',
    timm_poly,
    {
      't_initial': _T_INITIAL,
      'power': (0.5, _checks.Real()),
      'lr_min': _LR_MIN,
      **_CYCLE,
      **_warmup_keys(False),
      **_K_DECAY,
    },
  ),
)
