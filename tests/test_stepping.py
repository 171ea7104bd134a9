"""Lightning's stepping rules (jaxsched.stepping) against a real Lightning Trainer.

One Trainer run per accumulate_grad_batches (5 micro-batches per epoch, 3 epochs)
records, at each optimizer step, the epoch and batch_idx it follows, the LR, and
how often each of five schedulers on the one optimizer has stepped: StepLR(1, 0.5)
with interval "step" and frequency 3, and StepLR(1, 1.0) with (step, 1), (step, 2),
(epoch, 1), (epoch, 2).
"""

import jax.numpy as jnp
import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from jaxsched.build import load_config
from jaxsched.stepping import (
  epoch_batches,
  optimizer_steps_per_epoch,
  reports_before,
  reports_per_epoch,
  scheduler_steps,
  steps_after,
)
from oracle import assert_config_error, lightning_fit

BATCHES, EPOCHS = 5, 3
SCHEDULERS = [('step', 3, 0.5), ('step', 1, 1.0), ('step', 2, 1.0), ('epoch', 1, 1.0), ('epoch', 2, 1.0)]


class Recorder(pl.LightningModule):
  def __init__(self):
    super().__init__()
    self.w = torch.nn.Parameter(torch.zeros(1))
    self.batch_idx, self.steps, self.lrs, self.counts = None, [], [], []

  def training_step(self, batch, batch_idx):
    self.batch_idx = batch_idx
    return self.w.sum()

  def on_before_optimizer_step(self, optimizer):
    self.steps.append((self.current_epoch, self.batch_idx))
    self.lrs.append(optimizer.param_groups[0]['lr'])
    self.counts.append([s.last_epoch for s in self.schedulers])

  def train_dataloader(self):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(BATCHES)), batch_size=1)

  def configure_optimizers(self):
    optimizer = torch.optim.SGD([self.w], lr=1.0)
    self.schedulers = [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=g) for _, _, g in SCHEDULERS]
    configs = [{'scheduler': s, 'interval': i, 'frequency': f} for s, (i, f, _) in zip(self.schedulers, SCHEDULERS)]
    return [optimizer], configs


@pytest.fixture(scope='module', params=[1, 2], ids=['accumulate 1', 'accumulate 2'])
def lightning(request):
  model = Recorder()
  lightning_fit(model, max_epochs=EPOCHS, accumulate_grad_batches=request.param, limit_val_batches=0)
  return request.param, model


def test_the_optimizer_steps_where_lightning_steps_it(lightning):
  n, model = lightning
  assert model.steps == [(e, b) for e in range(EPOCHS) for b in range(BATCHES) if steps_after(b, n, BATCHES)]
  assert len(model.steps) == EPOCHS * optimizer_steps_per_epoch(BATCHES, n)
  stepped = [b for _, b in model.steps[: optimizer_steps_per_epoch(BATCHES, n)]]
  for index in (np.arange(BATCHES), jnp.arange(BATCHES)):  # the host-side simulation's and the traced form
    assert np.flatnonzero(np.asarray(steps_after(index, n, BATCHES))).tolist() == stepped


def test_the_schedulers_step_where_lightning_steps_them(lightning):
  n, model = lightning
  k = len(model.steps)
  for j, (interval, frequency, _) in enumerate(SCHEDULERS):
    cfg = load_config(
      {
        'scheduler': 'StepLR',
        'scheduler_kwargs': {'step_size': 1},
        'accumulate_grad_batches': n,
        'scheduler_configs': {'interval': interval, 'frequency': frequency},
      }
    )
    steps = scheduler_steps(cfg, BATCHES)
    expected = [c[j] for c in model.counts]
    assert [int(steps(i)) for i in range(k)] == expected, (interval, frequency)
    assert np.asarray(steps(np.arange(k))).tolist() == expected
    assert np.asarray(steps(jnp.arange(k))).tolist() == expected
  assert model.lrs == [0.5 ** c[0] for c in model.counts]


def test_lightnings_numbers_as_recorded(lightning):
  n, model = lightning
  if n == 1:  # StepLR(1, 0.5), interval "step", frequency 3, restarting its count each epoch
    assert model.lrs[:10] == [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]
  else:  # the optimizer steps after micro-batches 2, 4, 5 of each epoch (1-based)
    assert [e * BATCHES + b + 1 for e, b in model.steps] == [2, 4, 5, 7, 9, 10, 12, 14, 15]


@pytest.mark.parametrize('interval', ['step', 'epoch'])
def test_reports_before_each_optimizer_step(interval):
  # a loop that calls report() after each micro-batch's update (interval "step") or each epoch
  for batches in range(1, 8):
    for n in range(1, 5):
      expected, reports = [], 0
      for _ in range(EPOCHS):
        for b in range(batches):
          if (b + 1) % n == 0 or b + 1 == batches:
            expected.append(reports)
          reports += interval == 'step'
        reports += interval == 'epoch'
      assert reports == EPOCHS * reports_per_epoch(interval, batches)
      k = np.arange(len(expected))
      assert np.asarray(reports_before(k, interval, batches, n)).tolist() == expected, (batches, n)
      assert [reports_before(int(i), interval, batches, n) for i in k] == expected


def test_epoch_batches():
  one, two = load_config({}), load_config({'accumulate_grad_batches': 2})
  assert epoch_batches(one, 7, None) == epoch_batches(one, None, 7) == epoch_batches(two, 7, None) == 7
  assert epoch_batches(one, None, None) is None
  assert_config_error(lambda: epoch_batches(two, None, 7), ['steps_per_epoch=7', 'batches_per_epoch'])
  assert_config_error(lambda: epoch_batches(two, None, None), ['accumulate_grad_batches=2', 'batches_per_epoch'])
  assert_config_error(lambda: epoch_batches(one, 7, 7), ['not both'])
  assert optimizer_steps_per_epoch(7, 2) == 4 and optimizer_steps_per_epoch(8, 2) == 4
