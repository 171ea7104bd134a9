"""The plan: a config read once into what every part of jaxsched reads.

A :class:`~jaxsched.config.Config` holds the keys as a file gives them; a :class:`Plan` holds what
they mean, resolved in one place: the optimizer's spec, the parameter groups in torch's
``param_groups`` order (name, base LR, factor, keywords), the schedulers always as a tuple of
:class:`SchedulerEntry` (one scheduler is a one-entry tuple, no scheduler an empty one, as
Lightning keeps ``lr_scheduler_configs``), clipping, accumulation and weight averaging.

:func:`make_plan` is validation: it reads a config top to bottom, checks what each stage needs
and builds each group kind's optimizer and schedule once, so that a config
:func:`jaxsched.load_config` accepts also builds. :func:`plan_of` gives the plan of a config
already checked without checking it again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from jaxsched import averaging
from jaxsched._errors import ConfigError
from jaxsched.config import Config, read_config
from jaxsched.groups import Group, configured_groups
from jaxsched.learning_rates import ends_in_plateau, group_learning_rate, group_lists, per_group
from jaxsched.optimizers import OptimizerSpec, optax_aliases, optimizer, spec_of
from jaxsched.optimizers import resolve as resolve_keywords
from jaxsched.plateau import METRIC_KWARGS
from jaxsched.schedules import SCHEDULES

# Scheduler keywords that cycle the momentum per parameter group (a list: one value per group).
MOMENTUM_KEYS = ('base_momentum', 'max_momentum')


@dataclasses.dataclass(frozen=True)
class SchedulerEntry:
  """One scheduler of the optimizer with its Lightning ``lr_scheduler_config``
  (``pytorch_lightning.utilities.types.LRSchedulerConfig``: interval, frequency, monitor,
  name, strict).

  Attributes:
    scheduler: the scheduler's ID ("StepLR", "ReduceLROnPlateau", ...).
    kwargs: its keywords.
    interval, frequency, monitor, name, strict: Lightning's keys.
    where: the config key that gave it, for messages: ``scheduler_kwargs``, or
      ``schedulers[i].scheduler_kwargs`` for an entry of a ``schedulers:`` list.
  """

  scheduler: str
  kwargs: Mapping[str, Any]
  interval: str
  frequency: int
  monitor: str
  name: str | None
  strict: bool
  where: str = 'scheduler_kwargs'

  @property
  def configs(self) -> dict[str, Any]:
    """The entry's ``scheduler_configs``, as a config spells them."""
    return {k: getattr(self, k) for k in ('interval', 'frequency', 'monitor', 'name', 'strict')}

  @property
  def is_plateau(self) -> bool:
    """Whether a metric drives it: ReduceLROnPlateau (alone or as the end of a SequentialLR),
    timm.plateau or hf.greedy."""
    return self.scheduler in METRIC_KWARGS or (self.scheduler == 'SequentialLR' and ends_in_plateau(self.kwargs))


@dataclasses.dataclass(frozen=True)
class Clipping:
  """Lightning's gradient clipping: ``torch.nn.utils.clip_grad_norm_`` (algorithm 'norm')
  or ``clip_grad_value_`` ('value') at ``value``."""

  value: float
  algorithm: str


@dataclasses.dataclass(frozen=True)
class Plan:
  """A config resolved once: what :func:`jaxsched.build`, the torch side, the lints and the
  curve simulation read.

  Attributes:
    config: the config it was read from (numbers given as strings already converted).
    spec: the optimizer's :class:`~jaxsched.optimizers.OptimizerSpec`; None for an
      ``optax.<alias>``.
    groups: every group the config defines, in torch's ``param_groups`` order (regular,
      recurrent, then lr_parameter_groups as given); which of them hold parameters
      depends on the tree (:func:`jaxsched.groups.groups`). With timm's keys, timm's
      groups as the config alone gives them (:func:`jaxsched.groups.timm_groups`):
      no_decay and decay, or with layer_decay those of one layer at scale 1; the
      layers come from the tree (:func:`jaxsched.groups.groups`,
      :func:`jaxsched.groups.group_paths`).
    schedulers: the schedulers stepped on the groups' LRs, in Lightning's order.
    clipping: None: no clipping (Lightning: None and values <= 0).
    accumulate_grad_batches: micro-batches per optimizer step.
    skip_nonfinite: whether non-finite gradients are skipped.
    ema, swa: the averaging callbacks' arguments, or None.
  """

  config: Config
  spec: OptimizerSpec | None
  groups: tuple[Group, ...]
  schedulers: tuple[SchedulerEntry, ...]
  clipping: Clipping | None
  accumulate_grad_batches: int
  skip_nonfinite: bool
  ema: Mapping[str, Any] | None
  swa: Mapping[str, Any] | None

  @property
  def optimizer(self) -> str:
    """The optimizer's ID."""
    return self.config.optimizer

  @property
  def scheduler(self) -> SchedulerEntry | None:
    """The one scheduler, where there is exactly one; None for none or several."""
    return self.schedulers[0] if len(self.schedulers) == 1 else None

  def shares_direction(self, held: list[Group]) -> bool:
    """Whether the groups that hold parameters (``held``) can share one optimizer for the
    direction, each scaling it by its own LR: several groups that differ only in their LR,
    an optimizer linear in the LR with their keywords (``OptimizerSpec.is_lr_linear``), no momentum
    cycled per group."""
    return (
      len(held) > 1
      and self.spec is not None
      and self.spec.is_lr_linear(held[0].optimizer_kwargs)
      and all(g.optimizer_kwargs == held[0].optimizer_kwargs for g in held)
      and not any(isinstance(e.kwargs.get(k), (list, tuple)) for e in self.schedulers for k in MOMENTUM_KEYS)
    )


