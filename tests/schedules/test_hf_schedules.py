"""jaxsched's ``hf.<name>`` schedules against Hugging Face transformers' ``get_scheduler``
on a torch optimizer: every step's LR, float64 and float32, under jit and vmap."""

from __future__ import annotations

import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st
from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION

import jaxsched
from jaxsched.schedules import SCHEDULES, hf
from jaxsched.schedules._registry import METRIC_DRIVEN
from oracle import assert_config_error, x64

NAMES = [t.value for t in transformers.SchedulerType if f'hf.{t.value}' in SCHEDULES]
SHAPES = ['linear', 'cosine', '1-sqrt']
# float64: HF's float math to 1e-12 of each value, plus 1e-15 of the base lr (a few ulps,
# where a cosine ends near 0); float32: 1e-6 of the base lr.
TOLERANCE = {'float64': (1e-12, 1e-15), 'float32': (0.0, 1e-6)}


def hf_lrs(name, lr, w, t, kwargs, steps):
  """``param_groups[0]['lr']`` after 0..steps scheduler steps of transformers' scheduler."""
  opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # get_wsd_schedule warns when both lengths are given
    sched = transformers.get_scheduler(name, opt, w, t, dict(kwargs))
  out = [opt.param_groups[0]['lr']]
  for _ in range(steps):
    opt.step()
    sched.step()
    out.append(opt.param_groups[0]['lr'])
  return np.asarray(out)


def jax_kwargs(name, w, t, kwargs):
  """HF's get_scheduler arguments as the keywords of hf.<name> (those its function takes)."""
  counts = {'num_warmup_steps': w, 'num_training_steps': t}
  return {**{k: v for k, v in counts.items() if k in SCHEDULES[f'hf.{name}'].kwargs}, **kwargs}


def assert_close(actual, expected, lr, dtype):
  rtol, atol = TOLERANCE[dtype]
  err = np.abs(actual - expected) - rtol * np.abs(expected)
  assert np.max(err) <= atol * lr, f'{dtype}: step {int(np.argmax(err))}: {actual} != {expected}'


def test_every_scheduler_type_is_an_id_with_the_functions_keywords():
  for t in transformers.SchedulerType:
    name = f'hf.{t.value}'
    assert (name in SCHEDULES) + (name in hf.ALIASES) + (name in hf.REFUSED) + (name in METRIC_DRIVEN) == 1, name
  for value in NAMES:
    params = inspect.signature(TYPE_TO_SCHEDULER_FUNCTION[transformers.SchedulerType(value)]).parameters
    spec = SCHEDULES[f'hf.{value}']
    assert list(spec.kwargs) == [k for k in params if k not in ('optimizer', 'last_epoch')], value
    assert spec.default_interval == 'step'


RATIONAL = st.integers(0, 20).map(lambda k: k / 10)  # 0.5, 0.7, 1.3, ...: exact phases in float32 too


@st.composite
def runs(draw):
  name = draw(st.sampled_from(NAMES))
  lr = draw(st.floats(1e-4, 1.0))
  w, t = draw(st.integers(0, 12)), draw(st.integers(0, 40))
  kw = {}
  if name in ('cosine', 'cosine_with_min_lr', 'cosine_warmup_with_min_lr'):
    kw['num_cycles'] = draw(RATIONAL)
  if name == 'cosine_with_restarts':
    kw['num_cycles'] = draw(st.integers(1, 16).map(lambda k: k / 4))
  if name == 'polynomial':
    t = t if t != w else w + 1
    kw = {'lr_end': draw(st.floats(-0.1, 0.5)) * lr, 'power': draw(st.floats(0.0, 4.0))}
  if name == 'inverse_sqrt':
    kw['timescale'] = draw(st.none() | st.integers(1, 50))
  if name.endswith('_with_min_lr'):
    key = draw(st.sampled_from(['min_lr', 'min_lr_rate']))
    kw[key] = draw(st.floats(0.0, 1.0)) * (lr if key == 'min_lr' else 1.0)
  if name == 'cosine_warmup_with_min_lr':
    kw['warmup_lr_rate'] = draw(st.none() | st.floats(0.0, 1.0))
  if name == 'warmup_stable_decay':
    kw = {
      'num_decay_steps': draw(st.integers(0, 20)),
      'num_stable_steps': draw(st.none() | st.integers(0, 20)),
      'warmup_type': draw(st.sampled_from(SHAPES)),
      'decay_type': draw(st.sampled_from(SHAPES)),
      'min_lr_ratio': draw(st.floats(0.0, 0.5)),
      'num_cycles': draw(RATIONAL),
    }
    t = w + kw['num_decay_steps'] + t // 2 if kw['num_stable_steps'] is None else draw(st.none() | st.just(t))
  return name, lr, w, t, kw


