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

The same transform, with more data in its :class:`PlateauConfig` and state, is timm's
``PlateauLRScheduler`` (``timm.plateau``: torch's rule after a linear warm-up, with timm's lr
noise) and Hugging Face's ``GreedyLR`` (``hf.greedy``: ``rule='greedy'``, a :class:`GreedyState`
in the state); :func:`metric_scheduler` builds any of them by name (:data:`METRIC_KWARGS`).

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
import numpy as np
import optax
from flax import struct

from jaxsched import _checks, state_tree
from jaxsched._errors import ConfigError, unknown
from jaxsched.schedules import _numeric
from jaxsched.schedules._registry import METRIC_DRIVEN
from jaxsched.schedules.timm_schedules import NoiseRange, noise_table

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

_COUNTER = _checks.Integer(0, _checks.COUNT_MAX)
# timm.scheduler.PlateauLRScheduler's keywords (timm 1.0), besides the optimizer and ``initialize``.
TIMM_KWARGS: dict[str, tuple[Any, _checks.Check]] = {
  'decay_rate': (0.1, _checks.Real(0.0, 1.0, lo_open=True, hi_open=True)),
  'patience_t': (10, _COUNTER),
  'threshold': (1e-4, _checks.NON_NEGATIVE),
  'cooldown_t': (0, _COUNTER),
  'warmup_t': (0, _COUNTER),
  'warmup_lr_init': (0.0, _checks.NON_NEGATIVE),
  'lr_min': (0.0, _checks.NON_NEGATIVE),
  'mode': ('max', _checks.Choice(('min', 'max'))),
  'noise_range_t': (None, NoiseRange()),
  'noise_type': ('normal', _checks.Choice(('normal', 'uniform'))),
  'noise_pct': (0.67, _checks.Real()),
  'noise_std': (1.0, _checks.Real()),
  'noise_seed': (None, _checks.Optional(_checks.Integer())),
}
# transformers.optimization.GreedyLR's keywords (transformers 5), besides the optimizer.
GREEDY_KWARGS: dict[str, tuple[Any, _checks.Check]] = {
  'mode': ('min', _checks.Choice(('min', 'max'))),
  'factor': (0.95, _checks.Real(0.0, 1.0, lo_open=True, hi_open=True)),
  'patience': (10, _COUNTER),
  'threshold': (1e-6, _checks.NON_NEGATIVE),
  'threshold_mode': ('abs', _checks.Choice(('rel', 'abs'))),
  'cooldown': (0, _COUNTER),
  'warmup': (0, _COUNTER),
  'min_lr': (1e-3, _checks.NON_NEGATIVE),
  'max_lr': (1.0, _checks.NON_NEGATIVE),
  'eps': (1e-8, _checks.NON_NEGATIVE),
  'verbose': (False, _checks.Boolean()),
  'smooth': (False, _checks.Boolean()),
  'window_size': (50, _checks.Integer(0, 10**6)),
  'reset_start': (500, _checks.Integer(-_checks.COUNT_MAX, _checks.COUNT_MAX)),
}
METRIC_KWARGS: dict[str, dict[str, tuple[Any, _checks.Check]]] = dict(
  zip(METRIC_DRIVEN, (KWARGS, TIMM_KWARGS, GREEDY_KWARGS), strict=True)
)
"""The schedulers driven by a metric through :func:`report` (ReduceLROnPlateau, timm.plateau, hf.greedy:
:data:`jaxsched.schedules._registry.METRIC_DRIVEN`'s names) with their keywords (defaults and checks);
:func:`metric_scheduler` builds them."""


@dataclasses.dataclass(frozen=True, eq=False)
class Noise:
  """timm's lr noise of the counted reports ``first, first + 1, ...``
  (:func:`jaxsched.schedules.timm_schedules.noise_table`)."""

  first: int
  factors: np.ndarray


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
    rule: 'torch' (ReduceLROnPlateau's step) or 'greedy' (GreedyLR's).
    noise: timm's lr noise on the LR after the warm-up (PlateauLRScheduler), or None.
    max_lr: GreedyLR's upper bound of the LR.
    wait: GreedyLR's ``warmup``: counted reports ignored after an increase.
    reset_start: GreedyLR's reductions at ``min_lr`` (all groups) before it resets.
    window: GreedyLR's smoothing window (``window_size`` with ``smooth``), or 0.
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
  rule: str = 'torch'
  noise: Noise | None = None
  max_lr: float = math.inf
  wait: int = 0
  reset_start: int = 0
  window: int = 0


