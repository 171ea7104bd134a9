"""The optimizer table: one :class:`OptimizerSpec` per torch.optim class.

A spec is data: torch's class name, its constructor keywords with their
defaults and checks, a factory that builds the Optax transformation from the
checked values, and the facts the rest of jaxsched needs about the optimizer
(whether its step is linear in the LR, which keywords torch reads from the
constructor only, how its state is named in torch's ``state_dict``, ...).
:func:`jaxsched.optimizer` and the other consumers read the table; family
modules (``sgd.py``, ``adam.py``, ...) fill it, so adding an optimizer touches
its own module and the list in ``optimizers/__init__.py``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

import optax

from jaxsched import _checks
from jaxsched._errors import ConfigError

if TYPE_CHECKING:  # jaxsched.interop imports the optimizers
  from jaxsched.interop.layouts import Layout

# torch implementation switches: accepted (DynVision's default config passes
# ``fused: False``) and ignored, since XLA compiles one implementation.
IMPLEMENTATION_FLAGS = ('foreach', 'fused', 'capturable', 'differentiable')

# The learning-rate check of most optimizers: torch rejects lr < 0.
LEARNING_RATE = _checks.Schedulable(_checks.NON_NEGATIVE)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """How one torch.optim class maps to an Optax transformation.

  Attributes:
    name: torch's class name, the string ID ("Adam").
    factory: ``factory(learning_rate=..., **kwargs)`` returning a
      GradientTransformation. It receives every key of ``kwargs`` below after
      checking, with ``betas`` split into ``b1`` and ``b2`` so that beta1 can
      be scheduled; float values arrive as traced scalars (they live in the
      optimizer state), everything else as Python values.
    lr: the learning rate used when none is given (torch's default, or the
      reference page's where it lists one); None where the default is no
      learning rate (timm's Adafactor: its relative step).
    kwargs: torch's constructor keywords (without ``lr``) mapped to
      ``(default, check)``.
    switchable: float keywords whose term is dropped from the computation when
      their value is exactly 0 (the factory then receives None), as torch
      skips ``weight_decay=0`` or ``momentum=0``. A term given as a schedule
      is always kept.
    cross_check: optional check of the whole checked keyword dict, for rules
      between keywords (nesterov needs momentum), raising ConfigError.
    lr_check: the learning rate's check (torch rejects lr < 0; SparseAdam lr <= 0).
    complex_params: whether torch accepts complex parameters, optimizing their
      real view (``torch.view_as_real``: real and imaginary parts as two reals);
      if not (Adafactor, Muon, SparseAdam raise), ``init`` raises ConfigError
      for them. See :mod:`jaxsched.optimizers._complex`.
    lr_linear: whether the step is -lr times a direction that does not depend
      on lr (decoupled decay included): param groups that differ only in their
      LR then share one optimizer for the direction, each scaling it by its own
      LR (:func:`jaxsched.build`). Not so for Adafactor (lr is a cap), ASGD (eta
      depends on lr), Rprop (lr seeds the step sizes), LBFGS (line search).
    constructor_only: keywords torch reads from the constructor only, so that a
      param group's own value has no effect (torch.optim.Adagrad fills every
      accumulator from its constructor's ``initial_accumulator_value``);
      jaxsched drops them from ``lr_parameter_groups`` and the lints say so.
    jax_only: jaxsched's own keywords, which the torch class does not take
      (:func:`jaxsched.torch_optimizer` leaves them out).
    groups: whether torch accepts several param groups (torch.optim.LBFGS
      raises for per-parameter options); see :meth:`check_groups`.
    torch_state: state class -> {field: torch's per-parameter state key}, for
      each state class of the optimizer (:func:`jaxsched.from_torch` and
      :func:`jaxsched.to_torch`). A state's ``count`` is torch's ``step``; an
      empty mapping of fields means the state is converted by its own code
      (Adafactor's factored moments, LBFGS's one state for all parameters:
      :mod:`jaxsched.interop.converters`).
      Empty: no torch.optim counterpart.
    torch_scalars: the ``(state class, field)`` pairs of ``torch_state`` that
      hold one number for all of a state's parameters where torch keeps one per
      parameter (ASGD's eta and mu, NAdam's mu_product).
    torch_step: how torch keeps a parameter's ``step``: 'float' (a tensor),
      'int' (a Python int, torch.optim.SparseAdam), None (no step: SGD, Muon,
      LBFGS).
    closure: whether the update needs the loss as a function of the
      parameters (``tx.update(..., value_fn=f)``), as torch.optim.LBFGS's
      ``step(closure)``.
    check_layout: optional ``check_layout(layout, name, path, shape, kwargs)``,
      called for each torch parameter ``name`` matched to the JAX parameter at
      ``path`` (of ``shape``) through ``layout`` with its group's keywords,
      raising ConfigError where the layout change alters what the optimizer
      computes (:func:`jaxsched.interop.state.check_layouts`).
    across_groups: keyword -> the transformation it makes of every parameter group's
      gradients together, where the optimizer's step reads them all at once (timm's ``Lamb``
      clips by the norm of all its groups' gradients): :func:`jaxsched.build` applies it once
      before the groups' own steps, which get the keyword as None.
    peak_lr: keywords that hold the peak learning rate (timm's ``max_lr_snapshot``, the
      constructor's lr): null stands for the learning rate given, where that is a number;
      :func:`jaxsched.build` gives them the config's base LR, as timm gives every param
      group its constructor's.
    class_name: the optimizer class's name where the ID is not that name (timm's class:
      ``Lamb`` for ``timm.lamb``), which Lightning's LearningRateMonitor logs (``lr-Lamb``);
      see :attr:`logged_name`.
    lr_nonlinear: boolean keywords that, when true, make the step non-linear in the LR
      even where :attr:`lr_linear` holds (timm's ``corrected_weight_decay``: ``lr**2 / max_lr``);
      see :meth:`is_lr_linear`.
  """

  name: str
  factory: Callable[..., optax.GradientTransformation]
  lr: float | None
  kwargs: Mapping[str, tuple[Any, _checks.Check]]
  switchable: tuple[str, ...] = ()
  cross_check: Callable[[dict[str, Any]], None] | None = None
  lr_check: _checks.Check = LEARNING_RATE
  complex_params: bool = True
  lr_linear: bool = False
  constructor_only: tuple[str, ...] = ()
  jax_only: tuple[str, ...] = ()
  groups: bool = True
  torch_state: Mapping[type, Mapping[str, str]] = dataclasses.field(default_factory=dict)
  torch_scalars: frozenset[tuple[type, str]] = frozenset()
  torch_step: Literal['float', 'int'] | None = 'float'
  closure: bool = False
  check_layout: Callable[[Layout, str, str, tuple[int, ...], Mapping[str, Any]], None] | None = None
  across_groups: Mapping[str, Callable[[Any], optax.GradientTransformation]] = dataclasses.field(default_factory=dict)
  peak_lr: tuple[str, ...] = ()
  lr_nonlinear: tuple[str, ...] = ()
  class_name: str | None = None

  @property
  def logged_name(self) -> str:
    """The optimizer's name in Lightning's LearningRateMonitor keys (``optimizer.__class__.__name__``)."""
    return self.class_name or self.name

  @property
  def doc(self) -> str:
    return (self.factory.__doc__ or '').strip().splitlines()[0] if self.factory.__doc__ else ''

  def is_lr_linear(self, kwargs: Mapping[str, Any]) -> bool:
    """Whether the step with keywords ``kwargs`` (a keyword not there: its default) is linear in
    the LR: :attr:`lr_linear`, and none of :attr:`lr_nonlinear` true."""
    return self.lr_linear and not any(kwargs.get(key, self.kwargs[key][0]) for key in self.lr_nonlinear)

  def check_groups(self, count: int) -> None:
    """ConfigError for ``count`` > 1 param groups where torch accepts one only (:attr:`groups`)."""
    if not self.groups and count > 1:
      if self.class_name is None:
        raise ConfigError(f"{self.name} doesn't support per-parameter options (parameter groups), as in torch.")
      raise ConfigError(
        f'{self.name} takes one parameter group: timm.optim.{self.class_name} reads all its groups together in '
        "each step, which jaxsched's one optimizer per group cannot do."
      )


def with_corrected_decay(spec: OptimizerSpec, corrected: bool) -> OptimizerSpec:
  """``spec`` with timm's corrected weight decay (``timm.optim.Lion``, ``NAdamW``, ``Adopt``,
  ``LaProp``, ``Lamb``, ``NvNovoGrad``): the keyword ``corrected_weight_decay`` (default
  ``corrected``), whose decoupled decay then scales with ``lr**2 / max_lr`` instead of ``lr``
  (:func:`jaxsched.optimizers._common.decay_learning_rate`), and jaxsched's ``max_lr``, timm's
  ``max_lr_snapshot``: the constructor's lr, here the learning rate given where that is a number
  (:attr:`OptimizerSpec.peak_lr`). With corrected decay, a scheduled learning rate needs max_lr,
  and max_lr must be > 0 (timm raises for a constructor lr <= 0)."""
  own = spec.cross_check

  def check(kw: dict[str, Any]) -> None:
    if own is not None:
      own(kw)
    if not kw['corrected_weight_decay']:
      return
    if kw['max_lr'] is None:
      raise ConfigError(
        f'{spec.name}: corrected_weight_decay scales the decay by lr**2 / max_lr, and the learning rate is a '
        f"schedule: set max_lr, the peak LR (timm takes the constructor's lr)."
      )
    if kw['max_lr'] <= 0:
      raise ConfigError(
        f'{spec.name}: max_lr={kw["max_lr"]!r} (the learning rate where max_lr is not set) must be > 0 with '
        f'corrected_weight_decay, as timm requires.'
      )

  return dataclasses.replace(
    spec,
    kwargs={
      **spec.kwargs,
      'corrected_weight_decay': (corrected, _checks.Boolean()),
      'max_lr': (None, _checks.Optional(_checks.Real())),
    },
    cross_check=check,
    jax_only=(*spec.jax_only, 'max_lr'),
    peak_lr=('max_lr',),
    lr_nonlinear=('corrected_weight_decay',),
  )
