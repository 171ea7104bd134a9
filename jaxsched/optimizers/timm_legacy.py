"""timm's own versions of optimizers torch.optim also has: ``timm.optim.SGDW``,
``timm.optim.RMSpropTF``, ``timm.optim.AdamWLegacy``, ``timm.optim.NAdamLegacy`` and
``timm.optim.RAdamLegacy``, by the IDs ``timm.sgdw``, ``timm.nesterovw``, ``timm.csgdw``,
``timm.rmsproptf``, ``timm.rmsproptfw``, ``timm.crmsproptf``, ``timm.adamwlegacy``, ``timm.cadamw``,
``timm.nadamlegacy`` and ``timm.radamlegacy``.

Each ID is timm's class with the defaults ``timm.optim.create_optimizer_v2(..., opt=<name>)``
passes (the class's own, then ``weight_decay=0``, ``momentum=0.9`` where the class has momentum,
and the registry entry's ``nesterov``, ``alpha``, ``decoupled_decay`` or ``caution``); the numbers
are those of timm's single-tensor implementations, the ones it runs on CPU. There is no torch.optim
counterpart, so no torch state conversion (``torch_state`` is empty). timm's
``corrected_weight_decay`` (``lr**2 / max_lr`` decay) is not a keyword here.
"""

from __future__ import annotations

import jax
import optax

from jaxsched import _checks
from jaxsched.optimizers import _common, adam, sgd
from jaxsched.optimizers._registry import OptimizerSpec


def cautious_against_input(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """``inner``'s direction with timm's caution (:func:`_common.cautious`) against the gradient
  ``inner`` was given."""

  def update_fn(updates, state, params=None):
    out, state = inner.update(updates, state, params)
    return jax.tree.map(_common.cautious, out, updates), state

  return optax.GradientTransformation(inner.init, update_fn)


def sgdw(learning_rate, momentum, dampening, weight_decay, nesterov: bool, caution: bool, maximize: bool):
  """SGD with decoupled weight decay, as ``timm.optim.SGDW``.

  ``g = -g`` if maximize; ``p *= 1 - lr * wd``; with momentum, torch.optim.SGD's buffer, dampening
  and nesterov (:func:`jaxsched.optimizers.sgd.torch_momentum`), then caution against ``g`` as
  :func:`_common.cautious` (timm cautions only with momentum); ``p += -lr * u``.
  """
  buffer = None
  if momentum is not None:
    buffer = sgd.torch_momentum(momentum, dampening, nesterov)
    buffer = cautious_against_input(buffer) if caution else buffer
  return _common.chain(
    _common.negate() if maximize else None,
    buffer,
    _common.descend(learning_rate),
    _common.decoupled_decay(learning_rate, weight_decay) if weight_decay is not None else None,
  )


_FLAG = _checks.Boolean()
_WEIGHT_DECAY = (0.0, adam.WEIGHT_DECAY)  # create_optimizer_v2 passes weight_decay=0
_MOMENTUM = (0.9, _checks.Schedulable(_checks.NON_NEGATIVE))  # create_optimizer_v2's; the classes' is 0


def _sgdw_spec(name: str, caution: bool) -> OptimizerSpec:
  return OptimizerSpec(
    name=f'timm.{name}',
    factory=sgdw,
    lr=1e-3,
    kwargs={
      'momentum': _MOMENTUM,
      'dampening': (0.0, _checks.Real()),
      'weight_decay': _WEIGHT_DECAY,
      'nesterov': (True, _FLAG),
      'caution': (caution, _FLAG),
      'maximize': (False, _FLAG),
    },
    switchable=('momentum', 'weight_decay'),
    cross_check=sgd.nesterov_check('timm.optim.SGDW'),
    # timm's SGDW steps a complex p with complex arithmetic, elementwise-linear with real
    # hyperparameters: the real view's numbers (caution: timm raises, here the real view's mask)
    lr_linear=True,
    torch_step=None,
  )


SPECS = (
  _sgdw_spec('sgdw', caution=False),
  _sgdw_spec('nesterovw', caution=False),
  _sgdw_spec('csgdw', caution=True),
)
