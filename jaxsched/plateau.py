"""ReduceLROnPlateau: a stateful learning rate fed the monitored metric by :func:`report`.

torch's ``ReduceLROnPlateau`` rewrites each parameter group's ``lr`` when
``scheduler.step(metric)`` is called. Here the learning rate of an optimizer is a
:class:`Plateau`, a stateful Optax schedule (``optax.StatefulSchedule``) whose state,
a :class:`PlateauState`, lives inside the optimizer state. The training loop hands
the metric to :func:`report`, a pure function that finds every
:class:`PlateauState` in the optimizer state and takes torch's step in each.

With several parameter groups each group carries its own :class:`PlateauState`
(its own LR and ``min_lr``); they are fed the same metric, so their counters
agree, as torch keeps one set of counters for all groups.

Lightning's list of schedulers for one optimizer makes a group's learning rate a
:class:`Chain`: its state, a :class:`ChainState`, holds the group's current LR,
which each scheduler's chainable step moves in turn (the step-count ones at the
optimizer's update, the plateaus in :func:`report`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxsched import _checks, state_tree
from jaxsched._errors import ConfigError
from jaxsched.schedules import _numeric

# torch's keywords (besides the optimizer), their defaults (the reference page's
# where it lists them, which are torch's) and checks.
KWARGS: dict[str, tuple[Any, _checks.Check]] = {
  'mode': ('min', _checks.Choice(('min', 'max'))),
  'factor': (0.1, _checks.Real(0.0, 1.0, lo_open=True, hi_open=True)),
  'patience': (10, _checks.Integer(0)),
  'threshold': (1e-4, _checks.NON_NEGATIVE),
  'threshold_mode': ('rel', _checks.Choice(('rel', 'abs'))),
  'cooldown': (0, _checks.Integer(0)),
  'min_lr': (0.0, _checks.NON_NEGATIVE),
  'eps': (1e-8, _checks.NON_NEGATIVE),
}


@dataclasses.dataclass(frozen=True)
class PlateauConfig:
  """What shapes a plateau's steps: torch's keywords and how reports count.

  Attributes:
    monitor: the metric's name in the mapping given to :func:`report`.
    strict: a missing metric raises (True) or skips the report with a warning.
    frequency: every ``frequency``-th report counts, as Lightning's
      ``scheduler_configs.frequency``.
    warmup_steps: counted reports that belong to a warm-up schedule before
      the plateau phase (SequentialLR ending in ReduceLROnPlateau); they do
      not count towards patience, and the plateau phase starts from the base LR.
    warmup: the warm-up schedule, a function of the counted reports.
  """

  mode: str = 'min'
  factor: float = 0.1
  patience: int = 10
  threshold: float = 1e-4
  threshold_mode: str = 'rel'
  cooldown: int = 0
  min_lr: float = 0.0
  eps: float = 1e-8
  monitor: str = 'train_loss'
  strict: bool = True
  frequency: int = 1
  warmup_steps: int = 0
  warmup: Callable[[jax.Array], jax.Array] | None = None


class PlateauState(struct.PyTreeNode):
  """torch's ReduceLROnPlateau state for one parameter group.

  Attributes:
    lr: the group's current learning rate in the plateau phase (torch's
      ``param_group['lr']``).
    best: the best metric so far (torch's ``best``; +inf or -inf at first).
    num_bad_epochs: counted reports without improvement since the last one.
    cooldown_counter: counted reports left in cooldown.
    reports: calls of :func:`report` so far (for ``frequency``).
    steps: counted reports so far (scheduler steps, warm-up included).
    config: static; not a leaf, so checkpoints hold the numbers only.
  """

  lr: jax.Array
  best: jax.Array
  num_bad_epochs: jax.Array
  cooldown_counter: jax.Array
  reports: jax.Array
  steps: jax.Array
  config: PlateauConfig = struct.field(pytree_node=False)


def _float_dtype():
  return jax.dtypes.canonicalize_dtype(jnp.float64)


@dataclasses.dataclass(frozen=True, eq=False)
class Plateau:
  """A group's learning rate under ReduceLROnPlateau, as an Optax stateful schedule.

  Pass it as the ``learning_rate`` of :func:`jaxsched.optimizer`; feed it with
  :func:`report`. Its value is :func:`value` of its state.

  Attributes:
    learning_rate: the group's base LR.
    config: the plateau's settings.
  """

  learning_rate: float
  config: PlateauConfig

  def init(self) -> PlateauState:
    dtype = _float_dtype()
    worse = math.inf if self.config.mode == 'min' else -math.inf
    zero = lambda: jnp.zeros([], jnp.int32)  # noqa: E731  (one array per field, so the state can be donated)
    return PlateauState(
      lr=jnp.asarray(self.learning_rate, dtype),
      best=jnp.asarray(worse, dtype),
      num_bad_epochs=zero(),
      cooldown_counter=zero(),
      reports=zero(),
      steps=zero(),
      config=self.config,
    )

  def update(self, state: PlateauState, **extra_args) -> PlateauState:
    del extra_args
    return state  # only report() moves a plateau

  def __call__(self, state: PlateauState, **extra_args) -> jax.Array:
    del extra_args
    return value(state)


def value(state: PlateauState) -> jax.Array:
  """The LR a plateau state gives: ``warmup(steps)`` while ``steps < warmup_steps``,
  then the plateau LR, which starts at the base LR."""
  c = state.config
  if c.warmup is None:
    return jnp.array(state.lr)  # a copy, so a donated state never holds one buffer twice
  return jnp.where(state.steps < c.warmup_steps, jnp.asarray(c.warmup(state.steps), state.lr.dtype), state.lr)


def reduce_on_plateau(
  learning_rate: float,
  *,
  monitor: str = 'train_loss',
  strict: bool = True,
  frequency: int = 1,
  warmup: Callable[[jax.Array], jax.Array] | None = None,
  warmup_steps: int = 0,
  **kwargs: Any,
) -> Plateau:
  """A :class:`Plateau` learning rate with torch's ReduceLROnPlateau keywords, checked.

  Args:
    learning_rate: the group's base LR.
    monitor: the metric :func:`report` takes from a mapping (Lightning's
      ``scheduler_configs.monitor``).
    strict: a missing monitored metric is an error; False warns and skips the
      report (``scheduler_configs.strict``).
    frequency: every ``frequency``-th report counts (``scheduler_configs.frequency``).
    warmup: an optional schedule of the counted reports used before the plateau
      phase (SequentialLR ending in ReduceLROnPlateau).
    warmup_steps: the counted reports ``warmup`` runs for; given with ``warmup``.
    **kwargs: mode, factor, patience, threshold, threshold_mode, cooldown,
      min_lr, eps (``torch.optim.lr_scheduler.ReduceLROnPlateau``).

  Raises:
    ConfigError: an unknown keyword or a value torch would reject.
  """
  from jaxsched._errors import unknown

  for key in kwargs:
    if key not in KWARGS:
      raise unknown('keyword for ReduceLROnPlateau', key, KWARGS)
  checked = {k: check(f'ReduceLROnPlateau: {k}', kwargs.get(k, default)) for k, (default, check) in KWARGS.items()}
  if not isinstance(monitor, str) or not monitor:
    raise ConfigError(f'monitor={monitor!r} must be the name of a logged metric, e.g. "val_loss".')
  config = PlateauConfig(
    **checked,
    monitor=monitor,
    strict=_checks.Boolean()('strict', strict),
    frequency=_checks.COUNT('frequency', frequency),
    warmup_steps=_checks.Integer(0)('warmup_steps', warmup_steps),
    warmup=warmup,
  )
  if (warmup is None) != (warmup_steps == 0):
    raise ConfigError('give warmup and warmup_steps > 0 together, or neither.')
  lr = _checks.NON_NEGATIVE('learning_rate', learning_rate)
  return Plateau(lr, config)


class ChainState(NamedTuple):
  """The state of a :class:`Chain`: one parameter group's LR under several schedulers.

  Attributes:
    lr: the group's current LR (torch's ``param_group['lr']``), which every
      scheduler's step starts from.
    count: optimizer steps so far.
    plateaus: the ReduceLROnPlateau states, in the order :func:`report` steps
      them; each one's ``lr`` is the group's LR after the last report it read.
  """

  lr: jax.Array
  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  plateaus: tuple[PlateauState, ...]


# One chainable scheduler of a Chain: its interval ('step' or 'epoch'), its step
# maps (step k as (a, b): lr <- a * lr + b, k = 0 at construction) and its scheduler
# steps taken before optimizer step k.
Member = tuple[str, Callable[[jax.Array], tuple[jax.Array, jax.Array]], Callable[[jax.Array], jax.Array]]


@dataclasses.dataclass(frozen=True, eq=False)
class Chain:
  """A group's LR under Lightning's list of schedulers for one optimizer, as torch
  chains them on ``param_group['lr']`` (an Optax stateful schedule, like :class:`Plateau`).

  Each scheduler is built in list order (its construction step acts on the LR
  the ones before it left) and then steps the current LR, torch's chainable
  ``step()``: after each optimizer step, the schedulers whose interval and
  frequency come due step in Lightning's order (interval "step" ones in list
  order, then interval "epoch" ones), and :func:`report` steps the plateaus
  (interval "step" ones, then "epoch" ones), each on its own monitor.

  Attributes:
    learning_rate: the group's base LR.
    members: the chainable schedulers, in list order.
    plateaus: the ReduceLROnPlateau entries, in the order report steps them.
  """

  learning_rate: float
  members: tuple[Member, ...]
  plateaus: tuple[Plateau, ...]

  def init(self) -> ChainState:
    lr = jnp.asarray(self.learning_rate, _float_dtype())
    zero = jnp.zeros([], jnp.int32)
    for _, step, _ in self.members:
      a, b = step(_numeric.as_count(zero))
      lr = a * lr + b
    return ChainState(lr=lr, count=zero, plateaus=tuple(p.init() for p in self.plateaus))

  def update(self, state: ChainState, **extra_args) -> ChainState:
    del extra_args
    count = optax.safe_increment(state.count)
    lr = state.lr
    for interval in ('step', 'epoch'):
      for when, step, steps in self.members:
        if when != interval:
          continue
        before, after = _numeric.as_count(steps(state.count)), _numeric.as_count(steps(count))
        a, b = step(after)
        lr = jnp.where(after > before, a * lr + b, lr)
    return state._replace(lr=lr, count=count)

  def __call__(self, state: ChainState, **extra_args) -> jax.Array:
    del extra_args
    return jnp.array(state.lr)


def chain_schedules(learning_rate: float, members: Sequence[Member], plateaus: Sequence[tuple[str, Plateau]]) -> Chain:
  """A :class:`Chain` of the chainable ``members`` (interval, step maps, steps) and the
  ``plateaus`` (interval, :class:`Plateau`), both in list order."""
  order = [p for interval in ('step', 'epoch') for when, p in plateaus if when == interval]
  return Chain(_checks.NON_NEGATIVE('learning_rate', learning_rate), tuple(members), tuple(order))


def _chain_report(state: ChainState, metrics: Any) -> ChainState:
  """Each plateau of a chain steps on its own monitor, from the LR the others left."""
  lr, out = state.lr, []
  for p in state.plateaus:
    metric = _metric(p.config, metrics)
    if metric is not None:
      p = _step(p.replace(lr=lr), metric)
      lr = p.lr
    out.append(p)
  return state._replace(lr=lr, plateaus=tuple(out))


def _is_better(c: PlateauConfig, current: jax.Array, best: jax.Array) -> jax.Array:
  """torch's ``_is_better``; NaN is never better."""
  if c.mode == 'min':
    bound = best * (1.0 - c.threshold) if c.threshold_mode == 'rel' else best - c.threshold
    return current < bound
  bound = best * (c.threshold + 1.0) if c.threshold_mode == 'rel' else best + c.threshold
  return current > bound


