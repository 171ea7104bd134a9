"""LR schedulers by torch's string IDs: :func:`schedule` and the :data:`SCHEDULES` table.

``schedule(name, learning_rate, **kwargs)(n)`` is the learning rate after n
calls of torch's ``scheduler.step()`` for an optimizer whose lr is
``learning_rate``: torch 2.13's numbers, quirks included, as a pure jnp
function of a traced count (jit, vmap, ``optax.inject_hyperparams``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxsched import _checks
from jaxsched._errors import ConfigError, unknown
from jaxsched.schedules import _numeric, basic, composite, cosine, cyclic, hf, swalr, timm_schedules
from jaxsched.schedules._expr import compile_expression
from jaxsched.schedules._registry import METRIC_DRIVEN, Schedule, ScheduleSpec, momentum_schedule

# Each family module contributes its SPECS; the table is keyed by torch's class name.
SCHEDULES: dict[str, ScheduleSpec] = {
  spec.name: spec for module in (basic, cosine, cyclic, composite, swalr, hf, timm_schedules) for spec in module.SPECS
}
"""Every scheduler that is a function of the step count, keyed by torch's class name (the string ID),
``hf.<name>`` for Hugging Face transformers' schedules or ``timm.<name>`` for timm's: its
:class:`ScheduleSpec` (keywords, defaults and checks). ReduceLROnPlateau, which depends on a metric,
is :func:`jaxsched.reduce_on_plateau`."""

_LEARNING_RATE = _checks.Real()
_FUNCTIONS = ('lr_lambda', 'scale_fn')  # the keywords that hold the user's own function

__all__ = ['SCHEDULES', 'Schedule', 'ScheduleSpec', 'compile_expression', 'schedule']


def schedule(name: str, learning_rate: Any, *, optimizer_lr: float | None = None, **kwargs: Any) -> Schedule:
  """The torch scheduler ``name`` as a pure function of the step count.

  Args:
    name: a torch.optim.lr_scheduler class name ("StepLR", "OneCycleLR", ...)
      or "LinearWarmupCosineAnnealingLR" (DynVision's, pl_bolts semantics).
    learning_rate: the optimizer's lr (torch's ``base_lr``); CyclicLR and
      OneCycleLR ignore it, as torch does.
    optimizer_lr: for a param group whose lr differs from the optimizer's own
      (``optimizer.defaults['lr']``), that lr: HF's ``hf.polynomial`` and
      ``hf.*_with_min_lr`` divide by it (``ScheduleSpec.reads_optimizer_lr``); the
      other schedulers ignore it. Defaults to ``learning_rate``.
    **kwargs: the scheduler's torch constructor keywords (without optimizer,
      last_epoch, verbose). SequentialLR and ChainedScheduler take
      ``schedulers=[{'scheduler': NAME, 'scheduler_kwargs': {...}}, ...]``;
      LambdaLR / MultiplicativeLR take ``lr_lambda`` as a jnp-traceable callable,
      a number, or an expression string in ``epoch``.

  Returns:
    Schedule: ``sched(n)`` is the lr after n steps (float64 under
    x64, else float32), ``sched.momentum`` the cycled momentum/beta1 or None.

  Raises:
    ConfigError: unknown name or keyword, missing required keyword, wrong type,
      an input torch cannot run, or a learning rate (or momentum) at step 0
      that is not finite, or cannot be computed.

  Example:
    >>> sched = schedule('StepLR', 0.1, step_size=30)
    >>> float(sched(30))  # doctest: +ELLIPSIS
    0.01...
  """
  if not isinstance(name, str):
    raise ConfigError(f'scheduler={name!r} must be a string ID such as "StepLR".')
  spec = SCHEDULES.get(name)
  if spec is None:
    metric_driven = METRIC_DRIVEN.get(hf.ALIASES.get(name, name))
    if metric_driven is not None:
      raise ConfigError(
        f'{name} ({metric_driven}) depends on a metric, not the step count: it is not a schedule '
        '(jaxsched.plateau.metric_scheduler builds it).'
      )
    if name in hf.REFUSED:
      raise ConfigError(hf.REFUSED[name])
    raise unknown('scheduler', name, SCHEDULES)
  lr = _LEARNING_RATE(f'{name}: learning_rate', learning_rate)
  checked = spec.resolve(kwargs)
  for key, value in checked.items():
    _checks.representable_count(f'{name}: {key}', value)
  if spec.reads_optimizer_lr and optimizer_lr is not None:
    checked['optimizer_lr'] = _LEARNING_RATE(f'{name}: optimizer_lr', optimizer_lr)
  curve = spec.builder(lr, **checked)
  sched = Schedule(name=name, curve=curve, momentum=momentum_schedule(curve), max_count=curve.horizon)
  _check_start(sched, dict(learning_rate=learning_rate, **kwargs))
  return sched


def _check_start(sched: Schedule, given: dict[str, Any]) -> None:
  """ConfigError unless the lr (and cycled momentum) at step 0 are finite.

  torch computes the first lr when it builds the scheduler, in Python, and
  raises where jnp gives inf or nan (LambdaLR's ``lr_lambda(0)`` for
  ``1/epoch`` or ``log(epoch)``, CyclicLR's ``scale_fn(0)``). So step 0 is
  computed here, eagerly, and a callable must also trace.
  """
  functions = dict(_functions(given))
  culprit = ', '.join(f'{k}={v!r}' for k, v in (functions or given).items())
  curves: dict[str, Callable[[Any], Any]] = {'learning rate': sched}
  if sched.momentum is not None:
    curves['momentum'] = sched.momentum
  try:
    if any(callable(f) for f in functions.values()):
      for fn in curves.values():
        jax.eval_shape(fn, 0)  # fails for a callable that is not jnp-traceable
    with jax.ensure_compile_time_eval(), jax.disable_jit():  # op by op: no loop compiled
      values = {what: float(fn(0)) for what, fn in curves.items()}
  except Exception as e:  # raised by the user's function (torch raises there too)
    if not functions:
      raise
    detail = str(e).splitlines()[0] if str(e) else ''
    raise ConfigError(
      f'{sched.name}: {culprit} fails at step 0 ({type(e).__name__}: {detail}); it must be '
      f'a jnp-traceable function of the step, finite at step 0.'
    ) from None
  dtype = _numeric.float_dtype()
  for what, value in values.items():
    if not math.isfinite(value):
      raise ConfigError(
        f'{sched.name}: {culprit} gives a {what} of {value} at step 0 ({dtype.name}, '
        f'finite up to {jnp.finfo(dtype).max:.3g}); it must be finite.'
      )


def _functions(kwargs: dict[str, Any], prefix: str = ''):
  """``(path, value)`` of each lr_lambda / scale_fn in kwargs, members' included."""
  for key, value in kwargs.items():
    if key in _FUNCTIONS and value is not None:
      yield prefix + key, value
    elif key == 'schedulers':
      for i, member in enumerate(value):
        yield from _functions(member.get('scheduler_kwargs') or {}, f'{prefix}schedulers[{i}].')
