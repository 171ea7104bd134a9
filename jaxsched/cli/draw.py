"""``jaxsched plot``'s figure: each group's LR (and cycled momentum) over a run, with matplotlib.

Touches matplotlib (the Agg backend) and the one PNG it is asked to write. matplotlib is
imported when a plot is drawn, not with the command: ``list`` and ``check`` never need it,
and ``matplotlib.pyplot`` takes about half a second to import.
"""

from __future__ import annotations

import math
import os

import numpy as np

from jaxsched.cli.output import CliError
from jaxsched.optimizers import spec_of
from jaxsched.plan import scheduler_entries
from jaxsched.simulate import SAMPLES, Curve, scheduler_name

MAX_EPOCH_LINES = 60
LINESTYLES = ('-', '--', '-.', ':')


def draw(config, curve: Curve, source: str, output: str, log: bool = False) -> None:
  """Writes ``output`` (a PNG): the LR panel, and a momentum panel where the scheduler cycles it.

  Raises:
    CliError: ``output`` cannot be written.
  """
  import matplotlib  # lazily: see the module's docstring

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  run = curve.run
  panels = 2 if curve.momentum else 1
  fig, axes = plt.subplots(
    panels,
    1,
    sharex=True,
    figsize=(10, 4.5 if panels == 1 else 7),
    gridspec_kw={'height_ratios': [2, 1][:panels]},
    squeeze=False,
  )
  axes = axes[:, 0]
  stride = max(1, math.ceil(run.epochs / MAX_EPOCH_LINES))
  for ax in axes:
    for e in range(stride, run.epochs, stride):
      ax.axvline(e * run.steps_per_epoch, color='0.88', lw=0.6, zorder=0)
  ax = axes[0]
  for i, (group, lr) in enumerate(curve.lrs.items()):
    ax.plot(curve.steps, lr, lw=1.4, ls=LINESTYLES[i % len(LINESTYLES)], label=group, drawstyle='steps-post')
  ax.set_ylabel('learning rate')
  if log and all((v > 0).all() for v in curve.lrs.values()):
    ax.set_yscale('log')
  ax.legend(title='group', loc='best', fontsize='small')
  given = [e.interval for e in scheduler_entries(config)] or [config.scheduler_configs['interval']]
  intervals = ', '.join(f'"{interval}"' for interval in given)
  title = f'{os.path.basename(source)}: {config.optimizer} + {scheduler_name(config)} (interval {intervals})'
  if curve.plateau:
    title += (
      f'\nfollowing {config.monitor} from the metrics file'
      if curve.metrics is not None
      else f'\nupper bound: {config.monitor} always improves (no --metrics given)'
    )
    if curve.metrics is not None:
      twin = ax.twinx()
      epochs = np.unique(np.linspace(0, run.epochs - 1, min(run.epochs, SAMPLES)).round().astype(np.int64))
      twin.plot(
        (epochs + 1) * run.steps_per_epoch - 1, np.asarray(curve.metrics)[epochs], 'o:', color='0.5', ms=3, lw=0.8
      )
      twin.set_ylabel(config.monitor, color='0.4')
  ax.set_title(title, fontsize='medium')
  if curve.momentum:
    m_ax = axes[1]
    for i, (group, m) in enumerate(curve.momentum.items()):
      m_ax.plot(curve.steps, m, lw=1.2, ls=LINESTYLES[i % len(LINESTYLES)], label=group, drawstyle='steps-post')
    m_ax.set_ylabel('beta1' if _has_betas(config.optimizer) else 'momentum')
    m_ax.legend(title='group', loc='best', fontsize='small')
  axes[-1].set_xlabel(
    f'optimizer step ({run.steps_per_epoch} per epoch; grey lines: epoch boundaries'
    + (f', every {stride}' if stride > 1 else '')
    + ')'
  )
  top = axes[0].secondary_xaxis('top', functions=(lambda k: k / run.steps_per_epoch, lambda e: e * run.steps_per_epoch))
  top.set_xlabel('epoch')
  axes[-1].set_xlim(0, max(run.steps - 1, 1))
  fig.tight_layout()
  try:
    fig.savefig(output, format='png', dpi=120)
  except OSError as e:
    raise CliError(f'cannot write {output!r}: {e.strerror or e}') from None
  finally:
    plt.close(fig)


def _has_betas(name: str) -> bool:
  spec = spec_of(name)
  return spec is not None and 'betas' in spec.kwargs and 'momentum' not in spec.kwargs
