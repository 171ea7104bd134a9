"""timm's schedulers (``timm.<name>``) against timm 1.0's classes on a real torch optimizer: the lr after
every ``step(t)`` (per epoch) and ``step_update(t)`` (per update), in float64 and float32, under jit and
vmap, alone and through a config."""

from __future__ import annotations

import inspect
import logging
import warnings

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from hypothesis import given

import jaxsched
from jaxsched import lints
from jaxsched.schedules.timm_noise import normal_noise
from oracle import DTYPES, assert_config_error, import_timm, x64

_, TIMM = import_timm()
CLASSES = {
  'timm.cosine': TIMM.CosineLRScheduler,
  'timm.tanh': TIMM.TanhLRScheduler,
  'timm.step': TIMM.StepLRScheduler,
  'timm.multistep': TIMM.MultiStepLRScheduler,
  'timm.poly': TIMM.PolyLRScheduler,
}
RTOL = {'float64': 1e-12, 'float32': 1e-6}
STEPS = 40
logging.getLogger('timm.scheduler').setLevel(logging.ERROR)  # "will have no effect" for t_initial=1


def timm_lrs(name, lr, kwargs, steps, per_update=False):
  """The optimizer's lr after construction and after ``step(t)`` (``step_update(t)`` with
  ``t_in_epochs=False``) for t = 1 .. steps - 1, float64 as timm computes it."""
  optimizer = torch.optim.SGD([torch.zeros(1, dtype=torch.float64)], lr=lr)
  scheduler = CLASSES[name](optimizer, **kwargs, t_in_epochs=not per_update)
  lrs = [optimizer.param_groups[0]['lr']]
  for t in range(1, steps):
    (scheduler.step_update if per_update else scheduler.step)(t)
    lrs.append(optimizer.param_groups[0]['lr'])
  return np.asarray(lrs)


def jax_lrs(name, lr, kwargs, steps, dtype):
  with x64(dtype):
    sched = jaxsched.schedule(name, lr, **kwargs)
    return np.asarray(jax.jit(jax.vmap(sched))(jnp.arange(steps))), sched


def assert_close(actual, expected, dtype):
  """Within RTOL of the largest lr of the run (near a trough timm's own float64 cancels)."""
  scale = max(np.max(np.abs(expected)), 1e-30)
  worst = np.max(np.abs(actual - expected)) / scale
  assert worst <= RTOL[dtype], f'{dtype}: {worst:.3g} of the largest lr\n{actual}\n{expected}'


def _cycling(draw, name):
  kw = dict(
    t_initial=draw(st.integers(1, 12)),
    lr_min=draw(st.sampled_from([0.0, 1e-4, 0.02])),
    cycle_mul=draw(st.sampled_from([1.0, 1.0, 0.75, 1.5, 2.0, 1.37])),
    cycle_decay=draw(st.floats(0.1, 1.0)),
    cycle_limit=draw(st.integers(0, 5)),
  )
  if name == 'timm.tanh':
    lb = draw(st.floats(-8.0, 2.0))
    kw.update(lb=lb, ub=lb + draw(st.floats(0.5, 10.0)))
  else:
    kw['k_decay'] = draw(st.sampled_from([1.0, 0.5, 1.7]))
  if name == 'timm.poly':
    kw['power'] = draw(st.floats(0.25, 3.0))
  return kw


def _config(draw, name):
  if name == 'timm.step':
    kw = dict(decay_t=draw(st.sampled_from([1, 2, 3, 2.5, 0.7, 7.0])), decay_rate=draw(st.floats(0.1, 1.0)))
  elif name == 'timm.multistep':
    kw = dict(decay_t=sorted(draw(st.lists(st.integers(0, 30), max_size=4))), decay_rate=draw(st.floats(0.1, 1.0)))
  else:
    kw = _cycling(draw, name)
  kw.update(
    warmup_t=draw(st.integers(0, 6)),
    warmup_lr_init=draw(st.sampled_from([0.0, 1e-3, 0.3])),
    warmup_prefix=draw(st.booleans()),
  )
  if name == 'timm.tanh' and kw['cycle_mul'] < 1 and kw['warmup_t'] and not kw['warmup_prefix']:
    kw['cycle_mul'] = 1.0  # could ramp to a step timm cannot compute (tested below)
  return kw


EXAMPLES = min(__import__('hypothesis').settings().max_examples, 6)  # the profile caps it; compiles dominate


