import inspect
import itertools

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
  assert_matches_torch,
  assert_rejected,
  assert_trajectories_close,
  jax_trajectory,
  problem,
)

NAMES = ('Adam', 'AdamW', 'Adamax', 'NAdam', 'RAdam')

# Every boolean option, and weight decay zero (the term dropped) or not.
BOOLEANS = {
  'Adam': ('amsgrad', 'maximize', 'decoupled_weight_decay'),
  'AdamW': ('amsgrad', 'maximize'),
  'Adamax': ('maximize',),
  'NAdam': ('maximize', 'decoupled_weight_decay'),
  'RAdam': ('maximize', 'decoupled_weight_decay'),
}
# decoupled_weight_decay without weight decay is the same computation as without: skipped.
OPTIONS = [
  (name, options)
  for name in NAMES
  for wd in (0.0, 0.1)
  for flags in itertools.product((False, True), repeat=len(BOOLEANS[name]))
  for options in [dict(weight_decay=wd, **dict(zip(BOOLEANS[name], flags)))]
  if wd or not options.get('decoupled_weight_decay')
]

# Compiling dominates each run's time (0.3 s of CPU with one leaf, 0.55 s with
# three): one 3-D tensor per run, two leaves where trees are the point.
TWO_LEAVES = {'w': (4, 3), 'k': (2, 3, 5)}
ONE_LEAF = {'k': (2, 3, 5)}


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name, options', OPTIONS, ids=str)
def test_options_match_torch(name, options, dtype):
  # 12 steps: RAdam rectifies from step 6 on (rho_t > 5 with beta2 = 0.999).
  assert_matches_torch(name, dict(lr=0.05, **options), dtype, steps=12, shapes=ONE_LEAF)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name', NAMES)
def test_small_gradients_match_torch(name, dtype):
  # Gradients of 1e-6: where eps sits (inside or outside the bias correction) shows.
  assert_matches_torch(name, dict(lr=0.05, eps=1e-6, betas=(0.8, 0.99)), dtype, steps=12, scale=1e-6, shapes=ONE_LEAF)


@pytest.mark.parametrize('dtype', DTYPES)
@given(
  name=st.sampled_from(NAMES),
  lr=st.floats(1e-4, 0.3),
  b1=st.floats(0.0, 0.999),
  b2=st.floats(0.0, 0.9999),
  eps=st.floats(0.0, 1e-3),
  weight_decay=st.floats(0.0, 0.2),
  momentum_decay=st.floats(0.0, 0.5),
  flags=st.fixed_dictionaries(
    {'amsgrad': st.booleans(), 'maximize': st.booleans(), 'decoupled_weight_decay': st.booleans()}
  ),
)
def test_random_hyperparameters_match_torch(dtype, name, lr, b1, b2, eps, weight_decay, momentum_decay, flags):
  if dtype == 'float32':
    # eps = 0 makes the step m / sqrt(v): with beta2 near 0 that is m / |g|, which amplifies float32 rounding
    # without bound where g crosses 0 (a 3.6e-4 gap after 9 steps at b2 = 0); float64 keeps eps = 0.
    eps = max(eps, 1e-8)
  kwargs = dict(
    lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay, **{k: v for k, v in flags.items() if k in BOOLEANS[name]}
  )
  if name == 'NAdam':
    kwargs['momentum_decay'] = momentum_decay
  assert_matches_torch(name, kwargs, dtype, steps=12, shapes=ONE_LEAF)


@pytest.mark.parametrize('dtype', DTYPES)
def test_radam_long_run_high_beta2(dtype):
  # beta2 = 0.9999: rho_t is a small difference of two terms near 2e4; torch
  # takes it in float64, jaxsched in float32 here (see adam.sma_lengths).
  assert_matches_torch('RAdam', dict(lr=0.3, betas=(0.9, 0.9999)), dtype, steps=30, shapes=ONE_LEAF)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name', ['Adam', 'NAdam'])  # NAdam: beta1 also enters mu_t
