"""Weight averaging: torch's AveragedModel and SWALR, and a real Lightning Trainer with
EMAWeightAveraging and StochasticWeightAveraging, as the oracles."""

import os
import re
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging, StochasticWeightAveraging
from torch.optim import swa_utils

import jaxsched
from jaxsched import averaging
from oracle import TOLERANCE, assert_config_error, lightning_fit, max_rel_diff, problem, x64

# ---------------------------------------------------------------------------------------------- SWALR on its own


def torch_swalr(lrs, swa_lrs, epochs, strategy, steps, make_before=None, before_steps=0):
  """Each group's lr after construction and after every step of torch's SWALR, built
  (as Lightning does) after ``before_steps`` steps of another scheduler."""
  ps = [torch.nn.Parameter(torch.zeros(1, dtype=torch.float64)) for _ in lrs]
  opt = torch.optim.SGD([{'params': [p], 'lr': lr} for p, lr in zip(ps, lrs)])
  if make_before is not None:
    before = make_before(opt)
    for _ in range(before_steps):
      opt.step()
      before.step()
  sched = swa_utils.SWALR(opt, swa_lr=swa_lrs, anneal_epochs=epochs, anneal_strategy=strategy)
  out = [[g['lr'] for g in opt.param_groups]]
  for _ in range(steps):
    opt.step()
    sched.step()
    out.append([g['lr'] for g in opt.param_groups])
  return np.asarray(out)


@pytest.mark.parametrize('epochs', [0, 1, 4])
@pytest.mark.parametrize('strategy', ['cos', 'linear'])
def test_swalr_is_torchs_step_for_step(epochs, strategy):
  expected = torch_swalr([0.1], 0.02, epochs, strategy, 9)[:, 0]
  with x64('float64'):
    sched = jaxsched.schedule('SWALR', 0.1, swa_lr=0.02, anneal_epochs=epochs, anneal_strategy=strategy)
    actual = np.asarray(jax.jit(jax.vmap(sched))(jnp.arange(10)))
  np.testing.assert_allclose(actual, expected, rtol=1e-12)


def test_swalr_per_group_swa_lr_from_a_config_and_inside_composites():
  # scheduler: SWALR with one swa_lr per group (torch's list), stepped per optimizer step
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'optimizer_kwargs': {'momentum': 0.0},
    'recurrent_learning_rate_multiplier': 0.5,
    'scheduler': 'SWALR',
    'scheduler_kwargs': {'swa_lr': [0.03, 0.001], 'anneal_epochs': 3},
    'scheduler_configs': {'interval': 'step'},
  }
  expected = torch_swalr([0.1, 0.05], [0.03, 0.001], 3, 'cos', 5)
  with x64('float64'):
    params = {'w': jnp.zeros(2), 'recurrent': jnp.zeros(2)}
    tx = jaxsched.build(config, params)
    state = tx.init(params)
    step = jax.jit(lambda s: tx.update(params, s, params)[1])
    lrs = []
    for _ in range(6):
      lr = jaxsched.current_lr(state)
      lrs.append([float(lr['regular']), float(lr['recurrent'])])
      state = step(state)
  np.testing.assert_allclose(lrs, expected, rtol=1e-12)

  # SequentialLR restarts SWALR from the lr at its milestone; ChainedScheduler runs torch's recursion
  def torch_lrs(make, steps=6):
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make(opt)
    out = [opt.param_groups[0]['lr']]
    for _ in range(steps):
      opt.step()
      sched.step()
      out.append(opt.param_groups[0]['lr'])
    return out

  lr_sched = torch.optim.lr_scheduler
  cases = {
    'SequentialLR': (
      {
        'schedulers': [
          {'scheduler': 'ExponentialLR', 'scheduler_kwargs': {'gamma': 0.5}},
          {'scheduler': 'SWALR', 'scheduler_kwargs': {'swa_lr': 0.01, 'anneal_epochs': 3}},
        ],
        'milestones': [3],
      },
      lambda o: lr_sched.SequentialLR(o, [lr_sched.ExponentialLR(o, 0.5), swa_utils.SWALR(o, 0.01, 3)], [3]),
    ),
    'ChainedScheduler': (
      {
        'schedulers': [
          {'scheduler': 'ExponentialLR', 'scheduler_kwargs': {'gamma': 0.8}},
          {'scheduler': 'SWALR', 'scheduler_kwargs': {'swa_lr': 0.01, 'anneal_epochs': 4, 'anneal_strategy': 'linear'}},
        ]
      },
      lambda o: lr_sched.ChainedScheduler([lr_sched.ExponentialLR(o, 0.8), swa_utils.SWALR(o, 0.01, 4, 'linear')]),
    ),
  }
  for name, (kwargs, make) in cases.items():
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      expected = torch_lrs(make)
    with x64('float64'):
      actual = jax.jit(jax.vmap(jaxsched.schedule(name, 0.1, **kwargs)))(jnp.arange(7))
    np.testing.assert_allclose(actual, expected, rtol=1e-12, err_msg=name)


