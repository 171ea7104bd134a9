"""build() in Flax training loops: Linen's TrainState and NNX's Optimizer, with plateau reports."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from flax.training import train_state

import jaxsched
from jaxsched.groups import param_labels

CONFIG = {
  'optimizer': 'SGD',
  'learning_rate': 0.1,
  'optimizer_kwargs': {'momentum': 0.0},
  'recurrent_learning_rate_multiplier': 0.1,
  'scheduler': 'ReduceLROnPlateau',
  'scheduler_kwargs': {'patience': 0, 'factor': 0.5},
  'scheduler_configs': {'monitor': 'val_loss'},
}


class LinenNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.Dense(4, name='ff')(x)
    h = jnp.tanh(h + nn.Dense(4, use_bias=False, name='recurrent')(h))
    return nn.Dense(1, name='head')(h)


def data():
  rng = np.random.default_rng(0)
  return jnp.asarray(rng.normal(size=(16, 3)), jnp.float32), jnp.asarray(rng.normal(size=(16, 1)), jnp.float32)


def test_linen_train_state_with_build_and_plateau():
  x, y = data()
  model = LinenNet()
  params = model.init(jax.random.key(0), x)['params']
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=jaxsched.build(CONFIG, params))

  @jax.jit
  def train_step(state):
    loss, grads = jax.value_and_grad(lambda p: jnp.mean((state.apply_fn({'params': p}, x) - y) ** 2))(state.params)
    return state.apply_gradients(grads=grads), loss

  losses = []
  for _ in range(3):
    state, loss = train_step(state)
    losses.append(float(loss))
    # the documented pattern: one line per epoch after validation
    state = state.replace(opt_state=jaxsched.report(state.opt_state, {'val_loss': 1.0}))
  assert losses[-1] < losses[0]
  lrs = {k: float(v) for k, v in jaxsched.current_lr(state.opt_state).items()}
  # first report improves on inf; the next two are bad (patience 0): two cuts
  np.testing.assert_allclose([lrs['regular'], lrs['recurrent']], [0.025, 0.0025], rtol=1e-6)


def test_nnx_optimizer_with_build_and_plateau():
  x, y = data()

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.ff = nnx.Linear(3, 4, rngs=rngs)
      self.recurrent = nnx.Linear(4, 4, use_bias=False, rngs=rngs)
      self.head = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
      h = self.ff(x)
      return self.head(jnp.tanh(h + self.recurrent(h)))

  model = Net(nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  optimizer = nnx.Optimizer(model, jaxsched.build(CONFIG, params), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  losses = []
  for _ in range(3):
    losses.append(float(train_step(model, optimizer)))
    jaxsched.report(optimizer, {'val_loss': 1.0})  # updates the NNX optimizer in place
  assert losses[-1] < losses[0]
  lrs = jaxsched.current_lr(nnx.as_pure(optimizer.opt_state))
  np.testing.assert_allclose([float(lrs['regular']), float(lrs['recurrent'])], [0.025, 0.0025], rtol=1e-6)


def test_nnx_params_are_named_without_their_value_attribute():
  """build() names nnx.state(model, nnx.Param)'s leaves as the torch interop and a Linen tree do
  ('head/kernel', not 'head/kernel/value'), so that a group pattern sees the same paths."""

  class Model(nnx.Module):
    def __init__(self, rngs):
      self.body = nnx.Linear(2, 3, rngs=rngs)
      self.head = nnx.Linear(3, 1, rngs=rngs)

  params = nnx.state(Model(nnx.Rngs(0)), nnx.Param)
  config = jaxsched.load_config({'scheduler': None, 'lr_parameter_groups': {'head': {'lr_factor': 0.5}}})
  labels = jax.tree.leaves(param_labels(config, params))
  assert sorted(labels) == ['head', 'head', 'regular', 'regular']
  with pytest.raises(jaxsched.ConfigError, match='lr_parameter_groups.value'):
    jaxsched.build(
      jaxsched.load_config({'scheduler': None, 'lr_parameter_groups': {'value': {'lr_factor': 2}}}), params
    )
