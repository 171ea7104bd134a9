"""jaxsched.lr_find against Lightning's ``Tuner(trainer).lr_find``: a small float64 MLP
(a ``hidden`` and a ``recurrent`` layer, so the recurrent multiplier makes two groups),
the same initial weights and batches, and the same recorded LRs, smoothed losses and
suggestion."""

import logging
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.tuner import Tuner
from pytorch_lightning.tuner.lr_finder import _LRFinder

import jaxsched
from oracle import assert_config_error, lightning_trainer, x64

SGD = {
  'optimizer': 'SGD',
  'learning_rate': 0.1,
  'optimizer_kwargs': {'momentum': 0.9},
  'scheduler': 'CosineAnnealingLR',  # replaced by the range test's LR
  'scheduler_kwargs': {'T_max': 3},
  'recurrent_learning_rate_multiplier': 0.1,  # every group gets the range test's LR
}
ADAM = {
  'optimizer': 'Adam',
  'learning_rate': 1e-3,
  'scheduler': 'StepLR',
  'scheduler_kwargs': {'step_size': 1, 'gamma': 0.5},
  'scheduler_configs': {'interval': 'step'},
  'recurrent_learning_rate_multiplier': 0.1,
  'gradient_clip_val': 1.0,
  # 5 batches per epoch: steps after batches 1, 3 and 4; the one after 4 is not recorded
  'accumulate_grad_batches': 2,
}


def data(batches: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  params = {
    'hidden': {'weight': rng.normal(size=(8, 4)) / 2, 'bias': rng.normal(size=8) / 4},
    'recurrent': {'weight': rng.normal(size=(1, 8)) / 3, 'bias': np.zeros(1)},
  }
  w = rng.normal(size=4)
  xs = [rng.normal(size=(32, 4)) for _ in range(batches)]
  return params, [(x, np.sin(x @ w) + 0.1 * rng.normal(size=32)) for x in xs]


def jax_loss(params, batch):
  x, y = batch
  h = jnp.tanh(x @ params['hidden']['weight'].T + params['hidden']['bias'])
  out = h @ params['recurrent']['weight'].T + params['recurrent']['bias']
  return jnp.mean((out[:, 0] - y) ** 2)


class MLP(pl.LightningModule):
  def __init__(self, params, config):
    super().__init__()
    self.config = config
    self.hidden = torch.nn.Linear(4, 8, dtype=torch.float64)
    self.recurrent = torch.nn.Linear(8, 1, dtype=torch.float64)
    with torch.no_grad():
      for layer, values in params.items():
        for name, value in values.items():
          getattr(getattr(self, layer), name).copy_(torch.tensor(value))

  def training_step(self, batch, batch_idx):
    x, y = batch
    return ((self.recurrent(torch.tanh(self.hidden(x)))[:, 0] - y) ** 2).mean()

  def configure_optimizers(self):
    return jaxsched.configure_optimizers(self.config, self)


def lightning_lr_find(params, batches, config, tmp_path, **kwargs):
  trainer = lightning_trainer(default_root_dir=tmp_path, **jaxsched.trainer_kwargs(config))
  xs, ys = (torch.tensor(np.concatenate(a)) for a in zip(*batches))
  loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys), batch_size=len(batches[0][0]))
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    logging.getLogger('pytorch_lightning').setLevel(logging.ERROR)
    return Tuner(trainer).lr_find(MLP(params, config), train_dataloaders=loader, update_attr=False, **kwargs)


@pytest.mark.parametrize(
  'config, batches, kwargs, stops',
  [
    (SGD, 8, {'mode': 'exponential', 'min_lr': 1e-4, 'max_lr': 10.0}, True),
    (SGD, 8, {'mode': 'linear', 'min_lr': 1e-3, 'max_lr': 0.5, 'early_stop_threshold': None}, False),
    (ADAM, 5, {'mode': 'exponential', 'min_lr': 1e-5, 'max_lr': 1.0, 'early_stop_threshold': None}, False),
    (ADAM, 5, {'mode': 'linear', 'min_lr': 1e-3, 'max_lr': 5.0, 'early_stop_threshold': 2.0}, True),
  ],
  ids=['sgd-exponential-stops', 'sgd-linear', 'adam-accumulate-exponential', 'adam-accumulate-linear-stops'],
)
def test_matches_lightning(config, batches, kwargs, stops, tmp_path):
  params, data_batches = data(batches)
  kwargs = {**kwargs, 'num_training': 30}
  expected = lightning_lr_find(params, data_batches, config, tmp_path, **kwargs)
  with x64('float64'):
    got = jaxsched.lr_find(jax_loss, params, data_batches, config, **kwargs)
  recorded = 30 if config['optimizer'] == 'SGD' else 20  # with accumulation, 2 of each epoch's 3 steps
  assert (len(expected.results['lr']) < recorded) == stops, len(expected.results['lr'])
  assert got.results['lr'] == expected.results['lr']  # the same floats
  np.testing.assert_allclose(got.results['loss'], expected.results['loss'], rtol=1e-9, atol=0)
  assert got.suggestion() == expected.suggestion() is not None
  assert got.suggestion(skip_begin=2, skip_end=3) == expected.suggestion(skip_begin=2, skip_end=3)
  assert (got.mode, got.lr_min, got.lr_max, got.num_training) == (
    expected.mode,
    expected.lr_min,
    expected.lr_max,
    expected.num_training,
  )


