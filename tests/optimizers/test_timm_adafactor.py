"""``timm.adafactor``, ``timm.cadafactor``, ``timm.adafactorbv`` and ``timm.cadafactorbv`` against
timm's ``Adafactor`` and ``AdafactorBigVision`` (``timm.optim.create_optimizer_v2``), compared after
every step of a run compiled once per case."""

import importlib

import jax.numpy as jnp
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import jaxsched
from jaxsched import lints
from jaxsched.optimizers.timm_adafactor import adafactor_dims, big_vision_dims
from oracle import assert_config_error
from timm_runs import TIMM_OPTIM, check_against_timm

# a matrix factored where min_dim_size_to_factor < 5, a tensor factored on its last two dimensions
# (on its first two where min_dim_size_to_factor < 3), and a scalar
SHAPES = {'w': (6, 5), 't': (3, 20, 18), 's': ()}
STEPS = 8
# A bfloat16 or float16 momentum rounds each step's float32 update: where that is an ulp off timm's
# (float32 sums run in another order), the rounding can go the other way, by an ulp of the momentum
# (2**-8 of it for bfloat16) times lr. The float64 runs round the same values: they agree to 1e-9.
HALF_MOMENTUM_FLOAT32 = 1e-3

CASES = [
  (
    'adafactor',
    {
      'lr': None,  # the relative step
      'warmup_init': True,
      'scale_parameter': False,
      'min_dim_size_to_factor': 2,  # 't' factored on its first two dimensions
      'weight_decay': 0.1,
      'decay_rate': -0.5,
    },
  ),
  ('cadafactor', {'min_dim_size_to_factor': 4, 'weight_decay': 0.1, 'clip_threshold': 0.5, 'eps': 1e-3}),
  ('adafactorbv', {'momentum_dtype': 'float32', 'unscaled_wd': True, 'weight_decay': 0.1}),
  (
    'cadafactorbv',
    {'momentum_dtype': 'float16', 'min_dim_size_to_factor': 4, 'clipping_threshold': 1.0, 'decay_offset': 3},
  ),
  ('adafactorbv', {'momentum': None, 'weight_decay': 0.01, 'eps': 1e-3, 'beta2_cap': 0.9}),
]


def _check(name, kwargs, dtype, **options):
  kwargs = dict(kwargs)
  lr = kwargs.pop('lr', 0.05)
  half = kwargs.get('momentum_dtype', 'bfloat16') != 'float32' and 'bv' in name
  rtol = HALF_MOMENTUM_FLOAT32 if dtype == 'float32' and half else None
  check_against_timm(name, kwargs, dtype, lr=lr, rtol=rtol, shapes=SHAPES, steps=STEPS, **options)


@pytest.mark.parametrize('name, kwargs', CASES, ids=str)
def test_options_match_timm(name, kwargs):
  # float32: the drawn-hyperparameter test runs both classes in float32
  _check(name, kwargs, 'float64')


# the float keywords drawn per class (timm's defaults otherwise: the relative step with scale_parameter,
# the bfloat16 momentum)
DRAWS = {
  'cadafactor': {
    'lr': st.none(),
    'eps': st.floats(1e-30, 1e-3),
    'eps_scale': st.floats(1e-4, 2.0),
    'clip_threshold': st.floats(0.1, 2.0),
    'decay_rate': st.floats(-1.0, -0.3),
    'betas': st.tuples(st.floats(0.0, 0.99), st.floats(0.5, 0.999)),
    'weight_decay': st.floats(0.01, 0.2),
  },
  'adafactorbv': {
    'lr': st.floats(1e-3, 0.1),
    'decay_rate': st.floats(0.3, 1.0),
    'beta2_cap': st.floats(0.5, 0.999),
    'momentum': st.floats(0.0, 0.99),
    'eps': st.floats(1e-30, 1e-3),
    'weight_decay': st.floats(0.01, 0.2),
    'clipping_threshold': st.floats(0.1, 2.0),
  },
}
# jaxsched's keywords: the same placeholder for every draw (one compile), the drawn values set in the state
STATIC = {
  'cadafactor': {**dict.fromkeys(DRAWS['cadafactor'], 0.5), 'lr': None, 'decay_rate': -0.5, 'betas': (0.5, 0.5)},
  'adafactorbv': dict.fromkeys(DRAWS['adafactorbv'], 0.5),
}