@given(runs())
def test_matches_transformers(run):
  name, lr, w, t, kw = run
  stable = kw.get('num_stable_steps')
  end = t if t is not None and stable is None else w + stable + kw['num_decay_steps']
  steps = max(w, end) + 8
  expected = hf_lrs(name, lr, w, t, kw, steps)
  sched = jaxsched.schedule(f'hf.{name}', lr, **jax_kwargs(name, w, t, kw))
  for dtype in ('float64', 'float32'):  # a schedule computes in the mode it is called in
    with x64(dtype):
      actual = jax.jit(jax.vmap(sched))(jnp.arange(steps + 1))
      assert actual.dtype == jnp.dtype(dtype)
      assert_close(np.asarray(actual, np.float64), expected, lr, dtype)


def test_restart_phase_as_pythons_in_float64():
  # 11/3 * (3 / 11) rounds to 0.999..., so HF's lr is about 0 at step 3, where a restart is due
  expected = hf_lrs('cosine_with_restarts', 0.1, 0, 11, {'num_cycles': 11 / 3}, 11)
  assert expected[3] < 1e-15
  with x64('float64'):
    sched = jaxsched.schedule(
      'hf.cosine_with_restarts', 0.1, num_warmup_steps=0, num_training_steps=11, num_cycles=11 / 3
    )
    assert_close(np.asarray(jax.jit(jax.vmap(sched))(jnp.arange(12))), expected, 0.1, 'float64')


def test_config_steps_the_schedule_after_every_update():
  """``scheduler: hf.cosine`` in a config: interval 'step' by default, so the LR of each
  update is HF's LR after as many optimizer steps (HF's Trainer steps its scheduler after each)."""
  epochs, batches = 3, 4
  kwargs = {'num_warmup_steps': 3, 'num_training_steps': epochs * batches}
  config = jaxsched.load_config(
    {'optimizer': 'SGD', 'learning_rate': 0.1, 'scheduler': 'hf.cosine', 'scheduler_kwargs': kwargs}
  )
  assert config.scheduler_configs['interval'] == 'step'
  expected = hf_lrs('cosine', 0.1, 3, epochs * batches, {}, epochs * batches)
  with x64('float64'):
    params = {'w': jnp.ones(3)}
    tx = jaxsched.build(config, params, batches_per_epoch=batches)
    state = tx.init(params)
    update = jax.jit(tx.update)
    lrs = [float(jaxsched.current_lr(state)['regular'])]
    for _ in range(epochs * batches):
      grads = {'w': jnp.full(3, 0.5)}
      updates, state = update(grads, state, params)
      params = optax.apply_updates(params, updates)
      lrs.append(float(jaxsched.current_lr(state)['regular']))
  assert_close(np.asarray(lrs), expected, 0.1, 'float64')