class GreedyState(NamedTuple):
  """GreedyLR's state beyond ReduceLROnPlateau's (``transformers.optimization.GreedyLR``).

  Attributes:
    initial: the group's LR at construction (``_init_lrs``), restored at a reset.
    num_good_epochs: counted reports with improvement in a row.
    warmup_counter: counted reports left to ignore after an increase.
    reset_counter: ``reset_start``: reductions left at ``min_lr`` before a reset.
    window: the smoothing window's values (``StreamingAverage.values``), the newest last.
    window_sum: ``StreamingAverage.sum``, the running sum as HF keeps it.
    window_len: values in the window.
  """

  initial: jax.Array
  num_good_epochs: jax.Array
  warmup_counter: jax.Array
  reset_counter: jax.Array
  window: jax.Array
  window_sum: jax.Array
  window_len: jax.Array


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
    greedy: GreedyLR's further state, or None.
  """

  lr: jax.Array
  best: jax.Array
  num_bad_epochs: jax.Array
  cooldown_counter: jax.Array
  reports: jax.Array
  steps: jax.Array
  config: PlateauConfig = struct.field(pytree_node=False)
  greedy: GreedyState | None = None


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
    greedy = None
    if self.config.rule == 'greedy':
      greedy = GreedyState(
        initial=jnp.asarray(self.learning_rate, dtype),
        num_good_epochs=zero(),
        warmup_counter=zero(),
        reset_counter=jnp.asarray(self.config.reset_start, jnp.int32),
        window=jnp.zeros([self.config.window], dtype),
        window_sum=jnp.zeros([], dtype),
        window_len=zero(),
      )
    return PlateauState(
      lr=jnp.asarray(self.learning_rate, dtype),
      best=jnp.asarray(worse, dtype),
      num_bad_epochs=zero(),
      cooldown_counter=zero(),
      reports=zero(),
      steps=zero(),
      config=self.config,
      greedy=greedy,
    )

  def update(self, state: PlateauState, **extra_args) -> PlateauState:
    del extra_args
    return state  # only report() moves a plateau

  def __call__(self, state: PlateauState, **extra_args) -> jax.Array:
    del extra_args
    return value(state)


def value(state: PlateauState) -> jax.Array:
  """The LR a plateau state gives: ``warmup(steps)`` while ``steps < warmup_steps``,
  then the plateau LR, which starts at the base LR; with timm's noise, ``lr + lr * noise``
  where the counted report ``steps > warmup_steps`` has noise (PlateauLRScheduler's
  ``_apply_noise``: the plateau steps on the LR from before the noise, ``restore_lr``)."""
  c = state.config
  lr = state.lr
  if c.noise is not None:
    factors = jnp.asarray(c.noise.factors, lr.dtype)
    d = state.steps - c.noise.first
    f = jnp.take(factors, jnp.clip(d, 0, len(factors) - 1))
    lr = jnp.where((d >= 0) & (d < len(factors)) & (state.steps > c.warmup_steps), lr + lr * f, lr)
  if c.warmup is None:
    return jnp.array(lr)  # a copy, so a donated state never holds one buffer twice
  return jnp.where(state.steps < c.warmup_steps, jnp.asarray(c.warmup(state.steps), lr.dtype), lr)


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
  checked = _resolve('ReduceLROnPlateau', KWARGS, kwargs)
  config = PlateauConfig(
    **checked,
    **_reporting(monitor, strict, frequency),
    warmup_steps=_checks.Integer(0)('warmup_steps', warmup_steps),
    warmup=warmup,
  )
  if (warmup is None) != (warmup_steps == 0):
    raise ConfigError('give warmup and warmup_steps > 0 together, or neither.')
  lr = _checks.NON_NEGATIVE('learning_rate', learning_rate)
  return Plateau(lr, config)


def _resolve(name: str, table: Mapping[str, tuple[Any, _checks.Check]], kwargs: Mapping[str, Any]) -> dict[str, Any]:
  """``kwargs`` checked against ``table``, the defaults filled in."""
  for key in kwargs:
    if key not in table:
      raise unknown(f'keyword for {name}', key, table)
  return {k: check(f'{name}: {k}', kwargs.get(k, default)) for k, (default, check) in table.items()}


def _reporting(monitor: Any, strict: Any, frequency: Any) -> dict[str, Any]:
  """Lightning's ``monitor``, ``strict`` and ``frequency``, checked."""
  if not isinstance(monitor, str) or not monitor:
    raise ConfigError(f'monitor={monitor!r} must be the name of a logged metric, e.g. "val_loss".')
  strict = _checks.Boolean()('strict', strict)
  return dict(monitor=monitor, strict=strict, frequency=_checks.COUNT('frequency', frequency))


