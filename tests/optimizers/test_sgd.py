import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxsched
from oracle import DTYPES, assert_matches_torch, assert_rejected

OPTIONS = [
  dict(momentum=m, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
  for m, d, wd, n, mx in itertools.product((0.0, 0.9), (0.0, 0.3), (0.0, 0.01), (False, True), (False, True))
  if not (n and (m == 0 or d != 0))
]


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_options_match_torch(options, dtype):
  assert_matches_torch('SGD', dict(lr=0.05, **options), dtype)


@pytest.mark.parametrize('dtype', DTYPES)
@given(
  lr=st.floats(1e-4, 1.0),
  momentum=st.floats(0.0, 0.999),
  dampening=st.floats(0.0, 1.0),
  weight_decay=st.floats(0.0, 0.1),
  nesterov=st.booleans(),
)
def test_random_hyperparameters_match_torch(dtype, lr, momentum, dampening, weight_decay, nesterov):
  if nesterov:
    dampening = 0.0
    momentum = max(momentum, 0.1)
  assert_matches_torch(
    'SGD', dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov), dtype
  )


def test_reference_defaults():
  # The reference page: SGD lr 0.01, momentum 0.9 (torch's own defaults: 1e-3 and 0).
  state = jaxsched.optimizer('SGD').init({'w': __import__('jax.numpy').numpy.zeros(2)})
  assert float(state.hyperparams['learning_rate']) == pytest.approx(0.01)
  assert float(state.hyperparams['momentum']) == pytest.approx(0.9)
  assert_matches_torch('SGD', dict(lr=0.01, momentum=0.9), 'float64', jax_kwargs={})


@pytest.mark.parametrize(
  'kwargs, words',
  [
    (dict(nesterov=True, momentum=0.0), ['nesterov', 'momentum']),
    (dict(nesterov=True, dampening=0.1), ['nesterov', 'dampening']),
    (dict(momentum=-0.1), ['momentum', '-0.1']),
    (dict(lr=-1.0), ['lr', '-1.0']),
    (dict(momentum='fast'), ['momentum', "'fast'"]),
    (dict(nesterov=1), ['nesterov', 'true or false']),
  ],
)
def test_bad_input(kwargs, words):
  assert_rejected('SGD', kwargs, words)