@pytest.mark.parametrize(
  'name, kwargs',
  [
    ('polynomial', {'lr_end': 0.01, 'power': 2.0}),
    ('cosine_with_min_lr', {'min_lr': 0.01}),
    ('cosine_warmup_with_min_lr', {'min_lr': 0.01, 'warmup_lr_rate': 0.1}),
  ],
)
def test_several_groups_divide_by_the_optimizers_lr(name, kwargs):
  """HF's polynomial and min-lr schedules divide by ``optimizer.defaults['lr']``: the recurrent
  group at half the optimizer's lr follows half the regular group's curve (lr_end and min_lr
  halved too), on jaxsched's side and on the torch optimizer configure_optimizers builds."""
  w, t, steps = 2, 8, 10
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'recurrent_learning_rate_multiplier': 0.5,
    'scheduler': f'hf.{name}',
    'scheduler_kwargs': {'num_warmup_steps': w, 'num_training_steps': t, **kwargs},
  }
  with x64('float64'):
    params = {'conv': jnp.ones(3), 'recurrent': jnp.ones(2)}
    tx = jaxsched.build(config, params, batches_per_epoch=1)
    state = tx.init(params)
    update = jax.jit(tx.update)
    lrs = [jaxsched.current_lr(state)]
    for _ in range(steps):
      updates, state = update(jax.tree.map(jnp.ones_like, params), state, params)
      lrs.append(jaxsched.current_lr(state))
  opt = torch.optim.SGD(
    [{'params': [torch.zeros(1, requires_grad=True)]}, {'params': [torch.zeros(1, requires_grad=True)], 'lr': 0.05}],
    lr=0.1,
  )
  sched = transformers.get_scheduler(name, opt, w, t, dict(kwargs))
  expected = [[g['lr'] for g in opt.param_groups]]
  for _ in range(steps):
    opt.step()
    sched.step()
    expected.append([g['lr'] for g in opt.param_groups])
  expected = np.asarray(expected)
  assert_close(np.asarray([float(lr['regular']) for lr in lrs]), expected[:, 0], 0.1, 'float64')
  assert_close(np.asarray([float(lr['recurrent']) for lr in lrs]), expected[:, 1], 0.05, 'float64')
  assert expected[-1, 1] == pytest.approx(expected[-1, 0] / 2)  # the recurrent group ends at half the floor
  # the torch side: the optimizer configure_optimizers builds has the config's lr as its default
  named = {'conv.weight': torch.nn.Parameter(torch.zeros(3)), 'recurrent.weight': torch.nn.Parameter(torch.zeros(2))}
  torch_opt = jaxsched.torch_optimizer(config, named.items(), rule=lambda n, ndim: None)
  torch_sched = jaxsched.torch_scheduler(config, torch_opt)
  got = [[g['lr'] for g in torch_opt.param_groups]]
  for _ in range(steps):
    torch_opt.step()
    torch_sched.step()
    got.append([g['lr'] for g in torch_opt.param_groups])
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-15)


def test_reduce_lr_on_plateau_is_torchs_with_interval_epoch():
  kwargs = {'mode': 'min', 'factor': 0.5, 'patience': 1}
  config = jaxsched.load_config(
    {
      'optimizer': 'SGD',
      'learning_rate': 0.1,
      'scheduler': 'hf.reduce_lr_on_plateau',
      'scheduler_kwargs': kwargs,
      'scheduler_configs': {'monitor': 'val_loss'},
    }
  )
  assert config.scheduler == 'ReduceLROnPlateau'
  assert dict(config.scheduler_kwargs) == kwargs
  assert config.scheduler_configs['interval'] == 'epoch'
  opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
  torch_sched = transformers.get_scheduler('reduce_lr_on_plateau', opt, scheduler_specific_kwargs=kwargs)
  with x64('float64'):
    params = {'w': jnp.ones(2)}
    tx = jaxsched.build(config, params, batches_per_epoch=2)
    state = tx.init(params)
    for metric in [1.0, 0.9, 0.9, 0.9, 0.95, 0.95, 0.95]:
      for _ in range(2):
        _, state = tx.update({'w': jnp.ones(2)}, state, params)
      state = jaxsched.report(state, {'val_loss': metric})
      torch_sched.step(metric)
      assert float(jaxsched.current_lr(state)['regular']) == pytest.approx(opt.param_groups[0]['lr'], rel=1e-12)
  assert opt.param_groups[0]['lr'] < 0.1  # it reduced


