"""Lightning itself as the oracle: a real ``pytorch_lightning.Trainer`` trains, and
jaxsched, built from the same settings, must end at the same parameters and LRs.

The model's loss is ``sum(w * c_i)`` for the i-th batch of the run, so its gradient
``c_i`` does not depend on ``w``: jaxsched is fed the same gradients in the same
order, and what differs is only what the training loop does with them
(accumulation and its partial groups, the loss divided by N, clipping and its
``gradient_clip_val: 0``, when the optimizer and the scheduler step).
"""

import jax
import numpy as np
import optax
import pytest
import pytorch_lightning as pl
import torch

import jaxsched
from oracle import lightning_fit, max_rel_diff, x64


class KnownGradients(pl.LightningModule):
  """One parameter vector; the loss of the run's i-th batch is ``sum(w * coefs[i])``."""

  def __init__(self, init, coefs, batches, make_optimizer, make_scheduler, scheduler_config):
    super().__init__()
    self.w = torch.nn.Parameter(torch.tensor(init))
    self.coefs = torch.tensor(coefs)
    self.batches = batches
    self.make_optimizer, self.make_scheduler, self.scheduler_config = make_optimizer, make_scheduler, scheduler_config
    self.lrs = []

  def training_step(self, batch, batch_idx):
    return (self.w * self.coefs[self.current_epoch * self.batches + batch_idx]).sum()

  def on_before_optimizer_step(self, optimizer):
    self.lrs.append(optimizer.param_groups[0]['lr'])  # the LR of each optimizer step

  def train_dataloader(self):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(self.batches)), batch_size=1)

  def configure_optimizers(self):
    optimizer = self.make_optimizer([self.w])
    return {
      'optimizer': optimizer,
      'lr_scheduler': {'scheduler': self.make_scheduler(optimizer), **self.scheduler_config},
    }


def lightning_run(config, make_optimizer, make_scheduler, *, epochs, batches, init, coefs):
  sc = config.get('scheduler_configs', {})
  model = KnownGradients(
    init,
    coefs,
    batches,
    make_optimizer,
    make_scheduler,
    {'interval': sc.get('interval', 'epoch'), 'frequency': sc.get('frequency', 1)},
  )
  lightning_fit(
    model,
    max_epochs=epochs,
    accumulate_grad_batches=config.get('accumulate_grad_batches', 1),
    gradient_clip_val=config.get('gradient_clip_val'),
    gradient_clip_algorithm=config.get('gradient_clip_algorithm', 'norm'),
    limit_val_batches=0,
  )
  return model.w.detach().numpy(), model.lrs


def jaxsched_run(config, *, epochs, batches, init, coefs):
  with x64('float64'):
    params = {'w': jax.numpy.asarray(init)}
    tx = jaxsched.build(config, params, batches_per_epoch=batches)
    state = tx.init(params)

    @jax.jit
    def step(params, state, g):
      lr = jaxsched.current_lr(state)['regular']
      updates, state = tx.update({'w': g}, state, params)
      return optax.apply_updates(params, updates), state, lr

    lrs, stepped = [], []
    for i in range(epochs * batches):
      before = params['w']
      params, state, lr = step(params, state, jax.numpy.asarray(coefs[i]))
      lrs.append(float(lr))
      stepped.append(bool(np.any(np.asarray(params['w']) != np.asarray(before))))
    # the LR of each optimizer step: where the parameters moved
    return np.asarray(params['w']), [lr for lr, moved in zip(lrs, stepped) if moved]


CASES = {
  # 8 batches per epoch in groups of 3 (the last of 2), gradient_clip_val 0: no clipping;
  # StepLR per step with frequency 2, tested on the micro-batch index: once per epoch
  'sgd step-interval partial groups clip 0': (
    {
      'optimizer': 'SGD',
      'learning_rate': 0.1,
      'optimizer_kwargs': {'momentum': 0.9, 'weight_decay': 0.01},
      'scheduler': 'StepLR',
      'scheduler_kwargs': {'step_size': 1, 'gamma': 0.5},
      'scheduler_configs': {'interval': 'step', 'frequency': 2},
      'accumulate_grad_batches': 3,
      'gradient_clip_val': 0,
    },
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
    3,
    8,
  ),
  # 5 batches per epoch in groups of 2 (the last of 1), clipped by norm, a per-epoch cosine
  'adam epoch-interval clip norm': (
    {
      'optimizer': 'Adam',
      'learning_rate': 0.01,
      'scheduler': 'CosineAnnealingLR',
      'scheduler_kwargs': {'T_max': 3},
      'accumulate_grad_batches': 2,
      'gradient_clip_val': 0.5,
    },
    lambda ps: torch.optim.Adam(ps, lr=0.01),
    lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=3),
    3,
    5,
  ),
  # no accumulation, clipped by value, per-step schedule
  'rmsprop clip value': (
    {
      'optimizer': 'RMSprop',
      'learning_rate': 0.01,
      'optimizer_kwargs': {'momentum': 0.5},
      'scheduler': 'ExponentialLR',
      'scheduler_kwargs': {'gamma': 0.9},
      'scheduler_configs': {'interval': 'step'},
      'gradient_clip_val': 0.3,
      'gradient_clip_algorithm': 'value',
    },
    lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.5),
    lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
    2,
    4,
  ),
}


@pytest.mark.parametrize('name', CASES)
def test_a_lightning_trainer_and_jaxsched_end_at_the_same_parameters(name):
  config, make_optimizer, make_scheduler, epochs, batches = CASES[name]
  rng = np.random.default_rng(0)
  init, coefs = rng.normal(size=4), rng.normal(size=(epochs * batches, 4))
  expected, expected_lrs = lightning_run(
    config, make_optimizer, make_scheduler, epochs=epochs, batches=batches, init=init, coefs=coefs
  )
  actual, lrs = jaxsched_run(config, epochs=epochs, batches=batches, init=init, coefs=coefs)
  assert max_rel_diff({'w': actual}, {'w': expected}) < 1e-9
  np.testing.assert_allclose(lrs, expected_lrs, rtol=1e-12)
