"""The optimizer table as a whole: coverage of torch.optim, errors, jit behaviour, dtypes."""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jaxsched
from jaxsched.optimizers._registry import IMPLEMENTATION_FLAGS
from oracle import assert_config_error

TORCH_OPTIMIZERS = sorted(
    name for name, obj in vars(torch.optim).items()
    if isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer
)
# jaxsched's own keywords beyond torch's.
EXTRA_KWARGS = {'Muon': {'ns_dtype'}}


def _params():
  return {'w': jnp.linspace(-1.0, 1.0, 12).reshape(4, 3), 'v': jnp.linspace(0.5, 1.5, 12).reshape(3, 4)}


def _loss(p):
  return sum(jnp.sum(jnp.sin(x) + x**2) for x in jax.tree.leaves(p))


def test_every_torch_optimizer_is_registered():
  assert sorted(jaxsched.OPTIMIZERS) == TORCH_OPTIMIZERS


@pytest.mark.parametrize('name', TORCH_OPTIMIZERS)
def test_keywords_are_torchs(name):
  torch_kwargs = set(inspect.signature(getattr(torch.optim, name)).parameters) - {'params', 'lr', *IMPLEMENTATION_FLAGS}
  assert set(jaxsched.OPTIMIZERS[name].kwargs) == torch_kwargs | EXTRA_KWARGS.get(name, set())


@pytest.mark.parametrize('name', TORCH_OPTIMIZERS)
def test_no_retrace_when_the_learning_rate_changes(name):
  tx = jaxsched.optimizer(name, fused=False, foreach=None)
  params = _params()
  traces = []

  @jax.jit
  def step(params, state):
    traces.append(1)
    grads = jax.grad(_loss)(params)
    updates, state = tx.update(grads, state, params, value_fn=_loss)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  params, state = step(params, state)
  for lr in (0.5, 1e-4, 0.0):
    state = state._replace(hyperparams={**state.hyperparams, 'learning_rate': jnp.asarray(lr, jnp.float32)})
    params, state = step(params, state)
  assert len(traces) == 1
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))


@pytest.mark.parametrize('name', TORCH_OPTIMIZERS)
def test_bfloat16_params_keep_float32_hyperparameters(name):
  tx = jaxsched.optimizer(name, lr=1e-3)
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params())
  state = tx.init(params)
  assert state.hyperparams['learning_rate'].dtype == jnp.float32
  assert state.hyperparams['learning_rate'] == np.float32(1e-3)
  grads = jax.grad(_loss)(params)
  updates, _ = jax.jit(lambda g, s, p: tx.update(g, s, p, value_fn=_loss))(grads, state, params)
  assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))


def test_learning_rate_may_be_a_schedule():
  tx = jaxsched.optimizer('SGD', learning_rate=lambda count: 0.1 * 0.5**count, momentum=0.0)
  params = {'w': jnp.ones(2)}
  state = tx.init(params)
  step = jax.jit(tx.update)
  for expected in (0.1, 0.05, 0.025):
    updates, state = step({'w': jnp.ones(2)}, state, params)
    np.testing.assert_allclose(updates['w'], -expected, rtol=1e-6)


def test_lr_alias_and_implementation_flags():
  state = jaxsched.optimizer('Adam', lr=0.003, fused=False, foreach=True, capturable=False,
                             differentiable=False).init({'w': jnp.ones(1)})
  assert float(state.hyperparams['learning_rate']) == pytest.approx(0.003)


@pytest.mark.parametrize('call, words', [
    (lambda: jaxsched.optimizer('Adamm'), ["'Adamm'", "Did you mean 'Adam'?", 'AdamW']),
    (lambda: jaxsched.optimizer('sgd'), ["Did you mean 'SGD'?"]),
    (lambda: jaxsched.optimizer('Adam', betas=(0.9, 0.999), beta=1), ["'beta'", "Did you mean 'betas'?"]),
    (lambda: jaxsched.optimizer('Adam', learning_rate=0.1, lr=0.1), ['learning_rate', 'lr']),
    (lambda: jaxsched.optimizer('Adam', lr='fast'), ['lr', "'fast'"]),
    (lambda: jaxsched.optimizer('Adam', betas=(0.9, 1.0)), ['betas[1]', '1.0', '[0.0, 1.0)']),
    (lambda: jaxsched.optimizer('Adam', betas=0.9), ['betas', '0.9']),
    (lambda: jaxsched.optimizer('Adam', eps=-1e-8), ['eps', '-1e-08']),
    (lambda: jaxsched.optimizer('Adam', fused='yes'), ['fused']),
    (lambda: jaxsched.optimizer(3), ['optimizer', '3']),
    (lambda: jaxsched.optimizer('optax.lionn'), ["Did you mean 'optax.lion'?"]),
    (lambda: jaxsched.optimizer('optax.lion', b3=0.1), ["'b3'", 'b1']),
])
def test_errors_name_the_problem(call, words):
  assert_config_error(call, words)


def test_config_error_is_a_value_error():
  assert issubclass(jaxsched.ConfigError, ValueError)


def test_yaml_style_values():
  # YAML 1.1 reads 1e-8 as a string and pairs as lists.
  tx = jaxsched.optimizer('Adam', eps='1e-8', betas=[0.9, 0.99])
  state = tx.init({'w': jnp.ones(1)})
  assert float(state.hyperparams['b2']) == pytest.approx(0.99)


@pytest.mark.parametrize('alias, kwargs', [('lion', dict(b1=0.8)), ('lamb', {}), ('adabelief', {})])
def test_optax_aliases_are_optax(alias, kwargs):
  params = _params()
  grads = jax.grad(_loss)(params)
  ours = jaxsched.optimizer(f'optax.{alias}', learning_rate=0.01, **kwargs)
  # Optax's alias with its hyperparameters in the state, as optax.inject_hyperparams keeps them.
  theirs = optax.inject_hyperparams(getattr(optax, alias))(learning_rate=0.01, **kwargs)
  u1, _ = jax.jit(ours.update)(grads, ours.init(params), params)
  u2, _ = jax.jit(theirs.update)(grads, theirs.init(params), params)
  for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize('name', TORCH_OPTIMIZERS)
def test_an_eagerly_initialised_state_can_be_donated(name):
  # A state built outside jit must not hold one buffer in two places.
  tx = jaxsched.optimizer(name)
  params = _params()

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, state):
    updates, state = tx.update(jax.grad(_loss)(params), state, params, value_fn=_loss)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for _ in range(2):
    params, state = step(params, state)


def test_a_built_plateau_state_can_be_donated():
  params = _params()
  tx = jaxsched.build({'lr_parameter_groups': {'v': {'lr_factor': 0.5}},
                       'scheduler': 'ReduceLROnPlateau', 'skip_nonfinite': True}, params)
  step = jax.jit(lambda p, s: tx.update(jax.grad(_loss)(p), s, p), donate_argnums=(1,))
  state = tx.init(params)
  for _ in range(2):
    _, state = step(params, state)
    state = jaxsched.report(state, 1.0)
