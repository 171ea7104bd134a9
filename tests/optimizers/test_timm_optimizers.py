"""The ``timm.<name>`` optimizers against timm itself: ``timm.optim.create_optimizer_v2(params,
opt=<name>, lr=..., **kwargs)`` (timm's class with its factory's defaults) and jaxsched's ID with
the same keywords, compared after every step of a 20-step run, compiled once per case."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import jaxsched
from jaxsched.optimizers import TIMM_OPTIMIZERS
from oracle import assert_config_error, x64
from timm_runs import TIMM_OPTIM as timm_optim
from timm_runs import check_against_timm, check_complex_against_timm

# timm's NvNovoGrad keeps its second moment as a float32 number and takes its sqrt in float32 with
# torch's CPU kernel (MKL), which is not correctly rounded (one float32 ulp off at times): the float64
# runs agree to that ulp, a relative 6e-8 in the step, not to 1e-9.
RTOL = {('novograd', 'float64'): 1e-7, ('novogradw', 'float64'): 1e-7}

# timm keywords per ID: every boolean option at least once, weight decay on and off.
CASES = [
  ('lamb', {}),
  ('lamb', {'weight_decay': 0.1, 'caution': True}),
  ('lamb', {'always_adapt': True, 'grad_averaging': False, 'bias_correction': False, 'max_grad_norm': None}),
  ('lambc', {'weight_decay': 0.1}),
  ('lambw', {'weight_decay': 0.1}),
  ('lambcw', {'weight_decay': 0.1, 'max_grad_norm': 2.0}),
  ('lars', {'weight_decay': 0.1, 'dampening': 0.2}),
  ('lars', {'momentum': 0.0, 'always_adapt': True}),
  ('larc', {'weight_decay': 0.1}),
  ('nlars', {'always_adapt': True}),
  ('nlarc', {'weight_decay': 0.1}),
  ('lion', {}),
  ('lion', {'weight_decay': 0.1, 'caution': True, 'maximize': True}),
  ('adabelief', {'weight_decay': 0.1}),
  ('adabelief', {'weight_decay': 0.1, 'amsgrad': True, 'decoupled_decay': False}),
  ('radabelief', {'weight_decay': 0.1}),
  ('radabelief', {'weight_decay': 0.1, 'fixed_decay': True, 'degenerated_to_sgd': False}),
  ('adan', {'weight_decay': 0.1}),
  ('adanw', {'weight_decay': 0.1, 'caution': True}),
  ('adopt', {}),
  ('adopt', {'weight_decay': 0.1, 'caution': True, 'maximize': True}),
  ('adoptw', {'weight_decay': 0.1, 'clip_exp': None, 'betas': (0.9, 0.99)}),
  ('laprop', {}),
  ('laprop', {'weight_decay': 0.1, 'caution': True}),
  ('nadamw', {'weight_decay': 0.1}),
  ('nadamw', {'clipping_threshold': 1.0, 'caution': True, 'maximize': True}),
  ('madgrad', {}),
  ('madgrad', {'momentum': 0.0, 'weight_decay': 0.1}),
  ('madgradw', {'weight_decay': 0.1}),
  ('novograd', {}),
  ('novograd', {'weight_decay': 0.1, 'grad_averaging': True, 'amsgrad': True}),
  ('novogradw', {'weight_decay': 0.1}),
  ('mars', {}),
  ('mars', {'weight_decay': 0.1, 'caution': True, 'mars_type': 'lion'}),
  ('mars', {'optimize_1d': True, 'weight_decay': 0.1}),
  ('mars', {'betas_1d': (0.8, 0.9), 'lr_1d_factor': 0.5, 'caution': True}),
]
# float32 with options (the drawn-hyperparameter test runs every class in float32 with its defaults);
# compiling dominates the file's time
FLOAT32 = [CASES[i] for i in (1, 15, 20, 23, 30)]


def _check(name, kwargs, dtype, **options):
  check_against_timm(name, kwargs, dtype, rtol=RTOL.get((name, dtype)), **options)


@pytest.mark.parametrize(
  'name, kwargs, dtype', [*((n, k, 'float64') for n, k in CASES), *((n, k, 'float32') for n, k in FLOAT32)], ids=str
)
def test_options_match_timm(name, kwargs, dtype):
  _check(name, kwargs, dtype)


BETA = st.floats(0.0, 0.99)
BETA2 = st.floats(0.5, 0.999)
EPS = st.floats(1e-8, 1e-4)
DECAY = st.floats(0.0, 0.2)
ADAM = {'betas': st.tuples(BETA, BETA2), 'eps': EPS, 'weight_decay': DECAY}
# the float keywords drawn per class (the options are the defaults of its base ID)
DRAWS = {
  'lamb': {**ADAM, 'max_grad_norm': st.floats(0.5, 5.0)},
  'lars': {
    'momentum': st.floats(0.0, 0.95),
    'dampening': st.floats(0.0, 0.5),
    'weight_decay': DECAY,
    'trust_coeff': st.floats(1e-3, 0.1),
    'eps': EPS,
  },
  'lion': {'betas': st.tuples(BETA, BETA2), 'weight_decay': DECAY},
  'radabelief': ADAM,
  'adan': {'betas': st.tuples(BETA, BETA, BETA2), 'eps': EPS, 'weight_decay': DECAY},
  'adopt': {**ADAM, 'clip_exp': st.floats(0.2, 0.5)},
  'laprop': ADAM,
  'nadamw': ADAM,
  'madgrad': {'momentum': st.floats(0.0, 0.95), 'eps': EPS, 'weight_decay': DECAY},
  'novograd': ADAM,
  'mars': {**ADAM, 'gamma': st.floats(0.0, 0.1), 'lr_1d_factor': st.floats(0.1, 2.0)},
}
SWITCHABLE = ('weight_decay', 'momentum')  # 0 drops the term: part of the compiled computation


@pytest.mark.parametrize('dtype', ('float64', 'float32'))
@given(data=st.data(), name=st.sampled_from(sorted(DRAWS)), lr=st.floats(1e-3, 0.1))
def test_random_hyperparameters_match_timm(dtype, data, name, lr):
  # one compile per class and dtype: the drawn floats go into the state
  kwargs = data.draw(st.fixed_dictionaries(DRAWS[name]))
  # the placeholder lr too: the drawn one is set in the state (a drawn lr here would compile each example)
  static = {'lr': 0.5, **{k: 0.0 if v == 0 else 0.5 for k, v in kwargs.items() if k in SWITCHABLE}}
  hyperparams = {'learning_rate': lr}
  for key, value in kwargs.items():
    if key == 'betas':
      hyperparams.update(zip(('b1', 'b2', 'b3'), value))
    elif static.get(key, 1.0) != 0:
      hyperparams[key] = value
  _check(name, kwargs, dtype, lr=lr, hyperparams=hyperparams, jax_kwargs=static, steps=10)


def test_complex_parameters_train_as_timms_real_view():
  # timm.optim.Lion steps torch.view_as_real(p)
  check_complex_against_timm('lion', {'weight_decay': 0.1})


@pytest.mark.parametrize('name', ['timm.lamb', 'timm.adan', 'timm.mars'])
def test_complex_parameters_are_refused_where_timm_takes_no_real_view(name):
  tx = jaxsched.optimizer(name)
  assert_config_error(lambda: tx.init({'w': jnp.ones(3), 'z': jnp.ones(3, jnp.complex64)}), [name, "['z']", 'complex'])


def test_unknown_timm_name_names_the_nearest():
  assert_config_error(lambda: jaxsched.optimizer('timm.lamm'), ["'timm.lamm'", "Did you mean 'timm.lamb'"])


@pytest.mark.parametrize(
  'name, kwargs, words',
  [
    ('timm.lion', {'eps': 1e-8}, ['keyword for timm.lion', "'eps'", 'betas']),
    ('timm.lamb', {'betas': (1.0, 0.9)}, ['timm.lamb: betas[0]=1.0', '[0, 1)']),
    ('timm.adan', {'betas': (0.9, 0.9)}, ['timm.adan: betas', '3 items']),
    ('timm.mars', {'mars_type': 'sgd'}, ['mars_type', "'adamw'", "'lion'"]),
    ('timm.madgrad', {'lr': 0.0}, ['timm.madgrad: lr', '> 0']),
    ('timm.nlars', {'momentum': 0.0}, ['nesterov=True', 'momentum']),
    ('timm.lamb', {'caution': 'yes'}, ['caution', 'true or false']),
    ('timm.lamb', {'max_grad_norm': -1.0}, ['max_grad_norm', '> 0']),
  ],
  ids=str,
)
def test_bad_keywords_are_config_errors(name, kwargs, words):
  assert_config_error(lambda: jaxsched.optimizer(name, **kwargs), words)


def test_every_timm_id_is_timms_name_with_its_defaults():
  # each ID is a name of timm's registry, and its keywords' defaults are what create_optimizer_v2 passes
  listed = set(timm_optim.list_optimizers())
  for spec in TIMM_OPTIMIZERS.values():
    name = spec.name[len('timm.') :]
    assert name in listed, name
    # timm's SGDP has no default lr (test_timm_classes.py checks that it requires one): the spec's is given
    given = {'lr': spec.lr} if name in ('sgdp', 'csgdp') else {}
    opt = timm_optim.create_optimizer_v2([torch.nn.Parameter(torch.ones(2, 2))], opt=name, **given)
    (group,) = opt.param_groups
    assert group['lr'] == spec.lr, name
    for key, (default, _) in spec.kwargs.items():
      if key in spec.jax_only:  # jaxsched's own keyword (max_lr: timm's max_lr_snapshot, tested apart)
        continue
      if key == 'betas_1d' and default is None:  # timm keeps betas_1d or betas
        default = spec.kwargs['betas'][0]
      if key == 'betas' and key not in group:  # timm.optim.Adafactor keeps betas[0] only, as beta1
        key, default = 'beta1', None if default is None else default[0]
      # a constructor-only keyword timm keeps on the optimizer (timm.optim.Adahessian's update_each, ...)
      held = vars(opt) if key in spec.constructor_only and key not in group else group
      value = tuple(held[key]) if isinstance(held[key], (list, tuple)) else held[key]
      assert value == default, (name, key, value, default)
    assert not spec.torch_state, name  # no torch.optim class: no torch state conversion


@pytest.mark.parametrize('name', ['timm.lamb', 'timm.lion', 'timm.adan'])
def test_a_config_with_parameter_groups_trains_as_timm_does(name):
  # a config names the timm optimizer; the recurrent group is timm's second param group at half the LR
  with x64('float64'):
    rng = np.random.default_rng(0)
    shapes = {'conv': (3, 4), 'recurrent': (4,)}
    init = {k: rng.normal(size=s) for k, s in shapes.items()}
    grads = [{k: 3.0 * rng.normal(size=s) for k, s in shapes.items()} for _ in range(5)]
    config = {'optimizer': name, 'learning_rate': 0.01, 'scheduler': None, 'recurrent_learning_rate_multiplier': 0.5}
    tx = jaxsched.build(config, {k: jnp.asarray(v) for k, v in init.items()})
    params = {k: jnp.asarray(v) for k, v in init.items()}
    state = tx.init(params)
    for g in grads:
      updates, state = tx.update({k: jnp.asarray(v) for k, v in g.items()}, state, params)
      params = optax.apply_updates(params, updates)
    torch_params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
    opt = timm_optim.create_optimizer_v2(
      [{'params': [torch_params['conv']]}, {'params': [torch_params['recurrent']], 'lr': 0.005}],
      opt=name[len('timm.') :],
      lr=0.01,
    )
    for g in grads:
      for k, p in torch_params.items():
        p.grad = torch.tensor(g[k])
      opt.step()
    for k, p in torch_params.items():
      np.testing.assert_allclose(np.asarray(params[k]), p.detach().numpy(), rtol=1e-9, atol=1e-12)
