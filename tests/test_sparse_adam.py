import inspect

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import jaxsched
from jaxsched.optimizers import OPTIMIZERS
from jaxsched.optimizers._registry import IMPLEMENTATION_FLAGS
from oracle import (
  DTYPES,
  assert_rejected,
  assert_trajectories_close,
  jax_trajectory,
  max_rel_diff,
  problem,
  torch_trajectory,
)


def sparse_problem(steps=12, density=0.3, seed=0, scale=1.0):
  """Gradients with many exact zeros: ``density`` of the entries present, leaf
  'w' entirely absent on some steps, and leaf 'k' absent on the first 3 steps."""
  params, grads = problem({'w': (4, 3), 'k': (2, 3, 5)}, steps=steps, seed=seed, scale=scale)
  rng = np.random.default_rng(seed + 1)
  for i, g in enumerate(grads):
    for k in g:
      g[k] = g[k] * (rng.random(g[k].shape) < density)
    if i % 4 == 1:
      g['w'] = np.zeros_like(g['w'])
    if i < 3:
      g['k'] = np.zeros_like(g['k'])
  return params, grads


def assert_sparse_adam_matches_torch(kwargs, dtype, *, jax_kwargs=None, **problem_kwargs):
  params, grads = sparse_problem(**problem_kwargs)
  expected = torch_trajectory('SparseAdam', kwargs, params, grads, dtype, grad_hook=lambda g: g.to_sparse())
  jk = dict(kwargs if jax_kwargs is None else jax_kwargs)
  actual = jax_trajectory(lambda: jaxsched.optimizer('SparseAdam', **jk), params, grads, dtype)
  assert_trajectories_close(actual, expected, dtype)
  return params, grads, actual


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('maximize', [False, True])
def test_options_match_torch(maximize, dtype):
  assert_sparse_adam_matches_torch(dict(lr=0.05, maximize=maximize), dtype)


@pytest.mark.parametrize('dtype', DTYPES)
def test_absent_entries_stay_put(dtype):
  params, grads, actual = assert_sparse_adam_matches_torch(dict(lr=0.05), dtype)
  for before, after, g in zip([params, *actual], actual, grads):
    for k in g:
      absent = g[k] == 0
      np.testing.assert_array_equal(np.asarray(after[k])[absent], np.asarray(before[k], dtype)[absent])
  # Dense Adam on the same zero-filled gradients keeps moving absent entries.
  dense = jax_trajectory(lambda: jaxsched.optimizer('Adam', lr=0.05), params, grads, dtype)
  assert max_rel_diff(dense[-1], actual[-1]) > 1e-3


@pytest.mark.parametrize('dtype', DTYPES)
def test_small_gradients_match_torch(dtype):
  # eps added to the raw sqrt(v), the bias corrections folded into the step size.
  assert_sparse_adam_matches_torch(dict(lr=0.05, eps=1e-6, betas=(0.8, 0.99)), dtype, scale=1e-6)


@pytest.mark.parametrize('dtype', DTYPES)
@given(
  lr=st.floats(1e-4, 0.3),
  b1=st.floats(0.0, 0.999),
  b2=st.floats(0.0, 0.9999),
  eps=st.floats(1e-10, 1e-3),
  density=st.floats(0.05, 1.0),
  maximize=st.booleans(),
)
def test_random_hyperparameters_match_torch(dtype, lr, b1, b2, eps, density, maximize):
  assert_sparse_adam_matches_torch(dict(lr=lr, betas=(b1, b2), eps=eps, maximize=maximize), dtype, density=density)


@pytest.mark.parametrize('dtype', DTYPES)
def test_scheduled_beta1_matches_torch(dtype):
  b1s = np.array([0.95, 0.9, 0.85, 0.6, 0.0, 0.7, 0.99, 0.9, 0.8, 0.95, 0.5, 0.9])
  params, grads = sparse_problem(steps=len(b1s))
  tdtype = getattr(torch, dtype)
  tensors = [torch.tensor(v, dtype=tdtype, requires_grad=True) for v in params.values()]
  opt = torch.optim.SparseAdam(tensors, lr=0.05, betas=(float(b1s[0]), 0.99))
  expected = []
  for b1, g in zip(b1s, grads):
    opt.param_groups[0]['betas'] = (float(b1), 0.99)
    for t, gi in zip(tensors, g.values()):
      t.grad = torch.tensor(gi, dtype=tdtype).to_sparse()
    opt.step()
    expected.append({k: t.detach().numpy().copy() for k, t in zip(params, tensors)})
  actual = jax_trajectory(
    lambda: jaxsched.optimizer('SparseAdam', lr=0.05, betas=(lambda c: jnp.asarray(b1s)[c], 0.99)), params, grads, dtype
  )
  assert_trajectories_close(actual, expected, dtype)


def test_keywords_are_torchs():
  signature = inspect.signature(torch.optim.SparseAdam)
  torch_keys = set(signature.parameters) - {'params', 'lr', *IMPLEMENTATION_FLAGS}
  assert set(OPTIMIZERS['SparseAdam'].kwargs) == torch_keys
  for key, (default, _) in OPTIMIZERS['SparseAdam'].kwargs.items():
    assert default == signature.parameters[key].default, key


def test_defaults():
  state = jaxsched.optimizer('SparseAdam').init({'w': jnp.zeros(2)})
  assert float(state.hyperparams['learning_rate']) == pytest.approx(0.001)
  params, grads = sparse_problem()
  expected = torch_trajectory('SparseAdam', {}, params, grads, 'float64', grad_hook=lambda g: g.to_sparse())
  actual = jax_trajectory(lambda: jaxsched.optimizer('SparseAdam'), params, grads, 'float64')
  assert_trajectories_close(actual, expected, 'float64')


@pytest.mark.parametrize(
  'kwargs, words',
  [
    (dict(eps=0.0), ['eps', '0.0']),  # torch requires eps > 0 here
    (dict(betas=(0.9, 1.0)), ['betas[1]', '1.0']),
    (dict(betas=(-0.5, 0.9)), ['betas[0]', '-0.5']),
    (dict(weight_decay=0.1), ['weight_decay', 'SparseAdam']),
    (dict(maximize='no'), ['maximize', "'no'"]),
    (dict(lr=-1.0), ['lr', '-1.0']),
  ],
)
def test_bad_input(kwargs, words):
  assert_rejected('SparseAdam', kwargs, words)


def test_lr_must_be_positive_as_in_torch():
  with pytest.raises(jaxsched.ConfigError, match='lr=0.0'):
    jaxsched.optimizer('SparseAdam', lr=0.0)
