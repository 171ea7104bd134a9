"""timm's own versions of torch.optim's optimizers (SGDW, RMSpropTF, AdamWLegacy, NAdamLegacy,
RAdamLegacy) and its projected ones (AdamP, SGDP) against timm itself:
``timm.optim.create_optimizer_v2(params, opt=<name>, lr=..., **kwargs)`` and jaxsched's ID with the
same keywords, compared after every step of a 20-step run, compiled once per case."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from timm_runs import check_against_timm

import jaxsched
from oracle import assert_config_error

RTOL: dict[tuple[str, str], float] = {}

# timm keywords per ID: every option at least once, weight decay on and off.
CASES = [
  ('sgdw', {}),
  ('sgdw', {'weight_decay': 0.1, 'maximize': True}),
  ('sgdw', {'weight_decay': 0.1, 'nesterov': False, 'dampening': 0.3}),
  ('sgdw', {'momentum': 0.0, 'nesterov': False, 'weight_decay': 0.1}),
  ('nesterovw', {'weight_decay': 0.1}),
  ('csgdw', {'weight_decay': 0.1}),
  ('csgdw', {'nesterov': False, 'maximize': True}),
  ('rmsproptf', {}),
  ('rmsproptf', {'weight_decay': 0.1, 'centered': True}),
  ('rmsproptf', {'momentum': 0.0, 'weight_decay': 0.1, 'centered': True}),
  ('rmsproptf', {'lr_in_momentum': False, 'alpha': 0.0}),
  ('rmsproptfw', {'weight_decay': 0.1}),
  ('rmsproptfw', {'weight_decay': 0.1, 'lr_in_momentum': False, 'caution': True}),
  ('crmsproptf', {'weight_decay': 0.1, 'centered': True}),
]
# float32 with options (the drawn-hyperparameter test runs every class in float32 with its defaults)
FLOAT32 = [CASES[i] for i in (1, 5, 8, 13)]


def _check(name, kwargs, dtype, **options):
  check_against_timm(name, kwargs, dtype, rtol=RTOL.get((name, dtype)), **options)


@pytest.mark.parametrize(
  'name, kwargs, dtype', [*((n, k, 'float64') for n, k in CASES), *((n, k, 'float32') for n, k in FLOAT32)], ids=str
)
def test_options_match_timm(name, kwargs, dtype):
  _check(name, kwargs, dtype)


DECAY = st.floats(0.0, 0.2)
EPS = st.floats(1e-10, 1e-4)
# the float keywords drawn per class (the options are the defaults of its base ID)
DRAWS = {
  'sgdw': {'momentum': st.floats(0.0, 0.95), 'weight_decay': DECAY},
  'rmsproptf': {'alpha': st.floats(0.0, 0.999), 'eps': EPS, 'momentum': st.floats(0.0, 0.95), 'weight_decay': DECAY},
}
SWITCHABLE = ('weight_decay', 'momentum')  # 0 drops the term: part of the compiled computation


@pytest.mark.parametrize('dtype', ('float64', 'float32'))
@given(data=st.data(), name=st.sampled_from(sorted(DRAWS)), lr=st.floats(1e-3, 0.1))
def test_random_hyperparameters_match_timm(dtype, data, name, lr):
  # one compile per class and dtype: the drawn floats go into the state
  kwargs = data.draw(st.fixed_dictionaries(DRAWS[name]))
  static = {k: 0.0 if v == 0 else 0.5 for k, v in kwargs.items() if k in SWITCHABLE}
  hyperparams = {'learning_rate': lr}
  for key, value in kwargs.items():
    if key == 'betas':
      hyperparams.update(zip(('b1', 'b2'), value))
    elif static.get(key, 1.0) != 0:
      hyperparams[key] = value
  if name == 'sgdw' and kwargs['momentum'] == 0:
    kwargs = {**kwargs, 'nesterov': False}
    static = {**static, 'nesterov': False}
  _check(name, kwargs, dtype, lr=lr, hyperparams=hyperparams, jax_kwargs=static, steps=10)


@pytest.mark.parametrize(
  'name, kwargs, words',
  [
    ('timm.sgdw', {'momentum': 0.0}, ['nesterov=True', 'momentum', 'timm.optim.SGDW']),
    ('timm.sgdw', {'momentum': -0.1}, ['timm.sgdw: momentum=-0.1', '>= 0']),
    ('timm.rmsproptf', {'alpha': -0.1}, ['timm.rmsproptf: alpha=-0.1', '>= 0']),
    ('timm.rmsproptfw', {'centered': 1}, ['timm.rmsproptfw: centered=1', 'true or false']),
    ('timm.csgdw', {'corrected_weight_decay': True}, ['keyword for timm.csgdw', "'corrected_weight_decay'"]),
  ],
  ids=str,
)
def test_bad_keywords_are_config_errors(name, kwargs, words):
  assert_config_error(lambda: jaxsched.optimizer(name, **kwargs), words)
