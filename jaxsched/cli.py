"""The ``jaxsched`` command: see a config before training.

``jaxsched list [optimizers|schedulers|patterns]``
    every string ID with its keywords, defaults and what each accepts.
``jaxsched check CONFIG [--steps-per-epoch N] [--epochs E] [--metrics FILE] [KEY=VALUE ...]``
    validates the config (exit 1 on errors), prints it resolved, lints it, and
    tabulates each group's LR (and cycled momentum) at telling points.
``jaxsched plot CONFIG --steps-per-epoch N --epochs E -o FILE.png [--metrics FILE] [KEY=VALUE ...]``
    a PNG of each group's LR over optimizer steps.

CONFIG is a YAML file or the name of a shipped pattern (``jaxsched list
patterns``). KEY=VALUE overrides use snakemake's ``--config`` syntax, as
:func:`jaxsched.load_config`.

The LR curves come from the real path: the config is built with
:func:`jaxsched.build` on a small parameter tree holding one leaf per group,
and its compiled update runs over every step of the run in one ``lax.scan``,
reading :func:`jaxsched.current_lr` before each step (ReduceLROnPlateau gets
:func:`jaxsched.report` after each epoch, with the metrics file's values).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
from typing import Any, Callable, Mapping, Sequence

PROG = 'jaxsched'
MAX_EPOCH_LINES = 60
LINESTYLES = ('-', '--', '-.', ':')


class CliError(Exception):
  """A user-facing error: printed as one ``error: ...`` line, exit status 1."""


# ----------------------------------------------------------------------------- output


def _stdout_is_tty() -> bool:
  return sys.stdout.isatty() and not os.environ.get('JAXSCHED_PLAIN')


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
  """A table: rich on a terminal, aligned plain text in a pipe."""
  rows = [['' if c is None else str(c) for c in row] for row in rows]
  if _stdout_is_tty():
    try:
      from rich.console import Console
      from rich.table import Table
    except ImportError:
      pass
    else:
      table = Table(title=title, title_justify='left', show_lines=False)
      for h in headers:
        table.add_column(h, overflow='fold')
      for row in rows:
        table.add_row(*row)
      Console().print(table)
      return
  if title:
    print(title)
  widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
  line = lambda cells: '  '.join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
  print(line(headers))
  print(line(['-' * w for w in widths]))
  for row in rows:
    print(line(row))


def _steps(n: int, what: str = 'step') -> str:
  return f'{n} {what}{("es" if what.endswith("ch") else "s") if n != 1 else ""}'


def _warn(message: str) -> None:
  print(f'warning: {message}', file=sys.stderr)


def _note(message: str) -> None:
  print(f'note: {message}', file=sys.stderr)


def _fmt(x: Any) -> str:
  if isinstance(x, float):
    return f'{x:.6g}'
  if isinstance(x, tuple):
    return '(' + ', '.join(_fmt(v) for v in x) + ')'
  return repr(x) if isinstance(x, str) else str(x)


# ----------------------------------------------------------------------------- list


def cmd_list(args: argparse.Namespace) -> int:
  from jaxsched.optimizers import OPTIMIZERS
  from jaxsched.plateau import KWARGS as PLATEAU_KWARGS
  from jaxsched.schedules import SCHEDULES

  what = args.what or 'all'
  if what in ('all', 'optimizers'):
    rows = []
    for name, spec in OPTIMIZERS.items():
      rows.append([name, 'lr', _fmt(spec.lr), 'a real number >= 0, or a schedule'])
      rows += [['', key, _fmt(default), str(check)] for key, (default, check) in spec.kwargs.items()]
    rows.append(['optax.<alias>', '...', '', "any Optax optimizer alias (e.g. optax.lion), with Optax's keywords"])
    print_table(['optimizer', 'keyword', 'default', 'accepts'], rows, title='Optimizers (optimizer, optimizer_kwargs)')
  if what == 'all':
    print()
  if what in ('all', 'schedulers'):
    rows = []
    for name, spec in SCHEDULES.items():
      rows += [[name if i == 0 else '', key, _fmt(default), str(check)]
               for i, (key, (default, check)) in enumerate(spec.kwargs.items())]
    rows += [['ReduceLROnPlateau' if i == 0 else '', key, _fmt(default), str(check)]
             for i, (key, (default, check)) in enumerate(PLATEAU_KWARGS.items())]
    rows.append(['none', '', '', 'no scheduler: a constant LR (scheduler: null)'])
    print_table(['scheduler', 'keyword', 'default', 'accepts'], rows,
                title='Schedulers (scheduler, scheduler_kwargs; REQUIRED keywords have no default)')
    from jaxsched.config import SCHEDULER_CONFIG_KEYS
    print()
    print_table(['key', 'default', 'accepts'],
                [[k, _fmt(d), str(c) if c is not None else 'a string' if k in ('monitor', 'name') else 'any']
                 for k, (d, c) in SCHEDULER_CONFIG_KEYS.items()],
                title='scheduler_configs (Lightning)')
  if what == 'patterns':
    from jaxsched.config import patterns
    print_table(['pattern', 'file'], [[n, p] for n, p in patterns().items()], title='Shipped patterns')
  return 0


# ----------------------------------------------------------------------------- config and run


def _load(config: str, overrides: Sequence[str]):
  from jaxsched.build import load_config
  from jaxsched.config import patterns

  path = config
  if not os.path.exists(path) and config in patterns():
    path = patterns()[config]
  elif not os.path.exists(path):
    hint = f' Shipped patterns: {", ".join(patterns())}.'
    raise CliError(f'config file {config!r} not found.{hint}')
  return path, load_config(path, overrides)


def _natural_length(config) -> tuple[int | None, str]:
  """The scheduler count a config's schedule is written for, and where it comes from."""
  kw = config.scheduler_kwargs
  name = config.scheduler

  def num(key):
    try:
      return int(kw[key]) if kw.get(key) is not None else None
    except (TypeError, ValueError):
      return None

  if name == 'LinearWarmupCosineAnnealingLR' and num('max_epochs'):
    return num('max_epochs'), 'max_epochs'
  if name == 'CosineAnnealingLR':
    return num('T_max') or 250, 'T_max'
  if name == 'OneCycleLR':
    if num('total_steps'):
      return num('total_steps'), 'total_steps'
    if num('epochs') and num('steps_per_epoch'):
      return num('epochs') * num('steps_per_epoch'), 'epochs x steps_per_epoch'
  if name == 'CyclicLR':
    up = num('step_size_up') or 2000
    down = num('step_size_down') if kw.get('step_size_down') is not None else up
    return 2 * (up + down), 'two cycles'
  if name == 'MultiStepLR' and isinstance(kw.get('milestones'), (list, tuple)) and kw['milestones']:
    try:
      ms = sorted(int(m) for m in kw['milestones'])
      return ms[-1] + max(ms[0], 1), 'milestones'
    except (TypeError, ValueError):
      pass
  if name == 'StepLR' and num('step_size'):
    return 3 * num('step_size'), '3 x step_size'
  if name == 'SequentialLR' and isinstance(kw.get('milestones'), (list, tuple)) and kw['milestones']:
    try:
      return 2 * int(kw['milestones'][-1]), 'milestones'
    except (TypeError, ValueError):
      pass
  return None, ''


