"""Optimizers by torch's string IDs: :func:`optimizer` and the :data:`OPTIMIZERS` table."""

from __future__ import annotations

from typing import Any

import numpy as np
import optax

from jaxsched._errors import ConfigError, unknown
from jaxsched.optimizers import (
  _complex,
  _inject,
  adadelta,
  adafactor,
  adagrad,
  adam,
  asgd,
  lbfgs,
  muon,
  optax_aliases,
  rmsprop,
  rprop,
  sgd,
  sparse_adam,
  timm_adafactor,
  timm_adahessian,
  timm_adam,
  timm_layerwise,
  timm_legacy,
  timm_misc,
  timm_moments,
  timm_muon,
  timm_projected,
  timm_unported,
)
from jaxsched.optimizers._registry import IMPLEMENTATION_FLAGS, OptimizerSpec

# Each family module contributes its SPECS; the table is keyed by torch's class name.
OPTIMIZERS: dict[str, OptimizerSpec] = {
  spec.name: spec
  for module in (sgd, adam, sparse_adam, rmsprop, adagrad, adadelta, rprop, asgd, adafactor, muon, lbfgs)
  for spec in module.SPECS
}
"""Every torch.optim optimizer jaxsched ports, keyed by torch's class name (the string ID): its
:class:`OptimizerSpec` (keywords, defaults and checks). ``optax.<alias>`` and ``timm.<name>`` IDs are
not in the table."""

TIMM_OPTIMIZERS: dict[str, OptimizerSpec] = {
  spec.name: spec
  for module in (
    timm_layerwise,
    timm_moments,
    timm_adam,
    timm_misc,
    timm_adafactor,
    timm_muon,
    timm_legacy,
    timm_projected,
    timm_adahessian,
  )
  for spec in module.SPECS
}
"""timm's optimizers that torch.optim lacks, keyed by ``timm.<name>`` (``timm.optim.create_optimizer_v2``'s
``opt`` name): :class:`OptimizerSpec` s with timm's keywords and the defaults that factory passes. Kept
apart from :data:`OPTIMIZERS`, the table of torch.optim classes (their state converts to torch's)."""


def spec_of(name: Any) -> OptimizerSpec | None:
  """The spec of optimizer ID ``name``: torch.optim's (:data:`OPTIMIZERS`) or timm's
  (:data:`TIMM_OPTIMIZERS`); None for an ``optax.<alias>`` or an unknown name."""
  if not isinstance(name, str):
    return None
  return OPTIMIZERS.get(name) or TIMM_OPTIMIZERS.get(name)


# torch keywords that arrive as one pair but are scheduled separately.
_SPLIT = {'betas': ('b1', 'b2', 'b3')}  # zip: two betas give b1, b2; timm's Adan takes three


def optimizer(name: str, learning_rate: Any = None, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
  """The Optax transformation for torch.optim's ``name``, with torch's numbers.

  Args:
    name: a torch.optim class name ("Adam", "SGD", ...), ``"timm.<name>"`` for one of timm's
      optimizers (:data:`TIMM_OPTIMIZERS`, timm's keywords), or ``"optax.<alias>"`` for any
      Optax optimizer alias with Optax's own keywords.
    learning_rate: a float or a schedule (callable of the update count);
      ``lr`` is accepted as an alias. Defaults to the spec's default.
    **kwargs: torch's constructor keywords; ``foreach``, ``fused``,
      ``capturable`` and ``differentiable`` are accepted and ignored.

  Returns:
    A transformation whose state holds the float hyperparameters
    (``state.hyperparams``, as ``optax.inject_hyperparams``), so they can be read,
    scheduled and changed without recompiling.

  Raises:
    ConfigError: unknown name or keyword, wrong type, out-of-range value.

  Example:
    >>> tx = optimizer('AdamW', lr=3e-4, betas=[0.9, 0.95])
  """
  if 'lr' in kwargs:
    if learning_rate is not None:
      raise ConfigError('give the learning rate once: learning_rate and lr were both set.')
    learning_rate = kwargs.pop('lr')
  if not isinstance(name, str):
    raise ConfigError(f'optimizer={name!r} must be a string ID such as "Adam".')
  if name.startswith('optax.'):
    return optax_aliases.build(name[len('optax.') :], learning_rate, kwargs)
  spec = spec_of(name)
  if spec is None:
    if name in timm_unported.UNPORTED:
      raise ConfigError(f'optimizer={name!r}: {timm_unported.UNPORTED[name]}.')
    raise unknown('optimizer', name, [*OPTIMIZERS, *TIMM_OPTIMIZERS, 'optax.<alias>'])
  return _build(spec, learning_rate, kwargs)


def resolve(spec: OptimizerSpec, learning_rate: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
  """Checks ``learning_rate`` and ``kwargs`` against ``spec``; fills defaults (a null
  :attr:`OptimizerSpec.peak_lr` keyword: the learning rate, where that is a number)."""
  for key in IMPLEMENTATION_FLAGS:
    if key in kwargs and kwargs.pop(key) not in (None, True, False):
      raise ConfigError(f'{spec.name}: {key} must be true, false or null.')
  for key in kwargs:
    if key not in spec.kwargs:
      raise unknown(f'keyword for {spec.name}', key, [*spec.kwargs, 'lr', *IMPLEMENTATION_FLAGS])
  lr = spec.lr_check(f'{spec.name}: lr', spec.lr if learning_rate is None else learning_rate)
  checked = {
    key: check(f'{spec.name}: {key}', kwargs.get(key, default)) for key, (default, check) in spec.kwargs.items()
  }
  for key in spec.peak_lr:  # null: the learning rate given, where that is a number (not a schedule)
    if checked[key] is None and not callable(lr):
      checked[key] = lr
  if spec.cross_check is not None:
    spec.cross_check(checked)
  return lr, checked


def optimizer_direction(name: str, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
  """torch.optim's ``name`` for lr = 1, for param groups that each scale its step by
  their own LR (:func:`jaxsched.build`). The 1 is a constant of the computation, not a
  hyperparameter in the state, so a ``learning_rate`` set in the state reaches the
  groups' LRs only."""
  spec = spec_of(name)
  assert spec is not None  # the plan shares a direction only for a known spec
  return _build(spec, 1.0, kwargs, lr_in_state=False)


def _build(
  spec: OptimizerSpec, learning_rate: Any, kwargs: dict[str, Any], lr_in_state: bool = True
) -> optax.GradientTransformationExtraArgs:
  lr, checked = resolve(spec, learning_rate, dict(kwargs))
  # a 0-d array in the hyperparameters' dtype stays a constant in inject(), as cheap as the state's scalar
  args: dict[str, Any] = {'learning_rate': lr if lr_in_state else np.asarray(lr, _inject.hyperparam_dtype())}
  for key, value in checked.items():
    if key in spec.switchable and not callable(value) and value == 0:
      value = None
    if key in _SPLIT:
      args.update(zip(_SPLIT[key], value))
    else:
      args[key] = value
  return _complex.complex_support(spec.name, spec.complex_params, _inject.inject(spec.factory, args))
