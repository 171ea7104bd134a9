import itertools

import jax.numpy as jnp
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxsched
from oracle import DTYPES, assert_matches_torch, assert_rejected

OPTIONS = [dict(weight_decay=wd, maximize=mx) for wd, mx in itertools.product((0.0, 0.01), (False, True))]


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('rho', (0.0, 0.9, 1.0))
@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_options_match_torch(options, rho, dtype):
  assert_matches_torch('Adadelta', dict(lr=1.0, rho=rho, **options), dtype)


@pytest.mark.parametrize('dtype', DTYPES)
@given(
  lr=st.floats(1e-3, 10.0),
  rho=st.floats(0.0, 1.0),
  eps=st.floats(1e-10, 1e-2),
  weight_decay=st.floats(0.0, 0.1),
  maximize=st.booleans(),
)
def test_random_hyperparameters_match_torch(dtype, lr, rho, eps, weight_decay, maximize):
  assert_matches_torch('Adadelta', dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize), dtype)


def test_descends_unlike_optax_adadelta_without_lr():
  # optax.adadelta(learning_rate=None) skips the sign flip and ascends.
  tx = jaxsched.optimizer('Adadelta')
  params = {'w': jnp.array([1.0, -2.0])}
  updates, _ = tx.update({'w': jnp.array([1.0, -1.0])}, tx.init(params), params)
  assert bool(jnp.all(jnp.sign(updates['w']) == jnp.array([-1.0, 1.0])))


def test_defaults_are_torchs():
  state = jaxsched.optimizer('Adadelta').init({'w': jnp.zeros(2)})
  assert float(state.hyperparams['learning_rate']) == 1.0
  assert float(state.hyperparams['rho']) == pytest.approx(0.9)
  assert float(state.hyperparams['eps']) == pytest.approx(1e-6)
  assert_matches_torch('Adadelta', {}, 'float64')


@pytest.mark.parametrize(
  'kwargs, words',
  [
    (dict(rho=1.5), ['rho', '1.5']),
    (dict(rho=-0.1), ['rho', '-0.1']),
    (dict(eps=-1e-6), ['eps', '-1e-06']),
    (dict(weight_decay=-0.01), ['weight_decay', '-0.01']),
    (dict(lr=-1.0), ['lr', '-1.0']),
    (dict(maximize=0), ['maximize', '0']),
    (dict(roh=0.9), ['roh', 'rho']),
  ],
)
def test_bad_input(kwargs, words):
  assert_rejected('Adadelta', kwargs, words)