@__import__('hypothesis').settings(max_examples=EXAMPLES)
@given(data=st.data(), lr=st.floats(1e-3, 1.0), per_update=st.booleans(), dtype=st.sampled_from(DTYPES))
def test_every_step_matches_timm(data, lr, per_update, dtype):
  """The lr after n steps, per epoch or per update, of every ID with drawn hyperparameters: all five
  runs in one jit(vmap) (one compile per example). With cycle_mul < 1, up to the last step timm computes."""
  configs = {name: _config(data.draw, name) for name in CLASSES}
  with x64(dtype):
    scheds = {name: jaxsched.schedule(name, lr, **kw, t_in_epochs=not per_update) for name, kw in configs.items()}
    runs = jax.jit(lambda n: {name: jax.vmap(s)(n) for name, s in scheds.items()})(jnp.arange(STEPS))
  for name, sched in scheds.items():
    steps = STEPS if sched.max_count is None else min(STEPS, sched.max_count + 1)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      expected = timm_lrs(name, lr, configs[name], steps, per_update)
    assert_close(np.asarray(runs[name])[:steps], expected, dtype)


def test_cycles_shorter_than_one_step_and_timm_s_last_step():
  """cycle_mul < 1: cycles shrink below a step (timm skips them) and timm's log has no value from
  t_initial / (1 - cycle_mul) on, where timm raises: ``max_count`` is the step before."""
  kwargs = dict(t_initial=7, cycle_mul=0.5, cycle_limit=100, warmup_t=3, warmup_prefix=True, lr_min=1e-3)
  actual, sched = jax_lrs('timm.cosine', 0.1, kwargs, 17, 'float64')
  assert sched.max_count == 16  # 3 warm-up steps + t = 0 .. 13 (14 = 7 / 0.5 raises)
  assert_close(actual, timm_lrs('timm.cosine', 0.1, kwargs, 17), 'float64')
  with pytest.raises(ValueError, match='math domain error'):
    timm_lrs('timm.cosine', 0.1, kwargs, 18)
  with pytest.raises(jaxsched.ConfigError, match='torch raises after 16'):
    sched.check_steps(17)
  with pytest.raises(ValueError, match='math domain error'):
    timm_lrs('timm.tanh', 0.1, dict(t_initial=2, cycle_mul=0.5, warmup_t=5), 2)
  assert_config_error(
    lambda: jaxsched.schedule('timm.tanh', 0.1, t_initial=2, cycle_mul=0.5, warmup_t=5),
    ['warmup_t=5', 'timm raises at construction'],
  )


@pytest.mark.parametrize('dtype', DTYPES)
def test_long_runs_and_many_cycles(dtype):
  """Thousands of steps across many cycles of growing length, at timm's float64 cycle boundaries."""
  kwargs = dict(t_initial=3, cycle_mul=1.1, cycle_limit=40, cycle_decay=0.97, warmup_t=20, k_decay=1.3)
  expected = timm_lrs('timm.cosine', 0.5, kwargs, 1400, per_update=True)
  assert_close(jax_lrs('timm.cosine', 0.5, kwargs, 1400, dtype)[0], expected, dtype)


def test_keywords_are_the_classes():
  """Each ID takes its class's keywords (but optimizer and initialize), in order, with timm's defaults."""
  for name, cls in CLASSES.items():
    params = inspect.signature(cls.__init__).parameters
    spec = jaxsched.SCHEDULES[name]
    assert list(spec.kwargs) == [p for p in params if p not in ('self', 'optimizer', 'initialize')], name
    for key, (default, _) in spec.kwargs.items():
      if params[key].default is not inspect.Parameter.empty:
        assert default == params[key].default, (name, key)


def _timm_training_lrs(kwargs, epochs, batches, t_in_epochs):
  """timm's train.py loop: the lr each update uses; ``step_update(num_updates)`` after each update,
  ``step(epoch + 1)`` after each epoch."""
  optimizer = torch.optim.SGD([torch.zeros(1, dtype=torch.float64)], lr=0.1)
  scheduler = TIMM.CosineLRScheduler(optimizer, **kwargs, t_in_epochs=t_in_epochs)
  lrs, updates = [], 0
  for epoch in range(epochs):
    for _ in range(batches):
      lrs.append(optimizer.param_groups[0]['lr'])
      updates += 1
      scheduler.step_update(updates)
    scheduler.step(epoch + 1)
  return np.asarray(lrs)


