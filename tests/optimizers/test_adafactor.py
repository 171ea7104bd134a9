import itertools

import jax.numpy as jnp
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxsched
from oracle import DTYPES, assert_matches_torch, assert_rejected

# The harness's default shapes: a 1-D (unfactored), a 2-D and a 3-D (factored on its last two dims) tensor.
OPTIONS = [
  dict(weight_decay=wd, eps=eps, maximize=mx)
  for wd, eps, mx in itertools.product((0.0, 0.1), ((None, 1e-3), (1e-3, 2.0)), (False, True))
]


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_options_match_torch(options, dtype):
  # lr=0.5: rho_t = min(lr, 1/sqrt(t)) makes steps of half the parameters' RMS, so
  # the comparison of parameters is a sharp one of the updates.
  assert_matches_torch('Adafactor', dict(lr=0.5, **options), dtype)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('lr', (1e-2, 3.0))
def test_lr_only_caps_the_relative_step(lr, dtype):
  # torch's default lr (1e-2) is the cap from step 1; with lr > 1 the cap never binds.
  assert_matches_torch('Adafactor', dict(lr=lr, weight_decay=0.01), dtype)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('scale, eps', [(1e-4, (1e-3, 1e-3)), (1e-9, (None, 1e-3))], ids=str)
def test_eps1_clamps_small_gradients(scale, eps, dtype):
  # Tiny gradients: with eps1=1e-3 both clamps bind (row means < eps1, V < eps1**2);
  # with eps1=None (machine epsilon) V = g**2 ~ 1e-18 is below eps1**2 in float32.
  assert_matches_torch('Adafactor', dict(lr=0.5, eps=eps), dtype, scale=scale)


@pytest.mark.parametrize('dtype', DTYPES)
def test_shapes_0d_to_4d(dtype):
  shapes = {'scalar': (), 'row': (1, 5), 'col': (5, 1), 'four': (2, 2, 3, 4)}
  assert_matches_torch('Adafactor', dict(lr=0.5, weight_decay=0.1), dtype, shapes=shapes)


@pytest.mark.parametrize('dtype', DTYPES)
@given(
  lr=st.floats(1e-4, 2.0),
  beta2_decay=st.floats(-2.0, 0.0),
  eps1=st.one_of(st.none(), st.floats(0.0, 1e-2)),
  eps2=st.floats(0.0, 2.0),
  d=st.floats(1.0, 10.0),
  weight_decay=st.floats(0.0, 0.5),
  maximize=st.booleans(),
  shape=st.sampled_from([(5,), (4, 3), (2, 3, 5)]),
)
def test_random_hyperparameters_match_torch(dtype, lr, beta2_decay, eps1, eps2, d, weight_decay, maximize, shape):
  assert_matches_torch(
    'Adafactor',
    dict(lr=lr, beta2_decay=beta2_decay, eps=(eps1, eps2), d=d, weight_decay=weight_decay, maximize=maximize),
    dtype,
    shapes={'p': shape},
  )


def test_defaults_are_torchs():
  state = jaxsched.optimizer('Adafactor').init({'w': jnp.zeros((2, 3))})
  assert float(state.hyperparams['learning_rate']) == pytest.approx(1e-2)
  assert float(state.hyperparams['beta2_decay']) == pytest.approx(-0.8)
  assert float(state.hyperparams['d']) == 1.0
  assert_matches_torch('Adafactor', {}, 'float64', jax_kwargs={})


def test_moments_are_factored_on_the_last_two_dims():
  tx = jaxsched.optimizer('Adafactor')
  state = tx.init({'v': jnp.zeros(5), 'k': jnp.zeros((2, 3, 4))})
  inner = state.inner_state[0]
  assert inner.moments['v'].shape == (5,)
  assert [m.shape for m in inner.moments['k']] == [(2, 3, 1), (2, 1, 4)]


@pytest.mark.parametrize(
  'kwargs, words',
  [
    (dict(beta2_decay=0.1), ['beta2_decay', '0.1']),
    (dict(d=0.5), ['d=0.5', '>= 1']),
    (dict(eps=(-1e-3, 1e-3)), ['eps[0]', '-0.001']),
    (dict(eps=(None, -1.0)), ['eps[1]', '-1.0']),
    (dict(eps=(None, None)), ['eps', 'None']),
    (dict(eps=1e-3), ['eps', '0.001']),
    (dict(weight_decay=-0.1), ['weight_decay', '-0.1']),
    (dict(lr=-1.0), ['lr', '-1.0']),
    (dict(maximize='yes'), ['maximize', "'yes'"]),
  ],
)
def test_bad_input(kwargs, words):
  assert_rejected('Adafactor', kwargs, words)
