"""hf.greedy against transformers' GreedyLR (``get_scheduler('greedy', ...)``) fed the same metrics: every
group's LR after every ``step(metric)``, in one jit-compiled scan of report(), float64 and float32."""

from __future__ import annotations

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import get_scheduler

import jaxsched
from helpers import reported_lrs
from jaxsched import plateau as P
from jaxsched.cli import main
from jaxsched.interop import configure_optimizers
from jaxsched.interop.state import to_torch
from oracle import assert_config_error, lightning_fit, x64

RTOL = {'float64': 1e-12, 'float32': 1e-6}


def hf_lrs(base_lrs, metrics, **kwargs):
  """Each group's LR after every ``GreedyLR.step(metric)``."""
  groups = [{'params': [torch.zeros(1, requires_grad=True)], 'lr': lr} for lr in base_lrs]
  opt = torch.optim.SGD(groups)
  sched = get_scheduler('greedy', opt, scheduler_specific_kwargs=kwargs)
  out = []
  for m in metrics:
    sched.step(m)
    out.append([g['lr'] for g in opt.param_groups])
  return np.array(out)


def per_group(value, i):
  return value[i] if isinstance(value, (list, tuple)) else value


def jax_lrs(base_lrs, metrics, **kwargs):
  """The same through jaxsched: one Plateau per group (its own min_lr / max_lr), report() scanned under jit."""
  plateaus = [
    P.metric_scheduler('hf.greedy', lr, **{k: per_group(v, i) for k, v in kwargs.items()})
    for i, lr in enumerate(base_lrs)
  ]

  def body(state, metric):
    state = P.report(state, metric)
    return state, jnp.stack([p(s) for p, s in zip(plateaus, state)])

  run = jax.jit(lambda ms: jax.lax.scan(body, tuple(p.init() for p in plateaus), ms)[1])
  return np.asarray(run(jnp.asarray(metrics)))


def check(metrics, dtype, base=(0.1, 0.02), **kwargs):
  expected = hf_lrs(base, metrics, **kwargs)
  with x64(dtype):
    actual = jax_lrs(base, metrics, **kwargs)
  np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype])
  return expected


# dyadic metrics: the same numbers, sums and ties in float32 as in float64
metric_values = st.one_of(st.integers(-16, 16).map(lambda k: k / 8), st.just(math.nan))


@given(
  dtype=st.sampled_from(['float64', 'float32']),
  metrics=st.lists(metric_values, min_size=1, max_size=40),
  mode=st.sampled_from(['min', 'max']),
  threshold_mode=st.sampled_from(['rel', 'abs']),
  threshold=st.sampled_from([0.0, 1e-6, 0.25]),
  factor=st.sampled_from([0.5, 0.95]),
  patience=st.integers(0, 3),
  cooldown=st.integers(0, 2),
  warmup=st.integers(0, 2),
  min_lr=st.sampled_from([1e-3, 0.05]),
  max_lr=st.sampled_from([1.0, 0.2]),
  reset_start=st.integers(0, 3),
  smooth=st.booleans(),
  window_size=st.integers(1, 4),
)
def test_matches_greedy_lr(dtype, metrics, **kwargs):
  check(metrics, dtype, base=(0.1,), **kwargs)  # one group: one compilation per example (two in the tests below)


@pytest.mark.parametrize('dtype', ['float64', 'float32'])
def test_increase_reduce_reset_and_smoothing_by_hand(dtype):
  # improvements raise the LR to max_lr, a plateau lowers it to min_lr, where reset_start=2 resets it
  metrics = [5 - k for k in range(6)] + [1.0] * 12 + [0.5, 0.25, 0.125] + [1.0] * 8
  lrs = check(metrics, dtype, factor=0.5, patience=1, min_lr=0.01, max_lr=0.3, reset_start=2, cooldown=1, warmup=1)
  assert lrs.max() == 0.3 and lrs.min() == 0.01 and 0.1 in lrs[10:, 0]  # it rose, fell and was reset
  # smoothing: a window of 3 values, ties at the abs threshold (1.0 - 0.5 is not better than 0.5 + 0)
  check([3.0, 1.0, 2.0, 0.5, 0.5, 0.5, 4.0, 0.0, 0.0], dtype, smooth=True, window_size=3, patience=0, threshold=0.5)
  # one min_lr and max_lr per group: the reset waits until every group is at its own min_lr
  metrics = [2.0, 1.0, 0.5] + [1.0] * 14 + [0.25, 0.125, 0.0625, 0.03125] + [1.0] * 6
  lrs = check(metrics, dtype, factor=0.5, patience=0, min_lr=[0.05, 0.001], max_lr=[0.4, 0.03], reset_start=1)
  assert lrs[:, 0].max() == 0.4 and lrs[:, 1].max() == 0.03
  # group 0 sits at its min_lr from report 6 on; the reset comes when group 1 reaches its own (report 8)
  assert list(lrs[5:8, 0]) == [0.05, 0.05, 0.1] and list(lrs[5:8, 1]) == [0.00375, 0.001875, 0.02]


def test_through_a_config_with_a_monitor():
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'scheduler': 'hf.greedy',
    'scheduler_kwargs': {'factor': 0.5, 'patience': 1, 'min_lr': 0.01},
    'scheduler_configs': {'monitor': 'val_loss'},
  }
  metrics = [1.0, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8]
  expected = hf_lrs([0.1], metrics, factor=0.5, patience=1, min_lr=0.01)[:, 0]
  np.testing.assert_allclose(reported_lrs(config, metrics), expected, rtol=1e-12)


