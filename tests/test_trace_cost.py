"""What a step costs to trace and compile: the scalar work (bias corrections, lerp
weights, ``-lr``, schedules) is done once per step, not once per parameter, so a
model's compile time grows with its parameters only by their tensor arithmetic.

Counted on the traced update (nested jaxprs included): the number of operations
with scalar outputs must not depend on the number of parameter tensors.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
import pytest
from jax.extend import core as jex_core

import jaxsched

# Adafactor scales each tensor by its own RMS, Muon normalizes each matrix and LBFGS
# works on the flattened vector: their per-tensor scalars are the algorithm. Every
# other optimizer is elementwise.
PER_TENSOR_SCALARS = {'Adafactor', 'LBFGS', 'Muon'}

OPTIONS = {
  'SGD': [{}, {'nesterov': True, 'weight_decay': 0.1, 'maximize': True}, {'dampening': 0.3}],
  'Adam': [
    {},
    {'amsgrad': True, 'weight_decay': 0.1, 'maximize': True},
    {'decoupled_weight_decay': True, 'weight_decay': 0.1},
  ],
  'AdamW': [{}, {'amsgrad': True}],
  'Adamax': [{}, {'weight_decay': 0.1}],
  'NAdam': [{}, {'decoupled_weight_decay': True, 'weight_decay': 0.1}],
  'RAdam': [{}, {'decoupled_weight_decay': True, 'weight_decay': 0.1}],
  'SparseAdam': [{}],
  'RMSprop': [{}, {'centered': True, 'momentum': 0.9, 'weight_decay': 0.1}],
  'Adagrad': [{}, {'lr_decay': 0.1, 'weight_decay': 0.1}],
  'Adadelta': [{}, {'weight_decay': 0.1, 'maximize': True}],
  'Rprop': [{}],
  'ASGD': [{}, {'weight_decay': 0.1}],
}


def _params(n: int, prefix: str = 'layer') -> dict[str, jax.Array]:
  return {f'{prefix}{i}' if i % 2 == 0 else f'recurrent{i}': jnp.ones((4, 3), jnp.float32) for i in range(n)}


def _eqns(jaxpr: Any):
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jex_core.jaxprs_in_params(eqn.params):
      yield from _eqns(sub)


def _counts(tx: optax.GradientTransformation, n: int) -> tuple[int, int]:
  """(all operations, operations with only scalar outputs) in one traced update."""
  params = _params(n)
  state = tx.init(params)
  jaxpr = jax.make_jaxpr(lambda g, s, p: tx.update(g, s, p))(params, state, params).jaxpr
  eqns = list(_eqns(jaxpr))
  scalar = sum(all(v.aval.shape == () for v in e.outvars) for e in eqns)
  return len(eqns), scalar


def test_every_elementwise_optimizer_is_listed():
  assert set(OPTIONS) | PER_TENSOR_SCALARS == set(jaxsched.OPTIMIZERS)


@pytest.mark.parametrize(
  'name,kwargs',
  [(n, kw) for n, kws in OPTIONS.items() for kw in kws],
  ids=lambda x: x if isinstance(x, str) else ','.join(x) or 'defaults',
)
def test_scalar_work_does_not_grow_with_the_parameters(name, kwargs):
  few, many = (_counts(jaxsched.optimizer(name, **kwargs), n) for n in (2, 6))
  assert many[1] == few[1], f'{name}{kwargs}: {(many[1] - few[1]) / 4} scalar operations per parameter tensor'
  assert many[0] > few[0]  # the counts do see the per-tensor work


@pytest.mark.parametrize(
  'scheduler',
  [
    {'scheduler': 'CosineAnnealingLR', 'scheduler_kwargs': {'T_max': 100}, 'scheduler_configs': {'interval': 'step'}},
    {
      'scheduler': 'OneCycleLR',
      'scheduler_kwargs': {'max_lr': 0.01, 'total_steps': 100},
      'scheduler_configs': {'interval': 'step'},
    },
    {
      'scheduler': 'ReduceLROnPlateau',
      'scheduler_kwargs': {'patience': 2},
      'scheduler_configs': {'monitor': 'val_loss'},
    },
  ],
  ids=['cosine', 'onecycle', 'plateau'],
)
@pytest.mark.parametrize('optimizer', ['Adam', 'SGD', 'RMSprop'])
def test_build_with_groups_keeps_scalar_work_per_step(optimizer, scheduler):
  config = {'optimizer': optimizer, 'learning_rate': 0.001, 'recurrent_learning_rate_multiplier': 0.1, **scheduler}
  few, many = (_counts(jaxsched.build(config, _params(n)), n) for n in (2, 6))
  assert many[1] == few[1]


def test_adam_traces_no_more_per_tensor_work_than_optax_adam():
  def per_tensor(tx):
    (a, _), (b, _) = _counts(tx, 2), _counts(tx, 6)
    return (b - a) / 4

  assert per_tensor(jaxsched.optimizer('Adam')) <= per_tensor(optax.adam(1e-3))