# ------------------------------------------------------------------------------------ AveragedModel, by hand


AVG_FNS = {
  'swa': (averaging.swa_avg_fn, {}),
  'ema': (averaging.ema_avg_fn(0.9), {'avg_fn': swa_utils.get_ema_avg_fn(0.9)}),
  'ema multi': (averaging.ema_multi_avg_fn(0.9), {'multi_avg_fn': swa_utils.get_ema_multi_avg_fn(0.9)}),
  'ema multi 0.2': (averaging.ema_multi_avg_fn(0.2), {'multi_avg_fn': swa_utils.get_ema_multi_avg_fn(0.2)}),
}


@pytest.mark.parametrize(
  'kind, dtype', [(kind, 'float64') for kind in AVG_FNS] + [('ema', 'float32'), ('swa', 'float32')]
)
def test_the_average_is_torchs_averaged_model_after_every_step(kind, dtype):
  avg_fn, torch_kwargs = AVG_FNS[kind]
  params, grads = problem(steps=6)
  tdtype = getattr(torch, dtype)
  model = torch.nn.ParameterDict({k: torch.nn.Parameter(torch.tensor(v, dtype=tdtype)) for k, v in params.items()})
  swa_model = swa_utils.AveragedModel(model, **torch_kwargs)
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
  expected = []
  for g in grads:
    for k, p in model.items():
      p.grad = torch.tensor(g[k], dtype=tdtype)
    opt.step()
    swa_model.update_parameters(model)
    expected.append({k: p.detach().numpy().copy() for k, p in swa_model.module.items()})

  with x64(dtype):
    tx = averaging.average(jaxsched.optimizer('SGD', lr=0.1, momentum=0.9), averaging.Averaging(avg_fn, 1))
    p = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    state = tx.init(p)

    @jax.jit
    def step(p, state, g):
      u, state = tx.update(g, state, p)
      return optax.apply_updates(p, u), state

    for i, g in enumerate(grads):
      p, state = step(p, state, {k: jnp.asarray(v, dtype) for k, v in g.items()})
      assert max_rel_diff(jax.tree.map(np.asarray, state.params), expected[i]) <= TOLERANCE[dtype], i
      assert int(state.n_averaged) == i + 1
  assert int(swa_model.n_averaged) == len(grads)


# ------------------------------------------------------------------------------------- a Lightning Trainer


class KnownGradients(pl.LightningModule):
  """The loss of the run's i-th batch is ``sum(w * coefs[i])``; records each step's LR
  and the weights each validation sees."""

  def __init__(self, init, coefs, batches, lr, make_scheduler, interval):
    super().__init__()
    self.w = torch.nn.Parameter(torch.tensor(init))
    self.coefs = torch.tensor(coefs)
    self.batches, self.lr, self.make_scheduler, self.interval = batches, lr, make_scheduler, interval
    self.lrs, self.validated = [], []

  def training_step(self, batch, batch_idx):
    return (self.w * self.coefs[self.current_epoch * self.batches + batch_idx]).sum()

  def on_before_optimizer_step(self, optimizer):
    self.lrs.append(optimizer.param_groups[0]['lr'])

  def validation_step(self, batch, batch_idx):
    self.validated.append(self.w.detach().numpy().copy())

  def train_dataloader(self):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(self.batches)), batch_size=1)

  def val_dataloader(self):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(1)), batch_size=1)

  def configure_optimizers(self):
    opt = torch.optim.SGD([self.w], lr=self.lr, momentum=0.9)
    return {'optimizer': opt, 'lr_scheduler': {'scheduler': self.make_scheduler(opt), 'interval': self.interval}}


