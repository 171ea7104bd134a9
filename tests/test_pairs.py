"""Every pair of features, generated, against a real Lightning Trainer.

:data:`FEATURES` holds one config fragment per feature. A pair merges two fragments
into :data:`BASE` (AdamW with a per-epoch StepLR): a scheduler feature replaces the
base's scheduler, and two scheduler features become one ``schedulers:`` list, the
first feature's entries (in table order) before the second's. For each pair, either

* a Lightning Trainer built from jaxsched's own torch side (:func:`jaxsched.configure_optimizers`
  and :func:`jaxsched.trainer_kwargs`) and jaxsched's transformation train the same tiny
  model (three ``torch.nn.Linear`` layers; the JAX parameters are the same through
  :func:`jaxsched.torch_params`) on the same data, 3 epochs of 5 batches, with the
  validation loss reported each epoch as Lightning feeds ReduceLROnPlateau: every
  micro-batch's LRs (and cycled momentum), each validation loss and the final weights
  agree within 1e-9 in float64, and every public function works on the final state; or
* the pair is in :data:`REFUSED`, and building it is a ConfigError holding the listed
  words, which say what torch or Lightning do with it.

Nothing passes by being skipped: the pairs refused are exactly :data:`REFUSED`'s, and
the README lists exactly those.
"""

from __future__ import annotations

import itertools
import os
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import pytorch_lightning as pl
import torch
from test_composition import E, M

import jaxsched
from jaxsched.accumulate import AccumulateState
from jaxsched.cli import main as cli_main
from jaxsched.interop import layouts
from jaxsched.optimizers.sgd import MomentumState
from oracle import lightning_fit, max_rel_diff, x64

EPOCHS, BATCHES, BATCH_SIZE = 3, 5, 4
NAN_BATCH = 6  # the run's 7th batch (epoch 1, batch 1) holds a NaN, where skip_nonfinite is on
TOLERANCE = 1e-9

