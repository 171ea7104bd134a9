"""Parameter groups as DynVision makes them, and each group's learning rate.

A parameter joins a group by its '/'-joined path (:func:`param_labels`); each
group has its base LR (the config's times its ``lr_factor``), its optimizer
keywords and its schedule, stepped under Lightning's interval/frequency rules
(:func:`jaxsched.stepping.scheduler_steps`). :func:`validate` builds each group kind's optimizer
and schedule once, without parameters, so that a config that loads also builds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax

from jaxsched import averaging
from jaxsched._errors import ConfigError
from jaxsched.config import Config
from jaxsched.optimizers import OPTIMIZERS, optax_aliases, optimizer, resolve
from jaxsched.plateau import KWARGS as PLATEAU_KWARGS
from jaxsched.plateau import Chain, chain, reduce_on_plateau
from jaxsched.schedules import SCHEDULES, schedule
from jaxsched.schedules.composite import COMPOSITES
from jaxsched.stepping import scheduler_steps

PLATEAU = 'ReduceLROnPlateau'
REGULAR, RECURRENT = 'regular', 'recurrent'
# Scheduler keywords for which torch takes one value per parameter group.
PER_GROUP = {
  'OneCycleLR': ('max_lr', 'base_momentum', 'max_momentum'),
  'CyclicLR': ('base_lr', 'max_lr', 'base_momentum', 'max_momentum'),
  PLATEAU: ('min_lr',),
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
}
# Why a SequentialLR ending in ReduceLROnPlateau cannot join a list (any other SequentialLR can).
PLATEAU_ENDED = (
  "a SequentialLR that ends in ReduceLROnPlateau is jaxsched's own (torch's SequentialLR raises for a "
  'ReduceLROnPlateau member, pytorch#68978; here the reports alone drive it), supported as the only '
  'scheduler, not in a list'
)


@dataclasses.dataclass(frozen=True)
class Group:
  """A parameter group: its name, its base LR (the config's times ``lr_factor``)
  and its optimizer keywords."""

  name: str
  learning_rate: float
  optimizer_kwargs: Mapping[str, Any]
  lr_factor: float = 1.0


def path_name(path: tuple) -> str:
  """A param's '/'-joined path, as DynVision's named_parameters ('layer/kernel'), without the
  trailing ``value`` attribute of a Flax NNX variable: ``nnx.state(model, nnx.Param)``'s
  ``fc/kernel/value`` is ``fc/kernel``, the name a Linen tree (and torch's layout rule) gives it."""
  if path and getattr(path[-1], 'name', None) == 'value':
    path = path[:-1]
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def _has_recurrent(config: Config) -> bool:
  return config.recurrent_learning_rate_multiplier != 1.0 or RECURRENT in config.lr_parameter_groups


def labeller(config: Config) -> Callable[[str], str]:
  """The config's group of a '/'-joined parameter path: the first named lr_parameter_group that is a
  substring of it (DynVision's rule), else recurrent where a recurrent pattern matches (any case), else
  regular."""
  named = [name for name in config.lr_parameter_groups if name not in (REGULAR, RECURRENT)]
  patterns = [p.lower() for p in config.recurrent_param_patterns]
  recurrent = _has_recurrent(config)

  def label(path: str) -> str:
    for name in named:  # DynVision's rule: substring of the path, first match wins
      if name in path:
        return name
    if recurrent and any(p in path.lower() for p in patterns):
      return RECURRENT
    return REGULAR

  return label


def param_labels(config: Config, params: Any) -> Any:
  """The group name of every parameter, as a tree like ``params``."""
  label = labeller(config)
  return jax.tree_util.tree_map_with_path(lambda path, _: label(path_name(path)), params)


def configured_groups(config: Config) -> list[Group]:
  """Every group the config defines, in torch's param_groups order: regular,
  recurrent (with a multiplier other than 1, or configured in lr_parameter_groups),
  then the other lr_parameter_groups as given.

  ``lr_parameter_groups.regular`` and ``lr_parameter_groups.recurrent`` configure
  those two groups (their lr_factor and keywords) rather than naming new ones.

  Raises:
    ConfigError: the recurrent group's LR is set both by
      recurrent_learning_rate_multiplier and by lr_parameter_groups.recurrent.lr_factor.
  """
  spec = OPTIMIZERS.get(config.optimizer)  # None: an optax alias
  base_lr = config.learning_rate
  if base_lr is None:
    base_lr = spec.lr if spec is not None else None
  given = {name: dict(kw) for name, kw in config.lr_parameter_groups.items()}
  multiplier = config.recurrent_learning_rate_multiplier
  if multiplier != 1.0 and 'lr_factor' in given.get(RECURRENT, {}):
    raise ConfigError(
      f"the recurrent group's LR is set twice: recurrent_learning_rate_multiplier={multiplier} and "
      f'lr_parameter_groups.recurrent.lr_factor={given[RECURRENT]["lr_factor"]}. Set it with one of them.'
    )
  kinds = [(REGULAR, given.pop(REGULAR, {}))]
  if _has_recurrent(config):
    recurrent = given.pop(RECURRENT, {})
    kinds.append((RECURRENT, {'lr_factor': multiplier, **recurrent}))
  kinds += list(given.items())
  ignored = spec.constructor_only if spec is not None else ()
  out = []
  for name, kw in kinds:
    factor = kw.pop('lr_factor', 1.0)
    kw = {**config.optimizer_kwargs, **{k: v for k, v in kw.items() if k not in ignored}}
    lr = None if base_lr is None else base_lr * factor  # None: an optax alias without a default (validate checks)
    out.append(Group(name, lr, kw, factor))  # type: ignore[arg-type]
  return out


def groups(config: Config, params: Any) -> list[Group]:
  """The parameter groups that hold parameters, in torch's param_groups order:
  regular, recurrent, then lr_parameter_groups as given.

  Raises:
    ConfigError: a configured group (a named one, or recurrent with a
      multiplier other than 1) matches no parameter.
  """
  labels = param_labels(config, params)
  used = set(jax.tree.leaves(labels))
  paths = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  configured = configured_groups(config)
  for name in (g.name for g in configured if g.name != REGULAR):
    if name in used:
      continue
    if name == RECURRENT:
      patterns = list(config.recurrent_param_patterns)
      what = (
        f'the recurrent group (recurrent_learning_rate_multiplier={config.recurrent_learning_rate_multiplier})'
        f' takes params whose path contains one of {patterns} (case-insensitive)'
      )
      taken = {
        path: label
        for path, label in zip(paths, jax.tree.leaves(labels))
        if any(p.lower() in path.lower() for p in patterns)
      }
    else:
      what, taken = f'lr_parameter_groups.{name} takes params whose path contains {name!r}', {}
    if not paths:
      raise ConfigError(f'{what}, but the parameter tree is empty (it has no leaves).')
    if taken:
      listed = ', '.join(f'{path} (to lr_parameter_groups.{label})' for path, label in list(taken.items())[:5])
      raise ConfigError(
        f'{what}, but the named groups, which are matched first, took them all: {listed}. Rename '
        f'the named group, or give it the lr_factor the recurrent params should have.'
      )
    shown = ', '.join(paths[:20]) + (f' ... ({len(paths)} in all)' if len(paths) > 20 else '')
    raise ConfigError(f'{what}, but none does. Parameter paths: {shown}.')

  return [g for g in configured if g.name in used]


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


def _learning_rate(
  config: Config, group: Group, kwargs: dict[str, Any], batches: int | None, run_steps: int | None = None
):
  """The group's LR (a float, a schedule of the optimizer count, or a Plateau)
  and its momentum schedule (or None)."""
  sc = config.scheduler_configs
  if config.scheduler is None:
    return group.learning_rate, None
  if config.scheduler == PLATEAU:
    return reduce_on_plateau(
      group.learning_rate, monitor=sc['monitor'], strict=sc['strict'], frequency=sc['frequency'], **kwargs
    ), None
  if config.scheduler == 'SequentialLR' and ends_in_plateau(kwargs):
    return _warmup_then_plateau(config, group, kwargs), None
  sched = schedule(config.scheduler, group.learning_rate, **kwargs)
  steps = scheduler_steps(config, batches)
  if run_steps is not None:  # the scheduler steps once more after the run's last optimizer step
    sched.check_steps(int(steps(run_steps)))
  lr = lambda k: sched(steps(k))  # noqa: E731
  if sched.momentum is None:
    return lr, None
  return lr, (lambda k: sched.momentum(steps(k)))


def _group_setup(
  config: Config,
  group: Group,
  index: int,
  count: int,
  batches: int | None,
  run_steps: int | None = None,
  swa_swap: tuple[int, int] | None = None,
) -> tuple[Any, dict[str, Any]]:
  """The group's learning rate (float, schedule, Plateau or Chain) and optimizer keywords;
  ``swa_swap`` (SWA's first epoch, optimizer steps per epoch): SWALR takes over there."""
  if swa_swap is not None and run_steps is not None:  # the configured scheduler runs until SWALR takes over
    run_steps = min(run_steps, swa_swap[0] * swa_swap[1])
  lr: Any
  if config.schedulers:
    lr, momentum = _chain(config, group, index, count, batches, run_steps), None
  else:
    sched_kwargs = per_group(config.scheduler, dict(config.scheduler_kwargs), index, count)
    lr, momentum = _learning_rate(config, group, sched_kwargs, batches, run_steps)
  if swa_swap is not None and config.swa is not None:
    lr, momentum = averaging.swa_learning_rate(config.swa, lr, momentum, index, count, *swa_swap)
  return lr, _with_momentum(config.optimizer, dict(group.optimizer_kwargs), momentum)


def _chain(config: Config, group: Group, index: int, count: int, batches: int | None, run_steps: int | None) -> Chain:
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
  for i, entry in enumerate(config.schedulers or ()):
    name, sc, where = entry['scheduler'], entry['scheduler_configs'], f'schedulers[{i}]'
    try:
      kwargs = per_group(name, dict(entry['scheduler_kwargs']), index, count, f'{where}.scheduler_kwargs')
      why = NOT_CHAINABLE.get(name) or (PLATEAU_ENDED if name == 'SequentialLR' and ends_in_plateau(kwargs) else None)
      if why:
        raise ConfigError(f'{name} cannot share the optimizer with other schedulers: {why}.')
      if name == PLATEAU:
        plateaus.append(
          (
            sc['interval'],
            reduce_on_plateau(
              group.learning_rate, monitor=sc['monitor'], strict=sc['strict'], frequency=sc['frequency'], **kwargs
            ),
          )
        )
        continue
      sched = schedule(name, group.learning_rate, **kwargs)
      steps = scheduler_steps(config, batches, sc, name)
      if run_steps is not None:
        sched.check_steps(int(steps(run_steps)))
      members.append((sc['interval'], sched.curve.step, steps))
    except ConfigError as e:
      raise ConfigError(f'{where}: {e}') from None
  return chain(group.learning_rate, members, plateaus)


def ends_in_plateau(kwargs: Mapping[str, Any]) -> bool:
  """Whether a SequentialLR's keywords end in ReduceLROnPlateau (jaxsched's own form; torch raises)."""
  members = kwargs.get('schedulers') or []
  return bool(members) and isinstance(members[-1], Mapping) and members[-1].get('scheduler') == PLATEAU


def _warmup_then_plateau(config: Config, group: Group, kwargs: dict[str, Any]):
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
  sc = config.scheduler_configs
  return reduce_on_plateau(
    group.learning_rate,
    monitor=sc['monitor'],
    strict=sc['strict'],
    frequency=sc['frequency'],
    warmup=warm,
    warmup_steps=milestones[-1],
    **(members[-1].get('scheduler_kwargs') or {}),
  )


def _with_momentum(name: str, kwargs: dict[str, Any], momentum: Callable | None) -> dict[str, Any]:
  """torch's cycle_momentum: the schedule drives SGD's/RMSprop's momentum or beta1."""
  if momentum is None:
    return kwargs
  spec = OPTIMIZERS.get(name)
  if spec is not None and 'momentum' in spec.kwargs:
    return {**kwargs, 'momentum': momentum}
  if spec is not None and 'betas' in spec.kwargs:
    b2 = (kwargs.get('betas') or spec.kwargs['betas'][0])[1]
    return {**kwargs, 'betas': (momentum, b2)}
  raise ConfigError(
    f'{name} has neither momentum nor betas, so the scheduler cannot cycle momentum '
    f'(torch raises the same); set scheduler_kwargs.cycle_momentum: false.'
  )


def validate(config: Config) -> Config:
  """Builds the config's optimizer and schedule once per group kind, without params,
  so that a config :func:`load_config` accepts also builds.

  Returns:
    The config with numbers given as strings (YAML 1.1 reads ``1e-4`` as one) in
    optimizer_kwargs, lr_parameter_groups and scheduler_kwargs (each entry's, with
    ``schedulers``) converted, as the optimizer and scheduler read them.

  Raises:
    ConfigError: an unknown optimizer or scheduler, a bad keyword or value, momentum
      cycling with an optimizer without momentum, schedulers that cannot be chained.
  """
  optimizer(config.optimizer, learning_rate=config.learning_rate, **config.optimizer_kwargs)  # names first
  averaging.check_combination(
    config.ema,
    config.swa,
    config.scheduler,
    config.scheduler == 'SequentialLR' and ends_in_plateau(config.scheduler_kwargs),
  )
  if config.swa is not None and config.schedulers:
    raise ConfigError(
      "swa with a schedulers list: StochasticWeightAveraging replaces the optimizer's one "
      'scheduler with SWALR (Lightning refuses more than one lr_scheduler with SWA); configure '
      'one scheduler.'
    )
  configured = configured_groups(config)
  entries = _entries(config)
  if configured[0].learning_rate is None and entries:
    raise ConfigError(
      f'{config.optimizer} has no default learning rate: set learning_rate for the '
      f'{" and ".join(name for name, _ in entries)} scheduler.'
    )
  lists = [n for name, kwargs in entries for n in group_lists(name, kwargs)]
  count = lists[0] if lists else len(configured)
  for i, group in enumerate(configured):
    lr, kwargs = _group_setup(config, group, min(i, count - 1), count, batches=1)
    optimizer(config.optimizer, learning_rate=lr, **kwargs)
  numbers = [_numbers(kwargs, _checked_scheduler_kwargs(name, kwargs, count)) for name, kwargs in entries]
  changes: dict[str, Any] = {'scheduler_kwargs': numbers[0]} if entries and not config.schedulers else {}
  if config.schedulers:
    changes['schedulers'] = tuple({**e, 'scheduler_kwargs': n} for e, n in zip(config.schedulers, numbers, strict=True))
  return dataclasses.replace(
    config,
    optimizer_kwargs=_optimizer_numbers(config.optimizer, config.optimizer_kwargs),
    lr_parameter_groups={
      name: _optimizer_numbers(config.optimizer, kw) for name, kw in config.lr_parameter_groups.items()
    },
    **changes,
  )


def _entries(config: Config) -> list[tuple[str, dict[str, Any]]]:
  """(scheduler, scheduler_kwargs) of each scheduler the config steps."""
  if config.schedulers:
    return [(e['scheduler'], dict(e['scheduler_kwargs'])) for e in config.schedulers]
  return [] if config.scheduler is None else [(config.scheduler, dict(config.scheduler_kwargs))]


def _numbers(given: Mapping[str, Any], checked: Mapping[str, Any]) -> dict[str, Any]:
  """``given`` with each string that its check read as a number replaced by that number,
  in the members of a composite too (checked as ``((name, kwargs), ...)``)."""

  def number(key, value):
    new = checked.get(key)
    if key == 'schedulers' and isinstance(value, (list, tuple)) and isinstance(new, tuple) and len(new) == len(value):
      return [
        {**m, 'scheduler_kwargs': _numbers(m['scheduler_kwargs'], kw)}
        if isinstance(m, Mapping) and isinstance(m.get('scheduler_kwargs'), Mapping)
        else m
        for m, (_, kw) in zip(value, new)
      ]
    is_number = isinstance(new, (int, float)) and not isinstance(new, bool)
    return new if isinstance(value, str) and is_number else value

  return {k: number(k, v) for k, v in given.items()}


def _optimizer_numbers(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
  if name.startswith('optax.'):  # a group's lr_factor is jaxsched's, not the alias's
    keywords = {k: v for k, v in kwargs.items() if k != 'lr_factor'}
    return {**kwargs, **optax_aliases.convert(name[len('optax.') :], keywords)}
  spec = OPTIMIZERS[name]
  keywords = {k: v for k, v in kwargs.items() if k in spec.kwargs}
  return _numbers(kwargs, resolve(spec, None, keywords)[1])


def _checked_scheduler_kwargs(name: str, kwargs: dict[str, Any], count: int) -> dict[str, Any]:
  kwargs = per_group(name, kwargs, 0, count)
  if name == PLATEAU:
    return {k: PLATEAU_KWARGS[k][1](k, v) for k, v in kwargs.items()}
  if name in SCHEDULES and not ends_in_plateau(kwargs):
    return SCHEDULES[name].resolve(kwargs)
  return {}
