"""Each parameter group's learning rate over a run, read from the real built transformation.

:func:`lr_curve` (``jaxsched.lr_curve``) and the command's ``check``/``plot``
build the config with :func:`jaxsched.build` on a small parameter tree holding
one leaf per group and read :func:`jaxsched.current_lr` where the training loop
would, before each optimizer step. They never step a whole run, so any run the
step counters can count is cheap:

* A schedule of the step count (every scheduler but ReduceLROnPlateau) is a
  closed form of the update count that :func:`jaxsched.build` keeps in its
  state (int32). Optimizer step k's values are those of the initial state with
  that count set to k - 1 (and the micro-batch counter on an epoch's last
  batch, where the optimizer steps) after one ``update``: the built
  transformation's own numbers, at any k, in one vectorised call over the
  steps evaluated.
* ReduceLROnPlateau moves only when :func:`jaxsched.report` is called (once
  per epoch, or with interval "step" once per micro-batch), so its LR is
  followed report by report, at most :data:`MAX_REPORTS` of them, with the
  metrics given (or always improving ones: the upper bound of any run).

* Lightning's list of schedulers (``schedulers:``) carries each group's LR in
  the state (a :class:`jaxsched.plateau.Chain`), which no count gives: the
  transformation is updated once per micro-batch through the whole run, at
  most :data:`MAX_CHAINED` micro-batches, and reported to once per epoch
  (once per micro-batch where a plateau has interval "step"), with each
  plateau's monitor.

A run of more than ``samples`` optimizer steps is evaluated at evenly spaced
steps, at the first step of every scheduler step (of evenly spaced ones when
there are more than ``samples``), at the first step of every plateau change
and at the telling points of its schedule (:func:`schedule_marks`).

Touches nothing but JAX: no files, no printing.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsched import _checks, averaging, state_tree
from jaxsched._errors import ConfigError
from jaxsched.accumulate import AccumulateState
from jaxsched.build import build, current_lr, current_momentum, load_config
from jaxsched.config import Config
from jaxsched.groups import RECURRENT, REGULAR, configured_groups, groups, param_labels, uses_timm
from jaxsched.learning_rates import ends_in_plateau
from jaxsched.lints import Run
from jaxsched.optimizers import spec_of
from jaxsched.plan import SchedulerEntry, scheduler_entries
from jaxsched.plateau import METRIC_KWARGS, ChainState, PlateauState, report
from jaxsched.stepping import epoch_batches, reports_before, reports_per_epoch, scheduler_steps, steps_after

MAX_STEPS = 2**31 - 1  # build's step counters are int32
MAX_EPOCHS = 10**6
MAX_REPORTS = 10**6  # ReduceLROnPlateau is followed report by report
MAX_CHAINED = 10**6  # micro-batches a schedulers list is stepped through
SAMPLES = 4096
MAX_CUTS = 8  # plateau cuts marked
CUT = 'plateau cut'  # a report's key: whether a plateau cut an LR


@dataclasses.dataclass(frozen=True)
class Curve:
  """Each group's LR (and cycled momentum) at optimizer steps of a run.

  Attributes:
    run: the run.
    steps: the optimizer steps evaluated, ascending: every step of a run of at
      most ``samples`` steps, else a sample that holds the telling points.
    lrs: group -> the LR each of ``steps`` uses (torch's ``param_group['lr']``
      during that step), in torch's param_groups order.
    momentum: group -> momentum (or beta1) at ``steps``, where the scheduler cycles it.
    counts: scheduler steps taken before each of ``steps``; with a ``schedulers``
      list one column per entry (a plateau's: the reports made before the step).
    marks: (optimizer step, label) where the schedule's keywords say it turns:
      end of warm-up, milestones, restarts, cycle peaks and ends; and the first
      steps of the first :data:`MAX_CUTS` LRs a ReduceLROnPlateau cut.
    plateau: whether the LR follows a monitored metric (ReduceLROnPlateau).
    metrics: the per-epoch metrics of ``config.monitor`` followed, as given
      (None: the upper bound).
  """

  run: Run
  steps: np.ndarray
  lrs: dict[str, np.ndarray]
  momentum: dict[str, np.ndarray]
  counts: np.ndarray
  marks: list[tuple[int, str]]
  plateau: bool
  metrics: list[float] | None

  @property
  def sampled(self) -> bool:
    """Whether some steps of the run were not evaluated."""
    return len(self.steps) < self.run.steps

  def index(self, step: int) -> int:
    """The position of optimizer step ``step`` in :attr:`steps` (which must hold it)."""
    i = int(np.searchsorted(self.steps, step))
    if i == len(self.steps) or self.steps[i] != step:
      raise KeyError(f'optimizer step {step} was not evaluated')
    return i


def lr_curve(
  config: Any,
  *,
  epochs: int,
  batches_per_epoch: int | None = None,
  steps_per_epoch: int | None = None,
  metrics: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
  samples: int = SAMPLES,
) -> Curve:
  """Each parameter group's learning rate over a run, as :func:`jaxsched.build`'s transformation gives it.

  Args:
    config: a :class:`jaxsched.Config` or anything :func:`jaxsched.load_config` accepts.
    epochs: epochs in the run (at most :data:`MAX_EPOCHS`).
    batches_per_epoch: training batches per epoch, ``len(train_loader)``.
    steps_per_epoch: the same, without accumulation.
    metrics: per-epoch values of the monitored metric, for ReduceLROnPlateau,
      or {monitor: values} for the plateaus of a ``schedulers`` list; None (or
      a monitor not given): always improving (the LR is never cut, the upper
      bound of any run).
    samples: evaluate every optimizer step of a run up to this long; a longer
      one at a sample of its steps (see the module's docstring).

  Returns:
    Curve: ``curve.steps`` and, per group, ``curve.lrs[group]`` (and
    ``curve.momentum[group]`` where the scheduler cycles it).

  Raises:
    ConfigError: a bad config or run: no epoch length, a run longer than the
      step counters count (2**31 - 1 optimizer steps) or than :data:`MAX_EPOCHS`,
      a ``schedulers`` list over more than :data:`MAX_CHAINED` micro-batches,
      a metric file shorter than the run.
  """
  config = config if isinstance(config, Config) else load_config(config)
  epochs = _checks.Integer(1)('epochs', epochs)
  samples = _checks.Integer(1)('samples', samples)
  batches = epoch_batches(config, batches_per_epoch, steps_per_epoch)
  if batches is None:
    raise ConfigError(
      'lr_curve needs batches_per_epoch (len(train_loader)) or steps_per_epoch: the curve is '
      'drawn over optimizer steps.'
    )
  return simulate(config, Run(epochs, batches, config.accumulate_grad_batches), metrics, samples)


def check_run(config, run: Run) -> Run:
  """``run``, if the step counters can count it and it is not too long to follow.

  Raises:
    ConfigError: more than :data:`MAX_EPOCHS` epochs, more than :data:`MAX_STEPS`
      optimizer steps or micro-batches per epoch, more than :data:`MAX_REPORTS`
      ReduceLROnPlateau reports, or a ``schedulers`` list over more than
      :data:`MAX_CHAINED` micro-batches.
  """
  if run.epochs > MAX_EPOCHS:
    raise ConfigError(f'a run of {run.epochs} epochs is longer than the {MAX_EPOCHS} (10**6) epochs jaxsched follows.')
  limit = f"at most {MAX_STEPS} (2**31 - 1), the most that build's int32 step counters count"
  if run.batches_per_epoch > MAX_STEPS:
    raise ConfigError(f'batches_per_epoch={run.batches_per_epoch} is too many: {limit}.')
  if run.steps > MAX_STEPS:
    raise ConfigError(
      f'the run has {run.steps} optimizer steps ({run.epochs} epochs x {run.steps_per_epoch} per epoch): {limit}.'
    )
  followed = plateau_kwargs(config) is not None
  reports = run.epochs * reports_per_epoch(_report_interval(config), run.batches_per_epoch) if followed else 0
  if reports > MAX_REPORTS:
    raise ConfigError(
      f'ReduceLROnPlateau with interval "step" gets a report per batch, {reports} in '
      f'this run ({run.epochs} epochs x {run.batches_per_epoch} batches): at most {MAX_REPORTS} '
      f'(10**6) are followed.'
    )
  batches = run.epochs * run.batches_per_epoch
  if len(scheduler_entries(config)) > 1 and batches > MAX_CHAINED:
    raise ConfigError(
      f'a schedulers list is followed by stepping the optimizer through the run (the LR is its '
      f'state, not a function of the step count), and this run has {batches} micro-batches '
      f'({run.epochs} epochs x {run.batches_per_epoch}): at most {MAX_CHAINED} (10**6) are stepped.'
    )
  return run


def scheduler_name(config) -> str:
  """The config's scheduler(s) by name: 'StepLR', 'LinearLR + StepLR', 'constant LR'."""
  return ' + '.join(e.scheduler for e in scheduler_entries(config)) or 'constant LR'


def plateau_monitors(config) -> dict[str, dict[str, Any]]:
  """monitor -> the keywords of the first ReduceLROnPlateau that follows it: the config's
  one (alone or ending a SequentialLR), or each plateau of a ``schedulers`` list."""
  out: dict[str, dict[str, Any]] = {}
  for e in scheduler_entries(config):
    followed = _followed(e)
    if followed is not None:
      out.setdefault(e.monitor, followed)
  return out


def plateau_kwargs(config) -> dict[str, Any] | None:
  """The ReduceLROnPlateau keywords the config's one scheduler follows (alone, or at the end
  of a SequentialLR); None for a schedule of the step count, a constant LR or a list."""
  found = scheduler_entries(config)
  return _followed(found[0]) if len(found) == 1 else None


def _followed(entry: SchedulerEntry) -> dict[str, Any] | None:
  """The keywords of the metric-driven scheduler that drives ``entry`` (alone, or a ReduceLROnPlateau
  ending a SequentialLR), its defaults filled in."""
  if entry.scheduler in METRIC_KWARGS:
    return {k: entry.kwargs.get(k, d) for k, (d, _) in METRIC_KWARGS[entry.scheduler].items()}
  if entry.scheduler == 'SequentialLR' and ends_in_plateau(entry.kwargs):
    return dict(entry.kwargs['schedulers'][-1].get('scheduler_kwargs') or {})
  return None


def _report_interval(config) -> str:
  """The interval at which the simulated run calls report(): the config's scheduler_configs
  interval, or for a ``schedulers`` list "step" where one of its plateaus has interval "step"
  (report steps every plateau of the list), else "epoch"."""
  found = scheduler_entries(config)
  if len(found) <= 1:
    return config.scheduler_configs['interval']
  per_batch = any(e.scheduler in METRIC_KWARGS and e.interval == 'step' for e in found)
  return 'step' if per_batch else 'epoch'


def improving_metrics(kwargs: Mapping[str, Any], n: int) -> list[float]:
  """n metric values each better than the last under torch's rule (ReduceLROnPlateau's keywords by
  default; timm.plateau's threshold is relative): a plateau never cuts, so its curve is the upper
  bound of any run (GreedyLR raises its LR on them, towards max_lr)."""
  kw = {k: kwargs.get(k, d) for k, (d, _) in METRIC_KWARGS['ReduceLROnPlateau'].items()}
  th = float(kw['threshold']) if kw['threshold_mode'] == 'abs' else 0.0
  if kw['mode'] == 'min':  # rel: x < best * (1 - t) holds for negative x = best - 1
    return [-(k + 1) * (1.0 + th) for k in range(n)]
  if kw['threshold_mode'] == 'rel':  # x > best * (1 + t) holds for negative x = best + 1
    return [float(k - n) for k in range(n)]
  return [k * (1.0 + th) for k in range(n)]


def dummy_params(config) -> dict[str, Any]:
  """One (2, 2) leaf per parameter group the config names, labelled as build labels it;
  with timm's groups, a (2, 2) ``kernel`` and a (2,) ``bias``: ``decay`` and ``no_decay``
  (with ``layer_decay``, the layers need the model: see :func:`simulate`).

  Raises:
    ConfigError: a configured group can never hold a parameter (every path that
      matches it falls in an earlier group).
  """
  if uses_timm(config):
    return {'kernel': jnp.zeros((2, 2)), 'bias': jnp.zeros(2)}

  def label(path: str) -> str:
    return param_labels(config, {path: 0})[path]

  wanted = {REGULAR: ['regular', 'params', 'weights', 'w', 'x', 'q', 'z']}
  for group in configured_groups(config):
    if group.name == RECURRENT:
      wanted[RECURRENT] = [*config.recurrent_param_patterns, 'recurrent']
    elif group.name != REGULAR:
      wanted[group.name] = [group.name]
  leaves = {}
  for name, candidates in wanted.items():
    found = next((c for c in candidates if label(c) == name), None)
    if found is None and name == REGULAR:
      continue  # every name falls in a configured group: no regular group to show
    if found is None:
      shadow = label(candidates[0])
      what = 'recurrent_learning_rate_multiplier' if name == RECURRENT else f'lr_parameter_groups.{name}'
      raise ConfigError(
        f'{what} can never hold a parameter: a path that matches it also contains {shadow!r}, '
        f'an earlier group (first match wins). Reorder lr_parameter_groups or rename the group.'
      )
    leaves[found] = jnp.zeros((2, 2))  # float64 under x64, so every state entry keeps its dtype
  return leaves


def schedule_marks(entry: SchedulerEntry) -> list[tuple[int, str]]:
  """(scheduler count, label) where one scheduler's keywords say it turns."""
  kw = entry.kwargs
  name = entry.scheduler

  def ints(key):
    v = kw.get(key)
    return [int(m) for m in v] if isinstance(v, (list, tuple)) else []

  marks: list[tuple[int, str]] = []
  if name == 'LinearWarmupCosineAnnealingLR':
    marks.append((int(kw['warmup_epochs']), 'end of warm-up'))
    marks.append((int(kw['max_epochs']), 'max_epochs'))
  elif name in ('LinearLR', 'ConstantLR'):
    marks.append((int(kw.get('total_iters', 5)), 'total_iters'))
  elif name == 'CosineAnnealingLR':
    marks.append((int(kw.get('T_max', 250)), 'T_max'))
  elif name in ('MultiStepLR', 'SequentialLR'):
    marks += [(m, f'milestone {m}') for m in ints('milestones')]
  elif name == 'StepLR':
    size = int(kw['step_size'])
    marks += [(size * i, f'step_size x {i}') for i in range(1, 6)]
  elif name == 'CosineAnnealingWarmRestarts':
    t, period, mult = 0, int(kw['T_0']), int(kw.get('T_mult', 1))
    for _ in range(4):
      t += period
      marks.append((t, 'restart'))
      period *= mult
  elif name == 'CyclicLR':
    up = int(kw.get('step_size_up', 2000))
    down = int(kw['step_size_down']) if kw.get('step_size_down') is not None else up
    marks += [(up, 'cycle peak'), (up + down, 'cycle end')]
  elif name == 'OneCycleLR':
    total = kw.get('total_steps') or int(kw['epochs']) * int(kw['steps_per_epoch'])
    end = float(kw.get('pct_start', 0.3) * total) - 1  # torch's end of the first phase
    marks += [(math.floor(end), 'end of warm-up'), (math.ceil(end), 'end of warm-up')]
  return marks


def averaging_marks(config, run: Run) -> list[tuple[int, str]]:
  """(optimizer step, label) where weight averaging starts: SWA's first epoch, where
  SWALR takes over the LR, and EMA's ``update_starting_at_step``."""
  rules = averaging.averaging_rules(config.ema, config.swa, run.batches_per_epoch, run.epochs)
  if rules is None:
    return []
  marks = []
  if rules.start_epochs is not None:
    marks.append((rules.start_epochs[0] * run.steps_per_epoch, 'SWA starts, SWALR takes over'))
  if rules.start_step:
    marks.append((int(rules.start_step), 'EMA starts'))
  return marks


def first_at_least(fn: Callable[[Any], Any], targets: Any, n: int) -> np.ndarray:
  """For each target t, the least k in [0, n) with fn(k) >= t (n if none), for a
  non-decreasing fn of int64 arrays: a binary search, ~31 evaluations."""
  targets = np.asarray(targets, np.int64)
  lo, hi = np.zeros_like(targets), np.full_like(targets, n)
  while np.any(lo < hi):
    active = lo < hi
    mid = (lo + hi) // 2
    below = np.asarray(fn(mid)) < targets
    lo = np.where(active & below, mid + 1, lo)
    hi = np.where(active & ~below, mid, hi)
  return lo


def _spread(n: int, samples: int) -> np.ndarray:
  """Every integer in [0, n) when there are at most ``samples``, else ``samples`` evenly spaced ones."""
  if n <= samples:
    return np.arange(n, dtype=np.int64)
  return np.unique(np.linspace(0, n - 1, samples).round().astype(np.int64))


def _marks(config, entry: SchedulerEntry, run: Run, named: bool) -> list[tuple[int, str]]:
  """(optimizer step, label) of :func:`schedule_marks` under ``entry``'s scheduler steps,
  each label after the scheduler's name where ``named``."""
  if entry.scheduler in METRIC_KWARGS:
    return []
  n = run.steps
  count = scheduler_steps(config, run.batches_per_epoch, entry)
  turns = schedule_marks(entry)
  firsts = first_at_least(count, [c for c, _ in turns], n)
  return [
    (int(k), f'{entry.scheduler} {label}' if named else label)
    for (c, label), k in zip(turns, firsts)
    if k < n and count(k) == c
  ]


def simulate(
  config, run: Run, metrics: Sequence[float] | Mapping[str, Sequence[float]] | None = None, samples: int = SAMPLES
) -> Curve:
  """The :class:`Curve` of a checked config over ``run`` (see the module's docstring). With
  timm's ``layer_decay``, the groups of one layer (the top one, at ``lr_scale`` 1): the layers
  need the model.

  ``metrics``: the per-epoch values of ``config.monitor``, or {monitor: values}.

  Raises:
    ConfigError: see :func:`check_run` and :func:`dummy_params`; a metrics list
      shorter than the run's epochs under ReduceLROnPlateau.
  """
  check_run(config, run)
  if uses_timm(config) and config.layer_decay is not None:  # one layer, the top: every LR is the base LR's
    config = dataclasses.replace(config, layer_groups=None, layer_decay_classifier=())
  params = dummy_params(config)
  order = [g.name for g in groups(config, params)]
  # run_steps: torch raises when a OneCycleLR is stepped past total_steps, and so does this
  tx = build(config, params, batches_per_epoch=run.batches_per_epoch, run_steps=run.steps, max_epochs=run.epochs)
  n = run.steps
  found = scheduler_entries(config)
  count = scheduler_steps(config, run.batches_per_epoch, found[0]) if len(found) == 1 else np.zeros_like
  marks = [m for entry in found for m in _marks(config, entry, run, len(found) > 1)]
  marks += [(k, label) for k, label in averaging_marks(config, run) if k < n]
  wanted = [
    _spread(n, samples),
    first_at_least(count, _spread(int(count(n - 1)) + 1, samples), n),
    np.array([k for k, _ in marks] + [0, n // 2, n - 1], np.int64),
  ]
  if len(found) > 1:
    return _chained_curve(config, run, tx, params, order, metrics, samples, marks, wanted)

  followed = plateau_kwargs(config)
  metrics = metrics.get(config.monitor) if isinstance(metrics, Mapping) else metrics
  given = None if metrics is None or followed is None else [float(v) for v in metrics]
  if followed is None:
    steps = np.unique(np.concatenate(wanted))
    values = _counted(config, run, tx, params, steps)
  else:
    per_epoch = _per_epoch(config.monitor, followed, given, run)
    reported = functools.partial(
      reports_before,
      interval=_report_interval(config),
      batches_per_epoch=run.batches_per_epoch,
      accumulate=run.accumulate,
    )
    history = _reported(config, run, tx, params, per_epoch[: run.epochs])
    cuts = first_at_least(reported, np.flatnonzero(history.pop(CUT))[:MAX_CUTS] + 1, n)
    marks += [(int(k), CUT) for k in cuts if k < n]
    moves = np.any([v[1:] != v[:-1] for v in history.values()], axis=0)
    changes = np.flatnonzero(moves)[:samples] + 1  # reports after which an LR moves
    wanted.append(first_at_least(reported, changes, n))
    steps = np.unique(np.concatenate(wanted))
    values = {k: v[reported(steps)] for k, v in history.items()}
  return Curve(
    run=run,
    steps=steps,
    lrs={g: values[g] for g in order},
    momentum={g: values[f'{g}/momentum'] for g in order if f'{g}/momentum' in values},
    counts=np.asarray(count(steps), np.int64),
    marks=marks,
    plateau=followed is not None,
    metrics=given,
  )


def _closure_args(config) -> dict[str, Any]:
  """A loss for an optimizer whose update takes one (LBFGS, timm.adahessian): the LRs do not read it."""
  if (spec := spec_of(config.optimizer)) is None or not spec.closure:
    return {}
  return {'value_fn': lambda p: sum(jnp.sum(x) for x in jax.tree.leaves(p)) * 0.0}


def _at(state: Any, count: Any, batch: int) -> Any:
  """``state`` with every update counter at ``count`` and the micro-batch counter at ``batch``."""

  def visit(node):
    if isinstance(node, optax.InjectStatefulHyperparamsState):
      return node._replace(count=jnp.asarray(count, node.count.dtype), inner_state=_at(node.inner_state, count, batch))
    return node._replace(batch=jnp.asarray(batch, node.batch.dtype), inner_state=_at(node.inner_state, count, batch))

  return state_tree.replace(state, (optax.InjectStatefulHyperparamsState, AccumulateState), visit)


def _hyperparams(state) -> dict[str, Any]:
  """current_lr's groups, and current_momentum's as '<group>/momentum'."""
  return {**current_lr(state), **{f'{g}/momentum': m for g, m in current_momentum(state).items()}}


def _counted(config, run: Run, tx, params, steps: np.ndarray) -> dict[str, np.ndarray]:
  """current_lr before each of ``steps``, for schedules of the update count: one update
  from the initial state with its counters at k - 1, on the epoch's last micro-batch
  (where the optimizer always steps)."""
  grads = jax.tree.map(jnp.zeros_like, params)
  extra = _closure_args(config)
  start = tx.init(params)

  @jax.jit
  @jax.vmap
  def at(k):
    _, state = tx.update(grads, _at(start, k - 1, run.batches_per_epoch - 1), params, **extra)
    return _hyperparams(state)

  out = at(jnp.asarray(steps.astype(np.int32)))
  return {k: np.asarray(v, np.float64) for k, v in out.items()}


def _cut(before: Any, after: Any) -> Any:
  """Whether a report cut a plateau's LR: a :class:`PlateauState`'s own LR (which only its
  cuts move; a warm-up before it is not one), or a ``schedulers`` list's LR (which
  only its plateaus move in a report), lower after it."""

  def held(state):
    return [n.lr for n in state_tree.find(state, (PlateauState, ChainState))]

  return jnp.any(jnp.stack([a < b for a, b in zip(held(after), held(before))]))


def _reported(config, run: Run, tx, params, per_epoch: Sequence[float]) -> dict[str, np.ndarray]:
  """current_lr after 0, 1, ... reports (one per epoch, or per micro-batch with interval
  "step"), each report with its epoch's metric, and under :data:`CUT` whether each report
  cut an LR. A plateau's LR moves only with reports (``update`` leaves a
  :class:`jaxsched.Plateau` as it is), so no update is needed."""
  monitor = config.monitor
  per_report = np.repeat(
    np.asarray(per_epoch, np.float64), reports_per_epoch(_report_interval(config), run.batches_per_epoch)
  )

  @jax.jit
  def follow(state, values):
    def step(state, metric):
      new = report(state, {monitor: metric})
      return new, {**_hyperparams(state), CUT: _cut(state, new)}

    return jax.lax.scan(step, state, values)[1]

  out = follow(tx.init(params), jnp.asarray(per_report, jax.dtypes.canonicalize_dtype(jnp.float64)))
  return {k: np.asarray(v, np.float64) for k, v in out.items()}


def _per_epoch(monitor: str, followed: Mapping[str, Any], given: Sequence[float] | None, run: Run) -> list[float]:
  """The per-epoch values of ``monitor`` a plateau with keywords ``followed`` is fed: ``given``, else improving ones.

  Raises:
    ConfigError: ``given`` is shorter than the run's epochs.
  """
  per_epoch = improving_metrics(followed, run.epochs) if given is None else [float(v) for v in given]
  if len(per_epoch) < run.epochs:
    raise ConfigError(
      f'metrics has {len(per_epoch)} values of {monitor!r}, but the run has {run.epochs} '
      f'epochs: give one value per epoch.'
    )
  return per_epoch[: run.epochs]


def _chained_curve(
  config,
  run: Run,
  tx,
  params,
  order: list[str],
  metrics,
  samples: int,
  marks: list[tuple[int, str]],
  wanted: list[np.ndarray],
) -> Curve:
  """The :class:`Curve` of a ``schedulers`` list: :func:`_chained`'s every step, at the steps
  ``wanted`` (every step of a run of at most ``samples``) and the first step of every LR change."""
  monitors = plateau_monitors(config)
  if metrics is not None and not isinstance(metrics, Mapping):
    metrics = {config.monitor: metrics}
  given = {m: metrics[m] for m in monitors if metrics is not None and metrics.get(m) is not None}
  per_monitor = {m: _per_epoch(m, kw, given.get(m), run) for m, kw in monitors.items()}
  interval = _report_interval(config)
  history = _chained(config, run, tx, params, per_monitor, interval == 'step')
  n = run.steps
  cuts = history.pop(CUT)  # plateau cuts before each optimizer step
  marks = [*marks, *((int(k), CUT) for k in (np.flatnonzero(np.diff(cuts) > 0) + 1)[:MAX_CUTS])]
  moves = np.any([v[1:] != v[:-1] for v in history.values()], axis=0)
  wanted = [*wanted, np.flatnonzero(moves) + 1]
  steps = np.unique(np.concatenate(wanted))
  steps = steps[steps < n]
  b = run.batches_per_epoch
  reports = reports_before(steps, interval, b, run.accumulate)
  counts = [
    reports if e.scheduler in METRIC_KWARGS else np.asarray(scheduler_steps(config, b, e)(steps), np.int64)
    for e in scheduler_entries(config)
  ]
  followed = given.get(config.monitor)
  return Curve(
    run=run,
    steps=steps,
    lrs={g: history[g][steps] for g in order},
    momentum={g: history[f'{g}/momentum'][steps] for g in order if f'{g}/momentum' in history},
    counts=np.stack(counts, axis=1).astype(np.int64),
    marks=marks,
    plateau=bool(monitors),
    metrics=None if followed is None else [float(v) for v in followed],
  )


def _chained(
  config, run: Run, tx, params, per_monitor: Mapping[str, Sequence[float]], per_batch: bool
) -> dict[str, np.ndarray]:
  """current_lr before every optimizer step of the run, and under :data:`CUT` the plateau cuts
  made before it: the transformation updated once per micro-batch, :func:`jaxsched.report`
  called with every monitor's value of the epoch after each epoch (after each micro-batch
  where ``per_batch``)."""
  grads = jax.tree.map(jnp.zeros_like, params)
  extra = _closure_args(config)
  monitors = list(per_monitor)
  dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
  values = np.array([list(per_monitor[m]) for m in monitors], np.float64).T.reshape(run.epochs, len(monitors))

  def reported(carry, metrics):
    state, cuts = carry
    new = report(state, metrics)
    return new, cuts + _cut(state, new).astype(jnp.int32)

  @jax.jit
  def whole(carry, values):
    def epoch(carry, metric):
      metrics = {m: metric[i] for i, m in enumerate(monitors)}

      def batch(carry, _):
        state, cuts = carry
        before = {**_hyperparams(state), CUT: cuts}
        _, state = tx.update(grads, state, params, **extra)
        return (reported((state, cuts), metrics) if per_batch and monitors else (state, cuts)), before

      carry, out = jax.lax.scan(batch, carry, None, length=run.batches_per_epoch)
      return (carry if per_batch or not monitors else reported(carry, metrics)), out

    return jax.lax.scan(epoch, carry, values)[1]

  out = whole((tx.init(params), jnp.zeros([], jnp.int32)), jnp.asarray(values, dtype))
  last = steps_after(np.arange(run.batches_per_epoch), run.accumulate, run.batches_per_epoch)
  return {k: np.asarray(v, np.float64)[:, last].reshape(-1) for k, v in out.items()}
