"""Each parameter group's learning rate, from the plan's schedulers.

A group's LR is its base LR (a constant), one scheduler as a function of the optimizer step
(stepped under Lightning's interval/frequency rules, :func:`jaxsched.stepping.scheduler_steps`),
a ReduceLROnPlateau driven by :func:`jaxsched.report`, or several schedulers chained on the same
LR (:class:`jaxsched.plateau.Chain`), as Lightning steps ``lr_scheduler_configs`` in list order.
A scheduler that cycles the momentum drives the optimizer's momentum or beta1.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Mapping

from jaxsched import averaging
from jaxsched._errors import ConfigError, unknown
from jaxsched.groups import base_lr, uses_timm
from jaxsched.optimizers import spec_of
from jaxsched.plateau import METRIC_KWARGS, Chain, chain_schedules, metric_scheduler, reduce_on_plateau
from jaxsched.schedules import SCHEDULES, schedule
from jaxsched.schedules.composite import COMPOSITES, TIMM_PREFIX
from jaxsched.stepping import scheduler_steps

if TYPE_CHECKING:  # the plan imports this module to check each group's schedule
  from jaxsched.groups import Group
  from jaxsched.plan import Plan, SchedulerEntry

PLATEAU = 'ReduceLROnPlateau'
# Scheduler keywords for which torch takes one value per parameter group.
PER_GROUP = {
  'OneCycleLR': ('max_lr', 'base_momentum', 'max_momentum'),
  'CyclicLR': ('base_lr', 'max_lr', 'base_momentum', 'max_momentum'),
  PLATEAU: ('min_lr',),
  'hf.greedy': ('min_lr', 'max_lr'),
  'SWALR': ('swa_lr',),
}
# Schedulers that cannot share an optimizer with others in Lightning's list (schedulers:).
NOT_CHAINABLE = {
  'CyclicLR': (
    "its constructor sets the optimizer's lr to base_lr, and every step overwrites the lr and cycles "
    'the momentum, for the other schedulers too'
  ),
  'OneCycleLR': (
    "its constructor overwrites the optimizer's initial_lr (the base of every scheduler built after "
    'it), and every step overwrites the lr and cycles the momentum'
  ),
  'hf.greedy': (
    'GreedyLR is not a torch LRScheduler, and its reset restores the LR it was constructed with, undoing the '
    'other schedulers'
  ),
}
# Why a timm scheduler cannot join a list: Lightning steps a list's schedulers, and timm's are not torch's.
TIMM_ALONE = (
  "timm's schedulers are not torch LRSchedulers that Lightning steps in a list (timm's training loop "
  'steps its one scheduler with step(epoch) / step_update(num_updates), each setting the lr from its own '
  'base); it runs as the only scheduler'
)
# Why a SequentialLR ending in ReduceLROnPlateau cannot join a list (any other SequentialLR can).
PLATEAU_ENDED = (
  "a SequentialLR that ends in ReduceLROnPlateau is jaxsched's own (torch's SequentialLR raises for a "
  'ReduceLROnPlateau member, pytorch#68978; here the reports alone drive it), supported as the only '
  'scheduler, not in a list'
)


def per_group(
  scheduler: Any, kwargs: Mapping[str, Any], index: int, count: int, where: str = 'scheduler_kwargs'
) -> dict[str, Any]:
  """``kwargs`` of ``scheduler`` for parameter group ``index`` of ``count``: each keyword
  torch takes one value per group for (:data:`PER_GROUP`) given as a list is replaced by
  the group's value, in the members of a SequentialLR or ChainedScheduler too, at any
  depth (torch's SWALR takes its ``swa_lr`` list as a member as it does alone).

  Raises:
    ConfigError: a list whose length is not ``count``, named by its path under ``where``.
  """
  out = dict(kwargs)
  for key in PER_GROUP.get(scheduler, ()) if isinstance(scheduler, str) else ():
    value = out.get(key)
    if isinstance(value, (list, tuple)):
      if len(value) != count:
        raise ConfigError(
          f'{where}.{key} has {len(value)} values, but there are {count} parameter '
          f'groups (torch: one value per param group).'
        )
      out[key] = value[index]
  members = out.get('schedulers')
  if scheduler in COMPOSITES and isinstance(members, (list, tuple)):
    out['schedulers'] = [
      {
        **m,
        'scheduler_kwargs': per_group(
          m.get('scheduler'), kw, index, count, f'{where}.schedulers[{i}].scheduler_kwargs'
        ),
      }
      if isinstance(m, Mapping) and isinstance(kw := m.get('scheduler_kwargs'), Mapping)
      else m
      for i, m in enumerate(members)
    ]
  return out


def group_lists(scheduler: Any, kwargs: Mapping[str, Any]) -> list[int]:
  """The lengths of the per-group lists in ``kwargs`` (see :func:`per_group`), members' included."""
  out = [
    len(v)
    for k, v in kwargs.items()
    if isinstance(scheduler, str) and k in PER_GROUP.get(scheduler, ()) and isinstance(v, (list, tuple))
  ]
  members = kwargs.get('schedulers')
  if scheduler in COMPOSITES and isinstance(members, (list, tuple)):
    for m in members:
      if isinstance(m, Mapping) and isinstance(kw := m.get('scheduler_kwargs'), Mapping):
        out += group_lists(m.get('scheduler'), kw)
  return out


def ends_in_plateau(kwargs: Mapping[str, Any]) -> bool:
  """Whether a SequentialLR's keywords end in ReduceLROnPlateau (jaxsched's own form; torch raises)."""
  members = kwargs.get('schedulers') or []
  return bool(members) and isinstance(members[-1], Mapping) and members[-1].get('scheduler') == PLATEAU


def group_learning_rate(
  plan: Plan,
  group: Group,
  index: int,
  count: int,
  batches: int | None,
  run_steps: int | None = None,
  swa_swap: tuple[int, int] | None = None,
) -> tuple[Any, dict[str, Any]]:
  """Group ``index`` of ``count``'s learning rate (a float, a schedule of the optimizer step,
  a Plateau or a Chain) and its optimizer keywords (the momentum cycled where a scheduler
  does; the optimizer's :attr:`~jaxsched.optimizers.OptimizerSpec.peak_lr` keywords, where the
  config does not set them, the config's base LR: timm's ``max_lr_snapshot``, the constructor's
  lr, the same for every param group).

  Args:
    plan: the config's plan.
    group: the group.
    index, count: the group's place among the groups that hold parameters, for the
      scheduler keywords that torch takes one value per group of.
    batches: micro-batches per epoch, where known.
    run_steps: the run's optimizer steps, where known: a schedule torch cannot step that
      far is a ConfigError.
    swa_swap: SWA's first epoch and the optimizer steps per epoch: SWALR takes over there.
  """
  if swa_swap is not None and run_steps is not None:  # the configured scheduler runs until SWALR takes over
    run_steps = min(run_steps, swa_swap[0] * swa_swap[1])
  lr: Any
  momentum = None
  if len(plan.schedulers) > 1:
    lr = _chain(plan, group, index, count, batches, run_steps)
  elif plan.schedulers:
    entry = plan.schedulers[0]
    lr, momentum = _learning_rate(
      plan, entry, group, per_group(entry.scheduler, entry.kwargs, index, count), batches, run_steps
    )
  else:
    lr = group.learning_rate
  if swa_swap is not None and plan.swa is not None:
    lr, momentum = averaging.swa_learning_rate(plan.swa, lr, momentum, index, count, *swa_swap)
  peak = dict.fromkeys(plan.spec.peak_lr, base_lr(plan.config)) if plan.spec is not None else {}
  return lr, _with_momentum(plan.optimizer, {**peak, **group.optimizer_kwargs}, momentum)


def _learning_rate(
  plan: Plan, entry: SchedulerEntry, group: Group, kwargs: dict[str, Any], batches: int | None, run_steps: int | None
):
  """The group's LR under the one scheduler ``entry`` and its momentum schedule (or None)."""
  if entry.scheduler in METRIC_KWARGS:
    return _plateau(plan, entry, group, kwargs), None
  if entry.scheduler == 'SequentialLR' and ends_in_plateau(kwargs):
    return _warmup_then_plateau(entry, group, kwargs), None
  if entry.scheduler.startswith(TIMM_PREFIX) and uses_timm(plan.config):
    # timm's scheduler runs from the base LR and sets each group's lr to its value times the group's
    # lr_scale (timm.scheduler.Scheduler._update_param_groups): the warm-up start and lr_min scale too
    base = dataclasses.replace(group, learning_rate=base_lr(plan.config))  # type: ignore[arg-type]  # as Group's
    sched, steps = _scheduled(plan, entry, base, kwargs, batches, run_steps)
    return (lambda k: sched(steps(k)) * group.lr_factor), None
  sched, steps = _scheduled(plan, entry, group, kwargs, batches, run_steps)
  lr = lambda k: sched(steps(k))  # noqa: E731
  if sched.momentum is None:
    return lr, None
  return lr, (lambda k: sched.momentum(steps(k)))


def _scheduled(
  plan: Plan, entry: SchedulerEntry, group: Group, kwargs: dict[str, Any], batches: int | None, run_steps: int | None
):
  """``entry``'s schedule from the group's base LR (and the optimizer's, which HF's schedules read:
  torch_optimizer's ``lr``), and its scheduler steps before optimizer step k."""
  if 'optimizer_lr' in kwargs:  # schedule()'s own argument, set from the plan
    raise unknown(f'keyword for {entry.scheduler}', 'optimizer_lr', SCHEDULES[entry.scheduler].kwargs)
  sched = schedule(entry.scheduler, group.learning_rate, optimizer_lr=base_lr(plan.config), **kwargs)
  steps = scheduler_steps(plan.config, batches, entry)
  if run_steps is not None:  # the scheduler steps once more after the run's last optimizer step
    sched.check_steps(int(steps(run_steps)))
  return sched, steps


def _plateau(plan: Plan, entry: SchedulerEntry, group: Group, kwargs: dict[str, Any]):
  """The group's :class:`jaxsched.plateau.Plateau` under the metric-driven scheduler of ``entry``
  (timm's on timm's groups: from the base LR, its values times the group's lr_scale)."""
  if 'lr_scale' in kwargs:  # metric_scheduler()'s own argument, set from the groups
    raise unknown(f'keyword for {entry.scheduler}', 'lr_scale', METRIC_KWARGS[entry.scheduler])
  timm_scaled = entry.scheduler.startswith(TIMM_PREFIX) and uses_timm(plan.config)
  return metric_scheduler(
    entry.scheduler,
    base_lr(plan.config) if timm_scaled else group.learning_rate,  # type: ignore[arg-type]  # as Group's
    monitor=entry.monitor,
    strict=entry.strict,
    frequency=entry.frequency,
    **({'lr_scale': group.lr_factor} if timm_scaled else {}),
    **kwargs,
  )


def _chain(plan: Plan, group: Group, index: int, count: int, batches: int | None, run_steps: int | None) -> Chain:
  """Lightning's list of schedulers for one optimizer, as the group's :class:`Chain`.

  A SequentialLR entry is a member like the others: its map at step 0 is its constructor's
  (``torch.optim.lr_scheduler.SequentialLR``: every group's lr reset to ``initial_lr``, the
  group's base LR, then its first member's initial step), so the entries built before it lose
  what their construction did, as in torch; at a milestone its map is the next member's
  ``_update_lr(0)``.

  Raises:
    ConfigError: an entry torch and Lightning cannot chain (see :data:`NOT_CHAINABLE`), a
      SequentialLR ending in ReduceLROnPlateau (:data:`PLATEAU_ENDED`) or a bad entry, named
      by its index.
  """
  members, plateaus = [], []
  for i, entry in enumerate(plan.schedulers):
    name = entry.scheduler
    try:
      kwargs = per_group(name, entry.kwargs, index, count, entry.where)
      why = (
        NOT_CHAINABLE.get(name)
        or (TIMM_ALONE if name.startswith(TIMM_PREFIX) else None)
        or (PLATEAU_ENDED if name == 'SequentialLR' and ends_in_plateau(kwargs) else None)
      )
      if why:
        raise ConfigError(f'{name} cannot share the optimizer with other schedulers: {why}.')
      if name == PLATEAU:
        plateaus.append((entry.interval, _plateau(plan, entry, group, kwargs)))
        continue
      sched, steps = _scheduled(plan, entry, group, kwargs, batches, run_steps)
      members.append((entry.interval, sched.curve.step, steps))
    except ConfigError as e:
      raise ConfigError(f'schedulers[{i}]: {e}') from None
  return chain_schedules(group.learning_rate, members, plateaus)


def _warmup_then_plateau(entry: SchedulerEntry, group: Group, kwargs: dict[str, Any]):
  """SequentialLR ending in ReduceLROnPlateau (torch rejects it, pytorch#68978):
  the first members run on the counted reports until the last milestone, then
  the plateau takes over from the base LR."""
  members, milestones = list(kwargs['schedulers']), list(kwargs.get('milestones') or [])
  if len(milestones) != len(members) - 1:
    raise ConfigError(f'SequentialLR: {len(members)} schedulers need {len(members) - 1} milestones, got {milestones}.')
  head = members[:-1]
  if len(head) == 1:
    warm = schedule(head[0]['scheduler'], group.learning_rate, **(head[0].get('scheduler_kwargs') or {}))
  else:
    warm = schedule('SequentialLR', group.learning_rate, schedulers=head, milestones=milestones[:-1])
  return reduce_on_plateau(
    group.learning_rate,
    monitor=entry.monitor,
    strict=entry.strict,
    frequency=entry.frequency,
    warmup=warm,
    warmup_steps=milestones[-1],
    **(members[-1].get('scheduler_kwargs') or {}),
  )


def _with_momentum(name: str, kwargs: dict[str, Any], momentum: Callable | None) -> dict[str, Any]:
  """torch's cycle_momentum: the schedule drives SGD's/RMSprop's momentum or beta1."""
  if momentum is None:
    return kwargs
  spec = spec_of(name)
  if spec is not None and 'momentum' in spec.kwargs:
    return {**kwargs, 'momentum': momentum}
  if spec is not None and 'betas' in spec.kwargs:
    b2 = (kwargs.get('betas') or spec.kwargs['betas'][0])[1]
    return {**kwargs, 'betas': (momentum, b2)}
  raise ConfigError(
    f'{name} has neither momentum nor betas, so the scheduler cannot cycle momentum '
    f'(torch raises the same); set scheduler_kwargs.cycle_momentum: false.'
  )
