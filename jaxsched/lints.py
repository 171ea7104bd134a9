"""Lints: configs that are valid but probably not what the user meant.

Each lint is a small function ``lint(config, run) -> list[str]`` returning
warning messages (an empty list when the config is clean). They cover the
traps of the reference page's Troubleshooting section and torch's own:
warm-up from LR 0 per epoch, a cosine shorter than the run, a OneCycleLR that
does not span the run, a plateau on a validation metric stepped per batch,
absolute LRs (or one swa_lrs) that override the group multipliers, momentum cycling on a
momentum-free optimizer, learning rates far from the optimizer's default, a timm
scheduler whose ``t_in_epochs`` disagrees with the interval, and schedulers that
never step. :func:`lint` runs them all. With Lightning's list of schedulers
(``schedulers:``) each lint that reads a scheduler reads every entry of the plan
(:class:`jaxsched.plan.SchedulerEntry`), its warnings prefixed by the entry's index.

A lint never raises on a config it cannot make sense of (a bad keyword is an
error that ``build`` reports); it then returns no warning.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping

import numpy as np

from jaxsched.config import Config
from jaxsched.groups import RECURRENT, REGULAR, base_lr, configured_groups
from jaxsched.learning_rates import PLATEAU
from jaxsched.optimizers import spec_of
from jaxsched.plan import SchedulerEntry, scheduler_entries
from jaxsched.plateau import METRIC_KWARGS
from jaxsched.stepping import optimizer_steps_per_epoch, scheduler_steps

ABSOLUTE_LR = {'OneCycleLR': 'max_lr', 'CyclicLR': 'base_lr/max_lr'}
CYCLES_MOMENTUM = ('OneCycleLR', 'CyclicLR')
# How far from the optimizer's default LR (the reference page's table) a learning
# rate may be before it is flagged: [default / RANGE, default * RANGE].
RANGE = 100.0


@dataclasses.dataclass(frozen=True)
class Run:
  """The run a config is checked against.

  Attributes:
    epochs: epochs in the run.
    batches_per_epoch: training batches (micro-batches) per epoch,
      ``len(train_loader)``.
    accumulate: accumulate_grad_batches: the optimizer steps every
      ``accumulate`` micro-batches and on each epoch's last one.
    explicit: True when the user gave the run's length (--epochs and
      --batches-per-epoch); lints about the run's length only fire then.
    param_dtype: the parameters' dtype ('float32', 'float16', 'bfloat16', ...).
  """

  epochs: int
  batches_per_epoch: int
  accumulate: int = 1
  explicit: bool = True
  param_dtype: str = 'float32'

  @property
  def steps_per_epoch(self) -> int:
    """Optimizer steps per epoch: ceil(batches_per_epoch / accumulate)."""
    return optimizer_steps_per_epoch(self.batches_per_epoch, self.accumulate)

  @property
  def steps(self) -> int:
    """Optimizer steps in the run."""
    return self.epochs * self.steps_per_epoch


Lint = Callable[[Config, Run], list[str]]


# ----------------------------------------------------------------------------- helpers


def _per_scheduler(fn: Callable[[Config, SchedulerEntry, Run], list[str]]) -> Lint:
  """``fn`` on each scheduler of the config (none for a constant LR); with Lightning's list
  (``schedulers:``) its warnings are prefixed by the entry's index."""

  @functools.wraps(fn)
  def each(config: Config, run: Run) -> list[str]:
    found = scheduler_entries(config)
    if len(found) == 1:
      return fn(config, found[0], run)
    return [f'schedulers[{i}]: {w}' for i, entry in enumerate(found) for w in fn(config, entry, run)]

  return each


def _kw(entry: SchedulerEntry, key: str, default: Any = None) -> Any:
  return entry.kwargs.get(key, default)


def _members(entry: SchedulerEntry) -> list[tuple[str, Mapping[str, Any]]]:
  """(scheduler, kwargs) of the scheduler, or of each SequentialLR / ChainedScheduler member."""
  if entry.scheduler in ('SequentialLR', 'ChainedScheduler'):
    out = []
    for m in entry.kwargs.get('schedulers') or []:
      if isinstance(m, Mapping) and isinstance(m.get('scheduler'), str):
        out.append((m['scheduler'], m.get('scheduler_kwargs') or {}))
    return out
  return [(entry.scheduler, entry.kwargs)]