def _step(state: PlateauState, metric: jax.Array) -> PlateauState:
  """One call of torch's ``ReduceLROnPlateau.step(metric)`` where it counts."""
  c = state.config
  counts = (state.reports + 1) % c.frequency == 0
  active = counts & (state.steps >= c.warmup_steps)
  current = jnp.asarray(metric, state.best.dtype)

  better = _is_better(c, current, state.best)
  best = jnp.where(better, current, state.best)
  bad = jnp.where(better, 0, state.num_bad_epochs + 1)
  in_cooldown = state.cooldown_counter > 0
  cooldown = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
  bad = jnp.where(in_cooldown, 0, bad)
  reduce = bad > c.patience
  new_lr = jnp.maximum(state.lr * c.factor, c.min_lr)
  lr = jnp.where(reduce & (state.lr - new_lr > c.eps), new_lr, state.lr)
  cooldown = jnp.where(reduce, c.cooldown, cooldown)
  bad = jnp.where(reduce, 0, bad)

  keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
  return state.replace(
    lr=keep(lr, state.lr),
    best=keep(best, state.best),
    num_bad_epochs=keep(bad, state.num_bad_epochs),
    cooldown_counter=keep(cooldown, state.cooldown_counter),
    reports=state.reports + 1,
    steps=state.steps + counts.astype(state.steps.dtype),
  )