@pytest.mark.parametrize('t_in_epochs', [True, False])
def test_config_steps_as_timm_train_loop(t_in_epochs):
  """Through load_config + build: stepped per epoch (the IDs' default interval), or per update with
  ``t_in_epochs: false`` and ``interval: step``, the lr of every update is timm's."""
  kwargs = dict(t_initial=4, lr_min=1e-3, warmup_t=2, warmup_lr_init=1e-3, cycle_limit=2, cycle_decay=0.5)
  epochs, batches = 6, 3
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'scheduler': 'timm.cosine',
    'scheduler_kwargs': {**kwargs, 't_in_epochs': t_in_epochs},
  }
  if not t_in_epochs:
    config['scheduler_configs'] = {'interval': 'step'}
  expected = _timm_training_lrs(kwargs, epochs, batches, t_in_epochs)
  with x64('float64'):
    loaded = jaxsched.load_config(config)
    assert loaded.scheduler_configs['interval'] == ('epoch' if t_in_epochs else 'step')
    params = {'w': jnp.ones(3)}
    tx = jaxsched.build(loaded, params, batches_per_epoch=batches)
    state = tx.init(params)
    update = jax.jit(tx.update)
    lrs = []
    for _ in range(epochs * batches):
      lrs.append(float(jaxsched.current_lr(state)['regular']))
      updates, state = update({'w': jnp.full(3, 0.1)}, state, params)
      params = optax.apply_updates(params, updates)
  assert_close(np.asarray(lrs), expected, 'float64')


def test_lint_flags_t_in_epochs_against_the_interval():
  config = {'scheduler': 'timm.cosine', 'scheduler_kwargs': {'t_initial': 5, 't_in_epochs': False}}
  run = lints.Run(epochs=3, batches_per_epoch=4)
  (warning,) = lints.timm_stepping_mismatch(jaxsched.load_config(config), run)
  assert 't_in_epochs: false but interval "epoch"' in warning and 'interval: step' in warning
  config['scheduler_configs'] = {'interval': 'step'}
  assert lints.timm_stepping_mismatch(jaxsched.load_config(config), run) == []
  config['scheduler_kwargs']['t_in_epochs'] = True
  assert 'set scheduler_configs.interval: epoch' in lints.timm_stepping_mismatch(jaxsched.load_config(config), run)[0]


@pytest.mark.parametrize(
  'call, words',
  [
    (lambda: jaxsched.schedule('timm.cosin', 0.1, t_initial=5), ["unknown scheduler 'timm.cosin'", "'timm.cosine'"]),
    (lambda: jaxsched.schedule('timm.cosine', 0.1, t_inital=5), ["'t_inital'", "Did you mean 't_initial'"]),
    (lambda: jaxsched.schedule('timm.poly', 0.1), ["missing required keyword 't_initial'"]),
    (lambda: jaxsched.schedule('timm.cosine', 0.1, t_initial=0), ['t_initial=0', 'an integer >= 1']),
    (lambda: jaxsched.schedule('timm.cosine', 0.1, t_initial=5, lr_min=-1), ['lr_min=-1', '>= 0']),
    (lambda: jaxsched.schedule('timm.tanh', 0.1, t_initial=5, lb=3, ub=3), ['lb=3.0', 'ub=3.0', 'lb < ub']),
    (lambda: jaxsched.schedule('timm.tanh', 0.1, t_initial=5, warmup_lr_init=-1), ['warmup_lr_init=-1']),
    (lambda: jaxsched.schedule('timm.cosine', 0.1, t_initial=5, cycle_mul=0), ['cycle_mul=0', '> 0']),
    (lambda: jaxsched.schedule('timm.cosine', 0.1, t_initial=5, k_decay=0), ['k_decay=0', '> 0']),
    (lambda: jaxsched.schedule('timm.cosine', 0.1, t_initial=5, cycle_limit=-1), ['cycle_limit=-1']),
    (lambda: jaxsched.schedule('timm.step', 0.1, decay_t=0), ['decay_t=0', '> 0']),
    (lambda: jaxsched.schedule('timm.multistep', 0.1, decay_t=[5, 3]), ['decay_t=[5, 3]', 'sorted']),
    (lambda: jaxsched.schedule('timm.multistep', 0.1, decay_t=[1.5]), ['decay_t[0]=1.5', 'an integer']),
    (lambda: jaxsched.schedule('timm.cosine', 0.1, t_initial=5, warmup_prefix='yes'), ['warmup_prefix']),
    (
      lambda: jaxsched.schedule('timm.cosine', 0.1, t_initial=5, noise_range_t=3),
      ['noise_range_t=3', 'without end', 'noise_range_t: [3, b]'],
    ),
    (
      lambda: jaxsched.schedule('timm.step', 0.1, decay_t=2, noise_range_t=[0, 2e6]),
      ['noise_range_t=(0.0, 2000000.0)', 'at most 1000000', 'narrow the range'],
    ),
    (
      lambda: jaxsched.schedule('timm.poly', 0.1, t_initial=5, noise_range_t=[1, 4], noise_pct=0),
      ['noise_pct=0', 'forever', 'noise_pct > 0'],
    ),
    (
      lambda: jaxsched.schedule('timm.cosine', 0.1, t_initial=5, noise_range_t=[1, 4, 6]),
      ['noise_range_t=[1, 4, 6]', 'a list [a, b]'],
    ),
    (lambda: jaxsched.schedule('timm.cosine', 0.1, t_initial=5, noise_range_t='x'), ["noise_range_t='x'"]),
    (
      lambda: jaxsched.schedule('timm.cosine', 0.1, t_initial=3, cycle_mul=1.0001, cycle_limit=10**6),
      ['cycle_mul=1.0001', 'cycle_limit=1000000', 'lower cycle_limit'],
    ),
    (
      lambda: jaxsched.schedule(
        'SequentialLR', 0.1, schedulers=[{'scheduler': 'timm.step', 'scheduler_kwargs': {'decay_t': 2}}], milestones=[]
      ),
      ['schedulers[0]', 'timm.step is not supported inside SequentialLR'],
    ),
    (
      lambda: jaxsched.load_config({'scheduler': 'timm.step', 'scheduler_kwargs': {'decay_rate': 0.5}}),
      ["missing required keyword 'decay_t'"],
    ),
    (
      lambda: jaxsched.load_config(
        {
          'schedulers': [
            {'scheduler': 'StepLR', 'scheduler_kwargs': {'step_size': 2}},
            {'scheduler': 'timm.step', 'scheduler_kwargs': {'decay_t': 2}},
          ]
        }
      ),
      ['schedulers[1]', 'timm.step cannot share the optimizer', 'the only scheduler'],
    ),
  ],
)
def test_bad_input(call, words):
  assert_config_error(call, words)