def _is_plateau(entry: SchedulerEntry) -> bool:
  return any(name in METRIC_KWARGS for name, _ in _members(entry))


def _counts(config: Config, entry: SchedulerEntry, run: Run) -> tuple[int, int]:
  """(count at the last optimizer step, scheduler steps in the whole run)."""
  steps = scheduler_steps(config, run.batches_per_epoch, entry)
  return int(steps(run.steps - 1)), int(steps(run.steps))


def _unit(entry: SchedulerEntry) -> str:
  return 'epochs' if entry.interval == 'epoch' else 'batches'


def _float(x: Any) -> float | None:
  try:
    return float(x)
  except (TypeError, ValueError):
    return None


def _group_factors(config: Config) -> dict[str, float]:
  return {g.name: g.lr_factor for g in configured_groups(config)}


def _multipliers(scaled: Mapping[str, float]) -> str:
  """The config keys that scale the groups' LRs, with their values."""
  return ', '.join(
    f'recurrent_learning_rate_multiplier={f}' if g == RECURRENT else f'lr_parameter_groups.{g}.lr_factor={f}'
    for g, f in scaled.items()
  )


# ----------------------------------------------------------------------------- lints


@_per_scheduler
def warmup_from_zero_per_epoch(config: Config, entry: SchedulerEntry, run: Run) -> list[str]:
  """A linear warm-up from LR 0 stepped per epoch trains the whole first epoch at 0.

  (torch's LinearLR rejects start_factor 0, so only DynVision's
  LinearWarmupCosineAnnealingLR, whose warmup_start_lr defaults to 0, has it.)
  """
  if entry.interval != 'epoch':
    return []
  frequency = entry.frequency
  span = 'the whole first epoch trains' if frequency == 1 else f'the first {frequency} epochs train'
  out = []
  for i, (name, kw) in enumerate(_members(entry)):
    if i > 0 and entry.scheduler == 'SequentialLR':
      break  # only the first member starts the run
    if name == 'LinearWarmupCosineAnnealingLR' and _float(kw.get('warmup_start_lr', 0.0)) == 0.0:
      out.append(
        f'LinearWarmupCosineAnnealingLR with warmup_start_lr: 0 and interval "epoch": {span} at '
        f'LR 0 (the scheduler only steps after an epoch). Set warmup_start_lr > 0 (e.g. learning_rate / '
        f'warmup_epochs), or use interval "step" with warmup_epochs/max_epochs counted in batches.'
      )
  return out


@_per_scheduler
def cosine_shorter_than_run(config: Config, entry: SchedulerEntry, run: Run) -> list[str]:
  """T_max / max_epochs shorter than the run: torch's cosine rises again past it."""
  if not run.explicit:
    return []
  last, _ = _counts(config, entry, run)
  members = _members(entry)
  if entry.scheduler == 'SequentialLR':
    milestones = [int(m) for m in entry.kwargs.get('milestones') or []]
    starts = [0, *milestones]
  else:
    starts = [0] * len(members)
  out = []
  for i, (name, kw) in enumerate(members):
    if i >= len(starts) or starts[i] > last:
      continue
    end = starts[i + 1] - 1 if entry.scheduler == 'SequentialLR' and i + 1 < len(starts) else last
    length = end - starts[i]  # the member's count at its last step
    key = {'CosineAnnealingLR': 'T_max', 'LinearWarmupCosineAnnealingLR': 'max_epochs'}.get(name)
    if key is None:
      continue
    horizon = kw.get(key, 250 if key == 'T_max' else None)
    if horizon is None or _float(horizon) is None:
      continue
    if length > int(horizon):
      out.append(
        f'{name}: {key}={horizon} but the run steps it to {length} ({_unit(entry)}, interval '
        f'"{entry.interval}"): past {key} torch\'s cosine rises again towards the base LR. '
        f'Set {key}: {length} (or more), or shorten the run.'
      )
  return out


