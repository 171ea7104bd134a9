"""Lightning's learning-rate finder (``Tuner.lr_find``): a range test from the given weights.

Lightning 2.6's ``pytorch_lightning.tuner.lr_finder._lr_find`` trains the model for
``num_training`` optimizer steps (``max_steps``, over as many epochs as that takes) while
``_ExponentialLR`` or ``_LinearLR`` moves the LR of every parameter group from ``min_lr``
towards ``max_lr`` (``_LRFinder._exchange_scheduler``, which drops the configured
schedulers); ``_LRCallback`` records the LR of each step and its loss, smoothed, and
stops when the smoothed loss exceeds ``early_stop_threshold`` times the best one.
``_LRFinder.suggestion`` proposes the LR where the smoothed loss falls fastest. Lightning
then restores the weights and the optimizer state from a checkpoint; :func:`lr_find`
leaves ``params`` alone and builds its own optimizer state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sized
from typing import Any, Callable, Iterable

import jax
import numpy as np
import optax

from jaxsched import _checks
from jaxsched._errors import ConfigError, unknown
from jaxsched.build import build, load_config, set_lr
from jaxsched.config import Config
from jaxsched.optimizers import spec_of
from jaxsched.stepping import steps_after

MODES = ('exponential', 'linear')
BETA = 0.98  # _LRCallback's smoothing of the loss


@dataclasses.dataclass
class LRFinderResult:
  """What Lightning's ``_LRFinder`` holds after ``lr_find``.

  Attributes:
    mode: 'exponential' or 'linear'.
    lr_min, lr_max: the range tested.
    num_training: the optimizer steps asked for.
    results: ``{'lr': [...], 'loss': [...]}``, one entry per recorded step: its LR and
      the smoothed loss (``_LRCallback``); shorter than ``num_training`` when the test
      stopped early or when accumulation stepped on an epoch's last micro-batch
      (such steps are not recorded).
  """

  mode: str
  lr_min: float
  lr_max: float
  num_training: int
  results: dict[str, list[float]]

  def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> float | None:
    """The LR of the steepest descent of the smoothed loss, as ``_LRFinder.suggestion``.

    The gradient of the losses with respect to the LRs (``torch.gradient``, as
    ``np.gradient``: second order inside, first order at the ends), over the entries
    ``[skip_begin:-skip_end]`` whose loss is finite, computed in float32 as Lightning's
    ``torch.tensor`` of the lists under torch's default dtype; the LR of its first
    minimum. None when fewer than 2 points are left (Lightning logs an error).
    """
    index = self._optimal_index(skip_begin, skip_end)
    return None if index is None else self.results['lr'][index]

  def _optimal_index(self, skip_begin: int, skip_end: int) -> int | None:
    index = np.arange(len(self.results['loss']))[skip_begin:-skip_end]
    losses = np.asarray(self.results['loss'][skip_begin:-skip_end], np.float32)
    lrs = np.asarray(self.results['lr'][skip_begin:-skip_end], np.float32)
    finite = np.isfinite(losses)
    if finite.sum() < 2:
      return None
    gradients = np.gradient(losses[finite], lrs[finite])
    return int(index[finite][np.argmin(gradients)])

  def plot(self, suggest: bool = True, ax: Any = None) -> Any:
    """The smoothed loss against the LR (a log axis in exponential mode), the suggestion
    as a red dot, as ``_LRFinder.plot``; on ``ax``, or a new matplotlib ``Figure``.

    Returns:
      The figure (``fig.savefig(path)`` writes it).
    """
    if ax is None:
      from matplotlib.figure import Figure  # lazily: matplotlib is needed only to draw

      fig = Figure()
      ax = fig.subplots()
    else:
      fig = ax.figure
    lrs, losses = self.results['lr'], self.results['loss']
    ax.plot(lrs, losses)
    if self.mode == 'exponential':
      ax.set_xscale('log')
    ax.set_xlabel('Learning rate')
    ax.set_ylabel('Loss')
    if suggest and (index := self._optimal_index(10, 1)):  # Lightning's `if self._optimal_idx:`
      ax.plot(lrs[index], losses[index], markersize=10, marker='o', color='red')
    return fig


def range_lr(mode: str, min_lr: float, max_lr: float, num_training: int, step: int) -> float:
  """The LR of optimizer step ``step`` (from 0): ``_ExponentialLR`` / ``_LinearLR.get_lr``
  at ``last_epoch=step``, ``min_lr`` at step 0, then r = (step + 1) / num_training (its
  first step already moves by 2 / num_training; the last, num_training - 1, is max_lr)."""
  if step == 0:
    return min_lr
  r = (step + 1) / num_training
  if mode == 'linear':
    return min_lr + r * (max_lr - min_lr)
  return min_lr * (max_lr / min_lr) ** r


def lr_find(
  loss_fn: Callable[[Any, Any], Any],
  params: Any,
  batches: Iterable[Any],
  config: Any,
  *,
  min_lr: float = 1e-8,
  max_lr: float = 1,
  num_training: int = 100,
  mode: str = 'exponential',
  early_stop_threshold: float | None = 4.0,
) -> LRFinderResult:
  """Lightning's ``Tuner(trainer).lr_find(model, ...)``: a range test of the config's optimizer.

  The optimizer is :func:`jaxsched.build`'s for the config (its parameter groups,
  per-group keywords, clipping and ``accumulate_grad_batches`` apply) with every group's
  LR set to the range test's, as ``_LRFinder._exchange_scheduler`` sets each
  ``param_group['lr']`` (multipliers and ``lr_factor`` no longer apply) and replaces the
  schedulers. Lightning runs only its ``_LRCallback``, so ``ema``, ``swa`` and
  ``skip_nonfinite`` (a callback in Lightning) are off. Each optimizer step k uses
  :func:`range_lr`; the test runs ``num_training`` optimizer steps from a fresh
  optimizer state, iterating ``batches`` again for each epoch, and stops early when
  the smoothed loss exceeds ``early_stop_threshold`` times the best one (after step 1).

  ``_LRCallback`` records the LR and the loss of micro-batches with
  ``(batch_idx + 1) % accumulate_grad_batches == 0`` only (the loss Lightning divides by N),
  smoothed as ``avg = 0.98 avg + 0.02 loss``, ``avg / (1 - 0.98 ** (global_step + 1))``
  with ``global_step`` counting every optimizer step, the one just taken included.

  To train with the suggestion, as ``update_attr=True`` sets the module's ``lr``:
  ``jaxsched.load_config(config, overrides=[f'learning_rate={lr}'])``.

  Args:
    loss_fn: ``loss_fn(params, batch)``, a scalar; traced once, in one jit-compiled step.
    params: the starting weights (left unchanged).
    batches: the training batches, an epoch's worth; iterated again for each epoch
      while steps remain (an iterator that is used up ends the test). With
      ``accumulate_grad_batches`` > 1 it needs a ``len()``, where the epoch ends.
    config: a :class:`jaxsched.Config` or anything :func:`jaxsched.load_config` takes.
    min_lr: the LR of the first step (> 0 in exponential mode).
    max_lr: the LR of step ``num_training - 1``.
    num_training: optimizer steps.
    mode: 'exponential' or 'linear' (in any case, as Lightning's ``LearningRateFinder``).
    early_stop_threshold: None to run every step.

  Raises:
    ConfigError: a bad argument, naming it; a bad config; an optimizer that needs a
      closure (LBFGS).
  """
  mode = _mode(mode)
  min_lr = _checks.Real(0.0, lo_open=mode == 'exponential')('min_lr', min_lr)
  max_lr = _checks.Real(min_lr, lo_open=True)('max_lr', max_lr)
  num_training = _checks.COUNT('num_training', num_training)
  try:
    threshold = _checks.Optional(_checks.POSITIVE)('early_stop_threshold', early_stop_threshold)
  except ConfigError as e:
    raise ConfigError(f'{str(e).rstrip(".")}, or None to run every step.') from None
  config = range_config(config if isinstance(config, Config) else load_config(config), min_lr)
  if (spec := spec_of(config.optimizer)) is not None and spec.closure:
    raise ConfigError(
      f"optimizer={config.optimizer!r}: lr_find records each step's loss, and Lightning records the loss of the "
      f"closure's last evaluation inside {config.optimizer}.step, which the transformation's update does not "
      f'give back. Run the range test with a closure-free optimizer.'
    )
  n = config.accumulate_grad_batches
  per_epoch = len(batches) if isinstance(batches, Sized) else None
  if per_epoch == 0:
    raise ConfigError('batches is empty: the range test needs at least one training batch.')
  if n > 1 and per_epoch is None:
    raise ConfigError(
      f'batches={_checks.shown(batches)} has no len(), but accumulate_grad_batches={n} needs it: Lightning '
      f"also steps the optimizer on each epoch's last micro-batch. Give a list or another sized iterable."
    )
  tx = build(config, params, batches_per_epoch=per_epoch)

  @jax.jit
  def train_step(params, opt_state, batch, lr):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, set_lr(opt_state, lr), params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = tx.init(params)
  lrs: list[float] = []
  losses: list[float] = []
  avg_loss = best_loss = 0.0
  steps = 0  # trainer.global_step, and the range scheduler's last_epoch
  while steps < num_training:
    seen = False
    for batch_idx, batch in enumerate(batches):
      seen = True
      lr = range_lr(mode, min_lr, max_lr, num_training, steps)
      params, opt_state, loss = train_step(params, opt_state, batch, lr)
      steps += bool(steps_after(batch_idx, n, per_epoch))
      if steps_after(batch_idx, n, None):  # _LRCallback's (batch_idx + 1) % N == 0
        lrs.append(lr)
        avg_loss = BETA * avg_loss + (1 - BETA) * (float(loss) / n)
        smoothed = avg_loss / (1 - BETA ** (steps + 1))
        diverged = threshold is not None and steps > 1 and smoothed > threshold * best_loss
        if smoothed < best_loss or steps == 1:
          best_loss = smoothed
        losses.append(smoothed)
        if diverged:
          return LRFinderResult(mode, min_lr, max_lr, num_training, {'lr': lrs, 'loss': losses})
      if steps >= num_training:
        break
    if not seen:
      break
  return LRFinderResult(mode, min_lr, max_lr, num_training, {'lr': lrs, 'loss': losses})


def range_config(config: Config, min_lr: float) -> Config:
  """The config as Lightning's range test trains it: no schedulers, every group at
  ``min_lr`` (``_exchange_scheduler``), no ``ema``, ``swa`` or ``skip_nonfinite``
  (callbacks, which ``lr_find`` replaces by its own)."""
  data = config.to_dict()
  data.update(
    scheduler=None,
    scheduler_kwargs={},
    schedulers=None,
    learning_rate=min_lr,
    recurrent_learning_rate_multiplier=1.0,
    lr_parameter_groups={k: {**v, 'lr_factor': 1.0} for k, v in data['lr_parameter_groups'].items()},
    ema=None,
    swa=None,
    skip_nonfinite=False,
  )
  return load_config(data)


def _mode(mode: Any) -> str:
  if not isinstance(mode, str) or mode.lower() not in MODES:
    raise unknown('mode', mode, MODES)
  return mode.lower()
