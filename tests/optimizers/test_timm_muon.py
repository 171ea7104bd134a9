"""``timm.muon``, ``timm.nmuon``, ``timm.adamuon`` and ``timm.nadamuon`` against ``timm.optim.Muon``
(``create_optimizer_v2(params, opt=<name>, ...)``), step by step, one compiled run per case.

timm runs Newton–Schulz in bfloat16 whatever the parameters' dtype, and so does jaxsched, with
timm's casts. bfloat16 results are not bit-equal across XLA and torch in general: the float32
accumulation order of the matmuls differs, and a flipped bfloat16 rounding shows (measured: 3.4e-6
of a float64 parameter, 3.6e-5 of a float32 one, on this machine; most runs agree to 1e-15). So
the options and drawn hyperparameters are compared with Newton–Schulz run in the parameters'
dtype on both sides (timm's ``dtype`` argument, jaxsched's ``timm_muon.NS_DTYPE``), to 1e-9 in
float64, and the real bfloat16 path to ``BF16_RTOL``, which timm with its Newton–Schulz in float32
misses (by >= 2.5e-4)."""

import contextlib
import functools
import sys
from unittest import mock

import jax.numpy as jnp
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import jaxsched
from jaxsched.optimizers import timm_muon
from oracle import assert_config_error, jax_trajectory, max_rel_diff, problem
from timm_runs import check_against_timm, timm_trajectory

TIMM_MUON = sys.modules['timm.optim.muon']  # imported by timm_runs (import_timm)
BF16_RTOL = 5e-5


@contextlib.contextmanager
def newton_schulz_in(dtype):
  """timm's and jaxsched's Newton–Schulz run in ``dtype`` instead of bfloat16."""
  zeropower = functools.partial(TIMM_MUON.zeropower_via_newtonschulz, dtype=getattr(torch, dtype))
  with mock.patch.object(TIMM_MUON, 'zeropower_via_newtonschulz', zeropower):
    with mock.patch.object(timm_muon, 'NS_DTYPE', dtype):
      yield


# matrices both ways, a conv kernel (flattened or batched over its 9 positions), a vector; the last
# three take timm's AdamW fallback by its shape rules: a side below 4, an aspect ratio above 128,
# a leading unit axis (a depthwise conv)
SHAPES = {'tall': (6, 4), 'wide': (4, 6), 'conv': (8, 2, 3, 3), 'bias': (5,)}
ROUTED = {**SHAPES, 'narrow': (2, 8), 'long': (4, 516), 'depthwise': (4, 1, 3, 3)}
STEPS = 8
SMALL = {'w': (6, 4), 'b': (5,)}

CASES = [
  ('muon', {'weight_decay': 0.1, 'adjust_lr_fn': 'original', 'fallback_lr_scale': 0.5}, ROUTED),
  ('nmuon', {'conv_mode': 'batched', 'normalize_spatial': False, 'adjust_lr_fn': 'rms_to_rms', 'safety_factor': 1.02}),
  (
    'muon',
    {'algo': 'adamuon', 'nesterov': True, 'adjust_lr_fn': None, 'scale_eps': True, 'eps': 0.1, 'momentum': 0.0},
  ),
  ('adamuon', {'weight_decay': 0.1, 'conv_mode': 'batched', 'ns_coefficients': 'polar_express'}),
  (
    'nadamuon',
    {
      'adjust_lr_fn': 'rsqrt_in',
      'ns_coefficients': ((3.4, -4.7, 2.0), (3.0, -3.2, 1.2)),
      'ns_steps': 3,
      'betas': (0.8, 0.9),
    },
  ),
  ('adamuon', {'adjust_lr_fn': 'rms_to_rms', 'ns_coefficients': 'polar_express_safer', 'ns_steps': 6}),
]


@pytest.mark.parametrize(
  'name, kwargs, shapes, dtype',
  [*((n, k, *(shapes or [SHAPES]), 'float64') for n, k, *shapes in CASES), (*CASES[3], SHAPES, 'float32')],
  ids=str,
)
def test_options_match_timm(name, kwargs, shapes, dtype):
  with newton_schulz_in(dtype):
    check_against_timm(name, kwargs, dtype, shapes=shapes, steps=STEPS)