@_per_scheduler
def one_cycle_total_steps(config: Config, entry: SchedulerEntry, run: Run) -> list[str]:
  """OneCycleLR should step per batch, with total_steps = epochs x steps_per_epoch."""
  if entry.scheduler != 'OneCycleLR':
    return []
  out = []
  if entry.interval == 'epoch':
    out.append(
      'OneCycleLR with interval "epoch": its total_steps counts scheduler steps, so the cycle runs '
      'over epochs, not batches, and the LR is constant within an epoch. Set scheduler_configs.interval: '
      '"step" (the reference page\'s Pattern 4).'
    )
  if not run.explicit:
    return out
  total = _kw(entry, 'total_steps')
  if total is None and _kw(entry, 'epochs') is not None and _kw(entry, 'steps_per_epoch') is not None:
    total = _kw(entry, 'epochs') * _kw(entry, 'steps_per_epoch')
  _, taken = _counts(config, entry, run)
  # total_steps below the run's steps is an error (torch raises), which check reports.
  if total is not None and _float(total) is not None and int(total) > taken:
    out.append(
      f'OneCycleLR: total_steps={total}, but this run steps it {taken} times '
      f'({run.epochs} epochs x {run.steps_per_epoch} steps per epoch): the cycle stops at '
      f'{100 * taken / int(total):.0f}% and the LR never reaches its final value. '
      f'Set total_steps: {taken}.'
    )
  return out


@_per_scheduler
def plateau_val_metric_per_step(config: Config, entry: SchedulerEntry, run: Run) -> list[str]:
  """ReduceLROnPlateau (or another metric-driven scheduler) on a validation metric, stepped every batch."""
  if not _is_plateau(entry) or entry.interval != 'step':
    return []
  monitor = entry.monitor
  if not monitor.startswith('val'):
    return []
  return [
    f'{entry.scheduler if entry.scheduler in METRIC_KWARGS else PLATEAU} monitors {monitor!r} with interval "step": '
    'Lightning steps it every batch, but '
    f'{monitor} is only logged after validation: before the first validation it is missing (an error with '
    f'strict: true), and after it the same value is seen every batch, so patience counts batches. '
    f'Use interval "epoch".'
  ]


@_per_scheduler
def timm_stepping_mismatch(config: Config, entry: SchedulerEntry, run: Run) -> list[str]:
  """A timm scheduler (``timm.<name>``) whose ``t_in_epochs`` disagrees with the interval: timm's
  ``t_in_epochs: false`` means steps counted in updates (``step_update`` after each update)."""
  del run
  if not entry.scheduler.startswith('timm.'):
    return []
  per_epoch = _kw(entry, 't_in_epochs', True)
  if per_epoch == (entry.interval == 'epoch'):
    return []
  wanted = 'epoch' if per_epoch else 'step'
  return [
    f'{entry.scheduler} has t_in_epochs: {str(per_epoch).lower()} but interval "{entry.interval}": timm steps it '
    f'{"once per epoch" if per_epoch else "after every update"}; set scheduler_configs.interval: {wanted}.'
  ]


@_per_scheduler
def absolute_lr_overrides_groups(config: Config, entry: SchedulerEntry, run: Run) -> list[str]:
  """OneCycleLR / CyclicLR set every group's LR from their own absolute values."""
  del run
  key = ABSOLUTE_LR.get(entry.scheduler)
  if key is None:
    return []
  factors = _group_factors(config)
  scaled = {g: f for g, f in factors.items() if f != 1.0}
  out = []
  keys = ('max_lr',) if entry.scheduler == 'OneCycleLR' else ('base_lr', 'max_lr')
  scalar = [k for k in keys if not isinstance(_kw(entry, k), (list, tuple))]
  if scaled and scalar:
    what = _multipliers(scaled)
    order = ', '.join(factors)
    out.append(
      f"{entry.scheduler} sets every parameter group's LR from its absolute {' and '.join(scalar)}, "
      f'so {what} has no effect. Give {" and ".join(scalar)} as a list with one value per group, '
      f'in this order: [{order}].'
    )
  lr = config.learning_rate
  first = _float(_kw(entry, keys[-1]))
  if lr is not None and first is not None and not math.isclose(lr, first, rel_tol=1e-9):
    out.append(f'{entry.scheduler} ignores learning_rate={lr}: the LR follows its {keys[-1]}={first}.')
  return out