def lightning_run(callback, config, make_scheduler, epochs, batches, init, coefs):
  model = KnownGradients(
    init,
    coefs,
    batches,
    config['learning_rate'],
    make_scheduler,
    config.get('scheduler_configs', {}).get('interval', 'epoch'),
  )
  lightning_fit(
    model,
    max_epochs=epochs,
    accumulate_grad_batches=config.get('accumulate_grad_batches', 1),
    callbacks=[callback],
    limit_val_batches=1,
  )
  return model.w.detach().numpy(), model.lrs, model.validated


def jaxsched_run(config, epochs, batches, init, coefs, max_epochs):
  with x64('float64'):
    params = {'w': jnp.asarray(init)}
    tx = jaxsched.build(config, params, batches_per_epoch=batches, max_epochs=max_epochs)
    state = tx.init(params)

    @jax.jit
    def step(params, state, g):
      lr = jaxsched.current_lr(state)['regular']
      updates, state = tx.update({'w': g}, state, params)
      return optax.apply_updates(params, updates), state, lr

    lrs, validated = [], []
    for i in range(epochs * batches):
      before = params['w']
      params, state, lr = step(params, state, jnp.asarray(coefs[i]))
      if np.any(np.asarray(params['w']) != np.asarray(before)):
        lrs.append(float(lr))
      if (i + 1) % batches == 0:
        validated.append(np.asarray(jaxsched.averaged_params(state, params)['w']))
    return np.asarray(jaxsched.final_params(state, params)['w']), lrs, validated


LR = torch.optim.lr_scheduler
CASES = {
  # 5 batches in groups of 2 (the last of 1): 3 steps an epoch; updates after steps 2, 4, 6, 8
  # and, from epoch 1, at each epoch's end, after its validation
  'ema': (
    {
      'optimizer': 'SGD',
      'learning_rate': 0.1,
      'scheduler': 'StepLR',
      'scheduler_kwargs': {'step_size': 1, 'gamma': 0.7},
      'accumulate_grad_batches': 2,
      'ema': {'decay': 0.8, 'update_every_n_steps': 2, 'update_starting_at_step': 1, 'update_starting_at_epoch': 1},
    },
    lambda: EMAWeightAveraging(
      decay=0.8, update_every_n_steps=2, update_starting_at_step=1, update_starting_at_epoch=1
    ),
    lambda o: LR.StepLR(o, step_size=1, gamma=0.7),
    3,
    5,
  ),
  # swa_epoch_start 0.5 of 6 epochs: SWALR (cos, 2 epochs) replaces the cosine from epoch 2 (0-based)
  'swa float start': (
    {
      'optimizer': 'SGD',
      'learning_rate': 0.1,
      'scheduler': 'CosineAnnealingLR',
      'scheduler_kwargs': {'T_max': 4},
      'swa': {'swa_lrs': 0.02, 'swa_epoch_start': 0.5, 'annealing_epochs': 2},
    },
    lambda: StochasticWeightAveraging(swa_lrs=0.02, swa_epoch_start=0.5, annealing_epochs=2),
    lambda o: LR.CosineAnnealingLR(o, T_max=4),
    6,
    3,
  ),
  # a per-step schedule replaced at epoch 1 (swa_epoch_start 2), accumulation, a linear anneal
  'swa int start step interval': (
    {
      'optimizer': 'SGD',
      'learning_rate': 0.1,
      'scheduler': 'ExponentialLR',
      'scheduler_kwargs': {'gamma': 0.9},
      'scheduler_configs': {'interval': 'step'},
      'accumulate_grad_batches': 2,
      'swa': {'swa_lrs': [0.05], 'swa_epoch_start': 2, 'annealing_epochs': 3, 'annealing_strategy': 'linear'},
    },
    lambda: StochasticWeightAveraging(
      swa_lrs=[0.05], swa_epoch_start=2, annealing_epochs=3, annealing_strategy='linear'
    ),
    lambda o: LR.ExponentialLR(o, gamma=0.9),
    4,
    5,
  ),
}


