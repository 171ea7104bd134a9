import itertools

import jax.numpy as jnp
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import jaxsched
from oracle import (
  DTYPES,
  SHAPES,
  assert_matches_torch,
  assert_rejected,
  assert_trajectories_close,
  jax_trajectory,
  problem,
)

OPTIONS = [
  dict(lr=lr, etas=etas, step_sizes=sizes, maximize=mx)
  for lr, etas, sizes, mx in itertools.product(
    (0.01, 0.3), ((0.5, 1.2), (0.3, 2.0)), ((1e-6, 50.0), (0.02, 0.5)), (False, True)
  )
]


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_options_match_torch(options, dtype):
  assert_matches_torch('Rprop', options, dtype)


@pytest.mark.parametrize('dtype', DTYPES)
@given(
  lr=st.floats(1e-4, 1.0),
  etaminus=st.floats(0.01, 0.99),
  etaplus=st.floats(1.01, 3.0),
  step_size_min=st.floats(0.0, 1e-3),
  step_size_max=st.floats(1e-2, 100.0),
  maximize=st.booleans(),
)
def test_random_hyperparameters_match_torch(dtype, lr, etaminus, etaplus, step_size_min, step_size_max, maximize):
  assert_matches_torch(
    'Rprop', dict(lr=lr, etas=(etaminus, etaplus), step_sizes=(step_size_min, step_size_max), maximize=maximize), dtype
  )


def test_first_step_moves_by_the_learning_rate():
  # optax.rprop applies the previous step's update, so its first step is a no-op.
  tx = jaxsched.optimizer('Rprop', lr=0.25)
  params = {'w': jnp.array([1.0, -2.0, 3.0])}
  updates, _ = tx.update({'w': jnp.array([2.0, -0.5, 0.0])}, tx.init(params), params)
  assert updates['w'].tolist() == [-0.25, 0.25, 0.0]


@pytest.mark.parametrize('dtype', DTYPES)
def test_lr_only_seeds_the_step_sizes(dtype):
  # torch reads lr once, on its first step: a later lr (from a scheduler) is ignored.
  params, grads = problem(SHAPES, 10)
  tensors = {k: torch.tensor(v, dtype=getattr(torch, dtype), requires_grad=True) for k, v in params.items()}
  opt = torch.optim.Rprop(tensors.values(), lr=0.05)
  expected = []
  for step, g in enumerate(grads):
    opt.param_groups[0]['lr'] = 0.05 * (step + 1)
    for k, t in tensors.items():
      t.grad = torch.tensor(g[k], dtype=t.dtype)
    opt.step()
    expected.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
  actual = jax_trajectory(
    lambda: jaxsched.optimizer('Rprop', learning_rate=lambda c: 0.05 * (c + 1)), params, grads, dtype
  )
  assert_trajectories_close(actual, expected, dtype)


def test_lists_from_yaml_are_accepted():
  assert_matches_torch(
    'Rprop',
    dict(etas=(0.4, 1.3), step_sizes=(1e-5, 10.0)),
    'float64',
    jax_kwargs=dict(etas=[0.4, 1.3], step_sizes=['1e-5', 10]),
  )


def test_defaults_are_torchs():
  state = jaxsched.optimizer('Rprop').init({'w': jnp.zeros(2)})
  assert float(state.hyperparams['learning_rate']) == pytest.approx(0.01)
  assert_matches_torch('Rprop', {}, 'float64')


@pytest.mark.parametrize(
  'kwargs, words',
  [
    (dict(etas=(0.5, 0.9)), ['etas', '0.9', 'etas[1]']),
    (dict(etas=[1.5, 2.0]), ['etas', '1.5']),
    (dict(etas=(0.0, 1.2)), ['etas', '0.0']),
    (dict(etas=[0.5]), ['etas', '[0.5]']),
    (dict(step_sizes='small'), ['step_sizes', "'small'"]),
    (dict(step_sizes=(1e-6, 'big')), ['step_sizes[1]', "'big'"]),
    (dict(lr=-1.0), ['lr', '-1.0']),
    (dict(eta=(0.5, 1.2)), ['eta', 'etas']),
  ],
)
def test_bad_input(kwargs, words):
  assert_rejected('Rprop', kwargs, words)
