"""The ``jaxsched`` command's arguments and its three commands: ``list``, ``check`` and ``plot``.

Reads the config file (or shipped pattern) and the metrics file named on the
command line, fits a run to the schedule when its length is not given, and
hands the rest to :mod:`~jaxsched.simulate`, :mod:`~jaxsched.lints`,
:mod:`~jaxsched.cli.tables` and :mod:`~jaxsched.cli.draw`. Writes stdout/stderr and, for ``plot``, the PNG.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import warnings
from typing import Callable, Sequence

import yaml

from jaxsched import __version__
from jaxsched._errors import ConfigWarning
from jaxsched.build import load_config
from jaxsched.cli.draw import draw
from jaxsched.cli.metrics import read_metrics
from jaxsched.cli.output import CliError, fmt, note, plural, print_table, warn
from jaxsched.cli.tables import check_learning_rates, lr_table, resolved
from jaxsched.config import SCHEDULER_CONFIG_KEYS, patterns
from jaxsched.lints import Run, lint
from jaxsched.optimizers import OPTIMIZERS, TIMM_OPTIMIZERS
from jaxsched.plan import SchedulerEntry, scheduler_entries
from jaxsched.plateau import METRIC_KWARGS
from jaxsched.schedules import SCHEDULES, hf
from jaxsched.simulate import MAX_CHAINED, MAX_EPOCHS, MAX_STEPS, check_run, plateau_monitors, scheduler_name, simulate
from jaxsched.stepping import epoch_batches, optimizer_steps_per_epoch

PROG = 'jaxsched'


# ----------------------------------------------------------------------------- list


def cmd_list(args: argparse.Namespace) -> int:
  what = args.what or 'all'
  if what in ('all', 'optimizers'):
    rows = []
    for name, spec in {**OPTIMIZERS, **TIMM_OPTIMIZERS}.items():
      rows.append([name, 'lr', fmt(spec.lr), 'a real number >= 0, or a schedule'])
      rows += [['', key, fmt(default), str(check)] for key, (default, check) in spec.kwargs.items()]
    rows.append(['optax.<alias>', '...', '', "any Optax optimizer alias (e.g. optax.lion), with Optax's keywords"])
    print_table(['optimizer', 'keyword', 'default', 'accepts'], rows, title='Optimizers (optimizer, optimizer_kwargs)')
  if what == 'all':
    print()
  if what in ('all', 'schedulers'):
    rows = []
    for name, schedule_spec in SCHEDULES.items():
      rows += [
        [name if i == 0 else '', key, fmt(default), str(check)]
        for i, (key, (default, check)) in enumerate(schedule_spec.kwargs.items())
      ] or [[name, '', '', 'no keywords']]
    rows += [
      [name if i == 0 else '', key, fmt(default), str(check)]
      for name, table in METRIC_KWARGS.items()
      for i, (key, (default, check)) in enumerate(table.items())
    ]
    rows += [[alias, '', '', f'{target}, the same keywords'] for alias, target in hf.ALIASES.items()]
    rows.append(['none', '', '', 'no scheduler: a constant LR (scheduler: null)'])
    print_table(
      ['scheduler', 'keyword', 'default', 'accepts'],
      rows,
      title='Schedulers (scheduler, scheduler_kwargs; REQUIRED keywords have no default)',
    )
    print()
    print_table(
      ['key', 'default', 'accepts'],
      [
        [k, fmt(d), str(c) if c is not None else 'a string' if k in ('monitor', 'name') else 'any']
        for k, (d, c) in SCHEDULER_CONFIG_KEYS.items()
      ],
      title='scheduler_configs (Lightning)',
    )
  if what == 'patterns':
    print_table(['pattern', 'file'], [[n, p] for n, p in patterns().items()], title='Shipped patterns')
  return 0


# ----------------------------------------------------------------------------- config and run


def load(config: str, overrides: Sequence[str]):
  """(path, Config) for a config file or shipped pattern name, plus overrides.

  Raises:
    CliError: no such file or pattern, a directory, a file that cannot be read
      or is not UTF-8 text (ConfigError for its contents, from load_config).
  """
  path = config
  if not os.path.exists(path) and config in patterns():
    path = patterns()[config]
  elif not os.path.exists(path):
    hint = f' Shipped patterns: {", ".join(patterns())}.'
    raise CliError(f'config file {config!r} not found.{hint}')
  if os.path.isdir(path):
    raise CliError(f'cannot read config {path!r}: it is a directory, not a YAML file.')
  try:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always', ConfigWarning)
      loaded = load_config(path, overrides)
    for w in caught:  # an override that dropped the file's keywords
      if issubclass(w.category, ConfigWarning):
        note(str(w.message))
      else:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
  except UnicodeDecodeError as e:
    raise CliError(
      f'cannot read config {path!r}: not UTF-8 text (byte {e.object[e.start]:#04x} at position {e.start}).'
    ) from None
  except OSError as e:
    raise CliError(f'cannot read config {path!r}: {e.strerror or e}.') from None
  if os.path.getsize(path) == 0:
    note(f'{path} is empty: every key takes its default.')
  return path, loaded


def _natural_length(config) -> tuple[int | None, str]:
  """The scheduler count a config's schedule is written for, and where it comes from
  (with a ``schedulers`` list, the longest entry's)."""
  lengths = [
    (length, f"{e.scheduler}'s {source}")
    for e in scheduler_entries(config)
    for length, source in [_entry_length(e)]
    if length
  ]
  return max(lengths, default=(None, ''))


def _entry_length(entry: SchedulerEntry) -> tuple[int | None, str]:
  """The scheduler count one scheduler is written for, and the keywords that say so."""
  kw = entry.kwargs
  name = entry.scheduler

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


def fit_run(config, epochs: int | None, batches: int | None, steps: int | None = None):
  """The run to check against: the given one, or one fitted to the schedule.

  ``batches`` is --batches-per-epoch; ``steps`` (--steps-per-epoch) is accepted as the
  same number without accumulation only, as :func:`jaxsched.build` accepts it.

  Raises:
    ConfigError: a run the simulation cannot follow (:func:`jaxsched.simulate.check_run`).
  """
  for flag, v in (('--epochs', epochs), ('--batches-per-epoch', batches), ('--steps-per-epoch', steps)):
    if v is not None and v < 1:
      raise CliError(f'{flag}={v} must be a positive integer.')
  n = config.accumulate_grad_batches
  if n == 1 or batches is not None or steps is not None:
    batches = epoch_batches(config, batches, steps)
  # a list is fitted as per-epoch only if every entry is; a constant LR by its scheduler_configs
  entries = scheduler_entries(config)
  stepped = [e.configs for e in entries] or [config.scheduler_configs]
  interval = 'step' if any(e['interval'] == 'step' for e in stepped) else 'epoch'
  if epochs is not None and (batches is not None or interval == 'epoch' and n == 1):
    if batches is None:  # per-epoch schedulers count epochs only
      note('no --batches-per-epoch: assuming 1 (an interval "epoch" scheduler does not depend on it).')
    return check_run(config, Run(epochs, batches or 1, n, explicit=True))
  one_cycle = len(entries) == 1 and entries[0].scheduler == 'OneCycleLR'
  kw = entries[0].kwargs if one_cycle else {}
  if one_cycle and kw.get('epochs') and kw.get('steps_per_epoch') and interval == 'step':
    e, spe = epochs or int(kw['epochs']), int(kw['steps_per_epoch'])
    note(
      f"assuming a run of {e} epochs x {spe} optimizer steps per epoch (from OneCycleLR's epochs and steps_per_epoch)."
    )
    return check_run(config, Run(e, batches or spe * n, n, explicit=False))
  length, source = _natural_length(config)
  frequency = max(e['frequency'] for e in stepped)
  if interval == 'epoch':
    spe = optimizer_steps_per_epoch(batches, n) if batches else 1
    e = epochs or (length * frequency if length else 100)
  else:
    length = (length or 10000) * frequency
    if batches is not None:
      spe = optimizer_steps_per_epoch(batches, n)
      e = epochs or max(1, length // spe)
    else:
      e = epochs or min(100, length)
      spe = max(1, length // e)
  batches = batches or spe * n
  if epochs is None:  # a schedule written for a longer run: as much of it as can be followed
    e = min(e, MAX_EPOCHS, max(1, MAX_STEPS // spe), *([max(1, MAX_CHAINED // batches)] if len(entries) > 1 else []))
  why = f' (from {source})' if source else ''
  note(
    f'assuming a run of {e} epochs x {plural(batches, "batch")} per epoch{why}; give --epochs and '
    f"--batches-per-epoch to check the run's length."
  )
  return check_run(config, Run(e, batches, n, explicit=False))


# ----------------------------------------------------------------------------- check and plot


def _metrics(args: argparse.Namespace, config, run):
  """The metrics file's per-epoch values, where the scheduler follows them (with notes otherwise)."""
  if not args.metrics:
    return None
  followed = plateau_monitors(config)
  found: dict[str, list[float]] = {}
  wanted = list(followed) or [config.monitor]
  for monitor in wanted:  # a list's plateaus: the columns the file has, the others always improve
    try:
      found[monitor] = read_metrics(args.metrics, monitor)
    except CliError:
      if not found and monitor == wanted[-1]:
        raise
      note(
        f'the metrics file has no values of {monitor!r}: the ReduceLROnPlateau that monitors it is shown with '
        f'{monitor} always improving (the upper bound).'
      )
  if not followed:
    note(f'{scheduler_name(config)} does not follow a metric: the metrics file is not used.')
    return None
  for monitor, values in found.items():
    if len(values) < run.epochs:
      raise CliError(
        f'the metrics file has {len(values)} values of {monitor!r}, but the run has {run.epochs} '
        f'epochs: give one value per epoch.'
      )
    if len(values) > run.epochs:
      note(f'the metrics file has {len(values)} values of {monitor!r}; using the first {run.epochs} (one per epoch).')
  return found if len(scheduler_entries(config)) > 1 else found[config.monitor]


def _sampling_note(curve) -> str:
  if not curve.sampled:
    return ''
  return (
    f'LRs evaluated at {len(curve.steps)} of the {curve.run.steps} optimizer steps: the first of each '
    f'scheduler step (of evenly spaced ones in a long run), evenly spaced steps and the telling points.'
  )


def cmd_check(args: argparse.Namespace) -> int:
  path, config = load(args.config, args.overrides)
  run = dataclasses.replace(
    fit_run(config, args.epochs, args.batches_per_epoch, args.steps_per_epoch), param_dtype=args.param_dtype
  )
  metrics = _metrics(args, config, run)
  warnings = lint(config, run)

  print(f'config: {path}' + (f' with {" ".join(args.overrides)}' if args.overrides else ''))
  error = None
  try:
    text = yaml.safe_dump(resolved(config), sort_keys=False, default_flow_style=None, width=100)
    print('\n'.join('  ' + line for line in text.rstrip().splitlines()))
    per_epoch = (
      plural(run.steps_per_epoch)
      if run.accumulate == 1
      else (
        f'{plural(run.batches_per_epoch, "batch")} ({run.steps_per_epoch} optimizer steps: accumulate_grad_batches '
        f'{run.accumulate}, the last group of an epoch may be partial)'
      )
    )
    print(
      f'run: {run.epochs} epochs x {per_epoch} per epoch = {plural(run.steps, "optimizer step")}'
      + ('' if run.explicit else ' (assumed)')
    )
    curve = simulate(config, run, metrics)
    warnings += check_learning_rates(curve)
  except Exception as e:  # noqa: BLE001 - the warnings first, then the error as one line
    error = e
  for w in warnings:
    warn(w)
  if error is not None:
    raise error
  if curve.plateau and curve.metrics is None:
    greedy = scheduler_name(config) == 'hf.greedy'  # GreedyLR raises the LR on improvements
    what = 'the LR of a metric that always improves (raised towards max_lr)' if greedy else 'the upper bound'
    note(
      f'{scheduler_name(config)} follows the metric {config.monitor!r}: without --metrics the table shows '
      f'{what}' + ('.' if greedy else ' (the metric always improves, so the LR is never cut).')
    )
  if curve.sampled:
    print(_sampling_note(curve))
  print()
  headers, rows = lr_table(curve)
  print_table(headers, rows, title='Learning rate by parameter group (the value used at each optimizer step)')
  print()
  count = plural(len(warnings), 'warning')
  if args.strict and warnings:
    raise CliError(f'{count} with --strict (warnings fail the check).')
  print(f'OK: no errors, {count}.')
  return 0


def cmd_plot(args: argparse.Namespace) -> int:
  path, config = load(args.config, args.overrides)
  run = fit_run(config, args.epochs, args.batches_per_epoch, args.steps_per_epoch)
  metrics = _metrics(args, config, run)
  out_dir = os.path.dirname(os.path.abspath(args.output))
  if not os.path.isdir(out_dir):
    raise CliError(f'cannot write {args.output!r}: the directory {out_dir} does not exist.')
  if os.path.isdir(args.output):
    raise CliError(f'cannot write {args.output!r}: it is a directory.')
  curve = simulate(config, run, metrics)
  for w in lint(config, run) + check_learning_rates(curve):
    warn(w)
  draw(config, curve, path, args.output, log=args.log)
  print(f'wrote {args.output}')
  return 0


# ----------------------------------------------------------------------------- arguments


def parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
  parser = argparse.ArgumentParser(
    prog=PROG,
    description='See a DynVision optimizer/scheduler config before training: its names, its '
    'validity, and the learning rate each parameter group gets when.',
  )
  parser.add_argument('--version', action='version', version=f'{PROG} {__version__}')
  sub = parser.add_subparsers(dest='command', metavar='{list,check,plot}')
  subs = {}
  p = sub.add_parser(
    'list',
    help='every optimizer and scheduler string ID with its keywords and defaults',
    description='Lists every optimizer and scheduler string ID with its keywords, their defaults '
    'and what each accepts, or the shipped patterns.',
  )
  p.add_argument(
    'what',
    nargs='?',
    choices=['optimizers', 'schedulers', 'patterns'],
    help='what to list (default: optimizers and schedulers)',
  )
  subs['list'] = p

  def common(p, run_required: bool):
    p.add_argument('config', metavar='CONFIG', help='a YAML config file, or a shipped pattern name')
    p.add_argument(
      'overrides',
      nargs='*',
      metavar='KEY=VALUE',
      help='snakemake-style overrides, e.g. learning_rate=0.01 '
      'optimizer_kwargs="{momentum:0.9}" scheduler_kwargs.T_max=50',
    )
    length = p.add_mutually_exclusive_group(required=run_required)
    length.add_argument(
      '--batches-per-epoch',
      type=int,
      metavar='B',
      help='training batches per epoch, len(train_loader) (micro-batches with accumulate_grad_batches)',
    )
    length.add_argument(
      '--steps-per-epoch',
      type=int,
      metavar='N',
      help='the same, without accumulation (where batches and optimizer steps are one thing)',
    )
    p.add_argument('--epochs', type=int, required=run_required, metavar='E', help='epochs in the run')
    p.add_argument(
      '--metrics', metavar='FILE', help='per-epoch values of the monitored metric (CSV or JSON), for ReduceLROnPlateau'
    )

  p = sub.add_parser(
    'check',
    help='validate a config, lint it, and tabulate its learning rates',
    description='Validates CONFIG (exit 1 on errors), prints it resolved, warns about traps, '
    "and tabulates each group's LR at telling points of the run.",
  )
  common(p, run_required=False)
  p.add_argument('--strict', action='store_true', help='exit 1 when there is a warning (for CI)')
  p.add_argument(
    '--param-dtype',
    default='float32',
    choices=['float32', 'float64', 'bfloat16', 'float16'],
    help="the parameters' dtype, for the lints that depend on it (default: float32)",
  )
  subs['check'] = p
  p = sub.add_parser(
    'plot',
    help="plot each group's learning rate over the run to a PNG",
    description="Draws each parameter group's learning rate (and cycled momentum) over the run's "
    'optimizer steps to a PNG, from the real transformation.',
  )
  common(p, run_required=True)
  p.add_argument('-o', '--output', required=True, metavar='FILE.png', help='the PNG to write')
  p.add_argument('--log', action='store_true', help='a logarithmic LR axis')
  subs['plot'] = p
  return parser, subs


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {'list': cmd_list, 'check': cmd_check, 'plot': cmd_plot}