def scheduler_entries(config: Config) -> tuple[SchedulerEntry, ...]:
  """The config's schedulers as entries: a ``schedulers:`` list's in order, the one
  scheduler's, or none for a constant LR."""
  if config.schedulers:
    return tuple(
      SchedulerEntry(
        e['scheduler'], dict(e['scheduler_kwargs']), **e['scheduler_configs'], where=f'schedulers[{i}].scheduler_kwargs'
      )
      for i, e in enumerate(config.schedulers)
    )
  if config.scheduler is None:
    return ()
  return (SchedulerEntry(config.scheduler, dict(config.scheduler_kwargs), **config.scheduler_configs),)


def _read(config: Config) -> Plan:
  """The plan of a checked config, read without the checks.

  Raises:
    ConfigError: the recurrent group's LR set twice (:func:`jaxsched.groups.configured_groups`).
  """
  val = config.gradient_clip_val
  return Plan(
    config=config,
    spec=spec_of(config.optimizer),
    groups=tuple(configured_groups(config)),
    schedulers=scheduler_entries(config),
    clipping=Clipping(val, config.gradient_clip_algorithm) if val else None,
    accumulate_grad_batches=config.accumulate_grad_batches,
    skip_nonfinite=config.skip_nonfinite,
    ema=config.ema,
    swa=config.swa,
  )


def plan_of(config: Any) -> Plan:
  """The plan of ``config``: a :class:`Plan` as it is; a :class:`Config`, taken as checked (one
  :func:`jaxsched.load_config` gave); anything else :func:`jaxsched.load_config` accepts, checked
  here (:func:`make_plan`)."""
  if isinstance(config, Plan):
    return config
  if isinstance(config, Config):
    return _read(config)
  return make_plan(read_config(config))


def make_plan(config: Config) -> Plan:
  """Reads ``config`` into its plan, checking each stage: the optimizer and its keywords,
  the averaging callbacks against the schedulers, the groups, then each group kind's
  optimizer with its schedule, built once without parameters.

  Returns:
    The plan of the config with numbers given as strings (YAML 1.1 reads ``1e-4`` as one)
    in optimizer_kwargs, lr_parameter_groups and scheduler_kwargs (each entry's, with
    ``schedulers``) converted, as the optimizer and scheduler read them.

  Raises:
    ConfigError: an unknown optimizer or scheduler, a bad keyword or value, momentum
      cycling with an optimizer without momentum, schedulers that cannot be chained,
      averaging that cannot go with the schedulers.
  """
  # the optimizer: its name and keywords first
  optimizer(config.optimizer, learning_rate=config.learning_rate, **config.optimizer_kwargs)
  entries = scheduler_entries(config)
  # averaging: what Lightning's callbacks accept beside the schedulers
  one = entries[0] if len(entries) == 1 else None
  averaging.check_combination(
    config.ema,
    config.swa,
    one.scheduler if one else None,
    one is not None and one.is_plateau,
  )
  if config.swa is not None and len(entries) > 1:
    raise ConfigError(
      "swa with a schedulers list: StochasticWeightAveraging replaces the optimizer's one "
      'scheduler with SWALR (Lightning refuses more than one lr_scheduler with SWA); configure '
      'one scheduler.'
    )
  # the groups, and each one's optimizer with its schedule
  configured = configured_groups(config)
  if configured[0].learning_rate is None and entries:
    raise ConfigError(
      f'{config.optimizer} has no default learning rate: set learning_rate for the '
      f'{" and ".join(e.scheduler for e in entries)} scheduler.'
    )
  lists = [n for e in entries for n in group_lists(e.scheduler, e.kwargs)]
  count = lists[0] if lists else len(configured)
  plan = _read(config)
  for i, group in enumerate(configured):
    lr, kwargs = group_learning_rate(plan, group, min(i, count - 1), count, batches=1)
    optimizer(config.optimizer, learning_rate=lr, **kwargs)
  # the numbers the checks read, back into the config
  numbers = [_numbers(e.kwargs, _checked_scheduler_kwargs(e.scheduler, dict(e.kwargs), count)) for e in entries]
  changes: dict[str, Any] = {}
  if config.schedulers:
    changes['schedulers'] = tuple({**e, 'scheduler_kwargs': n} for e, n in zip(config.schedulers, numbers, strict=True))
  elif entries:
    changes['scheduler_kwargs'] = numbers[0]
  return _read(
    dataclasses.replace(
      config,
      optimizer_kwargs=_optimizer_numbers(config.optimizer, config.optimizer_kwargs),
      lr_parameter_groups={
        name: _optimizer_numbers(config.optimizer, kw) for name, kw in config.lr_parameter_groups.items()
      },
      **changes,
    )
  )


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
  spec = spec_of(name)
  assert spec is not None  # optimizer() accepted the name
  keywords = {k: v for k, v in kwargs.items() if k in spec.kwargs}
  return _numbers(kwargs, resolve_keywords(spec, None, keywords)[1])


def _checked_scheduler_kwargs(name: str, kwargs: dict[str, Any], count: int) -> dict[str, Any]:
  kwargs = per_group(name, kwargs, 0, count)
  if name in METRIC_KWARGS:
    return {k: METRIC_KWARGS[name][k][1](k, v) for k, v in kwargs.items()}
  if name in SCHEDULES and not ends_in_plateau(kwargs):
    return SCHEDULES[name].resolve(kwargs)
  return {}