@_per_scheduler
def momentum_cycling_without_momentum(config: Config, entry: SchedulerEntry, run: Run) -> list[str]:
  """cycle_momentum on an optimizer whose momentum is 0 (torch switches momentum on)."""
  del run
  if entry.scheduler not in CYCLES_MOMENTUM or _kw(entry, 'cycle_momentum', True) is False:
    return []
  spec = spec_of(config.optimizer)
  if spec is None or 'momentum' not in spec.kwargs:
    return []  # betas: beta1 cycles (torch's behaviour); neither: build() reports the error
  default = spec.kwargs['momentum'][0]
  lo, hi = (0.85, 0.95) if entry.scheduler == 'OneCycleLR' else (0.8, 0.9)
  lo, hi = _kw(entry, 'base_momentum', lo), _kw(entry, 'max_momentum', hi)
  settings = {'': config.optimizer_kwargs.get('momentum', default)}
  for name, group in config.lr_parameter_groups.items():
    if 'momentum' in group:
      settings[f' (lr_parameter_groups.{name})'] = group['momentum']
  return [
    f'{entry.scheduler} cycles momentum, but {config.optimizer} has momentum: {m}{where}: torch '
    f'(cycle_momentum: true) silently turns it into momentum {config.optimizer} with momentum between '
    f'{lo} and {hi}. Set scheduler_kwargs.cycle_momentum: false to keep it momentum-free.'
    for where, m in settings.items()
    if _float(m) == 0.0
  ]


def learning_rate_out_of_range(config: Config, run: Run) -> list[str]:
  """A learning rate far outside the usual range for the optimizer."""
  del run
  spec = spec_of(config.optimizer)
  if spec is None or spec.lr is None:  # no default to compare with (timm's Adafactor: its relative step)
    return []
  default = spec.lr
  lo, hi = default / RANGE, default * RANGE
  usual = f"{config.optimizer}'s default is {default:g}; the usual range is about {lo:g} to {hi:g}"
  checks: list[tuple[str, float]] = []
  found = scheduler_entries(config)  # OneCycleLR and CyclicLR are only ever the one scheduler
  entry = found[0] if len(found) == 1 and found[0].scheduler in ABSOLUTE_LR else None
  if entry is not None:
    for k in ('max_lr',) + (('base_lr',) if entry.scheduler == 'CyclicLR' else ()):
      value = _kw(entry, k)
      for i, v in enumerate(value if isinstance(value, (list, tuple)) else [value]):
        if _float(v) is not None and (k == 'max_lr' or v > 0):
          checks.append((f'scheduler_kwargs.{k}' + (f'[{i}]' if isinstance(value, (list, tuple)) else ''), v))
  else:
    base = base_lr(config)
    if base is not None:
      checks.append(('learning_rate', base))
      for group, factor in _group_factors(config).items():
        if group != REGULAR and factor != 0.0:  # lr_factor 0 freezes a group on purpose
          checks.append((f"the {group!r} group's LR", base * factor))
  out = []
  for what, v in checks:
    v = float(v)
    if v == 0.0:
      out.append(f'{what} is 0: nothing trains ({usual}).')
    elif not lo <= v <= hi:
      direction = 'high' if v > hi else 'low'
      out.append(f'{what}={v:g} is far outside the usual range ({usual}); this looks too {direction}.')
  return out


def eps_vanishes_in_param_dtype(config: Config, run: Run) -> list[str]:
  """An ``eps`` that the parameters' dtype rounds to 0 (1e-8 in float16): torch keeps
  the optimizer state in the parameters' dtype, so where a second moment is 0 the
  step divides by 0 and the parameter becomes inf or NaN; jaxsched does the same."""
  try:
    dtype = np.dtype(run.param_dtype)
  except TypeError:
    return []
  if dtype.kind != 'f':
    return []
  spec = spec_of(config.optimizer)
  default = spec.kwargs.get('eps', (None,))[0] if spec is not None else None
  eps = _float(config.optimizer_kwargs.get('eps', default))
  if eps is None or eps <= 0 or dtype.type(eps) != 0:
    return []
  tiny = float(np.finfo(dtype).smallest_subnormal)
  return [
    f'{config.optimizer}: eps={eps:g} is 0 in {dtype.name} (the smallest {dtype.name} is {tiny:.2g}): where a '
    f'second moment is 0 the step divides by 0 and the parameter becomes inf or NaN, as in torch. Set '
    f"optimizer_kwargs.eps to {dtype.name}'s range (e.g. 1e-4) or train in float32."
  ]