def test_scheduled_beta1_matches_torch(name, dtype):
  # As OneCycleLR/CyclicLR do: torch's group['betas'] changes before every step,
  # and the bias correction 1 - beta1**t uses the current beta1.
  b1s = np.array([0.95, 0.9, 0.85, 0.6, 0.0, 0.7, 0.99, 0.9, 0.8, 0.95, 0.5, 0.9])
  params, grads = problem(TWO_LEAVES, steps=len(b1s))
  tdtype = getattr(torch, dtype)
  tensors = [torch.tensor(v, dtype=tdtype, requires_grad=True) for v in params.values()]
  opt = getattr(torch.optim, name)(tensors, lr=0.05, betas=(float(b1s[0]), 0.99))
  expected = []
  for b1, g in zip(b1s, grads):
    opt.param_groups[0]['betas'] = (float(b1), 0.99)
    for t, gi in zip(tensors, g.values()):
      t.grad = torch.tensor(gi, dtype=tdtype)
    opt.step()
    expected.append({k: t.detach().numpy().copy() for k, t in zip(params, tensors)})
  actual = jax_trajectory(
    lambda: jaxsched.optimizer(name, lr=0.05, betas=(lambda c: jnp.asarray(b1s)[c], 0.99)), params, grads, dtype
  )
  assert_trajectories_close(actual, expected, dtype)


@pytest.mark.parametrize('name', NAMES)
def test_keywords_are_torchs(name):
  signature = inspect.signature(getattr(torch.optim, name))
  torch_keys = set(signature.parameters) - {'params', 'lr', *IMPLEMENTATION_FLAGS}
  assert set(OPTIMIZERS[name].kwargs) == torch_keys
  for key, (default, _) in OPTIMIZERS[name].kwargs.items():
    assert default == signature.parameters[key].default, key


@pytest.mark.parametrize(
  'name, lr', [('Adam', 0.001), ('AdamW', 0.001), ('Adamax', 0.002), ('NAdam', 0.002), ('RAdam', 0.001)]
)
def test_defaults(name, lr):
  state = jaxsched.optimizer(name).init({'w': jnp.zeros(2)})
  assert float(state.hyperparams['learning_rate']) == pytest.approx(lr)
  assert_matches_torch(name, {}, 'float64', jax_kwargs={}, shapes=ONE_LEAF)


def test_adamw_default_weight_decay():
  state = jaxsched.optimizer('AdamW').init({'w': jnp.zeros(2)})
  assert float(state.hyperparams['weight_decay']) == pytest.approx(0.01)


def test_nadam_mu_product_is_float32():
  # torch keeps mu_product in its default scalar dtype (float32) for float64 parameters too.
  from jax import enable_x64

  with enable_x64(True):
    state = jaxsched.optimizer('NAdam').init({'w': jnp.zeros(2, jnp.float64)})
  assert state.inner_state[0].mu_product.dtype == jnp.float32


@pytest.mark.parametrize(
  'name, kwargs, words',
  [
    ('Adam', dict(betas=(1.0, 0.999)), ['betas[0]', '1.0']),
    ('Adam', dict(betas=(0.9, -0.1)), ['betas[1]', '-0.1']),
    ('AdamW', dict(betas=(0.9,)), ['betas', '(0.9,)']),
    ('Adam', dict(eps=-1e-8), ['eps', '-1e-08']),
    ('AdamW', dict(weight_decay=-0.01), ['weight_decay', '-0.01']),
    ('Adam', dict(lr=-0.1), ['lr', '-0.1']),
    ('Adamax', dict(eps='tiny'), ['eps', "'tiny'"]),
    ('NAdam', dict(momentum_decay=-1.0), ['momentum_decay', '-1.0']),
    ('RAdam', dict(decoupled_weight_decay='yes'), ['decoupled_weight_decay', "'yes'"]),
    ('Adam', dict(amsgrad=1), ['amsgrad', 'true or false']),
    ('AdamW', dict(decoupled_weight_decay=True), ['decoupled_weight_decay', 'AdamW']),
    ('Adamax', dict(amsgrad=True), ['amsgrad', 'Adamax']),
  ],
)
def test_bad_input(name, kwargs, words):
  assert_rejected(name, kwargs, words)


def test_nadam_infinite_momentum_decay_is_a_constant_beta1():
  # torch accepts momentum_decay=inf: mu_t is then beta1 at every step (optax.nadam's form)
  assert_matches_torch('NAdam', dict(lr=0.01, momentum_decay=float('inf')), 'float64')
  with pytest.raises(jaxsched.ConfigError, match='momentum_decay'):
    jaxsched.optimizer('NAdam', momentum_decay=float('nan'))