def metric_scheduler(
  name: str,
  learning_rate: float,
  *,
  monitor: str = 'train_loss',
  strict: bool = True,
  frequency: int = 1,
  lr_scale: float = 1.0,
  **kwargs: Any,
) -> Plateau:
  """The metric-driven scheduler ``name`` (:data:`METRIC_KWARGS`) as a :class:`Plateau` fed by :func:`report`.

  * 'ReduceLROnPlateau': :func:`reduce_on_plateau`.
  * 'timm.plateau': ``timm.scheduler.PlateauLRScheduler``. Report k is timm's ``step(k, metric)``
    (timm's train loop passes the next epoch): for ``k <= warmup_t`` the LR is
    ``warmup_lr_init + k * (lr - warmup_lr_init) / warmup_t`` and the metric is not read
    (``warmup_lr_init`` before the first report); after it torch's ReduceLROnPlateau
    (``factor=decay_rate``, ``patience=patience_t``, ``cooldown=cooldown_t``, ``min_lr=lr_min``,
    threshold_mode 'rel', eps 1e-8) steps from the LR the warm-up left, and for k in
    ``noise_range_t`` the LR shown until the next report is ``lr + lr * noise(k)``
    (``_apply_noise``; the next step restores the LR from before the noise). The noise is timm's,
    seeded with ``noise_seed + k`` (42 for null), normal or uniform (``noise_type``).
  * 'hf.greedy': ``transformers.optimization.GreedyLR``. Each counted report: the metric
    (smoothed by the mean of the last ``window_size`` with ``smooth``, HF's ``StreamingAverage``)
    counts as good or bad as ReduceLROnPlateau's ``is_better`` judges it, unless in cooldown
    (after a reduction) or warmup (after an increase); more than ``patience`` good ones in a row
    divide the LR by ``factor`` (at most ``max_lr``, where the change exceeds ``eps``), more than
    ``patience`` bad ones multiply it (at least ``min_lr``). A reduction that leaves every group at
    its ``min_lr`` counts down ``reset_start``; at 0 the LR, ``best``, the counters and the window
    are reset (the cooldown then starts, as GreedyLR sets it after ``_reduce_lr``). ``min_lr``
    and ``max_lr`` may be one per group (lists in configs).

  Args:
    name: 'ReduceLROnPlateau', 'timm.plateau' or 'hf.greedy'.
    learning_rate: the group's base LR.
    monitor, strict, frequency: as :func:`reduce_on_plateau`'s.
    lr_scale: timm.plateau: the group's timm ``lr_scale`` (layer decay), with ``learning_rate`` the
      optimizer's base LR: timm's scheduler sets the group's lr to ``value * lr_scale`` from
      construction through the warm-up, and torch's ReduceLROnPlateau then steps that lr.
    **kwargs: the scheduler's keywords (:data:`METRIC_KWARGS`).

  Raises:
    ConfigError: an unknown name or keyword, or a value the library would reject.
  """
  table = METRIC_KWARGS.get(name) if isinstance(name, str) else None
  if table is None:
    raise unknown('metric-driven scheduler', name, METRIC_KWARGS)
  lr_scale = _checks.NON_NEGATIVE('lr_scale', lr_scale)
  if lr_scale != 1 and name != 'timm.plateau':
    raise ConfigError(f"lr_scale={lr_scale!r}: only timm.plateau takes one (timm's layer decay), not {name}.")
  if name == 'ReduceLROnPlateau':
    return reduce_on_plateau(learning_rate, monitor=monitor, strict=strict, frequency=frequency, **kwargs)
  kw = _resolve(name, table, kwargs)
  reporting = _reporting(monitor, strict, frequency)
  lr = _checks.NON_NEGATIVE('learning_rate', learning_rate)
  if name == 'timm.plateau':
    return _timm_plateau(lr, kw, reporting, lr_scale)
  if kw['smooth'] and kw['window_size'] < 1:
    raise ConfigError(f'hf.greedy: window_size={kw["window_size"]} with smooth: expected an integer >= 1.')
  config = PlateauConfig(
    **{k: kw[k] for k in ('mode', 'factor', 'patience', 'threshold', 'threshold_mode', 'cooldown', 'min_lr', 'eps')},
    **reporting,
    rule='greedy',
    max_lr=kw['max_lr'],
    wait=kw['warmup'],
    reset_start=kw['reset_start'],
    window=kw['window_size'] if kw['smooth'] else 0,
  )
  return Plateau(lr, config)