def _run(config, epochs: int | None, batches: int | None, steps: int | None = None):
  """The run to check against: the given one, or one fitted to the schedule.

  ``batches`` is --batches-per-epoch; ``steps`` (--steps-per-epoch) is accepted as the
  same number without accumulation only, as :func:`jaxsched.build` accepts it.
  """
  from jaxsched.groups import epoch_batches
  from jaxsched.lints import Run

  for flag, v in (('--epochs', epochs), ('--batches-per-epoch', batches), ('--steps-per-epoch', steps)):
    if v is not None and v < 1:
      raise CliError(f'{flag}={v} must be a positive integer.')
  n = config.accumulate_grad_batches
  if n == 1 or batches is not None or steps is not None:
    batches = epoch_batches(config, batches, steps)
  interval = config.scheduler_configs['interval']
  if epochs is not None and (batches is not None or interval == 'epoch' and n == 1):
    if batches is None:  # per-epoch schedulers count epochs only
      _note('no --batches-per-epoch: assuming 1 (an interval "epoch" scheduler does not depend on it).')
    return Run(epochs, batches or 1, n, explicit=True)
  kw = config.scheduler_kwargs
  if config.scheduler == 'OneCycleLR' and kw.get('epochs') and kw.get('steps_per_epoch') and interval == 'step':
    e, spe = epochs or int(kw['epochs']), int(kw['steps_per_epoch'])
    _note(f'assuming a run of {e} epochs x {spe} optimizer steps per epoch (from OneCycleLR\'s epochs and '
          f'steps_per_epoch).')
    return Run(e, batches or spe * n, n, explicit=False)
  length, source = _natural_length(config)
  frequency = config.scheduler_configs['frequency']
  if interval == 'epoch':
    spe = -(-batches // n) if batches else 1
    e = epochs or (length * frequency if length else 100)
  else:
    length = (length or 10000) * frequency
    if batches is not None:
      spe = -(-batches // n)
      e = epochs or max(1, length // spe)
    else:
      e = epochs or min(100, length)
      spe = max(1, length // e)
  batches = batches or spe * n
  why = f' (from {config.scheduler}\'s {source})' if source else ''
  _note(f'assuming a run of {e} epochs x {_steps(batches, "batch")} per epoch{why}; give --epochs and '
        f'--batches-per-epoch to check the run\'s length.')
  return Run(e, batches, n, explicit=False)


# ----------------------------------------------------------------------------- metrics


def read_metrics(path: str, monitor: str) -> list[float]:
  """Per-epoch values of ``monitor`` from a CSV or JSON file.

  JSON: a list of numbers, a list of {metric: value} records (one per epoch),
  or {metric: [values]}. CSV: a header row naming ``monitor`` (rows without a
  value are skipped; with an ``epoch`` column the last value of each epoch is
  used, as Lightning's CSVLogger writes several rows per epoch), or a single
  column of numbers.
  """
  try:
    with open(path, encoding='utf-8') as f:
      text = f.read()
  except OSError as e:
    raise CliError(f'cannot read metrics file {path!r}: {e.strerror}') from None
  if path.lower().endswith('.json') or text.lstrip()[:1] in ('[', '{'):
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise CliError(f'{path}: malformed JSON: {e}') from None
    if isinstance(data, Mapping):
      if monitor not in data:
        raise CliError(f'{path} has no {monitor!r} (the config\'s scheduler_configs.monitor); it has: '
                       f'{", ".join(map(str, data)) or "nothing"}.')
      data = data[monitor]
    if not isinstance(data, list):
      raise CliError(f'{path}: expected a list of per-epoch values of {monitor!r}.')
    values = []
    for i, item in enumerate(data):
      if isinstance(item, Mapping):
        if monitor not in item:
          continue
        item = item[monitor]
      values.append(_number(item, f'{path}: entry {i}'))
    return _nonempty(values, path, monitor)

  rows = [r for r in csv.reader(text.splitlines()) if any(c.strip() for c in r)]
  if not rows:
    raise CliError(f'{path} is empty.')
  header = [c.strip() for c in rows[0]]
  if all(_is_number(c) for c in header if c):
    if max(len(r) for r in rows) != 1:
      raise CliError(f'{path}: a CSV without a header must have one column of per-epoch values.')
    return _nonempty([_number(r[0], f'{path}: line {i + 1}') for i, r in enumerate(rows)], path, monitor)
  if monitor in header:
    col = header.index(monitor)
  elif len([h for h in header if h not in ('epoch', 'step')]) == 1:
    col = next(i for i, h in enumerate(header) if h not in ('epoch', 'step'))
  else:
    raise CliError(f'{path} has no column {monitor!r} (the config\'s scheduler_configs.monitor); '
                   f'columns: {", ".join(header)}.')
  ecol = header.index('epoch') if 'epoch' in header else None
  by_epoch: dict[Any, float] = {}
  values = []
  for i, r in enumerate(rows[1:], start=2):
    cell = r[col].strip() if col < len(r) else ''
    if not cell:
      continue
    v = _number(cell, f'{path}: line {i}')
    if ecol is not None and ecol < len(r) and r[ecol].strip():
      by_epoch[int(float(r[ecol]))] = v
    else:
      values.append(v)
  if by_epoch:
    values = [by_epoch[e] for e in sorted(by_epoch)]
  return _nonempty(values, path, monitor)


def _is_number(s: str) -> bool:
  try:
    float(s)
    return True
  except ValueError:
    return False


def _number(x: Any, where: str) -> float:
  try:
    if isinstance(x, bool):
      raise TypeError
    return float(x)
  except (TypeError, ValueError):
    raise CliError(f'{where}: {x!r} is not a number.') from None


def _nonempty(values: list[float], path: str, monitor: str) -> list[float]:
  if not values:
    raise CliError(f'{path} holds no values of {monitor!r}.')
  return values


# ----------------------------------------------------------------------------- simulation


@dataclasses.dataclass
class Trace:
  """Each group's LR (and cycled momentum) at every optimizer step of a run."""

  run: Any
  lrs: dict[str, Any]  # group -> np.ndarray (steps,)
  momentum: dict[str, Any]  # group -> np.ndarray (steps,)
  counts: Any  # scheduler count before each step
  plateau: bool
  metrics: list[float] | None


def _plateau_kwargs(config) -> dict[str, Any] | None:
  from jaxsched.groups import PLATEAU, _ends_in_plateau

  if config.scheduler == PLATEAU:
    return dict(config.scheduler_kwargs)
  if config.scheduler == 'SequentialLR' and _ends_in_plateau(config.scheduler_kwargs):
    return dict(config.scheduler_kwargs['schedulers'][-1].get('scheduler_kwargs') or {})
  return None


def improving_metrics(kwargs: Mapping[str, Any], n: int) -> list[float]:
  """n metric values each better than the last under torch's rule: the plateau
  never cuts, so its curve is the upper bound of any run."""
  from jaxsched.plateau import KWARGS

  kw = {k: kwargs.get(k, d) for k, (d, _) in KWARGS.items()}
  th = float(kw['threshold']) if kw['threshold_mode'] == 'abs' else 0.0
  if kw['mode'] == 'min':  # rel: x < best * (1 - t) holds for negative x = best - 1
    return [-(k + 1) * (1.0 + th) for k in range(n)]
  if kw['threshold_mode'] == 'rel':  # x > best * (1 + t) holds for negative x = best + 1
    return [float(k - n) for k in range(n)]
  return [k * (1.0 + th) for k in range(n)]


def dummy_params(config) -> dict[str, Any]:
  """One (2, 2) leaf per parameter group the config names, labelled as build labels it."""
  import jax.numpy as jnp

  from jaxsched.groups import RECURRENT, REGULAR, configured_groups, param_labels

  def label(path: str) -> str:
    return param_labels(config, {path: 0})[path]

  wanted = {REGULAR: ['regular', 'params', 'weights', 'w', 'x', 'q', 'z']}
  for group in configured_groups(config):
    if group.name == RECURRENT:
      wanted[RECURRENT] = [*config.recurrent_param_patterns, 'recurrent']
    elif group.name != REGULAR:
      wanted[group.name] = [group.name]
  leaves = {}
  for group, candidates in wanted.items():
    found = next((c for c in candidates if label(c) == group), None)
    if found is None and group == REGULAR:
      continue  # every name falls in a configured group: no regular group to show
    if found is None:
      shadow = label(candidates[0])
      what = ('recurrent_learning_rate_multiplier' if group == RECURRENT else f'lr_parameter_groups.{group}')
      raise CliError(f'{what} can never hold a parameter: a path that matches it also contains {shadow!r}, '
                     f'an earlier group (first match wins). Reorder lr_parameter_groups or rename the group.')
    leaves[found] = jnp.zeros((2, 2))  # float64 under x64, so every state entry keeps its dtype
  return leaves


def simulate(config, run, metrics: list[float] | None = None) -> Trace:
  """Runs the built transformation over the whole run, in one compiled scan."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jaxsched.accumulate import steps_after
  from jaxsched.build import build, current_lr, current_momentum
  from jaxsched.groups import groups, scheduler_steps
  from jaxsched.plateau import report

  params = dummy_params(config)
  order = [g.name for g in groups(config, params)]
  # run_steps: torch raises when a OneCycleLR is stepped past total_steps, and so does check
  tx = build(config, params, batches_per_epoch=run.batches_per_epoch, run_steps=run.steps)
  plateau_kwargs = _plateau_kwargs(config)
  plateau = plateau_kwargs is not None

  given = metrics
  if plateau:
    if metrics is None:
      metrics = improving_metrics(plateau_kwargs, run.epochs)
    elif len(metrics) < run.epochs:
      raise CliError(f'the metrics file has {len(metrics)} values of {config.monitor!r}, but the run has '
                     f'{run.epochs} epochs: give one value per epoch.')
    elif len(metrics) > run.epochs:
      _note(f'the metrics file has {len(metrics)} values; using the first {run.epochs} (one per epoch).')
      metrics = metrics[:run.epochs]
  else:
    if metrics is not None:
      _note(f'{config.scheduler} does not follow a metric: the metrics file is not used.')
    given, metrics = None, [0.0] * run.epochs

  grads = jax.tree.map(jnp.zeros_like, params)
  extra = {'value_fn': lambda p: sum(jnp.sum(x) for x in jax.tree.leaves(p)) * 0.0} if config.optimizer == 'LBFGS' else {}
  monitor = config.monitor
  per_step_report = plateau and config.scheduler_configs['interval'] == 'step'

  def step(carry, _):
    state, metric = carry
    lr = (current_lr(state), current_momentum(state))
    _, state = tx.update(grads, state, params, **extra)
    if per_step_report:
      state = report(state, {monitor: metric})
    return (state, metric), lr

  def epoch(state, metric):  # one update per micro-batch, as the training loop calls it
    (state, _), lrs = jax.lax.scan(step, (state, metric), None, length=run.batches_per_epoch)
    if plateau and not per_step_report:
      state = report(state, {monitor: metric})
    return state, lrs

  @jax.jit
  def scan(state, metric_values):
    return jax.lax.scan(epoch, state, metric_values)

  _, out = scan(tx.init(params), jnp.asarray(metrics, jax.dtypes.canonicalize_dtype(jnp.float64)))
  # the LR in the state before the micro-batch that completes each group is the one its optimizer step uses
  stepping = steps_after(np.arange(run.batches_per_epoch), run.accumulate, run.batches_per_epoch)
  out_lr, out_momentum = ({k: np.asarray(v, np.float64)[:, stepping].reshape(-1) for k, v in d.items()} for d in out)
  counts = np.asarray(scheduler_steps(config, run.batches_per_epoch)(np.arange(run.steps))) if config.scheduler else \
      np.zeros(run.steps, int)
  lrs = {g: out_lr[g] for g in order}
  momentum = {g: out_momentum[g] for g in order if g in out_momentum}
  return Trace(run, lrs, momentum, counts, plateau, given)


# ----------------------------------------------------------------------------- check


def resolved(config) -> dict[str, Any]:
  """The config with every default filled in (optimizer and scheduler keywords included)."""
  from jaxsched.groups import PER_GROUP
  from jaxsched.optimizers import OPTIMIZERS, resolve
  from jaxsched.plateau import KWARGS as PLATEAU_KWARGS
  from jaxsched.schedules import SCHEDULES

  out = config.to_dict()
  spec = OPTIMIZERS.get(config.optimizer)
  if spec is not None:
    lr, kwargs = resolve(spec, config.learning_rate, dict(config.optimizer_kwargs))
    out['learning_rate'] = lr
    out['optimizer_kwargs'] = kwargs
  given = dict(config.scheduler_kwargs)
  if config.scheduler in SCHEDULES and _plateau_kwargs(config) is None:
    # Per-group lists (max_lr: [0.1, 0.01]) are checked one value at a time by build.
    first = {k: v[0] if k in PER_GROUP.get(config.scheduler, ()) and isinstance(v, (list, tuple)) and v else v
             for k, v in given.items()}
    checked = {k: given.get(k, v) if k in PER_GROUP.get(config.scheduler, ()) else v
               for k, v in SCHEDULES[config.scheduler].resolve(first).items()}
    out['scheduler_kwargs'] = {k: given[k] if callable(v) or k in ('schedulers',) and k in given else v
                               for k, v in checked.items()}
  elif config.scheduler == 'ReduceLROnPlateau':
    out['scheduler_kwargs'] = {k: given.get(k, d) for k, (d, _) in PLATEAU_KWARGS.items()}
  return _plain(out)


def _plain(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  if callable(x):
    return getattr(x, '__name__', repr(x))
  return x


def telling_points(config, trace: Trace) -> list[tuple[int, str]]:
  """(optimizer step, label) at the points that tell a schedule apart: start,
  end of warm-up, milestones, peak, middle, end, plateau cuts."""
  import numpy as np

  n = trace.run.steps
  counts = trace.counts
  kw = config.scheduler_kwargs
  marks: list[tuple[int, str]] = []  # (scheduler count, label)

  def ints(key):
    v = kw.get(key)
    return [int(m) for m in v] if isinstance(v, (list, tuple)) else []

  name = config.scheduler
  if name == 'LinearWarmupCosineAnnealingLR':
    marks.append((int(kw['warmup_epochs']), 'end of warm-up'))
    marks.append((int(kw['max_epochs']), 'max_epochs'))
  elif name in ('LinearLR', 'ConstantLR'):
    marks.append((int(kw.get('total_iters', 5)), 'total_iters'))
  elif name == 'CosineAnnealingLR':
    marks.append((int(kw.get('T_max', 250)), 'T_max'))
  elif name == 'MultiStepLR':
    marks += [(m, f'milestone {m}') for m in ints('milestones')]
  elif name == 'StepLR':
    size = int(kw['step_size'])
    marks += [(size * i, f'step_size x {i}') for i in range(1, 6)]
  elif name == 'SequentialLR':
    marks += [(m, f'milestone {m}') for m in ints('milestones')]
  elif name == 'CosineAnnealingWarmRestarts':
    t, period, mult = 0, int(kw['T_0']), int(kw.get('T_mult', 1))
    for _ in range(4):
      t += period
      marks.append((t, 'restart'))
      period *= mult
  points: dict[int, list[str]] = {}

  def add(k: int, label: str) -> None:
    if 0 <= k < n:
      points.setdefault(int(k), []).append(label)

  for c, label in marks:
    k = int(np.searchsorted(counts, c, side='left'))
    if k < n and counts[k] == c:
      add(k, label)
  add(0, 'start')
  first = next(iter(trace.lrs.values()), None)
  if first is not None and len(first):
    peak = int(np.argmax(first))
    if peak > 0 and first[peak] > first[0]:
      add(peak, 'peak')
    if trace.plateau:
      cuts = np.nonzero(np.diff(first) < 0)[0][:8] + 1
      for k in cuts:
        add(int(k), 'plateau cut')
  add(n // 2, 'middle')
  add(n - 1, 'end')
  return [(k, ', '.join(dict.fromkeys(points[k]))) for k in sorted(points)]


def lr_table(config, trace: Trace) -> tuple[list[str], list[list[str]]]:
  groups = list(trace.lrs)
  headers = ['step', 'epoch', 'point'] + [f'lr {g}' for g in groups] + [f'momentum {g}' for g in trace.momentum]
  rows = []
  spe = trace.run.steps_per_epoch
  for k, label in telling_points(config, trace):
    row = [str(k), str(k // spe), label]
    row += [f'{trace.lrs[g][k]:.6g}' for g in groups]
    row += [f'{trace.momentum[g][k]:.6g}' for g in trace.momentum]
    rows.append(row)
  return headers, rows


def check_learning_rates(trace: Trace) -> list[str]:
  """Warnings for negative learning rates in the run.

  Raises:
    CliError: a group's learning rate is not finite somewhere in the run (torch
      would go on training with it, and every parameter would become NaN).
  """
  import numpy as np

  out = []
  for group, lrs in trace.lrs.items():
    bad = np.flatnonzero(~np.isfinite(lrs))
    if bad.size:
      k = int(bad[0])
      raise CliError(f'the {group!r} group\'s learning rate is {lrs[k]} at optimizer step {k} (epoch '
                     f'{k // trace.run.steps_per_epoch}): training would turn every parameter into NaN. Check the '
                     f'scheduler\'s keywords.')
    negative = np.flatnonzero(lrs < 0)
    if negative.size:
      k = int(negative[0])
      out.append(f'the {group!r} group\'s learning rate is negative ({lrs[k]:.6g}) from optimizer step {k} '
                 f'(epoch {k // trace.run.steps_per_epoch}): the optimizer then climbs the loss.')
  return out


def cmd_check(args: argparse.Namespace) -> int:
  import yaml

  from jaxsched.lints import lint

  path, config = _load(args.config, args.overrides)
  run = _run(config, args.epochs, args.batches_per_epoch, args.steps_per_epoch)
  metrics = read_metrics(args.metrics, config.monitor) if args.metrics else None
  warnings = lint(config, run)

  print(f'config: {path}' + (f' with {" ".join(args.overrides)}' if args.overrides else ''))
  error = None
  try:
    text = yaml.safe_dump(resolved(config), sort_keys=False, default_flow_style=None, width=100)
    print('\n'.join('  ' + line for line in text.rstrip().splitlines()))
    per_epoch = _steps(run.steps_per_epoch) if run.accumulate == 1 else (
        f'{_steps(run.batches_per_epoch, "batch")} ({run.steps_per_epoch} optimizer steps: accumulate_grad_batches '
        f'{run.accumulate}, the last group of an epoch may be partial)')
    print(f'run: {run.epochs} epochs x {per_epoch} per epoch = {_steps(run.steps, "optimizer step")}'
          + ('' if run.explicit else ' (assumed)'))
    trace = simulate(config, run, metrics)
    warnings += check_learning_rates(trace)
  except Exception as e:  # noqa: BLE001 - reported as one line below
    error = e
  for w in warnings:
    _warn(w)
  if error is not None:
    raise error
  if trace.plateau and trace.metrics is None:
    _note(f'{config.scheduler} follows the metric {config.monitor!r}: without --metrics the table shows the '
          f'upper bound (the metric always improves, so the LR is never cut).')
  print()
  headers, rows = lr_table(config, trace)
  print_table(headers, rows, title='Learning rate by parameter group (the value used at each optimizer step)')
  print()
  print(f'OK: no errors, {len(warnings)} warning{"s" if len(warnings) != 1 else ""}.')
  return 0


# ----------------------------------------------------------------------------- plot


def cmd_plot(args: argparse.Namespace) -> int:
  from jaxsched.lints import lint

  path, config = _load(args.config, args.overrides)
  run = _run(config, args.epochs, args.batches_per_epoch, args.steps_per_epoch)
  metrics = read_metrics(args.metrics, config.monitor) if args.metrics else None
  out_dir = os.path.dirname(os.path.abspath(args.output))
  if not os.path.isdir(out_dir):
    raise CliError(f'cannot write {args.output!r}: the directory {out_dir} does not exist.')
  trace = simulate(config, run, metrics)
  for w in lint(config, run) + check_learning_rates(trace):
    _warn(w)
  draw(config, trace, path, args.output, log=args.log)
  print(f'wrote {args.output}')
  return 0


def draw(config, trace: Trace, source: str, output: str, log: bool = False) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import numpy as np

  run = trace.run
  panels = 2 if trace.momentum else 1
  fig, axes = plt.subplots(panels, 1, sharex=True, figsize=(10, 4.5 if panels == 1 else 7),
                           gridspec_kw={'height_ratios': [2, 1][:panels]}, squeeze=False)
  axes = axes[:, 0]
  steps = np.arange(run.steps)
  stride = max(1, math.ceil(run.epochs / MAX_EPOCH_LINES))
  for ax in axes:
    for e in range(stride, run.epochs, stride):
      ax.axvline(e * run.steps_per_epoch, color='0.88', lw=0.6, zorder=0)
  ax = axes[0]
  for i, (group, lr) in enumerate(trace.lrs.items()):
    ax.plot(steps, lr, lw=1.4, ls=LINESTYLES[i % len(LINESTYLES)], label=group, drawstyle='steps-post')
  ax.set_ylabel('learning rate')
  if log and all((v > 0).all() for v in trace.lrs.values()):
    ax.set_yscale('log')
  ax.legend(title='group', loc='best', fontsize='small')
  sched = config.scheduler or 'constant LR'
  title = f'{os.path.basename(source)}: {config.optimizer} + {sched} (interval "{config.scheduler_configs["interval"]}")'
  if trace.plateau:
    title += (f'\nfollowing {config.monitor} from the metrics file' if trace.metrics is not None
              else f'\nupper bound: {config.monitor} always improves (no --metrics given)')
    if trace.metrics is not None:
      twin = ax.twinx()
      ends = (np.arange(run.epochs) + 1) * run.steps_per_epoch - 1
      twin.plot(ends, trace.metrics[:run.epochs], 'o:', color='0.5', ms=3, lw=0.8)
      twin.set_ylabel(config.monitor, color='0.4')
  ax.set_title(title, fontsize='medium')
  if trace.momentum:
    m_ax = axes[1]
    spec_betas = _has_betas(config.optimizer)
    for i, (group, m) in enumerate(trace.momentum.items()):
      m_ax.plot(steps, m, lw=1.2, ls=LINESTYLES[i % len(LINESTYLES)], label=group, drawstyle='steps-post')
    m_ax.set_ylabel('beta1' if spec_betas else 'momentum')
    m_ax.legend(title='group', loc='best', fontsize='small')
  axes[-1].set_xlabel(f'optimizer step ({run.steps_per_epoch} per epoch; grey lines: epoch boundaries'
                      + (f', every {stride}' if stride > 1 else '') + ')')
  top = axes[0].secondary_xaxis('top', functions=(lambda k: k / run.steps_per_epoch,
                                                   lambda e: e * run.steps_per_epoch))
  top.set_xlabel('epoch')
  axes[-1].set_xlim(0, max(run.steps - 1, 1))
  fig.tight_layout()
  try:
    fig.savefig(output, format='png', dpi=120)
  except OSError as e:
    raise CliError(f'cannot write {output!r}: {e.strerror}') from None
  finally:
    plt.close(fig)


def _has_betas(name: str) -> bool:
  from jaxsched.optimizers import OPTIMIZERS

  spec = OPTIMIZERS.get(name)
  return spec is not None and 'betas' in spec.kwargs and 'momentum' not in spec.kwargs


# ----------------------------------------------------------------------------- main


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
  parser = argparse.ArgumentParser(
      prog=PROG, description="See a DynVision optimizer/scheduler config before training: its names, its "
      "validity, and the learning rate each parameter group gets when.")
  from jaxsched import __version__

  parser.add_argument('--version', action='version', version=f'{PROG} {__version__}')
  sub = parser.add_subparsers(dest='command', metavar='{list,check,plot}')
  subs = {}
  p = sub.add_parser('list', help='every optimizer and scheduler string ID with its keywords and defaults')
  p.add_argument('what', nargs='?', choices=['optimizers', 'schedulers', 'patterns'],
                 help='what to list (default: optimizers and schedulers)')
  subs['list'] = p

  def common(p, run_required: bool):
    p.add_argument('config', metavar='CONFIG', help='a YAML config file, or a shipped pattern name')
    p.add_argument('overrides', nargs='*', metavar='KEY=VALUE',
                   help='snakemake-style overrides, e.g. learning_rate=0.01 '
                   'optimizer_kwargs="{momentum:0.9}" scheduler_kwargs.T_max=50')
    length = p.add_mutually_exclusive_group(required=run_required)
    length.add_argument('--batches-per-epoch', type=int, metavar='B',
                        help='training batches per epoch, len(train_loader) (micro-batches with '
                        'accumulate_grad_batches)')
    length.add_argument('--steps-per-epoch', type=int, metavar='N',
                        help='the same, without accumulation (where batches and optimizer steps are one thing)')
    p.add_argument('--epochs', type=int, required=run_required, metavar='E', help='epochs in the run')
    p.add_argument('--metrics', metavar='FILE',
                   help='per-epoch values of the monitored metric (CSV or JSON), for ReduceLROnPlateau')

  p = sub.add_parser('check', help='validate a config, lint it, and tabulate its learning rates',
                     description='Validates CONFIG (exit 1 on errors), prints it resolved, warns about traps, '
                     'and tabulates each group\'s LR at telling points of the run.')
  common(p, run_required=False)
  subs['check'] = p
  p = sub.add_parser('plot', help="plot each group's learning rate over the run to a PNG")
  common(p, run_required=True)
  p.add_argument('-o', '--output', required=True, metavar='FILE.png', help='the PNG to write')
  p.add_argument('--log', action='store_true', help='a logarithmic LR axis')
  subs['plot'] = p
  return parser, subs


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {'list': cmd_list, 'check': cmd_check, 'plot': cmd_plot}


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser, subs = _parsers()
  if not argv or argv[0] not in subs:
    parser.parse_args(argv or ['--help'])  # --help, or a usage error for an unknown command
    return 2
  # Per command, so that options may follow the KEY=VALUE overrides.
  args = subs[argv[0]].parse_intermixed_args(argv[1:])
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  import jax

  jax.config.update('jax_enable_x64', True)  # torch's float64 numbers in the tables
  from jaxsched._errors import ConfigError

  try:
    return COMMANDS[argv[0]](args)
  except (ConfigError, CliError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    return 130
  except BrokenPipeError:  # `jaxsched list | head`
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
  except Exception as e:  # noqa: BLE001 - never a traceback for a user
    if os.environ.get('JAXSCHED_DEBUG'):
      raise
    print(f'error: {type(e).__name__}: {e} (set JAXSCHED_DEBUG=1 for the traceback)', file=sys.stderr)
    return 1


def entry() -> None:
  sys.exit(main())


if __name__ == '__main__':
  entry()
