"""Each OptimizerSpec's facts (torch state names, step key, LR linearity, constructor-only and
jaxsched-only keywords, param groups, closure) checked against torch.optim itself, one step each."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxsched
from jaxsched.optimizers import OPTIMIZERS, resolve
from jaxsched.optimizers._registry import IMPLEMENTATION_FLAGS
from oracle import TOLERANCE, assert_config_error, x64

NAMES = sorted(OPTIMIZERS)
# keywords that make torch (and jaxsched) keep every optional state entry
ALL_STATE = {
  'Adam': {'amsgrad': True},
  'AdamW': {'amsgrad': True},
  'RMSprop': {'centered': True, 'momentum': 0.9},
}
SHAPE = (3, 2)  # 2-D, for Muon and for Adafactor's factored moments


def _torch_optimizer(name, groups=None):
  """torch.optim's ``name`` with jaxsched's defaults (and ALL_STATE), over one 3x2 tensor or ``groups``."""
  spec = OPTIMIZERS[name]
  lr, checked = resolve(spec, None, dict(ALL_STATE.get(name, {})))
  kwargs = {k: v for k, v in checked.items() if k not in spec.jax_only}
  if groups is None:
    groups = [torch.nn.Parameter(torch.linspace(-1.0, 1.0, 6, dtype=torch.float64).reshape(SHAPE))]
  return getattr(torch.optim, name)(groups, lr=lr, **kwargs)


def _step(name, opt):
  params = [p for g in opt.param_groups for p in g['params']]

  def closure():
    opt.zero_grad()
    loss = sum((p.sin() + p**2).sum() for p in params)
    loss.backward()
    if name == 'SparseAdam':  # torch's SparseAdam takes sparse gradients only
      for p in params:
        p.grad = p.grad.to_sparse()
    return loss

  opt.step(closure)
  return [opt.state[p] for p in params]


def _jax_states(name, classes):
  """The nodes of ``classes`` in jaxsched's state of ``name`` (with ALL_STATE) over one 3x2 parameter."""
  state = jaxsched.optimizer(name, **ALL_STATE.get(name, {})).init({'w': jnp.ones(SHAPE)})
  return [x for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, classes)) if isinstance(x, classes)]


@pytest.mark.parametrize('name', NAMES)
def test_torch_state_names_are_torchs(name):
  spec = OPTIMIZERS[name]
  assert spec.torch_state, f'{name} has a torch.optim class, so its state converts'
  nodes = _jax_states(name, tuple(spec.torch_state))
  assert {type(node) for node in nodes} == set(spec.torch_state)
  # the torch keys of the fields jaxsched keeps (a field that is None, e.g. nu_max without amsgrad, has none)
  keys = {
    key for node in nodes for field, key in spec.torch_state[type(node)].items() if getattr(node, field) is not None
  }
  (state,) = _step(name, _torch_optimizer(name))
  if all(spec.torch_state.values()):  # else converted by their own code (Adafactor, LBFGS)
    assert set(state) == keys | ({'step'} if spec.torch_step else set())
  for cls, fields in spec.torch_state.items():
    assert set(fields) <= set(cls._fields)
  # one number for all parameters in jaxsched's state (torch keeps one per parameter): torch_scalars
  values = [((type(node), field), getattr(node, field)) for node in nodes for field in spec.torch_state[type(node)]]
  assert {f for f, v in values if isinstance(v, jax.Array) and v.ndim == 0} == spec.torch_scalars
  for cls, field in spec.torch_scalars:
    assert torch.is_tensor(state[spec.torch_state[cls][field]]) and state[spec.torch_state[cls][field]].ndim == 0
  if spec.torch_step is None:
    assert 'step' not in state
  else:
    assert isinstance(state['step'], int if spec.torch_step == 'int' else torch.Tensor)


@pytest.mark.parametrize('name', NAMES)
def test_jax_only_keywords_are_the_ones_torch_lacks(name):
  spec = OPTIMIZERS[name]
  torch_kwargs = set(inspect.signature(getattr(torch.optim, name)).parameters) - {'params', 'lr', *IMPLEMENTATION_FLAGS}
  assert set(spec.jax_only) == set(spec.kwargs) - torch_kwargs


@pytest.mark.parametrize('name', NAMES)
def test_groups_and_closure_are_torchs(name):
  spec = OPTIMIZERS[name]
  a, b = (torch.nn.Parameter(torch.ones(SHAPE, dtype=torch.float64)) for _ in range(2))
  two = [{'params': [a]}, {'params': [b]}]
  if spec.groups:
    _step(name, _torch_optimizer(name, two))
  else:
    with pytest.raises(ValueError, match='parameter groups'):
      _torch_optimizer(name, two)
  opt = _torch_optimizer(name, [a])
  a.grad = torch.ones_like(a).to_sparse() if name == 'SparseAdam' else torch.ones_like(a)
  if spec.closure:
    with pytest.raises(TypeError):
      opt.step()
  else:
    opt.step()


@pytest.mark.parametrize('name', [n for n in NAMES if OPTIMIZERS[n].constructor_only])
def test_constructor_only_keywords_are_ignored_in_a_group_by_torch(name):
  spec = OPTIMIZERS[name]
  a, b = (torch.nn.Parameter(torch.ones(SHAPE, dtype=torch.float64)) for _ in range(2))
  groups = [{'params': [a]}, {'params': [b], **{k: spec.kwargs[k][0] + 1.0 for k in spec.constructor_only}}]
  state_a, state_b = _step(name, _torch_optimizer(name, groups))
  np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
  assert state_a.keys() == state_b.keys()
  for key in state_a:
    np.testing.assert_array_equal(np.asarray(state_a[key]), np.asarray(state_b[key]))


@pytest.mark.parametrize('name', [n for n in NAMES if OPTIMIZERS[n].lr_linear])
def test_lr_linear_steps_scale_with_the_lr(name):
  # the same gradients at the same parameters: every update (and so the state) scales with lr
  with x64('float64'):
    params = {'w': jnp.linspace(-1.0, 1.0, 6).reshape(SHAPE)}
    grads = [{'w': jnp.cos(k + params['w'])} for k in range(3)]
    runs = []
    for lr in (1.0, 0.25):
      tx = jaxsched.optimizer(name, lr=lr, **ALL_STATE.get(name, {}))
      state, updates = tx.init(params), []
      for g in grads:
        u, state = tx.update(g, state, params)
        updates.append(np.asarray(u['w']))
      runs.append(updates)
    for full, quarter in zip(*runs, strict=True):
      np.testing.assert_allclose(quarter, 0.25 * full, rtol=TOLERANCE['float64'], atol=0)


@pytest.mark.parametrize('name', NAMES)
def test_one_group_only_is_refused_by_build_and_torch_optimizer(name):
  config = {'optimizer': name, 'lr_parameter_groups': {'bias': {'lr_factor': 2.0}}}
  params = {'kernel': jnp.ones(SHAPE), 'bias': jnp.ones(SHAPE)}
  named = [(n, torch.nn.Parameter(torch.ones(SHAPE, dtype=torch.float64))) for n in params]
  if OPTIMIZERS[name].groups:
    jaxsched.build(config, params, batches_per_epoch=4)
    assert len(jaxsched.torch_optimizer(config, named).param_groups) == 2
  else:
    assert_config_error(lambda: jaxsched.build(config, params, batches_per_epoch=4), [name, 'parameter groups'])
    assert_config_error(lambda: jaxsched.torch_optimizer(config, named), [name, 'parameter groups'])