def _metric(config: PlateauConfig, metrics: Any) -> Any:
  """The monitored value from ``metrics`` (a mapping, or the value itself), checked:
  torch's ReduceLROnPlateau takes ``float(metrics)``. None or a missing name is an
  error, or with ``strict: false`` a warning and a skipped report (Lightning's rule)."""
  if not isinstance(metrics, Mapping):
    value, where = metrics, 'the metric given to report()'
    missing = 'report() got None for the monitored metric.'
  else:
    value, where = metrics.get(config.monitor), f'the metric {config.monitor!r}'
    what = 'is None' if config.monitor in metrics else 'is not among the reported metrics'
    missing = (
      f'ReduceLROnPlateau monitors {config.monitor!r}, which {what} '
      f'({", ".join(repr(k) for k, v in metrics.items() if v is not None) or "none"}). Report it, or '
      f'set scheduler_configs.monitor.'
    )
  if value is not None:
    return _scalar(where, value)
  if config.strict:
    raise ConfigError(missing)
  warnings.warn(missing + ' Skipped (strict: false).', stacklevel=3)
  return None


def _scalar(where: str, value: Any) -> Any:
  """``value`` if it is one real number (a Python number or a 0-d array, traced or
  not), else a ConfigError that says what it is."""
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return value
  shape, dtype = getattr(value, 'shape', None), getattr(value, 'dtype', None)
  kind = getattr(jnp.dtype(dtype), 'kind', '') if _is_dtype(dtype) else ''
  if shape is None or kind not in 'iuf' or not kind:
    raise ConfigError(f'{where} must be one real number, got {value!r} ({type(value).__name__}).')
  if tuple(shape) != ():
    raise ConfigError(
      f"{where} must be one number (as torch's float(metrics)), got an array of shape "
      f'{tuple(shape)}: reduce it first (e.g. .mean()).'
    )
  return value


