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
  dict(lr_decay=d, weight_decay=wd, initial_accumulator_value=iav, maximize=mx)
  for d, wd, iav, mx in itertools.product((0.0, 0.1), (0.0, 0.01), (0.0, 0.5), (False, True))
]


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_options_match_torch(options, dtype):
  assert_matches_torch('Adagrad', dict(lr=0.1, **options), dtype)


@pytest.mark.parametrize('dtype', DTYPES)
@given(
  lr=st.floats(1e-4, 1.0),
  lr_decay=st.floats(0.0, 1.0),
  weight_decay=st.floats(0.0, 0.1),
  initial_accumulator_value=st.floats(0.0, 1.0),
  eps=st.floats(0.0, 1e-2),
  maximize=st.booleans(),
)
def test_random_hyperparameters_match_torch(
  dtype, lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize
):
  assert_matches_torch(
    'Adagrad',
    dict(
      lr=lr,
      lr_decay=lr_decay,
      weight_decay=weight_decay,
      initial_accumulator_value=initial_accumulator_value,
      eps=eps,
      maximize=maximize,
    ),
    dtype,
  )


@pytest.mark.parametrize('dtype', DTYPES)
def test_scheduled_lr_is_decayed_as_torch(dtype):
  # torch's clr = lr / (1 + (step - 1) * lr_decay) uses the group's current lr.
  params, grads = problem(SHAPES, 10)
  tensors = {k: torch.tensor(v, dtype=getattr(torch, dtype), requires_grad=True) for k, v in params.items()}
  opt = torch.optim.Adagrad(tensors.values(), lr=0.1, lr_decay=0.2)
  expected = []
  for step, g in enumerate(grads):
    opt.param_groups[0]['lr'] = 0.1 if step < 5 else 0.3
    for k, t in tensors.items():
      t.grad = torch.tensor(g[k], dtype=t.dtype)
    opt.step()
    expected.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
  actual = jax_trajectory(
    lambda: jaxsched.optimizer('Adagrad', learning_rate=lambda c: jnp.where(c < 5, 0.1, 0.3), lr_decay=0.2),
    params,
    grads,
    dtype,
  )
  assert_trajectories_close(actual, expected, dtype)


def test_defaults_are_torchs():
  # torch and the reference page: lr 0.01, eps 1e-10 outside the root,
  # accumulator from 0 (optax.adagrad: 0.1 and 1e-7 inside the root).
  state = jaxsched.optimizer('Adagrad').init({'w': jnp.zeros(2)})
  assert float(state.hyperparams['learning_rate']) == pytest.approx(0.01)
  assert float(state.hyperparams['eps']) == pytest.approx(1e-10)
  assert float(state.hyperparams['initial_accumulator_value']) == 0.0
  assert_matches_torch('Adagrad', {}, 'float64', scale=1e-6)


def test_fused_is_accepted_and_ignored():
  assert_matches_torch('Adagrad', dict(lr=0.1, fused=False), 'float64')


@pytest.mark.parametrize(
  'kwargs, words',
  [
    (dict(lr_decay=-0.1), ['lr_decay', '-0.1']),
    (dict(weight_decay=-0.01), ['weight_decay', '-0.01']),
    (dict(initial_accumulator_value=-1.0), ['initial_accumulator_value', '-1.0']),
    (dict(eps=-1e-10), ['eps', '-1e-10']),
    (dict(lr=-1.0), ['lr', '-1.0']),
    (dict(maximize='no'), ['maximize', "'no'"]),
    (dict(initial_accumulator=0.1), ['initial_accumulator', 'initial_accumulator_value']),
  ],
)
def test_bad_input(kwargs, words):
  assert_rejected('Adagrad', kwargs, words)