def _timm_plateau(lr: float, kw: dict[str, Any], reporting: dict[str, Any], scale: float) -> Plateau:
  """timm.plateau's :class:`Plateau`: torch's rule from the LR timm's warm-up ends at, with the noise;
  the warm-up's values times the group's lr_scale (``Scheduler.update_groups``)."""
  w, init = kw['warmup_t'], kw['warmup_lr_init']
  warmup, start = None, lr * scale
  if w:
    slope = (lr - init) / w  # timm's warmup_steps, in Python floats
    start = (init + w * slope) * scale  # the LR of step(warmup_t), which the plateau starts from
    warmup = lambda n: (_numeric.const(init) + _numeric.to_float(n) * _numeric.const(slope)) * scale  # noqa: E731
  seed = 42 if kw['noise_seed'] is None else kw['noise_seed']
  table = noise_table((kw['noise_range_t'], kw['noise_pct'], kw['noise_std'], seed), None, kw['noise_type'])
  config = PlateauConfig(
    mode=kw['mode'],
    factor=kw['decay_rate'],
    patience=kw['patience_t'],
    threshold=kw['threshold'],
    cooldown=kw['cooldown_t'],
    min_lr=kw['lr_min'],
    **reporting,
    warmup_steps=w,
    warmup=warmup,
    noise=None if table is None else Noise(*table),
  )
  return Plateau(start, config)


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


def _step(state: PlateauState, metric: jax.Array, all_at_min: Any = True) -> PlateauState:
  """One call of the scheduler's ``step(metric)`` where it counts: torch's ReduceLROnPlateau's,
  or GreedyLR's (``all_at_min``: whether a reduction now leaves every group at its min_lr)."""
  c = state.config
  counts = (state.reports + 1) % c.frequency == 0
  active = counts & (state.steps >= c.warmup_steps)
  current = jnp.asarray(metric, state.best.dtype)
  moved = _greedy_move(state, current, all_at_min) if c.rule == 'greedy' else _torch_move(state, current)
  keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
  return state.replace(
    **{k: jax.tree.map(keep, v, getattr(state, k)) for k, v in moved.items()},
    reports=state.reports + 1,
    steps=state.steps + counts.astype(state.steps.dtype),
  )


def _torch_move(state: PlateauState, current: jax.Array) -> dict[str, Any]:
  """torch's ``ReduceLROnPlateau.step``: the fields it changes."""
  c = state.config
  better = _is_better(c, current, state.best)
  best = jnp.where(better, current, state.best)
  bad = jnp.where(better, 0, state.num_bad_epochs + 1)
  in_cooldown = state.cooldown_counter > 0
  cooldown = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
  bad = jnp.where(in_cooldown, 0, bad)
  reduce = bad > c.patience
  lr = jnp.where(reduce, _reduced(state), state.lr)
  cooldown = jnp.where(reduce, c.cooldown, cooldown)
  bad = jnp.where(reduce, 0, bad)
  return dict(lr=lr, best=best, num_bad_epochs=bad, cooldown_counter=cooldown)


def _reduced(state: PlateauState) -> jax.Array:
  """``_reduce_lr``'s new LR: ``max(lr * factor, min_lr)`` where it moves the LR by more than eps."""
  c = state.config
  new_lr = jnp.maximum(state.lr * c.factor, c.min_lr)
  return jnp.where(state.lr - new_lr > c.eps, new_lr, state.lr)


def _smoothed(g: GreedyState, current: jax.Array, window: int) -> tuple[GreedyState, jax.Array]:
  """HF's ``StreamingAverage.streamavg``: the value joins the window (the oldest leaves past
  ``window`` values), ``sum += value`` then ``sum -= removed``, and the mean is ``sum / len``."""
  total = g.window_sum + current
  total = jnp.where(g.window_len >= window, total - g.window[0], total)  # the oldest value leaves a full window
  length = jnp.minimum(g.window_len + 1, window)
  g = g._replace(window=jnp.append(g.window[1:], current), window_sum=total, window_len=length)
  return g, total / length.astype(total.dtype)


