"""The scheduler table's types: :class:`ScheduleSpec` (data), :class:`Curve`
(what a builder returns) and :class:`Schedule` (what users get).

A spec is torch's class name, its constructor keywords (minus ``optimizer``,
``last_epoch`` and ``verbose``) with defaults and checks, and a builder that
turns the checked values into a :class:`Curve`. :func:`jaxsched.schedule`
reads the table; the family modules (``basic.py``, ``cosine.py``,
``cyclic.py``, ``composite.py``) fill it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax

from jaxsched import _checks
from jaxsched._errors import ConfigError, unknown
from jaxsched.schedules import _numeric


class _Required:
  def __repr__(self) -> str:
    return 'REQUIRED'


REQUIRED = _Required()

METRIC_DRIVEN = {
  'ReduceLROnPlateau': "torch's ReduceLROnPlateau",
  'timm.plateau': "timm's PlateauLRScheduler",
  'hf.greedy': "transformers' GreedyLR",
}
"""The schedulers a metric drives, not the step count (:func:`jaxsched.plateau.metric_scheduler`), and their classes."""

Fn = Callable[[jax.Array], jax.Array]
Map = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Curve:
  """A built scheduler, as the composites need it. Counts are integer arrays
  already cast by :func:`_numeric.as_count`.

  Attributes:
    value: the lr after n ``step()`` calls of the scheduler on its own.
    kind: how torch's chainable ``step()`` acts on the optimizer's current lr:
      'factor' (multiplies it: ``value(n) == lr0 * factor(n)``), 'absolute'
      (overwrites it) or 'affine' (anything else: ``a * lr + b``).
    step: the chainable map of step k as ``(a, b)``, ``lr <- a * lr + b``;
      k = 0 is the map applied at construction.
    factor: for kind 'factor', the cumulative factor after n steps.
    restart: the lr r steps after SequentialLR restarted this scheduler at a
      milestone (``scheduler._update_lr(0)``), given the lr just before the
      restart; None when that equals ``value(r)``.
    restart_error: why torch cannot restart this scheduler at a milestone
      (what it raises there), or None.
    first: the map of step 0 when it is not torch's initial step: SequentialLR
      starting a ChainedScheduler member steps the chain's members at
      ``last_epoch`` 0 outside ``_initial_mode``; None when that is ``step(0)``.
    first_error: why torch raises in that step, or None.
    momentum: the momentum / beta1 torch writes after n steps, or None.
    horizon: the largest n torch can step to, or None when unbounded.
  """

  value: Fn
  kind: str
  step: Map
  factor: Fn | None = None
  restart: Callable[[jax.Array, jax.Array], jax.Array] | None = None
  restart_error: str | None = None
  first: Map | None = None
  first_error: str | None = None
  momentum: Fn | None = None
  horizon: int | None = None


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
  """How one torch.optim.lr_scheduler class maps to a closed form.

  Attributes:
    name: torch's class name, the string ID ("StepLR").
    builder: ``builder(lr, **checked_kwargs) -> Curve``.
    kwargs: torch's constructor keywords mapped to ``(default, check)``;
      ``REQUIRED`` marks a keyword without default.
    cross_check: optional check of the whole checked dict (rules between
      keywords, inputs torch cannot run), raising ConfigError.
    default_interval: the Lightning ``interval`` a config gets when its
      scheduler_configs sets none: 'epoch' (the reference page's default) for
      torch's schedulers; 'step' for a library that steps its scheduler after
      every optimizer step (Hugging Face's Trainer).
    reads_optimizer_lr: whether the scheduler reads the optimizer's own lr
      (``optimizer.defaults['lr']``) besides each param group's: HF's polynomial and
      min-lr schedules divide by it. The builder then takes ``optimizer_lr``.
  """

  name: str
  builder: Callable[..., Curve]
  kwargs: Mapping[str, tuple[Any, _checks.Check]]
  cross_check: Callable[[dict[str, Any]], None] | None = None
  default_interval: str = 'epoch'
  reads_optimizer_lr: bool = False

  @property
  def doc(self) -> str:
    doc = (self.builder.__doc__ or '').strip()
    return doc.splitlines()[0] if doc else ''

  def resolve(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Checks ``kwargs`` against the table and fills defaults."""
    for key in kwargs:
      if key not in self.kwargs:
        raise unknown(f'keyword for {self.name}', key, self.kwargs)
    checked = {}
    for key, (default, check) in self.kwargs.items():
      if key not in kwargs and default is REQUIRED:
        raise ConfigError(f'{self.name}: missing required keyword {key!r} ({check}).')
      checked[key] = check(f'{self.name}: {key}', kwargs.get(key, default))
    if self.cross_check is not None:
      self.cross_check(checked)
    return checked


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
  """A torch scheduler as a pure function of the step count.

  ``sched(n)`` is the learning rate after n calls of torch's
  ``scheduler.step()`` (``sched(0)``: right after construction). It is pure
  jnp, so it works under jit and vmap and wherever Optax takes a schedule.

  Attributes:
    name: torch's class name.
    curve: the built closed form (internal).
    momentum: None, or a callable of the count giving the momentum (SGD,
      RMSprop) or beta1 (Adam family) that torch's ``cycle_momentum`` writes
      into the optimizer after n steps; pass it as the optimizer's
      ``momentum`` / ``b1`` schedule.
    max_count: the largest count torch can step to (OneCycleLR: total_steps;
      it raises beyond), or None. Past it the value holds.
  """

  name: str
  curve: Curve = dataclasses.field(repr=False)
  momentum: Callable[[Any], jax.Array] | None = dataclasses.field(default=None, repr=False)
  max_count: int | None = None

  def __call__(self, count: Any) -> jax.Array:
    return self.curve.value(_numeric.as_count(count))

  def check_steps(self, steps: int) -> None:
    """ConfigError when a run of ``steps`` scheduler steps goes past what torch
    can run (``max_count``): call it wherever the run's length is known."""
    if self.max_count is not None and steps > self.max_count:
      raise ConfigError(
        f'{self.name}: the run steps the scheduler {steps} times, but torch raises after '
        f'{self.max_count} steps (total_steps={self.max_count}); raise total_steps or '
        f'epochs*steps_per_epoch.'
      )


def momentum_schedule(curve: Curve) -> Callable[[Any], jax.Array] | None:
  if curve.momentum is None:
    return None
  fn = curve.momentum

  def momentum(count: Any) -> jax.Array:
    return fn(_numeric.as_count(count))

  return momentum