@pytest.mark.parametrize(
  'name, kwargs',
  [
    ('linear', {'num_training_steps': 10}),
    ('cosine', {'num_warmup_steps': 2}),
    ('constant_with_warmup', {}),
    ('inverse_sqrt', {}),
  ],
)
def test_missing_counts_as_get_scheduler(name, kwargs):
  missing = 'num_warmup_steps' if 'num_warmup_steps' not in kwargs else 'num_training_steps'
  opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
  with pytest.raises(ValueError, match=missing):
    transformers.get_scheduler(name, opt, kwargs.get('num_warmup_steps'), kwargs.get('num_training_steps'))
  assert_config_error(lambda: jaxsched.schedule(f'hf.{name}', 0.1, **kwargs), [f'hf.{name}', repr(missing)])


RUN = {'num_warmup_steps': 2, 'num_training_steps': 10}


@pytest.mark.parametrize(
  'name, kwargs, words',
  [
    ('hf.cosin', RUN, ["'hf.cosine'"]),
    ('hf.linear', {'num_warmup_steps': 2, 'num_training_step': 10}, ['num_training_step', "'num_training_steps'"]),
    ('hf.constant_with_warmup', RUN, ['num_training_steps']),  # the function takes none
    ('hf.linear', {**RUN, 'num_warmup_steps': -1}, ['num_warmup_steps=-1', '>= 0']),
    ('hf.cosine', {**RUN, 'num_training_steps': 2.5}, ['num_training_steps=2.5', 'integer']),
    ('hf.polynomial', {**RUN, 'lr_end': 0.1}, ['lr_end=0.1', 'smaller']),
    ('hf.polynomial', {**RUN, 'num_training_steps': 2}, ['num_training_steps=2', 'ZeroDivisionError']),
    ('hf.polynomial', {**RUN, 'power': -1}, ['power=-1', '>= 0']),
    ('hf.inverse_sqrt', {'num_warmup_steps': 2, 'timescale': 0}, ['timescale=0', '>= 1']),
    ('hf.cosine_with_min_lr', RUN, ['min_lr', 'min_lr_rate', 'exactly one']),
    ('hf.cosine_with_min_lr', {**RUN, 'min_lr': 0.01, 'min_lr_rate': 0.1}, ['exactly one']),
    ('hf.warmup_stable_decay', {'num_warmup_steps': 2, 'num_decay_steps': 3}, ['num_stable_steps']),
    ('hf.warmup_stable_decay', {**RUN, 'num_decay_steps': 9}, ['num_training_steps=10', 'negative']),
    ('hf.warmup_stable_decay', {**RUN, 'num_decay_steps': 3, 'decay_type': 'cosin'}, ['decay_type', "'cosine'"]),
    ('hf.greedy', {}, ['GreedyLR']),
    ('hf.reduce_lr_on_plateau', {}, ['metric']),
  ],
)
def test_bad_input(name, kwargs, words):
  assert_config_error(lambda: jaxsched.schedule(name, 0.1, **kwargs), words)


def test_bad_input_in_a_config():
  greedy = {'scheduler': 'hf.greedy', 'scheduler_kwargs': {'factr': 0.5}}
  assert_config_error(lambda: jaxsched.load_config(greedy), ['factr', "'factor'"])
  assert_config_error(
    lambda: jaxsched.load_config({'scheduler': 'hf.cosine', 'scheduler_kwargs': {'num_warmup_steps': 1}}),
    ['hf.cosine', "'num_training_steps'"],
  )
  # the optimizer's lr comes from the config's learning_rate, not from the scheduler's keywords
  polynomial = {'num_warmup_steps': 1, 'num_training_steps': 5, 'optimizer_lr': 0.1}
  assert_config_error(
    lambda: jaxsched.load_config({'scheduler': 'hf.polynomial', 'scheduler_kwargs': polynomial}),
    ['keyword for hf.polynomial', "'optimizer_lr'", 'lr_end'],
  )