@pytest.mark.parametrize('name', CASES)
def test_a_lightning_trainer_with_weight_averaging(name):
  config, callback, make_scheduler, epochs, batches = CASES[name]
  for key in ('optimizer_kwargs',):
    config = {**config, key: {'momentum': 0.9}}
  rng = np.random.default_rng(1)
  init, coefs = rng.normal(size=4), rng.normal(size=(epochs * batches, 4))
  expected, expected_lrs, expected_validated = lightning_run(
    callback(), config, make_scheduler, epochs, batches, init, coefs
  )
  actual, lrs, validated = jaxsched_run(config, epochs, batches, init, coefs, max_epochs=epochs)
  np.testing.assert_allclose(lrs, expected_lrs, rtol=1e-12)
  assert len(validated) == len(expected_validated) == epochs
  for e, (a, b) in enumerate(zip(validated, expected_validated)):
    assert max_rel_diff({'w': a}, {'w': b}) < 1e-9, e
  assert max_rel_diff({'w': actual}, {'w': expected}) < 1e-9


# ------------------------------------------------------------------------------ state, resume, config errors

SWA_CONFIG = {
  'optimizer': 'Adam',
  'learning_rate': 0.01,
  'scheduler': 'StepLR',
  'scheduler_kwargs': {'step_size': 1},
  'recurrent_learning_rate_multiplier': 0.5,
  'accumulate_grad_batches': 2,
  'swa': {'swa_lrs': [0.002, 0.001], 'swa_epoch_start': 0.5, 'annealing_epochs': 2},
}


def test_resuming_in_the_middle_of_swa_gives_the_same_numbers():
  params0, grads = problem({'w': (3, 2), 'recurrent': (2,)}, steps=12, seed=3)

  steps = {}

  def run(params, state, tx, grads):
    if tx not in steps:

      def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

      steps[tx] = jax.jit(step)
    step = steps[tx]
    for g in grads:
      params, state = step(params, state, g)
    return params, state

  with x64('float64'):
    build = lambda p: jaxsched.build(SWA_CONFIG, p, batches_per_epoch=3, max_epochs=4)  # noqa: E731
    params = jax.tree.map(jnp.asarray, params0)
    tx = build(params)
    full_params, full_state = run(params, tx.init(params), tx, grads)
    # stop after 7 batches (epoch 2 of 4, SWA started at epoch 1), save as numpy, restore into a new build
    mid_params, mid_state = run(params, tx.init(params), tx, grads[:7])
    assert int(mid_state.n_averaged) == 2 and int(mid_state.batch) == 1
    saved = ([np.asarray(x) for x in jax.tree.leaves(mid_params)], [np.asarray(x) for x in jax.tree.leaves(mid_state)])
    tx2 = build(params)
    template = tx2.init(params)
    restored_params = jax.tree.unflatten(jax.tree.structure(params), [jnp.asarray(x) for x in saved[0]])
    restored_state = jax.tree.unflatten(jax.tree.structure(template), [jnp.asarray(x) for x in saved[1]])
    end_params, end_state = run(restored_params, restored_state, tx2, grads[7:])
    for a, b in zip(jax.tree.leaves((end_params, end_state)), jax.tree.leaves((full_params, full_state)), strict=True):
      np.testing.assert_array_equal(a, b)
    final = jaxsched.final_params(end_state, end_params)
    assert jaxsched.current_lr(end_state) == jaxsched.current_lr(full_state)
  # the weights became the average (of the params at the starts of epochs 1, 2 and 3)
  assert not np.array_equal(final['w'], end_params['w'])
  np.testing.assert_array_equal(final['w'], end_state.params['w'])


def _sizes(state):
  return sum(np.size(x) for x in jax.tree.leaves(state))