@pytest.mark.parametrize('name, dtype', [('nmuon', 'float64'), ('adamuon', 'float32')])
def test_bfloat16_newton_schulz_matches_timm(name, dtype):
  # timm's own path; a per-step jit (not check_against_timm's cached runs, built with NS_DTYPE patched)
  params, grads = problem(SHAPES, STEPS)
  params = {k: v.astype(dtype) for k, v in params.items()}
  kwargs = {'lr': 0.05, 'weight_decay': 0.1}
  expected = timm_trajectory(name, kwargs, params, grads, dtype)
  actual = jax_trajectory(lambda: jaxsched.optimizer(f'timm.{name}', **kwargs), params, grads, dtype)
  assert max(max_rel_diff(a, e) for a, e in zip(actual, expected)) <= BF16_RTOL
  with mock.patch.object(timm_muon, 'NS_DTYPE', 'float32'):  # the tolerance tells the precisions apart
    in_float32 = jax_trajectory(lambda: jaxsched.optimizer(f'timm.{name}', **kwargs), params, grads, dtype)
  assert max(max_rel_diff(a, e) for a, e in zip(in_float32, expected)) > 4 * BF16_RTOL


BETA = st.floats(0.0, 0.99)
DRAWS = {
  'momentum': st.floats(0.0, 0.99),
  'weight_decay': st.floats(0.0, 0.2),
  'eps': st.floats(1e-8, 1e-3),
  'safety_factor': st.floats(1.0, 1.1),
  'fallback_lr_scale': st.floats(0.1, 2.0),
  'betas': st.tuples(BETA, st.floats(0.5, 0.999)),
}


STATIC = {'lr': 0.05, 'weight_decay': 0.5}  # jaxsched's build; a weight decay of 0 keeps its exact 0 term


@pytest.mark.parametrize('name, dtype', [('adamuon', 'float64'), ('nmuon', 'float32')])
@given(data=st.data(), lr=st.floats(1e-3, 0.1))
def test_random_hyperparameters_match_timm(name, dtype, data, lr):
  # one compile per case: the drawn floats (the LR too) go into the state of one build
  kwargs = data.draw(st.fixed_dictionaries(DRAWS))
  hyperparams = {'learning_rate': lr, **dict(zip(('b1', 'b2'), kwargs['betas']))}
  hyperparams.update({k: v for k, v in kwargs.items() if k != 'betas'})
  with newton_schulz_in(dtype):
    check_against_timm(name, kwargs, dtype, lr=lr, hyperparams=hyperparams, jax_kwargs=STATIC, steps=4, shapes=SMALL)


@pytest.mark.parametrize('name', ['timm.muon', 'timm.adamuon'])
def test_complex_parameters_are_refused(name):
  # timm casts a complex matrix to bfloat16 for Newton–Schulz, dropping its imaginary part
  tx = jaxsched.optimizer(name)
  assert_config_error(lambda: tx.init({'w': jnp.ones((4, 4)), 'z': jnp.ones((4, 4), jnp.complex64)}), ["['z']"])


@pytest.mark.parametrize(
  'name, kwargs, words',
  [
    ('timm.muon', {'adjust_lr_fn': 'rsqrt_in'}, ["adjust_lr_fn='rsqrt_in'", "algo='muon'", "'rms_to_rms'"]),
    ('timm.adamuon', {'adjust_lr_fn': 'original'}, ["adjust_lr_fn='original'", "algo='adamuon'", "'rsqrt_in'"]),
    ('timm.muon', {'ns_coefficients': 'quintik'}, ['ns_coefficients', "Did you mean 'quintic'"]),
    ('timm.muon', {'ns_coefficients': [(1.0, 2.0)]}, ['ns_coefficients', '(1.0, 2.0)']),
    ('timm.muon', {'ns_coefficients': []}, ['ns_coefficients=[]', 'non-empty']),
    ('timm.muon', {'conv_mode': 'batch'}, ['conv_mode', "Did you mean 'batched'"]),
    ('timm.muon', {'algo': 'adam'}, ['algo', "'adamuon'"]),
    ('timm.muon', {'momentum': 1.0}, ['momentum=1.0', '[0, 1)']),
    ('timm.muon', {'ns_steps': -1}, ['ns_steps=-1']),
    ('timm.muon', {'safety_factor': 0.0}, ['safety_factor=0.0', '> 0']),
    ('timm.nmuon', {'use_fallback': True}, ['keyword for timm.nmuon', "'use_fallback'"]),
    ('timm.muon', {'fallback_list': ['head.*']}, ['keyword for timm.muon', "'fallback_list'"]),
  ],
  ids=str,
)
def test_bad_keywords_are_config_errors(name, kwargs, words):
  assert_config_error(lambda: jaxsched.optimizer(name, **kwargs), words)