BASE = {
  'optimizer': 'AdamW',
  'learning_rate': 0.02,
  'optimizer_kwargs': {'weight_decay': 0.01},
  'scheduler': 'StepLR',
  'scheduler_kwargs': {'step_size': 1, 'gamma': 0.7},
}
# A feature: a config fragment, or for a scheduler feature ('entries') its schedulers: entries.
FEATURES = {
  'groups': {'recurrent_learning_rate_multiplier': 0.5, 'lr_parameter_groups': {'head': {'lr_factor': 2.0}}},
  'clip_norm': {'gradient_clip_val': 0.3},
  'clip_value': {'gradient_clip_val': 0.02, 'gradient_clip_algorithm': 'value'},
  'accumulate': {'accumulate_grad_batches': 2},  # 5 batches: groups of 2, 2 and 1, every epoch
  'skip_nonfinite': {'skip_nonfinite': True},
  'ema': {'ema': {'decay': 0.8, 'update_every_n_steps': 2, 'update_starting_at_epoch': 1}},
  'swa': {'swa': {'swa_lrs': 0.01, 'swa_epoch_start': 2, 'annealing_epochs': 1}},
  'sgd': {'optimizer': 'SGD', 'learning_rate': 0.05, 'optimizer_kwargs': {'momentum': 0.9}},
  # the metric rises or falls as it will: mode max with patience 0 cuts the LR whenever the loss improves
  'plateau': {'entries': [E('ReduceLROnPlateau', mode='max', patience=0, factor=0.5)]},
  'onecycle': {'entries': [E('OneCycleLR', 'step', monitor='train_loss', max_lr=0.05, total_steps=15)]},
  'warmup_cosine': {
    'entries': [
      E(
        'LinearWarmupCosineAnnealingLR',
        'step',
        monitor='train_loss',
        warmup_epochs=3,
        max_epochs=12,
        warmup_start_lr=0.002,
      )
    ]
  },
  'nested': {
    'entries': [
      E(
        'SequentialLR',
        'step',
        monitor='train_loss',
        schedulers=[
          M('ChainedScheduler', schedulers=[M('ConstantLR', factor=0.5, total_iters=2), M('ExponentialLR', gamma=0.9)]),
          M('StepLR', step_size=2, gamma=0.5),
        ],
        milestones=[4],
      )
    ]
  },
  'list': {
    'entries': [
      E('LinearLR', 'step', monitor='train_loss', start_factor=0.2, total_iters=4),
      E('MultiStepLR', monitor='train_loss', milestones=[1, 2], gamma=0.5),
    ]
  },
  'list_seq': {
    'entries': [
      E(
        'SequentialLR',
        'step',
        monitor='train_loss',
        schedulers=[M('LinearLR', start_factor=0.3, total_iters=2), M('ExponentialLR', gamma=0.8)],
        milestones=[2],
      ),
      E('StepLR', monitor='train_loss', step_size=1, gamma=0.8),
    ]
  },
}
PAIRS = list(itertools.combinations(FEATURES, 2))
# The pairs refused, with words their ConfigError holds.
ONE_CYCLE_SHARED = ['OneCycleLR cannot share', "constructor overwrites the optimizer's initial_lr"]
REFUSED = {
  ('ema', 'swa'): ['ema and swa', 'Lightning would run EMAWeightAveraging and StochasticWeightAveraging'],
  ('swa', 'plateau'): ['swa with scheduler ReduceLROnPlateau', 'replaces the plateau with SWALR'],
  ('swa', 'list'): ['swa with a schedulers list', 'Lightning refuses more than one lr_scheduler with SWA'],
  ('swa', 'list_seq'): ['swa with a schedulers list', 'Lightning refuses more than one lr_scheduler with SWA'],
  ('plateau', 'onecycle'): ONE_CYCLE_SHARED,
  ('onecycle', 'warmup_cosine'): ONE_CYCLE_SHARED,
  ('onecycle', 'nested'): ONE_CYCLE_SHARED,
  ('onecycle', 'list'): ONE_CYCLE_SHARED,
  ('onecycle', 'list_seq'): ONE_CYCLE_SHARED,
}
# Features whose state torch interop does not convert (a ConfigError naming the key, README "Continuing a torch run").
NOT_CONVERTED = {'ema': 'ema is set', 'swa': 'swa is set', 'schedulers': 'schedulers is set'}


def pair_config(a: str, b: str) -> dict:
  config = dict(BASE)
  entries = []
  for name in (a, b):
    fragment = dict(FEATURES[name])
    entries += fragment.pop('entries', [])
    for key, value in fragment.items():
      config[key] = {**config.get(key, {}), **value} if key == 'optimizer_kwargs' else value
  if config['optimizer'] == 'SGD':
    config['optimizer_kwargs'] = {'momentum': 0.9}
  if len(entries) == 1:
    config.update(scheduler=entries[0]['scheduler'], scheduler_kwargs=entries[0]['scheduler_kwargs'])
    config['scheduler_configs'] = entries[0]['scheduler_configs']
  elif entries:
    for key in ('scheduler', 'scheduler_kwargs'):
      del config[key]
    config['schedulers'] = entries
  return config


def test_the_table_is_every_pair_and_refused_names_real_pairs():
  assert len(PAIRS) == len(FEATURES) * (len(FEATURES) - 1) // 2 == 91
  assert set(REFUSED) <= set(PAIRS), set(REFUSED) - set(PAIRS)


# --------------------------------------------------------------------------------------- the model and its data

