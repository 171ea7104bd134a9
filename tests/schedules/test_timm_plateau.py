"""timm.plateau against timm 1.0's PlateauLRScheduler fed the same metrics: every group's LR before the
first report and after every ``step(t, metric)`` (t = 1, 2, ... as timm's train loop passes the next
epoch), in one jit-compiled scan of report(), float64 and float32: warm-up, cooldown, noise, mode max."""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import jaxsched
from helpers import reported_lrs
from jaxsched import plateau as P
from jaxsched.interop import configure_optimizers
from oracle import assert_config_error, import_timm, x64

_, TIMM = import_timm()
RTOL = {'float64': 1e-12, 'float32': 1e-6}


def timm_lrs(base_lrs, metrics, **kwargs):
  """Each group's LR after construction and after every ``step(t, metric)``."""
  groups = [{'params': [torch.zeros(1, requires_grad=True)], 'lr': lr} for lr in base_lrs]
  opt = torch.optim.SGD(groups)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', FutureWarning)  # PlateauLRScheduler is deprecated in timm 1.0
    sched = TIMM.PlateauLRScheduler(opt, **kwargs)
  out = [[g['lr'] for g in opt.param_groups]]
  for t, m in enumerate(metrics, 1):
    sched.step(t, m)
    out.append([g['lr'] for g in opt.param_groups])
  return np.array(out)


def jax_lrs(base_lrs, metrics, **kwargs):
  """The same through jaxsched: one Plateau per group, report() scanned under jit."""
  plateaus = [P.metric_scheduler('timm.plateau', lr, **kwargs) for lr in base_lrs]
  lrs = lambda state: jnp.stack([p(s) for p, s in zip(plateaus, state)])  # noqa: E731

  def body(state, metric):
    state = P.report(state, metric)
    return state, lrs(state)

  def run(ms):
    init = tuple(p.init() for p in plateaus)
    return jnp.concatenate([lrs(init)[None], jax.lax.scan(body, init, ms)[1]])

  return np.asarray(jax.jit(run)(jnp.asarray(metrics)))


def check(metrics, dtype, base=(0.1, 0.02), **kwargs):
  expected = timm_lrs(base, metrics, **kwargs)
  with x64(dtype):
    actual = jax_lrs(base, metrics, **kwargs)
  np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype])
  return expected


# dyadic metrics: the same numbers and ties in float32 as in float64
metric_values = st.one_of(st.integers(-16, 16).map(lambda k: k / 8), st.just(math.nan))
noise_ranges = st.one_of(st.none(), st.tuples(st.integers(0, 6), st.integers(3, 30)).map(list))


@given(
  dtype=st.sampled_from(['float64', 'float32']),
  metrics=st.lists(metric_values, min_size=1, max_size=30),
  mode=st.sampled_from(['min', 'max']),
  threshold=st.sampled_from([0.0, 1e-4, 0.25]),
  decay_rate=st.sampled_from([0.1, 0.5]),
  patience_t=st.integers(0, 3),
  cooldown_t=st.integers(0, 2),
  warmup_t=st.integers(0, 4),
  warmup_lr_init=st.sampled_from([0.0, 1e-3]),
  lr_min=st.sampled_from([0.0, 1e-3]),
  noise_range_t=noise_ranges,
  noise_type=st.sampled_from(['normal', 'uniform']),
  noise_seed=st.one_of(st.none(), st.integers(0, 2**31)),
)
def test_matches_plateau_lr_scheduler(dtype, metrics, **kwargs):
  check(metrics, dtype, **kwargs)


@pytest.mark.parametrize('dtype', ['float64', 'float32'])
def test_warmup_cooldown_noise_and_mode_max_by_hand(dtype):
  # a warm-up of 3 reports (metrics unread), then accuracy that stalls: cuts, a cooldown, the floor
  metrics = [0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75]
  lrs = check(metrics, dtype, warmup_t=3, warmup_lr_init=0.01, patience_t=1, cooldown_t=1, lr_min=0.002)
  assert lrs[0, 0] == 0.01 and lrs[3, 0] == pytest.approx(0.1) and lrs[-1, 0] == 0.002
  # noise from t = 2 to 7, restored before each step: the cuts act on the LR without noise
  check(metrics, dtype, warmup_t=1, patience_t=0, noise_range_t=[2, 8], noise_pct=0.5, noise_std=0.5, mode='min')
  # ties at the relative threshold are no improvement: 0.625 == 0.5 * (1 + 0.25) cuts with patience 0
  lrs = check([0.5, 0.625, 0.625, 0.78125], dtype, threshold=0.25, patience_t=0, decay_rate=0.5)
  assert list(lrs[:, 0]) == [0.1, 0.1, 0.05, 0.025, 0.025]