def test_one_copy_of_the_params_with_ema_or_swa_and_none_without():
  params = {'w': jnp.zeros((4, 3)), 'recurrent': jnp.zeros(5)}
  size = 4 * 3 + 5
  base = {'optimizer': 'SGD', 'scheduler': None, 'recurrent_learning_rate_multiplier': 0.5}
  plain = jaxsched.build(base, params).init(params)
  assert not [
    n
    for n in jax.tree.leaves(plain, is_leaf=lambda x: isinstance(x, averaging.AverageState))
    if isinstance(n, averaging.AverageState)
  ]
  assert jaxsched.averaged_params(plain, params) is params and jaxsched.final_params(plain, params) is params
  for extra in ({'ema': {}}, {'swa': {'swa_lrs': 0.01, 'swa_epoch_start': 2}}):
    state = jaxsched.build({**base, **extra}, params, batches_per_epoch=2).init(params)
    # the average, plus n_averaged, step, batch, epoch and pending
    assert _sizes(state) == _sizes(plain) + size + 5
    assert jax.tree.structure(state.params) == jax.tree.structure(params)


def test_the_loop_counters_are_one_leaf_and_cost_the_step_no_kernel_of_their_own():
  # benchmarks section 8: five scalar counters cost a small model's EMA step a kernel and four more
  # arguments of the jitted step; packed in one array the step compiles to an EMA written by hand
  params = {'w': jnp.ones((4, 3)), 'recurrent': jnp.ones(5)}
  base = {'optimizer': 'SGD', 'scheduler': None}
  inner = jaxsched.build(base, params)
  tx = jaxsched.build({**base, 'ema': {'decay': 0.9}}, params)
  moved = tx.init(params).with_counts(step=7, batch=1, epoch=2, pending=True)
  assert [int(getattr(moved, k)) for k in averaging.COUNTS] == [0, 7, 1, 2, 1]

  def by_hand(p, s):
    s, avg, n = s
    u, s = inner.update(p, s, p)
    p = optax.apply_updates(p, u)
    return p, (s, jax.tree.map(lambda a, x: jnp.where(n == 0, x, 0.9 * a + 0.1 * x), avg, p), n + 1)

  def wrapped(p, s):
    u, s = tx.update(p, s, p)
    return optax.apply_updates(p, u), s

  def cost(step, state):
    hlo = jax.jit(step, donate_argnums=(0, 1)).lower(params, state).compile().as_text()
    entry = hlo[hlo.find('ENTRY') :]
    return len(jax.tree.leaves(state)), len(re.findall(r' fusion\(', entry)), len(re.findall(r' copy\(', entry))

  assert cost(wrapped, tx.init(params)) == cost(by_hand, (inner.init(params), params, jnp.zeros([], jnp.int32)))


def test_bad_averaging_configs_are_config_errors():
  params = {'w': jnp.zeros(2), 'recurrent': jnp.zeros(2)}
  build = lambda extra, **kw: jaxsched.build({'optimizer': 'SGD', **extra}, params, **kw)  # noqa: E731
  swa = {'swa_lrs': 0.01}
  assert_config_error(lambda: build({'ema': {}, 'swa': swa}), ['ema and swa'])
  assert_config_error(lambda: build({'swa': swa}, batches_per_epoch=2), ['swa_epoch_start=0.8', 'max_epochs'])
  assert_config_error(lambda: build({'swa': {'swa_lrs': 0.01, 'swa_epoch_start': 3}}), ['batches_per_epoch'])
  assert_config_error(
    lambda: build({'swa': {'swa_lrs': 0.01, 'swa_epoch_start': 5}}, batches_per_epoch=2, max_epochs=4),
    ['epoch 5', '4 epochs'],
  )
  assert_config_error(
    lambda: build(
      {'swa': {'swa_lrs': [0.1, 0.2, 0.3]}, 'recurrent_learning_rate_multiplier': 0.5},
      batches_per_epoch=2,
      max_epochs=4,
    ),
    ['swa_lrs has 3 values', '2 parameter'],
  )
  assert_config_error(lambda: build({'swa': swa, 'scheduler': 'ReduceLROnPlateau'}), ['ReduceLROnPlateau'])
  assert_config_error(lambda: build({'swa': {}}), ['swa.swa_lrs is required'])
  assert_config_error(lambda: build({'swa': {'swa_lrs': 0.0}}), ['swa.swa_lrs=0.0'])
  assert_config_error(lambda: build({'swa': {**swa, 'swa_epoch_start': 0}}), ['swa.swa_epoch_start=0', 'integer'])
  assert_config_error(lambda: build({'swa': {**swa, 'swa_epoch_start': 1.5}}), ['swa.swa_epoch_start=1.5'])
  assert_config_error(lambda: build({'swa': {**swa, 'annealing_strategy': 'cosine'}}), ["'cos'", 'cosine'])
  assert_config_error(lambda: build({'ema': {'decay': 1.5}}), ['ema.decay=1.5'])
  assert_config_error(lambda: build({'ema': {'decy': 0.9}}), ["'decy'", "Did you mean 'decay'"])
  assert_config_error(lambda: build({'ema': 0.9}), ['ema=0.9', 'mapping'])
  assert_config_error(lambda: build({'ema': {'update_starting_at_epoch': 1}}), ['batches_per_epoch'])
  assert_config_error(lambda: jaxsched.schedule('SWALR', 0.1), ["'swa_lr'"])
  assert_config_error(lambda: jaxsched.schedule('SWALR', 0.1, swa_lr=0.1, anneal_epochs=-1), ['anneal_epochs=-1'])
  # OneCycleLR over 6 steps in a run of 12: torch would raise, unless SWALR replaces it at step 3
  one_cycle = {
    'scheduler': 'OneCycleLR',
    'scheduler_kwargs': {'max_lr': 0.1, 'total_steps': 6},
    'scheduler_configs': {'interval': 'step'},
  }
  assert_config_error(lambda: build(one_cycle, batches_per_epoch=3, run_steps=12), ['total_steps=6'])
  build({**one_cycle, 'swa': {'swa_lrs': 0.01, 'swa_epoch_start': 2}}, batches_per_epoch=3, run_steps=12, max_epochs=4)
  # the defaults, filled in
  config = jaxsched.load_config({'ema': True, 'swa': None})
  assert (
    config.ema
    == {'decay': 0.999, 'update_every_n_steps': 1, 'update_starting_at_step': None, 'update_starting_at_epoch': None}
    and config.swa is None
  )
  assert jaxsched.load_config(config.to_dict()) == config