@pytest.mark.parametrize(
  'losses, skip',
  [
    ([3.0, 2.5, 2.0, float('nan'), 1.0, 0.9, float('inf'), 0.8, 3.0, 9.0], (1, 1)),
    ([3.0, 2.5, 2.0, float('nan'), 1.0, 0.9, float('inf'), 0.8, 3.0, 9.0], (0, 1)),
    ([3.0, 2.5, 2.0, 1.0], (0, 0)),  # [0:-0] is empty: no suggestion
    ([3.0, 2.5, float('nan'), 1.0], (1, 1)),  # one finite point left
    ([4.0, 3.0, 2.9, 2.0, 1.9, 1.8, 1.5, 1.49, 1.2, 1.1, 1.0, 0.9, 0.85], (10, 1)),  # two points left
  ],
)
def test_suggestion_matches_lightning(losses, skip):
  lrs = [1e-4 * 1.7**i for i in range(len(losses))]
  expected = _LRFinder('exponential', lrs[0], lrs[-1], len(lrs))
  expected.results = {'lr': lrs, 'loss': losses}
  got = jaxsched.LRFinderResult('exponential', lrs[0], lrs[-1], len(lrs), {'lr': lrs, 'loss': losses})
  assert got.suggestion(*skip) == expected.suggestion(*skip)  # Lightning logs an error where it is None


def test_an_iterator_and_plot(tmp_path):
  params, batches = data(8)
  with x64('float64'):
    got = jaxsched.lr_find(jax_loss, params, iter(batches * 2), SGD, num_training=30, early_stop_threshold=None)
  assert len(got.results['lr']) == 16  # an iterator is used up after one epoch
  fig = got.plot()
  line, dot = fig.axes[0].lines
  assert dot.get_xdata()[0] == got.suggestion() and line.get_xdata().tolist() == got.results['lr']
  assert fig.axes[0].get_xscale() == 'log'
  fig.savefig(tmp_path / 'lr_find.png')
  assert (tmp_path / 'lr_find.png').read_bytes()[:4] == b'\x89PNG'


def test_bad_input():
  params, batches = data(2)

  def call(batches=batches, config=SGD, **kwargs):
    return lambda: jaxsched.lr_find(jax_loss, params, batches, config, **kwargs)

  assert_config_error(call(min_lr=0.1, max_lr=0.1), ['max_lr=0.1', '> 0.1'])
  assert_config_error(call(min_lr=0.0), ['min_lr=0.0', '> 0'])
  assert_config_error(call(min_lr=-1.0, mode='linear'), ['min_lr=-1.0', '>= 0'])
  assert_config_error(call(mode='exponental'), ['mode', "'exponental'", "Did you mean 'exponential'"])
  assert_config_error(call(num_training=0), ['num_training=0', 'integer in [1, '])
  assert_config_error(call(num_training=2.5), ['num_training=2.5', 'integer'])
  assert_config_error(call(early_stop_threshold=-4.0), ['early_stop_threshold=-4.0', '> 0, or None'])
  assert_config_error(call(batches=[]), ['batches is empty'])
  assert_config_error(call(batches=iter(batches), config=ADAM), ['no len()', 'accumulate_grad_batches=2'])
  assert_config_error(call(config={**SGD, 'optimizer': 'SDG'}), ["'SDG'", "Did you mean 'SGD'"])
  assert_config_error(call(config={'optimizer': 'LBFGS', 'scheduler': None}), ["optimizer='LBFGS'", 'closure'])