def test_bad_input_is_a_config_error():
  assert_config_error(lambda: P.metric_scheduler('hf.greedy', 0.1, factr=0.5), ['factr', 'factor'])
  assert_config_error(lambda: P.metric_scheduler('hf.greedy', 0.1, factor=1.0), ['factor', '1'])
  assert_config_error(lambda: P.metric_scheduler('hf.greedy', 0.1, mode='mni'), ['mode', 'min'])
  assert_config_error(lambda: P.metric_scheduler('hf.greedy', 0.1, smooth=True, window_size=0), ['window_size'])
  config = {'optimizer': 'SGD', 'scheduler': 'hf.greedy', 'scheduler_kwargs': {'min_lr': [0.1, 0.2]}}
  params = {'w': jnp.ones(2)}
  assert_config_error(lambda: jaxsched.build(config, params), ['min_lr', '2 values'])
  bad = {**config, 'scheduler_kwargs': {'patience': -1}}
  assert_config_error(lambda: jaxsched.build(bad, params), ['patience', '-1', 'in [0'])


class Scored(pl.LightningModule):
  """One parameter; logs ``scores[epoch]`` as 'score' and records the LR of each epoch."""

  def __init__(self, config, scores):
    super().__init__()
    self.w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    self.config, self.scores, self.lrs = config, scores, []

  def training_step(self, batch, batch_idx):
    self.log('score', self.scores[self.current_epoch], on_step=False, on_epoch=True)
    return (self.w * 0).sum()

  def on_train_epoch_start(self):
    self.lrs.append(self.optimizers().param_groups[0]['lr'])

  def train_dataloader(self):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(2)), batch_size=1)

  def configure_optimizers(self):
    return configure_optimizers(self.config, self)


class SteppedByMetric(Scored):
  def lr_scheduler_step(self, scheduler, metric):
    scheduler.step(metric)


def test_lightning_steps_it_with_the_monitored_metric():
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'scheduler': 'hf.greedy',
    'scheduler_kwargs': {'factor': 0.5, 'patience': 0, 'min_lr': 0.01, 'max_lr': 0.4},
    'scheduler_configs': {'monitor': 'score'},
  }
  scores = [3.0, 2.0, 1.0, 1.0, 1.0, 0.5, 0.5]
  model = SteppedByMetric(config, scores)
  lightning_fit(model, max_epochs=len(scores), limit_val_batches=0)
  expected = hf_lrs([0.1], scores[:-1], factor=0.5, patience=0, min_lr=0.01, max_lr=0.4)[:, 0]
  np.testing.assert_allclose(model.lrs, [0.1, *expected], rtol=1e-12)
  with pytest.raises(jaxsched.ConfigError, match='lr_scheduler_step'):
    lightning_fit(Scored(config, scores), max_epochs=1, limit_val_batches=0)


def test_checkpoint_conversion_is_refused():
  config = {'optimizer': 'SGD', 'scheduler': 'hf.greedy', 'scheduler_configs': {'monitor': 'val_loss'}}
  params = {'w': jnp.ones(2)}
  state = jaxsched.build(config, params).init(params)
  assert_config_error(lambda: to_torch(config, state, params, torch_names=['w']), ['hf.greedy', 'not supported'])


@pytest.fixture
def precision_kept():
  """The command line switches float64 on (jaxsched.cli.main): JAX's precision is restored after the test."""
  before = jax.config.jax_enable_x64
  yield
  jax.config.update('jax_enable_x64', before)


def test_cli_lists_and_checks_it_against_a_metrics_file(tmp_path, capsys, monkeypatch, precision_kept):
  monkeypatch.setenv('JAXSCHED_PLAIN', '1')
  assert main(['list', 'schedulers']) == 0
  listed = capsys.readouterr().out
  assert re.search(r'^hf\.greedy\s+mode\s', listed, re.M) and re.search(r'^\s+reset_start\s+500\s', listed, re.M)
  assert re.search(r'^timm\.plateau\s+decay_rate\s', listed, re.M)
  scores = [1.0, 0.5, 0.25, 0.25, 0.25, 0.25]
  (tmp_path / 'm.json').write_text(json.dumps({'val_loss': scores}))
  kwargs = {'factor': 0.5, 'patience': 1, 'min_lr': 0.01, 'max_lr': 0.4}
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'scheduler': 'hf.greedy',
    'scheduler_kwargs': kwargs,
    'scheduler_configs': {'monitor': 'val_loss'},
  }
  (tmp_path / 'c.json').write_text(json.dumps(config))
  run = ['--epochs', '6', '--batches-per-epoch', '1', '--metrics', str(tmp_path / 'm.json')]
  assert main(['check', str(tmp_path / 'c.json'), *run]) == 0
  lines = capsys.readouterr().out.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith('step '))
  shown = {int(line.split()[0]): float(line.split()[-1]) for line in lines[start + 2 :] if line[:1].isdigit()}
  expected = [0.1, *hf_lrs([0.1], scores, **kwargs)[:-1, 0]]  # the LR of epoch e: after e reports
  assert shown and all(v == pytest.approx(expected[k], rel=1e-6) for k, v in shown.items()), (shown, expected)