SHARDED = """
import jax, jax.numpy as jnp, numpy as np, optax, jaxsched
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
mesh = Mesh(np.array(jax.devices()), ('d',))
params = {'w': jax.device_put(jnp.arange(8.0), NamedSharding(mesh, P('d'))),
          'b': jax.device_put(jnp.ones(4), NamedSharding(mesh, P()))}
tx = jaxsched.build({'optimizer': 'SGD', 'scheduler': None, 'ema': {'decay': 0.5}}, params)
state = tx.init(params)
updates, state = jax.jit(tx.update)(params, state, params)
p = optax.apply_updates(params, updates)
avg = jaxsched.averaged_params(state, p)
for k in params:
  assert avg[k].sharding.is_equivalent_to(params[k].sharding, 1), (k, avg[k].sharding)
# w <- w - 0.01 * w (the gradient is w), averaged with decay 0.5 after the first update's copy
np.testing.assert_allclose(avg['w'], np.arange(8.0) * 0.99, rtol=1e-6)
print('ok')
"""


def test_the_average_is_sharded_like_the_params():
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  proc = subprocess.run([sys.executable, '-c', SHARDED], capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr[-3000:]


def test_swa_lrs_must_be_floats_as_lightning_requires():
  # Lightning's StochasticWeightAveraging.__init__ refuses an int, alone or in the list
  from pytorch_lightning.utilities.exceptions import MisconfigurationException

  for value in (1, [0.1, 1], True):
    with pytest.raises(MisconfigurationException, match='positive float'):
      StochasticWeightAveraging(swa_lrs=value)
  assert_config_error(
    lambda: jaxsched.load_config({'swa': {'swa_lrs': 1}}),
    ['swa.swa_lrs=1 is not allowed', "Lightning's StochasticWeightAveraging requires a positive float", '1.0'],
  )
  assert_config_error(lambda: jaxsched.load_config({'swa': {'swa_lrs': [0.1, 1]}}), ['swa.swa_lrs[1]=1', 'float'])
  assert_config_error(lambda: jaxsched.load_config({'swa': {'swa_lrs': True}}), ['swa.swa_lrs=True', 'float'])
  assert jaxsched.load_config({'swa': {'swa_lrs': [0.1, 1.0]}}).swa['swa_lrs'] == (0.1, 1.0)
  assert jaxsched.load_config({'swa': {'swa_lrs': 0.5}}).swa['swa_lrs'] == 0.5
