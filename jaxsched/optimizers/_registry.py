"""The optimizer table: one :class:`OptimizerSpec` per torch.optim class.

A spec is data: torch's class name, its constructor keywords with their
defaults and checks, and a factory that builds the Optax transformation from
the checked values. :func:`jaxsched.optimizer` reads the table; family modules
(``sgd.py``, ``adam.py``, ...) fill it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import optax

from jaxsched import _checks

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
      reference page's where it lists one).
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
  """

  name: str
  factory: Callable[..., optax.GradientTransformation]
  lr: float
  kwargs: Mapping[str, tuple[Any, _checks.Check]]
  switchable: tuple[str, ...] = ()
  cross_check: Callable[[dict[str, Any]], None] | None = None
  lr_check: _checks.Check = LEARNING_RATE
  complex_params: bool = True

  @property
  def doc(self) -> str:
    return (self.factory.__doc__ or '').strip().splitlines()[0] if self.factory.__doc__ else ''