RNG = np.random.default_rng(23)
X = RNG.normal(size=(EPOCHS * BATCHES, BATCH_SIZE, 3))
Y = RNG.normal(size=(EPOCHS * BATCHES, BATCH_SIZE, 2))
X_NAN = X.copy()
X_NAN[NAN_BATCH, 0, 0] = np.nan
VAL_X, VAL_Y = RNG.normal(size=(8, 3)), RNG.normal(size=(8, 2))
SHAPES = {'layer': (3, 4), 'recurrent': (4, 4), 'head': (4, 2)}  # in, out
INIT = {
  f'{name}.{leaf}': RNG.normal(size=(o, i) if leaf == 'weight' else (o,)) * 0.5
  for name, (i, o) in SHAPES.items()
  for leaf in ('weight', 'bias')
}


class Net(pl.LightningModule):
  """Three Linear layers (a recurrent one and a head, for the parameter groups); the run's i-th
  batch is ``X[i]``; records each micro-batch's LRs and momenta and each validation loss."""

  def __init__(self, config, x):
    super().__init__()
    self.layer, self.recurrent, self.head = (torch.nn.Linear(i, o, dtype=torch.float64) for i, o in SHAPES.values())
    self.load_state_dict({k: torch.tensor(v) for k, v in INIT.items()})
    self.config, self.x, self.y = config, torch.tensor(x), torch.tensor(Y)
    self.val_x, self.val_y = torch.tensor(VAL_X), torch.tensor(VAL_Y)
    self.lrs, self.momenta, self.val = [], [], []

  def forward(self, x):
    return self.head(torch.tanh(self.recurrent(torch.tanh(self.layer(x)))))

  def training_step(self, batch, batch_idx):
    i = self.current_epoch * BATCHES + batch_idx
    return torch.nn.functional.mse_loss(self(self.x[i]), self.y[i])

  def on_train_batch_start(self, batch, batch_idx):
    groups = self.trainer.optimizers[0].param_groups
    self.lrs.append([g['lr'] for g in groups])
    self.momenta.append([g['betas'][0] if 'betas' in g else g['momentum'] for g in groups])

  def validation_step(self, batch, batch_idx):
    loss = torch.nn.functional.mse_loss(self(self.val_x), self.val_y)
    self.log('val_loss', loss)
    self.val.append(float(loss))

  def train_dataloader(self):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(BATCHES)), batch_size=1)

  def val_dataloader(self):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(1)), batch_size=1)

  def configure_optimizers(self):
    return jaxsched.configure_optimizers(self.config, self)


class Names(pl.loggers.Logger):
  """A logger that keeps nothing: LearningRateMonitor needs one to name the LRs."""

  name, version = 'names', 0

  def log_metrics(self, metrics, step=None):
    pass

  def log_hyperparams(self, params, *args, **kwargs):
    pass


def lightning_run(config, skip_nonfinite):
  model = Net(config, X_NAN if skip_nonfinite else X)
  monitor = pl.callbacks.LearningRateMonitor()
  kwargs = jaxsched.trainer_kwargs(config, max_epochs=EPOCHS)
  trainer = lightning_fit(
    model, **{**kwargs, 'callbacks': [*kwargs['callbacks'], monitor]}, logger=Names(), limit_val_batches=1
  )
  return model, trainer, list(monitor.lrs)


def forward(p, x):
  h = jnp.tanh(x @ p['layer']['kernel'] + p['layer']['bias'])
  h = jnp.tanh(h @ p['recurrent']['kernel'] + p['recurrent']['bias'])
  return h @ p['head']['kernel'] + p['head']['bias']


def loss_fn(p, x, y):
  return jnp.mean((forward(p, x) - y) ** 2)


GRAD = jax.jit(jax.grad(loss_fn))  # shared by every pair
# Each pair compiles its own update: XLA's cheaper code generation takes a third less time for a run of 15 steps.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
VAL_LOSS = jax.jit(loss_fn)


