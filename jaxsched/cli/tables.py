"""What ``jaxsched check`` tabulates: the resolved config, the telling points of a
:class:`~jaxsched.simulate.Curve` and its LR table, and the learning-rate checks.

Pure functions of a config and a curve: they print nothing.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from jaxsched.cli.output import CliError
from jaxsched.learning_rates import PER_GROUP, group_lists, per_group
from jaxsched.optimizers import resolve, spec_of
from jaxsched.plan import SchedulerEntry, scheduler_entries
from jaxsched.plateau import METRIC_KWARGS
from jaxsched.schedules import SCHEDULES
from jaxsched.simulate import Curve


def resolved(config) -> dict[str, Any]:
  """The config with every default filled in (optimizer and scheduler keywords included,
  each entry's with a ``schedulers`` list)."""
  out = config.to_dict()
  spec = spec_of(config.optimizer)
  if spec is not None:
    lr, kwargs = resolve(spec, config.learning_rate, dict(config.optimizer_kwargs))
    out['learning_rate'] = lr
    out['optimizer_kwargs'] = kwargs
  entries = scheduler_entries(config)
  if len(entries) > 1:
    out['schedulers'] = [
      {'scheduler': e.scheduler, 'scheduler_kwargs': _scheduler_kwargs(e), 'scheduler_configs': e.configs}
      for e in entries
    ]
  elif entries:
    out['scheduler_kwargs'] = _scheduler_kwargs(entries[0])
  return _plain(out)


def _scheduler_kwargs(entry: SchedulerEntry) -> dict[str, Any]:
  """One scheduler's keywords with its defaults filled in."""
  name = entry.scheduler
  given = dict(entry.kwargs)
  if name in SCHEDULES and not entry.is_plateau:
    # Per-group lists (max_lr: [0.1, 0.01], a member's swa_lr) are checked one value at a time by build.
    lists = group_lists(name, given)
    first = per_group(name, given, 0, lists[0]) if lists else given
    checked = {
      k: given.get(k, v) if k in PER_GROUP.get(name, ()) else v for k, v in SCHEDULES[name].resolve(first).items()
    }
    return {k: given[k] if callable(v) or k in ('schedulers',) and k in given else v for k, v in checked.items()}
  if name in METRIC_KWARGS:
    return {k: given.get(k, d) for k, (d, _) in METRIC_KWARGS[name].items()}
  return given


def _plain(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  if callable(x):
    return getattr(x, '__name__', repr(x))
  return x


def telling_points(curve: Curve) -> list[tuple[int, str]]:
  """(optimizer step, label) at the points that tell a schedule apart: start,
  the schedule's own turns (end of warm-up, milestones, restarts, cycle peaks),
  the highest LR evaluated, middle, end, and where a plateau cut the LR (from the
  curve's marks: never where another scheduler moves it). Every one was evaluated."""
  n = curve.run.steps
  points: dict[int, list[str]] = {}

  def add(k: int, label: str) -> None:
    if 0 <= k < n:
      points.setdefault(int(k), []).append(label)

  for k, label in curve.marks:
    add(k, label)
  add(0, 'start')
  first = next(iter(curve.lrs.values()), None)
  if first is not None and len(first):
    peak = int(np.argmax(first))
    if peak > 0 and first[peak] > first[0]:
      add(curve.steps[peak], 'peak')
  add(n // 2, 'middle')
  add(n - 1, 'end')
  return [(k, ', '.join(dict.fromkeys(points[k]))) for k in sorted(points)]


def lr_table(curve: Curve) -> tuple[list[str], list[list[str]]]:
  """Headers and rows: each group's LR (and cycled momentum) at the telling points."""
  groups = list(curve.lrs)
  headers = ['step', 'epoch', 'point'] + [f'lr {g}' for g in groups] + [f'momentum {g}' for g in curve.momentum]
  rows = []
  spe = curve.run.steps_per_epoch
  for k, label in telling_points(curve):
    i = curve.index(k)
    row = [str(k), str(k // spe), label]
    row += [f'{curve.lrs[g][i]:.6g}' for g in groups]
    row += [f'{curve.momentum[g][i]:.6g}' for g in curve.momentum]
    rows.append(row)
  return headers, rows


def check_learning_rates(curve: Curve) -> list[str]:
  """Warnings for negative learning rates among the steps evaluated.

  Raises:
    CliError: a group's learning rate is not finite at an evaluated step (torch
      would go on training with it, and every parameter would become NaN).
  """
  out = []
  spe = curve.run.steps_per_epoch
  for group, lrs in curve.lrs.items():
    bad = np.flatnonzero(~np.isfinite(lrs))
    if bad.size:
      i = int(bad[0])
      k = int(curve.steps[i])
      raise CliError(
        f"the {group!r} group's learning rate is {lrs[i]} at optimizer step {k} (epoch {k // spe}): "
        f"training would turn every parameter into NaN. Check the scheduler's keywords."
      )
    negative = np.flatnonzero(lrs < 0)
    if negative.size:
      i = int(negative[0])
      k = int(curve.steps[i])
      out.append(
        f"the {group!r} group's learning rate is negative ({lrs[i]:.6g}) from optimizer step {k} "
        f'(epoch {k // spe}): the optimizer then climbs the loss.'
      )
  return out