def _timm_noise(seed, pct, std):
  """timm's ``Scheduler._calculate_noise`` (noise_type 'normal') for ``noise_seed + t = seed``."""
  g = torch.Generator()
  g.manual_seed(seed)
  while True:
    noise = torch.randn(1, generator=g).item() * std
    if abs(noise) < pct:
      return noise


@pytest.mark.parametrize('pct, std', [(0.67, 1.0), (0.3, 2.5), (0.002, 0.5)])
def test_noise_draws_are_torch_s(pct, std):
  """torch's generator redrawn without torch: the first draw, the one it caches, fresh words after,
  past the first 624 words (pct 0.002: hundreds of draws), seeds beyond 32 bits and negative."""
  seeds = np.concatenate([np.arange(-40, 120) * 7919, [2**32 - 1, 2**32 + 9, 2**40 + 3]])
  expected = [_timm_noise(int(s), pct, std) for s in seeds]
  np.testing.assert_array_equal(normal_noise(seeds % 2**32, pct, std), expected)


NOISY = {
  'timm.cosine': dict(t_initial=30, warmup_t=3, lr_min=1e-3),
  'timm.tanh': dict(t_initial=20, cycle_mul=0.5, cycle_limit=9),
  'timm.step': dict(decay_t=5, decay_rate=0.5, warmup_t=2, warmup_lr_init=1e-3),
  'timm.multistep': dict(decay_t=[4, 9], decay_rate=0.3),
  'timm.poly': dict(t_initial=25, warmup_t=2, warmup_prefix=True),
}


@pytest.mark.parametrize('per_update, dtype', [(False, 'float64'), (True, 'float64'), (True, 'float32')])
def test_noise_matches_timm(per_update, dtype):
  """timm's lr noise at every step, per epoch or per update, of each ID with several seeds and ranges
  (fractional ends, from below 1, without end up to timm.tanh's last step with cycle_mul < 1; a seed
  whose ``noise_seed + t`` passes 2**32, where torch keeps the low 32 bits): all runs in one jit(vmap).
  float32 takes seeds that fit its int32 counter (jaxsched.schedule's rule for integer keys)."""
  ranges = [[2, 30], [-3.5, 17.2], 7]
  configs = {
    (name, seed, i): dict(kw, noise_range_t=r, noise_seed=seed, noise_pct=0.4, noise_std=1.3)
    for name, kw in NOISY.items()
    for seed, (i, r) in zip([42, 0, 2**32 - 3 if dtype == 'float64' else 7], enumerate(ranges))
    if name == 'timm.tanh' or not isinstance(r, int)
  }
  with x64(dtype):
    scheds = {key: jaxsched.schedule(key[0], 0.1, **kw, t_in_epochs=not per_update) for key, kw in configs.items()}
    runs = jax.jit(lambda n: {key: jax.vmap(s)(n) for key, s in scheds.items()})(jnp.arange(STEPS))
  for key, sched in scheds.items():
    steps = STEPS if sched.max_count is None else min(STEPS, sched.max_count + 1)
    expected = timm_lrs(key[0], 0.1, configs[key], steps, per_update)
    plain = timm_lrs(key[0], 0.1, dict(configs[key], noise_range_t=None), steps, per_update)
    assert np.sum(expected != plain) >= 5, key  # the noise is there
    actual = np.asarray(runs[key])[:steps]
    assert_close(actual, expected, dtype)
    if dtype == 'float64':  # every step, not only near the largest lr
      np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=0, err_msg=str(key))