def jax_run(config, skip_nonfinite):
  """Each micro-batch's LRs and momenta, each validation loss, and the run's end."""
  x = X_NAN if skip_nonfinite else X
  params = jax.tree.map(jnp.asarray, jaxsched.torch_params(INIT))
  tx = jaxsched.build(config, params, batches_per_epoch=BATCHES, max_epochs=EPOCHS)
  fresh = state = tx.init(params)  # init is not cheap for nested composites: one for the run and the checks

  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  step = jax.jit(step).lower(params, state, params).compile(FAST_COMPILE)

  lrs, momenta, val = [], [], []
  for epoch in range(EPOCHS):
    for b in range(BATCHES):
      i = epoch * BATCHES + b
      lrs.append([float(v) for v in jaxsched.current_lr(state).values()])
      momenta.append([float(v) for v in jaxsched.current_momentum(state).values()])
      params, state = step(params, state, GRAD(params, x[i], Y[i]))
    val.append(float(VAL_LOSS(jaxsched.averaged_params(state, params), VAL_X, VAL_Y)))
    state = jaxsched.report(state, {'val_loss': val[-1]})
  return fresh, params, state, lrs, momenta, val


def leaves_close(a, b, what):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb), what
  for i, (x, y) in enumerate(zip(la, lb)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == y.shape and x.dtype == y.dtype, (what, i, x.shape, y.shape, x.dtype, y.dtype)
    np.testing.assert_allclose(x, y, rtol=TOLERANCE, atol=1e-12, err_msg=f'{what}: leaf {i}')


def with_skipped(state, skipped):
  """``state`` with the count of batches dropped for non-finite gradients set."""
  is_loop = lambda x: isinstance(x, AccumulateState)  # noqa: E731
  return jax.tree.map(lambda x: x._replace(skipped=skipped) if is_loop(x) else x, state, is_leaf=is_loop)


def with_sgd_count(continued, state, global_step):
  """``continued`` with SGD's step count taken from ``state``, after checking it is ``global_step``.

  torch's SGD keeps no step: :func:`jaxsched.from_torch` counts Lightning's ``global_step``, which
  also counts an optimizer step whose every micro-batch was dropped (``skip_nonfinite``), where
  jaxsched's count stays. SGD's count only tells its first step (both are past it here)."""
  is_sgd = lambda x: isinstance(x, MomentumState)  # noqa: E731

  def counts(tree):
    return [int(x.count) for x in jax.tree.leaves(tree, is_leaf=is_sgd) if is_sgd(x)]

  assert all(c == global_step for c in counts(continued)), (counts(continued), global_step)
  assert all(c > 0 for c in counts(state)), counts(state)
  theirs = iter(x.count for x in jax.tree.leaves(state, is_leaf=is_sgd) if is_sgd(x))
  return jax.tree.map(lambda x: x._replace(count=next(theirs)) if is_sgd(x) else x, continued, is_leaf=is_sgd)


def flat_torch_state(sd):
  return {(i, k): np.asarray(v, np.float64) for i, s in sd['state'].items() for k, v in s.items()}


def public_function_failures(config, names, model, trainer, fresh, params, state, val, tmp_path) -> dict[str, str]:
  """Every public function on the run's final state, against Lightning's where it has the numbers:
  {what: why} for each that fails (all are tried, so that one seam does not hide another)."""
  torch_names = [n for n, _ in model.named_parameters()]
  opt = trainer.optimizers[0]
  kw = {'torch_names': torch_names, 'batches_per_epoch': BATCHES}

  def final_lrs():  # after the last epoch's scheduler steps and plateau
    lrs = [float(v) for v in jaxsched.current_lr(state).values()]
    np.testing.assert_allclose(lrs, [g['lr'] for g in opt.param_groups], rtol=1e-12)

  def log_names():  # as LearningRateMonitor names them
    ours = sorted(k for k in jaxsched.lr_log_names(config, state) if not k.endswith('-momentum'))
    assert ours == sorted(names), (ours, names)

  def set_lr():
    assert float(jaxsched.current_lr(jaxsched.set_lr(state, {'regular': 0.125}))['regular']) == 0.125

  def lr_curve():  # the CLI's curve, at every optimizer step
    curve = jaxsched.lr_curve(config, epochs=EPOCHS, batches_per_epoch=BATCHES, metrics={'val_loss': val})
    n = config.accumulate_grad_batches
    stepping = [i for i in range(EPOCHS * BATCHES) if (i % BATCHES + 1) % n == 0 or i % BATCHES + 1 == BATCHES]
    ours = np.stack([curve.lrs[g] for g in jaxsched.current_lr(state)], axis=1)
    np.testing.assert_allclose(ours, [model.lrs[i] for i in stepping], rtol=1e-9)

  def check_compatible():
    jaxsched.check_compatible(fresh, state, config=config, saved_config=config)

  def carry_over():  # into the same config, and into one with the clipping changed (a wrapper)
    leaves_close(jaxsched.carry_over(state, fresh), state, 'the same config')
    other = config.to_dict() | {'gradient_clip_val': None if config.gradient_clip_val else 1e3}
    other_fresh = jaxsched.build(other, params, batches_per_epoch=BATCHES, max_epochs=EPOCHS).init(params)
    with pytest.raises(jaxsched.ConfigError, match='gradient_clip_val'):
      jaxsched.check_compatible(other_fresh, state, config=other, saved_config=config)
    leaves_close(jaxsched.carry_over(state, other_fresh), state, 'a clipping change')

  def orbax():  # a round trip, and check_compatible on its metadata
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(tmp_path / 'ckpt', {'params': params, 'opt_state': state})
      ckptr.wait_until_finished()
      restored = ckptr.restore(tmp_path / 'ckpt', {'params': params, 'opt_state': fresh})
      metadata = ckptr.metadata(tmp_path / 'ckpt')
    leaves_close(restored['opt_state'], state, 'restored')
    jaxsched.check_compatible({'params': params, 'opt_state': fresh}, getattr(metadata, 'item_metadata', metadata))

  def torch_interop():  # Lightning's optimizer and scheduler state continue as this state, and back
    refused = [word for key, word in NOT_CONVERTED.items() if getattr(config, key)]
    if refused:
      with pytest.raises(jaxsched.ConfigError, match=refused[0]):
        jaxsched.to_torch(config, state, params, **kw)
      return
    scheds = trainer.lr_scheduler_configs
    sched_sd = scheds[0].scheduler.state_dict() if scheds else None
    continued = jaxsched.from_torch(config, params, opt.state_dict(), sched_sd, **kw, step=trainer.global_step)
    assert int(jaxsched.skipped_steps(continued)) == 0  # torch keeps no count of the batches dropped
    continued = with_sgd_count(continued, state, trainer.global_step)
    leaves_close(with_skipped(continued, jaxsched.skipped_steps(state)), state, 'from_torch')
    sd, _ = jaxsched.to_torch(config, state, params, **kw)
    theirs, ours = flat_torch_state(opt.state_dict()), flat_torch_state(sd)
    assert theirs.keys() == ours.keys(), (sorted(theirs), sorted(ours))
    for key in theirs:
      np.testing.assert_allclose(ours[key], theirs[key], rtol=TOLERANCE, atol=1e-12, err_msg=str(key))

  failures = {}
  for check in (final_lrs, log_names, set_lr, lr_curve, check_compatible, carry_over, orbax, torch_interop):
    try:
      check()
    except Exception as e:  # noqa: BLE001 - every check is tried, and each failure reported
      failures[check.__name__] = f'{type(e).__name__}: {str(e)[:600]}'
  return failures


@pytest.mark.parametrize('a, b', PAIRS, ids=[f'{a}+{b}' for a, b in PAIRS])
def test_every_pair_trains_as_lightning_or_is_refused(a, b, tmp_path):
  data = pair_config(a, b)
  if (a, b) in REFUSED:
    with pytest.raises(jaxsched.ConfigError) as e:
      config = jaxsched.load_config(data)
      jaxsched.build(config, jaxsched.torch_params(INIT), batches_per_epoch=BATCHES, max_epochs=EPOCHS)
    for word in REFUSED[a, b]:
      assert word in str(e.value), str(e.value)
    return
  config = jaxsched.load_config(data)
  skip = config.skip_nonfinite
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    model, trainer, names = lightning_run(config, skip)
  with x64('float64'):
    fresh, params, state, lrs, momenta, val = jax_run(config, skip)
    np.testing.assert_allclose(lrs, model.lrs, rtol=1e-12, err_msg='the LRs of each micro-batch')
    if any(momenta):  # cycled
      np.testing.assert_allclose(momenta, model.momenta, rtol=1e-12, err_msg='the momenta of each micro-batch')
    np.testing.assert_allclose(val, model.val, rtol=TOLERANCE, err_msg='each validation loss')
    final = layouts.leaf_paths(jaxsched.final_params(state, params))
    assert max_rel_diff(final, layouts.leaf_paths(jaxsched.torch_params(model.state_dict()))) < TOLERANCE
    assert int(jaxsched.skipped_steps(state)) == skip
    failures = public_function_failures(config, names, model, trainer, fresh, params, state, val, tmp_path)
  assert not failures, '\n'.join(f'{k}: {v}' for k, v in failures.items())


# How the README names the features of the refused pairs.
README_NAMES = {
  'ema': 'ema',
  'swa': 'swa',
  'plateau': 'ReduceLROnPlateau',
  'onecycle': 'OneCycleLR',
  'warmup_cosine': 'LinearWarmupCosineAnnealingLR',
  'nested': 'SequentialLR(ChainedScheduler, ...)',
  'list': 'schedulers: [...]',
  'list_seq': 'schedulers: [SequentialLR, ...]',
}


def test_the_readme_lists_exactly_the_refused_pairs():
  with open(os.path.join(os.path.dirname(__file__), '..', 'README.md'), encoding='utf-8') as f:
    text = f.read()
  section = text.split('### Features that do not combine', 1)[1].split('\n#', 1)[0]
  listed = re.findall(r'^- `([^`]+)` \+ `([^`]+)`', section, re.M)
  assert sorted(listed) == sorted((README_NAMES[a], README_NAMES[b]) for a, b in REFUSED)


def test_the_cli_checks_and_plots_a_sample_of_pairs(tmp_path, capsys):
  """The commands themselves on two pairs (every pair's curve is :func:`jaxsched.lr_curve`'s, above):
  SWA into a nested composite, and a plateau in a list with a SequentialLR entry."""
  import yaml

  x64_before = jax.config.jax_enable_x64  # the command switches it on
  try:
    for command, (a, b) in (('check', ('swa', 'nested')), ('plot', ('plateau', 'list_seq'))):
      path = tmp_path / f'{a}+{b}.yaml'
      path.write_text(yaml.safe_dump(pair_config(a, b)))
      run = [str(path), '--batches-per-epoch', str(BATCHES), '--epochs', str(EPOCHS)]
      out = ['-o', str(tmp_path / 'lr.png')] if command == 'plot' else []
      assert cli_main([command, *run, *out]) == 0, capsys.readouterr()
  finally:
    jax.config.update('jax_enable_x64', x64_before)


def test_trainer_kwargs_checks_max_epochs_as_build_does():
  config = jaxsched.load_config({**BASE, 'swa': {'swa_lrs': 0.01}})
  for bad in (0, -1, 2.5, 'x'):
    with pytest.raises(jaxsched.ConfigError, match='max_epochs'):
      jaxsched.trainer_kwargs(config, max_epochs=bad)
  # a fractional swa_epoch_start needs the run's epochs on both sides, or Lightning takes its own default
  with pytest.raises(jaxsched.ConfigError, match='swa_epoch_start=0.8'):
    jaxsched.trainer_kwargs(config)
  assert jaxsched.trainer_kwargs(config, max_epochs=EPOCHS)['max_epochs'] == EPOCHS