@pytest.mark.parametrize('dtype', ('float64', 'float32'))
@given(data=st.data(), name=st.sampled_from(sorted(DRAWS)))
def test_random_hyperparameters_match_timm(dtype, data, name):
  # one compile per class and dtype: the drawn floats go into the state
  kwargs = data.draw(st.fixed_dictionaries(DRAWS[name]))
  hyperparams = {}
  for key, value in kwargs.items():
    if key == 'betas':
      hyperparams.update(zip(('b1', 'b2'), value))
    elif value is not None:
      hyperparams['learning_rate' if key == 'lr' else key] = value
  _check(name, kwargs, dtype, hyperparams=hyperparams, jax_kwargs=STATIC[name])


_BIG_VISION = importlib.import_module(TIMM_OPTIM.AdafactorBigVision.__module__)


@pytest.mark.parametrize('shape', [(), (7,), (6, 5), (16, 16), (17, 17), (3, 20, 18), (20, 18, 3), (17, 17, 17, 2)])
@pytest.mark.parametrize('minimum', [2, 4, 16])
def test_factored_dimensions_are_timms(shape, minimum):
  timm_options = TIMM_OPTIM.Adafactor._get_options({'beta1': None}, shape, min_size_to_factor=minimum)
  assert adafactor_dims(shape, minimum) == timm_options[0]
  assert big_vision_dims(shape, minimum) == _BIG_VISION._factored_dims(shape, True, minimum)


def test_warmup_init_needs_the_relative_step():
  tx = jaxsched.optimizer('timm.adafactor', lr=0.1, warmup_init=True)
  assert_config_error(lambda: tx.init({'w': jnp.ones(3)}), ['warmup_init', 'lr null'])
  with pytest.raises(ValueError, match='warmup_init'):
    TIMM_OPTIM.Adafactor([torch.nn.Parameter(torch.ones(3))], lr=0.1, warmup_init=True)


@pytest.mark.parametrize('name', ['timm.adafactor', 'timm.cadafactorbv'])
def test_complex_parameters_are_refused(name):
  tx = jaxsched.optimizer(name)
  assert_config_error(lambda: tx.init({'z': jnp.ones(3, jnp.complex64)}), [name, "['z']", 'complex'])


@pytest.mark.parametrize(
  'name, kwargs, words',
  [
    ('timm.adafactor', {'betas': (0.9,)}, ['timm.adafactor: betas', 'null or a list of 2 items']),
    ('timm.adafactor', {'clip_threshold': 0.0}, ['clip_threshold', '> 0']),
    ('timm.adafactor', {'decay_rate': 0.8}, ['decay_rate', '<= 0']),
    ('timm.cadafactor', {'beta1': 0.9}, ['keyword for timm.cadafactor', "'beta1'", 'betas']),
    ('timm.adafactorbv', {'momentum_dtype': 'float64'}, ['momentum_dtype', "'bfloat16'", "'float32'"]),
    ('timm.adafactorbv', {'momentum': 1.0}, ['momentum', '[0, 1)']),
    ('timm.adafactorbvc', {'lr': jaxsched.schedule('StepLR', 0.1, step_size=2)}, ['timm.adafactorbvc', 'set max_lr']),
    ('timm.cadafactorbv', {'decay_offset': -1}, ['decay_offset', '>= 0']),
  ],
  ids=str,
)
def test_bad_keywords_are_config_errors(name, kwargs, words):
  assert_config_error(lambda: jaxsched.optimizer(name, **kwargs), words)


def test_momentum_dtype_takes_timms_names_and_torch_dtypes():
  spec = jaxsched.optimizers.TIMM_OPTIMIZERS['timm.adafactorbv']
  check = spec.kwargs['momentum_dtype'][1]
  value = check('k', torch.float16)
  assert value == 'float16' and value == torch.float16 and value != torch.bfloat16
  assert check('k', 'bfloat16') == torch.bfloat16


def test_a_config_without_learning_rate_trains_with_the_relative_step():
  # timm's default lr is None (relative_step); no LR to lint against
  config = jaxsched.load_config({'optimizer': 'timm.adafactor', 'scheduler': None})
  assert lints.learning_rate_out_of_range(config, lints.Run(10, 10)) == []
  params = {'w': jnp.ones((20, 18))}
  tx = jaxsched.build(config, params)
  updates, _ = tx.update({'w': jnp.full((20, 18), 0.5)}, tx.init(params), params)
  # the first relative step: min(1e-2, 1) * max(eps_scale, rms(p) = 1) times the clipped g / sqrt(g²), rms 1
  assert jnp.allclose(updates['w'], -0.01, rtol=1e-5)