def _is_dtype(dtype: Any) -> bool:
  try:
    jnp.dtype(dtype)
  except TypeError:
    return False
  return True


def report(opt_state: Any, metrics: Any) -> Any:
  """Feeds the monitored metric to every ReduceLROnPlateau in ``opt_state``.

  Pure: returns the new state, inside or outside ``jax.jit``, without host
  synchronisation. A state without a plateau comes back unchanged, so a loop
  may always call it. For a ``flax.nnx.Optimizer`` the optimizer's state is
  updated in place and the optimizer returned.

  Args:
    opt_state: an optimizer state (or a ``flax.nnx.Optimizer``).
    metrics: a scalar, or a mapping of metric names to scalars from which the
      plateau's ``monitor`` is taken.

  Raises:
    ConfigError: the monitored value is missing or None (unless the plateau
      was built with ``strict=False``, which warns and skips, as Lightning), or
      is not one real number (a string, a list, an array of another shape than
      ``()``: torch's ReduceLROnPlateau takes ``float(metrics)``).
  """
  from flax import nnx

  if isinstance(opt_state, nnx.Optimizer):
    new = report(nnx.as_pure(opt_state.opt_state), metrics)
    nnx.update(opt_state.opt_state, nnx.state(new))
    return opt_state

  return _walk(opt_state, metrics)


def _walk(tree: Any, metrics: Any) -> Any:
  reported = (PlateauState, ChainState, optax.InjectStatefulHyperparamsState)
  return state_tree.replace(tree, reported, lambda node: _visit(node, metrics))


def _visit(node: Any, metrics: Any) -> Any:
  if isinstance(node, PlateauState):
    metric = _metric(node.config, metrics)
    return node if metric is None else _step(node, metric)
  if isinstance(node, ChainState):
    return _chain_report(node, metrics)
  if isinstance(node, optax.InjectStatefulHyperparamsState):
    # A plateau-driven hyperparameter: step it and show its new value in
    # ``hyperparams``, which holds the values the next update will use.
    reported = lambda v: isinstance(v, (PlateauState, ChainState))  # noqa: E731
    states = {k: _visit(v, metrics) if reported(v) else v for k, v in node.hyperparams_states.items()}
    hyperparams = {
      k: jnp.asarray(_current(states[k]), v.dtype) if reported(states.get(k)) else v
      for k, v in node.hyperparams.items()
    }
    return node._replace(
      hyperparams_states=states, hyperparams=hyperparams, inner_state=_walk(node.inner_state, metrics)
    )
  return node


def _current(state: PlateauState | ChainState) -> jax.Array:
  return jnp.array(state.lr) if isinstance(state, ChainState) else value(state)


def plateau_states(opt_state: Any) -> list[PlateauState]:
  """Every PlateauState in ``opt_state``, in tree order."""
  return state_tree.find(opt_state, PlateauState)