def _greedy_move(state: PlateauState, current: jax.Array, all_at_min: Any) -> dict[str, Any]:
  """``transformers.optimization.GreedyLR.step``: the fields it changes."""
  c, g = state.config, state.greedy
  assert g is not None
  if c.window:
    g, current = _smoothed(g, current, c.window)
  cooling = state.cooldown_counter > 0
  waiting = ~cooling & (g.warmup_counter > 0)
  judged = ~cooling & ~waiting
  better = _is_better(c, current, state.best)
  best = jnp.where(judged & better, current, state.best)
  bad = jnp.where(judged & ~better, state.num_bad_epochs + 1, 0)
  good = jnp.where(judged & better, g.num_good_epochs + 1, 0)
  cooldown = jnp.where(cooling, state.cooldown_counter - 1, state.cooldown_counter)
  wait = jnp.where(waiting, g.warmup_counter - 1, g.warmup_counter)

  increase = good > c.patience
  reduce = ~increase & (bad > c.patience)
  factor = jnp.where(jnp.isnan(state.lr), 1.0, c.factor)  # a divisor XLA keeps (x / c is not x * (1 / c))
  up = jnp.minimum(state.lr / factor, c.max_lr)
  lr = jnp.where(increase & (up - state.lr > c.eps), up, state.lr)
  lr = jnp.where(reduce, _reduced(state), lr)
  wait = jnp.where(increase, c.wait, wait)
  good = jnp.where(increase, 0, good)
  cooldown = jnp.where(reduce, c.cooldown, cooldown)
  bad = jnp.where(reduce, 0, bad)
  at_min = reduce & all_at_min
  countdown = jnp.where(increase, c.reset_start, g.reset_counter - at_min.astype(g.reset_counter.dtype))
  reset = at_min & (countdown <= 0)  # _reset(), inside _reduce_lr: the cooldown is set after it
  worse = jnp.asarray(math.inf if c.mode == 'min' else -math.inf, best.dtype)
  g = g._replace(
    num_good_epochs=good,
    warmup_counter=jnp.where(reset, 0, wait),
    reset_counter=jnp.where(reset, c.reset_start, countdown),
    window=jnp.where(reset, 0.0, g.window).astype(g.window.dtype),
    window_sum=jnp.where(reset, 0.0, g.window_sum).astype(g.window_sum.dtype),
    window_len=jnp.where(reset, 0, g.window_len),
  )
  return dict(
    lr=jnp.where(reset, g.initial, lr),
    best=jnp.where(reset, worse, best),
    num_bad_epochs=bad,
    cooldown_counter=cooldown,
    greedy=g,
  )


def _at_min(state: PlateauState, metrics: Any) -> jax.Array | None:
  """Whether the group's LR is at its min_lr after a reduction now (GreedyLR's ``all_at_min``
  term), or None where the report skips it."""
  metric = _metric(state.config, metrics) if state.config.rule == 'greedy' else None
  if metric is None:
    return None
  return ~(_reduced(state) > state.config.min_lr)


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

  with warnings.catch_warnings():  # the second pass reads the metric again: warn once
    warnings.simplefilter('ignore')
    flags = [f for f in (_at_min(p, metrics) for p in plateau_states(opt_state)) if f is not None]
  all_at_min = jnp.all(jnp.stack(flags)) if flags else True
  return _walk(opt_state, metrics, all_at_min)


def _walk(tree: Any, metrics: Any, all_at_min: Any) -> Any:
  reported = (PlateauState, ChainState, optax.InjectStatefulHyperparamsState)
  return state_tree.replace(tree, reported, lambda node: _visit(node, metrics, all_at_min))


def _visit(node: Any, metrics: Any, all_at_min: Any) -> Any:
  if isinstance(node, PlateauState):
    metric = _metric(node.config, metrics)
    return node if metric is None else _step(node, metric, all_at_min)
  if isinstance(node, ChainState):
    return _chain_report(node, metrics)
  if isinstance(node, optax.InjectStatefulHyperparamsState):
    # A plateau-driven hyperparameter: step it and show its new value in
    # ``hyperparams``, which holds the values the next update will use.
    reported = lambda v: isinstance(v, (PlateauState, ChainState))  # noqa: E731
    states = {k: _visit(v, metrics, all_at_min) if reported(v) else v for k, v in node.hyperparams_states.items()}
    hyperparams = {
      k: jnp.asarray(_current(states[k]), v.dtype) if reported(states.get(k)) else v
      for k, v in node.hyperparams.items()
    }
    return node._replace(
      hyperparams_states=states, hyperparams=hyperparams, inner_state=_walk(node.inner_state, metrics, all_at_min)
    )
  return node


def _current(state: PlateauState | ChainState) -> jax.Array:
  return jnp.array(state.lr) if isinstance(state, ChainState) else value(state)


def plateau_states(opt_state: Any) -> list[PlateauState]:
  """Every PlateauState in ``opt_state``, in tree order."""
  return state_tree.find(opt_state, PlateauState)
