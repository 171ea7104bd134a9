"""Lightning's training loop, as rules: when the optimizer and each scheduler step.

Lightning 2.x (``loops/training_epoch_loop.py``, ``loops/optimization/automatic.py``)
runs an epoch of B micro-batches (``trainer.num_training_batches``, ``len(train_loader)``),
``batch_idx`` 0 to B - 1, with N = ``accumulate_grad_batches``:

* the optimizer steps after micro-batch ``batch_idx`` unless ``_should_accumulate()``:
  when ``(batch_idx + 1) % N == 0`` (``_accumulated_batches_reached``) or on the
  epoch's last micro-batch (``_num_ready_batches_reached``), so an epoch has
  ``ceil(B / N)`` optimizer steps (``Trainer.estimated_stepping_batches``) and
  every epoch starts a new group (:func:`steps_after`, :func:`optimizer_steps_per_epoch`);
* ``update_lr_schedulers('step')`` runs after each optimizer step and
  ``_update_learning_rates`` steps a scheduler of interval "step" when
  ``(batch_idx + 1) % frequency == 0``; ``update_lr_schedulers('epoch')`` runs at
  the end of each epoch and steps a scheduler of interval "epoch" when
  ``(current_epoch + 1) % frequency == 0`` (:func:`scheduler_steps`).

A ReduceLROnPlateau moves only when :func:`jaxsched.report` is called: once per
epoch with interval "epoch", once per micro-batch with interval "step"
(:func:`reports_per_epoch`, :func:`reports_before`).

The rules of a step or micro-batch index use arithmetic operators only, so the index
may be a Python int, a numpy array (the command line's simulation, the lints) or a
traced ``jax.Array`` (the transformation's ``update``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from jaxsched import _checks
from jaxsched._errors import ConfigError

if TYPE_CHECKING:  # for annotations only: config imports averaging, which steps by these rules
  from jaxsched.config import Config
  from jaxsched.plan import SchedulerEntry


def epoch_batches(config: Config, batches: int | None, steps: int | None) -> int | None:
  """The epoch's micro-batch count (Lightning's ``num_training_batches``) from
  build()'s ``batches_per_epoch`` or, without accumulation, ``steps_per_epoch``.

  Raises:
    ConfigError: both given, ``steps_per_epoch`` with accumulate_grad_batches > 1
      (optimizer steps do not tell where an epoch ends), none with it, or a value
      that is not a positive integer.
  """
  n = config.accumulate_grad_batches
  if batches is not None and steps is not None:
    raise ConfigError(
      f'give batches_per_epoch (micro-batches, len(train_loader)) or steps_per_epoch, not both '
      f'(got {batches} and {steps}).'
    )
  if steps is not None and n > 1:
    raise ConfigError(
      f'steps_per_epoch={steps!r} counts optimizer steps, but with accumulate_grad_batches={n} Lightning also '
      f"steps the optimizer on each epoch's last batch, so the epoch's length must be known in micro-batches: "
      f'give batches_per_epoch=len(train_loader) instead (optimizer steps per epoch are then '
      f'ceil(batches_per_epoch / {n})).'
    )
  value, key = (steps, 'steps_per_epoch') if steps is not None else (batches, 'batches_per_epoch')
  if value is None:
    if n > 1:
      raise ConfigError(
        f'accumulate_grad_batches={n} needs batches_per_epoch=len(train_loader): Lightning steps '
        f"the optimizer every {n} micro-batches and on each epoch's last one, and starts a new "
        f'group each epoch.'
      )
    return None
  value = _checks.Integer(1)(key, value)  # numpy integers too
  _checks.representable_count(key, value)
  return value


def optimizer_steps_per_epoch(batches_per_epoch: int, accumulate: int) -> int:
  """Optimizer steps in an epoch of ``batches_per_epoch`` micro-batches: ceil(B / N)
  (Lightning's ``Trainer.estimated_stepping_batches`` per epoch)."""
  return -(-batches_per_epoch // accumulate)


def steps_after(batch_idx: Any, accumulate: int, batches_per_epoch: int | None) -> Any:
  """Whether the optimizer steps after micro-batch ``batch_idx`` (0-based, within the
  epoch): Lightning's ``not _should_accumulate()``, every ``accumulate``-th one and the
  epoch's last one. ``batches_per_epoch`` None: groups of N run across epochs, as
  Lightning does for a loader without a length."""
  done = batch_idx + 1
  emit = done % accumulate == 0
  return emit if batches_per_epoch is None else emit | (done == batches_per_epoch)


def scheduler_steps(
  config: Config, batches_per_epoch: int | None, entry: SchedulerEntry | None = None
) -> Callable[[Any], Any]:
  """Scheduler steps taken before optimizer step k, under Lightning 2.x's rules.

  With N = accumulate_grad_batches and B micro-batches per epoch, an epoch has
  S = ceil(B / N) optimizer steps. interval "epoch": ``(k // S) // frequency``.
  interval "step": Lightning steps the scheduler after an optimizer step whose
  last micro-batch has ``(batch_idx + 1) % frequency == 0``, batch_idx counted
  in micro-batches within the epoch.

  Args:
    config: gives accumulate_grad_batches, and by default the interval and
      frequency (its scheduler_configs) and the scheduler's name for messages.
    batches_per_epoch: B, or None where it is not needed.
    entry: one scheduler of the plan (:class:`jaxsched.plan.SchedulerEntry`), whose
      interval, frequency and name are used instead of the config's.
  """
  if entry is None:
    interval, frequency = config.scheduler_configs['interval'], config.scheduler_configs['frequency']
    name = config.scheduler
  else:
    interval, frequency, name = entry.interval, entry.frequency, entry.scheduler
  if interval == 'step' and frequency == 1:
    return lambda k: k
  if batches_per_epoch is None:
    why = (
      'interval is "epoch"'
      if interval == 'epoch'
      else f'interval "step" with frequency {frequency} restarts its count each epoch'
    )
    raise ConfigError(
      f'build() needs batches_per_epoch (len(train_loader)): the {name} scheduler is '
      f'stepped per epoch ({why}), and the optimizer counts batches.'
    )
  n = config.accumulate_grad_batches
  per_epoch = optimizer_steps_per_epoch(batches_per_epoch, n)
  if interval == 'epoch':
    return lambda k: (k // per_epoch) // frequency
  # step j of an epoch ends at micro-batch (j + 1) n - 1, the epoch's last one at batches_per_epoch - 1
  period = frequency // math.gcd(n, frequency)
  stepped = (batches_per_epoch // n) // period + int(batches_per_epoch % n != 0 and batches_per_epoch % frequency == 0)
  return lambda k: (k // per_epoch) * stepped + (k % per_epoch) // period


def reports_per_epoch(interval: str, batches_per_epoch: int) -> int:
  """Calls of :func:`jaxsched.report` in an epoch: one, or one per micro-batch with interval "step"."""
  return batches_per_epoch if interval == 'step' else 1


def reports_before(k: Any, interval: str, batches_per_epoch: int, accumulate: int) -> Any:
  """Reports made before optimizer step k: the epochs before it, or with interval "step"
  the micro-batches before the one that completes step k's group (the (j + 1)-th group
  of an epoch ends at micro-batch (j + 1) N - 1, its last one at B - 1)."""
  per_epoch = optimizer_steps_per_epoch(batches_per_epoch, accumulate)
  if interval != 'step':
    return k // per_epoch
  j = k % per_epoch
  last = (j + 1) * accumulate - 1 - (j == per_epoch - 1) * (per_epoch * accumulate - batches_per_epoch)
  return (k // per_epoch) * batches_per_epoch + last
