"""timm's own versions of torch.optim's optimizers (SGDW, RMSpropTF, AdamWLegacy, NAdamLegacy,
RAdamLegacy) and its projected ones (AdamP, SGDP) against timm itself:
``timm.optim.create_optimizer_v2(params, opt=<name>, lr=..., **kwargs)`` and jaxsched's ID with the
same keywords, compared after every step of a 20-step run, compiled once per case."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import jaxsched
from jaxsched.optimizers import TIMM_OPTIMIZERS
from oracle import assert_config_error, problem, x64
from timm_runs import (
  SHAPES,
  TIMM_OPTIM,
  check_against_timm,
  check_complex_against_timm,
  jax_trajectory,
)

# timm's RAdamLegacy steps float64 parameters in float32 (p.float(), copied back), and torch's CPU
# add/addcdiv with alpha round the product and the sum once (a fused multiply-add), XLA twice: the
# float64 runs agree to two float32 ulps (2**-22 relative), not to 1e-9.
RTOL = {('radamlegacy', 'float64'): 2.5e-7}

# timm keywords per ID: every option at least once, weight decay on and off.
CASES = [
  ('sgdw', {'weight_decay': 0.1, 'maximize': True}),
  ('sgdw', {'nesterov': False, 'dampening': 0.3}),
  ('sgdw', {'momentum': 0.0, 'nesterov': False, 'weight_decay': 0.1}),
  ('nesterovw', {}),
  ('csgdw', {'weight_decay': 0.1}),
  ('csgdw', {'nesterov': False, 'maximize': True}),
  ('rmsproptf', {}),
  ('rmsproptf', {'weight_decay': 0.1, 'centered': True}),
  ('rmsproptf', {'momentum': 0.0, 'weight_decay': 0.1}),
  ('rmsproptf', {'lr_in_momentum': False, 'alpha': 0.0}),
  ('rmsproptfw', {'weight_decay': 0.1, 'lr_in_momentum': False, 'caution': True}),
  ('crmsproptf', {'weight_decay': 0.1, 'centered': True}),
  ('adamwlegacy', {}),
  ('adamwlegacy', {'weight_decay': 0.1, 'amsgrad': True, 'maximize': True}),
  ('cadamw', {'weight_decay': 0.1, 'amsgrad': True, 'clipping_threshold': 0.5}),
  ('nadamlegacy', {}),
  ('nadamlegacy', {'weight_decay': 0.1, 'schedule_decay': 0.1}),
  ('radamlegacy', {}),
  ('radamlegacy', {'weight_decay': 0.1, 'betas': (0.8, 0.9)}),
  # delta=1 on these shapes takes each branch of the projection (the channel view, the layer view,
  # neither) at some steps, 0.1 the layer view and neither
  ('adamp', {}),
  ('adamp', {'weight_decay': 0.1, 'delta': 1.0, 'nesterov': False}),
  ('cadamp', {'weight_decay': 0.1, 'delta': 1.0}),
  ('sgdp', {}),
  ('sgdp', {'weight_decay': 0.1, 'delta': 1.0, 'nesterov': False, 'dampening': 0.2}),
  ('csgdp', {'weight_decay': 0.1, 'delta': 1.0, 'momentum': 0.0}),
]
IDS = {name for name, _ in CASES}
PROJECTED = {'adamp', 'cadamp', 'sgdp', 'csgdp'}
PROJECTED_SHAPES = {'w': (4, 3), 'b': (3,), 'k': (3, 2, 2)}  # a 3-d array: timm's views reshape it
# float32 with options (the drawn-hyperparameter test runs every class in float32 with its defaults)
FLOAT32 = [CASES[i] for i in (4, 7, 14, 18, 21)]


def _check(name, kwargs, dtype, **options):
  shapes = PROJECTED_SHAPES if name in PROJECTED else SHAPES
  check_against_timm(name, kwargs, dtype, rtol=RTOL.get((name, dtype)), shapes=shapes, **options)


@pytest.mark.parametrize(
  'name, kwargs, dtype', [*((n, k, 'float64') for n, k in CASES), *((n, k, 'float32') for n, k in FLOAT32)], ids=str
)
def test_options_match_timm(name, kwargs, dtype):
  _check(name, kwargs, dtype)


DECAY = st.floats(0.01, 0.2)
EPS = st.floats(1e-10, 1e-4)
MOMENTUM = st.floats(0.05, 0.95)
ADAM = {'betas': st.tuples(st.floats(0.0, 0.99), st.floats(0.5, 0.999)), 'eps': EPS, 'weight_decay': DECAY}
# the float keywords drawn per class (the options are the defaults of its base ID)
DRAWS = {
  'adamwlegacy': {**ADAM, 'clipping_threshold': st.floats(0.5, 2.0)},
  'nadamlegacy': {**ADAM, 'schedule_decay': st.floats(0.0, 0.1)},
  'radamlegacy': ADAM,
  'adamp': {**ADAM, 'delta': st.floats(0.05, 2.0), 'wd_ratio': st.floats(0.0, 1.0)},
  'sgdp': {
    'momentum': MOMENTUM,
    'dampening': st.floats(0.0, 0.5),
    'weight_decay': DECAY,
    'eps': EPS,
    'delta': st.floats(0.05, 2.0),
    'wd_ratio': st.floats(0.0, 1.0),
  },
  'sgdw': {'momentum': MOMENTUM, 'weight_decay': DECAY},
  'rmsproptf': {'alpha': st.floats(0.0, 0.999), 'eps': EPS, 'momentum': MOMENTUM, 'weight_decay': DECAY},
}
# drawn apart from 0 (which drops the term, a compile of its own: CASES has them) and None, so that
# each class compiles once per dtype, its floats in the state
STATIC = {'weight_decay': 0.5, 'momentum': 0.5, 'clipping_threshold': 1.0}


@pytest.mark.parametrize('dtype', ('float64', 'float32'))
@given(data=st.data(), name=st.sampled_from(sorted(DRAWS)), lr=st.floats(1e-3, 0.1))
def test_random_hyperparameters_match_timm(dtype, data, name, lr):
  # one compile per class and dtype: the drawn floats go into the state
  kwargs = data.draw(st.fixed_dictionaries(DRAWS[name]))
  # lr is drawn too: a fixed lr in the built keywords, the drawn one in the state
  static = {'lr': 0.05, **{k: v for k, v in STATIC.items() if k in kwargs}}
  hyperparams = {'learning_rate': lr}
  for key, value in kwargs.items():
    if key == 'betas':
      hyperparams.update(zip(('b1', 'b2'), value))
    else:
      hyperparams[key] = value
  _check(name, kwargs, dtype, lr=lr, hyperparams=hyperparams, jax_kwargs=static, steps=10)


@pytest.mark.parametrize('name', [n for n, spec in TIMM_OPTIMIZERS.items() if n[5:] in IDS and spec.lr_linear])
def test_lr_linear_steps_scale_with_the_lr(name):
  # the same gradients at the same parameters: every update (decay included) scales with lr
  with x64('float64'):
    params = {'w': jnp.linspace(-1.0, 1.0, 12).reshape(4, 3), 'b': jnp.linspace(0.5, 1.0, 3)}
    grads = [jax.tree.map(lambda p, k=k: jnp.cos(k + 3 * p), params) for k in range(3)]
    runs = []
    for lr in (1.0, 0.25):
      tx = jaxsched.optimizer(name, lr=lr, weight_decay=0.1)
      state, updates = tx.init(params), []
      for g in grads:
        u, state = tx.update(g, state, params)
        updates.append(u)
      runs.append(updates)
    for full, quarter in zip(*runs, strict=True):
      for k in params:
        np.testing.assert_allclose(quarter[k], 0.25 * full[k], rtol=1e-9, atol=0)


def test_radamlegacy_steps_float64_parameters_in_float32():
  params, grads = problem(SHAPES, 5)
  for step in jax_trajectory('radamlegacy', {'weight_decay': 0.1}, params, grads, 'float64'):
    for value in step.values():
      assert value.dtype == np.float64
      np.testing.assert_array_equal(value, value.astype(np.float32).astype(np.float64))


@pytest.mark.parametrize('name, kwargs', [('adamwlegacy', {'weight_decay': 0.1, 'caution': True}), ('sgdw', {})])
def test_complex_parameters_train_as_timms_real_view(name, kwargs):
  # AdamWLegacy steps torch.view_as_real(p); SGDW's complex arithmetic is the real view's
  check_complex_against_timm(name, kwargs)


@pytest.mark.parametrize('name', ['timm.rmsproptf', 'timm.nadamlegacy', 'timm.radamlegacy', 'timm.adamp', 'timm.sgdp'])
def test_complex_parameters_are_refused_where_timm_takes_no_real_view(name):
  tx = jaxsched.optimizer(name)
  assert_config_error(lambda: tx.init({'w': jnp.ones(3), 'z': jnp.ones(3, jnp.complex64)}), [name, "['z']", 'complex'])


def test_sgdp_takes_torchs_default_lr_where_timm_requires_one():
  with pytest.raises(ValueError, match='required optimization parameter lr'):
    TIMM_OPTIM.create_optimizer_v2([torch.nn.Parameter(torch.ones(2, 2))], opt='sgdp')
  assert TIMM_OPTIMIZERS['timm.sgdp'].lr == TIMM_OPTIMIZERS['timm.csgdp'].lr == 1e-3  # torch.optim.SGD's default


@pytest.mark.parametrize(
  'name, kwargs, words',
  [
    ('timm.sgdw', {'momentum': 0.0}, ['nesterov=True', 'momentum', 'timm.optim.SGDW']),
    ('timm.sgdw', {'momentum': -0.1}, ['timm.sgdw: momentum=-0.1', '>= 0']),
    ('timm.rmsproptf', {'alpha': -0.1}, ['timm.rmsproptf: alpha=-0.1', '>= 0']),
    ('timm.rmsproptfw', {'centered': 1}, ['timm.rmsproptfw: centered=1', 'true or false']),
    ('timm.adamp', {'delta': 'wide'}, ['timm.adamp: delta=', "'wide'", 'finite real number']),
    ('timm.csgdp', {'eps': -1.0}, ['timm.csgdp: eps=-1.0', '>= 0']),
    ('timm.csgdc', {'lr': jaxsched.schedule('StepLR', 0.1, step_size=2)}, ['timm.csgdc', 'set max_lr']),
  ],
  ids=str,
)
def test_bad_keywords_are_config_errors(name, kwargs, words):
  assert_config_error(lambda: jaxsched.optimizer(name, **kwargs), words)