def test_through_a_config_with_a_monitor():
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'scheduler': 'timm.plateau',
    'scheduler_kwargs': {'warmup_t': 2, 'patience_t': 1, 'mode': 'min', 'noise_range_t': [3, 6]},
    'scheduler_configs': {'monitor': 'val_loss'},
  }
  metrics = [1.0, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8]
  expected = timm_lrs([0.1], metrics, **config['scheduler_kwargs'])[1:, 0]
  np.testing.assert_allclose(reported_lrs(config, metrics), expected, rtol=1e-12)


def test_bad_input_is_a_config_error():
  assert_config_error(lambda: P.metric_scheduler('timm.plateau', 0.1, patience=3), ['patience', "'patience_t'"])
  assert_config_error(lambda: P.metric_scheduler('timm.plateau', 0.1, decay_rate=1.5), ['decay_rate=1.5', '(0, 1)'])
  assert_config_error(lambda: P.metric_scheduler('timm.plateau', 0.1, mode='mx'), ['mode', "'max'"])
  assert_config_error(lambda: P.metric_scheduler('timm.plateau', 0.1, noise_range_t=3), ['noise_range_t', '[3, b]'])
  assert_config_error(lambda: P.metric_scheduler('timm.plateauu', 0.1), ['timm.plateauu', "'timm.plateau'"])
  assert_config_error(lambda: P.metric_scheduler('timm.plateau', 0.1, lr_scale='2x'), ['lr_scale', "'2x'"])
  assert_config_error(lambda: P.metric_scheduler('timm.plateau', 0.1, lr_scale=float('nan')), ['lr_scale', 'nan'])
  assert_config_error(lambda: P.metric_scheduler('timm.plateau', 0.1, lr_scale=-0.5), ['lr_scale', '-0.5'])
  assert_config_error(lambda: P.metric_scheduler('hf.greedy', 0.1, lr_scale=0.5), ['lr_scale', 'only timm.plateau'])
  config = {'optimizer': 'SGD', 'scheduler': 'timm.plateau', 'scheduler_kwargs': {'warmup_t': -1}}
  assert_config_error(lambda: jaxsched.build(config, {'w': jnp.ones(2)}), ['warmup_t', '-1', 'in [0'])
  assert_config_error(lambda: jaxsched.schedule('timm.plateau', 0.1), ['timm.plateau', 'PlateauLRScheduler', 'metric'])
  entries = [
    {'scheduler': 'timm.plateau', 'scheduler_configs': {'monitor': 'acc'}},
    {'scheduler': 'StepLR', 'scheduler_kwargs': {'step_size': 2}},
  ]
  chained = {'optimizer': 'SGD', 'schedulers': entries}
  assert_config_error(
    lambda: jaxsched.build(chained, {'w': jnp.ones(2)}), ['schedulers[0]', 'timm.plateau', 'cannot share']
  )
  with pytest.raises(jaxsched.ConfigError, match="timm's schedulers are not"):
    configure_optimizers({'optimizer': 'SGD', 'scheduler': 'timm.plateau'}, torch.nn.Linear(2, 1))


@pytest.mark.parametrize('name', ['timm.plateau', 'hf.greedy'])
def test_swa_with_a_metric_driven_scheduler_is_refused_as_with_reduce_lr_on_plateau(name):
  # Lightning's StochasticWeightAveraging replaces the optimizer's scheduler with SWALR at swa_epoch_start
  config = {'optimizer': 'SGD', 'scheduler': name, 'swa': {'swa_lrs': 0.01, 'swa_epoch_start': 2}}
  assert_config_error(lambda: jaxsched.load_config(config), [f'swa with scheduler {name}', 'replaces the plateau'])