@_per_scheduler
def scheduler_never_steps(config: Config, entry: SchedulerEntry, run: Run) -> list[str]:
  """Troubleshooting "Scheduler not updating": the LR stays constant over the run,
  or milestones lie beyond it."""
  if not run.explicit:
    return []
  last, _ = _counts(config, entry, run)
  if last == 0:
    return [
      f'the scheduler never steps in this run ({run.epochs} epochs x {run.steps_per_epoch} steps, interval '
      f'"{entry.interval}", frequency {entry.frequency}): the LR stays constant. '
      f'Check scheduler_configs.interval and frequency.'
    ]
  out = []
  name = entry.scheduler
  if name in ('MultiStepLR', 'SequentialLR'):
    beyond = [int(m) for m in _kw(entry, 'milestones') or [] if _float(m) is not None and int(m) > last]
    if beyond:
      out.append(
        f'{name}: milestone(s) {beyond} are never reached: the run steps the scheduler to {last} '
        f'({_unit(entry)}, interval "{entry.interval}").'
      )
  if name == 'StepLR' and _float(_kw(entry, 'step_size')) is not None and int(_kw(entry, 'step_size')) > last:
    out.append(
      f'StepLR: step_size={_kw(entry, "step_size")} is never reached: the run steps the scheduler to '
      f'{last} ({_unit(entry)}, interval "{entry.interval}"), so the LR stays constant.'
    )
  return out


def swa_lrs_overrides_groups(config: Config, run: Run) -> list[str]:
  """One swa_lrs for every group cancels the group multipliers once SWA starts: Lightning's
  StochasticWeightAveraging gives a float swa_lrs to every param group, and torch's SWALR
  anneals each group's LR to its swa_lr."""
  del run
  swa_lrs = (config.swa or {}).get('swa_lrs')
  if swa_lrs is None or isinstance(swa_lrs, (list, tuple)):
    return []
  factors = _group_factors(config)
  scaled = {g: f for g, f in factors.items() if f != 1.0}
  if not scaled:
    return []
  kept = ', '.join(f'{float(swa_lrs) * f:g}' for f in factors.values())
  return [
    f"swa.swa_lrs={swa_lrs} becomes every parameter group's LR once SWA starts (Lightning's "
    f"StochasticWeightAveraging gives the one value to every group, and torch's SWALR anneals each group's "
    f'LR to it), so {_multipliers(scaled)} has no effect from then on. Give swa_lrs as a list with one value '
    f'per group, in this order: [{", ".join(factors)}] (e.g. [{kept}] keeps the multipliers).'
  ]


def group_value_torch_ignores(config: Config, run: Run) -> list[str]:
  """A per-group keyword torch reads from the constructor only (torch.optim.Adagrad
  fills every accumulator from its own initial_accumulator_value): no effect."""
  del run
  out = []
  optimizer = spec_of(config.optimizer)
  if optimizer is None:
    return []
  for name, given in config.lr_parameter_groups.items():
    for key in optimizer.constructor_only:
      if key in given:
        value = config.optimizer_kwargs.get(key, optimizer.kwargs[key][0])
        out.append(
          f'lr_parameter_groups.{name}.{key}={given[key]} has no effect: torch.optim.{config.optimizer} '
          f"fills every parameter's state from the constructor's {key} ({value}, from optimizer_kwargs), "
          f'and so does jaxsched. Set optimizer_kwargs.{key} instead.'
        )
  return out


LINTS: list[Lint] = [
  warmup_from_zero_per_epoch,
  cosine_shorter_than_run,
  one_cycle_total_steps,
  plateau_val_metric_per_step,
  timm_stepping_mismatch,
  absolute_lr_overrides_groups,
  momentum_cycling_without_momentum,
  learning_rate_out_of_range,
  scheduler_never_steps,
  group_value_torch_ignores,
  eps_vanishes_in_param_dtype,
  swa_lrs_overrides_groups,
]


def lint(config: Config, run: Run) -> list[str]:
  """Every lint's warnings for ``config`` on ``run``, in :data:`LINTS` order."""
  out: list[str] = []
  for fn in LINTS:
    try:
      out.extend(fn(config, run))
    except (TypeError, ValueError, KeyError, AttributeError):
      continue  # a malformed value: build() reports it as an error
  return out


__all__ = ['LINTS', 'Run', 'lint', *[f.__name__ for f in LINTS]]
