"""LR schedulers by torch's string IDs: :func:`schedule` and the :data:`SCHEDULES` table.

``schedule(name, learning_rate, **kwargs)(n)`` is the learning rate after n
calls of torch's ``scheduler.step()`` for an optimizer whose lr is
``learning_rate``: torch 2.13's numbers, quirks included, as a pure jnp
function of a traced count (jit, vmap, ``optax.inject_hyperparams``).
"""

from __future__ import annotations

from typing import Any

from jaxsched import _checks
from jaxsched._errors import ConfigError, unknown
from jaxsched.schedules import basic, composite, cosine, cyclic
from jaxsched.schedules._expr import compile_expression
from jaxsched.schedules._registry import Schedule, ScheduleSpec, momentum_schedule

# Each family module contributes its SPECS; the table is keyed by torch's class name.
SCHEDULES: dict[str, ScheduleSpec] = {
    spec.name: spec for module in (basic, cosine, cyclic, composite) for spec in module.SPECS
}

_LEARNING_RATE = _checks.Real()

__all__ = ['SCHEDULES', 'Schedule', 'ScheduleSpec', 'compile_expression', 'schedule']


def schedule(name: str, learning_rate: Any, **kwargs: Any) -> Schedule:
  """The torch scheduler ``name`` as a pure function of the step count.

  Args:
    name: a torch.optim.lr_scheduler class name ("StepLR", "OneCycleLR", ...)
      or "LinearWarmupCosineAnnealingLR" (DynVision's, pl_bolts semantics).
    learning_rate: the optimizer's lr (torch's ``base_lr``); CyclicLR and
      OneCycleLR ignore it, as torch does.
    **kwargs: the scheduler's torch constructor keywords (without optimizer,
      last_epoch, verbose). SequentialLR and ChainedScheduler take
      ``schedulers=[{'scheduler': NAME, 'scheduler_kwargs': {...}}, ...]``;
      LambdaLR / MultiplicativeLR take ``lr_lambda`` as a jnp-traceable callable,
      a number, or an expression string in ``epoch``.

  Returns:
    A :class:`Schedule`: ``sched(n)`` is the lr after n steps (float64 under
    x64, else float32), ``sched.momentum`` the cycled momentum/beta1 or None.

  Raises:
    ConfigError: unknown name or keyword, missing required keyword, wrong type,
      or an input torch cannot run.

  Example:
    >>> sched = schedule('StepLR', 0.1, step_size=30)
    >>> float(sched(30))  # doctest: +ELLIPSIS
    0.01...
  """
  if not isinstance(name, str):
    raise ConfigError(f'scheduler={name!r} must be a string ID such as "StepLR".')
  spec = SCHEDULES.get(name)
  if spec is None:
    if name == 'ReduceLROnPlateau':
      raise ConfigError('ReduceLROnPlateau depends on a metric, not the step count: it is not a schedule.')
    raise unknown('scheduler', name, SCHEDULES)
  lr = _LEARNING_RATE(f'{name}: learning_rate', learning_rate)
  checked = spec.resolve(kwargs)
  for key, value in checked.items():
    _checks.representable_count(f'{name}: {key}', value)
  curve = spec.builder(lr, **checked)
  return Schedule(name=name, curve=curve, momentum=momentum_schedule(curve), max_count=curve.horizon)
