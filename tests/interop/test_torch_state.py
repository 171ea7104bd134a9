"""Switching between torch and jaxsched mid-run: from_torch, to_torch, load_lightning_checkpoint.

Each case trains a small torch model with the config's torch optimizer and
scheduler (Lightning's loop rules: accumulation, interval, frequency, plateau
reports at epoch ends) for a while, hands the state over, and checks that the
other side continues exactly as the first would have on its own: torch's run
from the handed-over JAX state, and the JAX run from torch's state, are compared
after every step in float64 within 1e-9.
"""

import copy
import logging
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import pytorch_lightning as pl
import torch
from test_muon import torch_newton_schulz

import jaxsched
from jaxsched.interop import layouts
from jaxsched.optimizers.lbfgs import LBFGSState
from oracle import assert_config_error, max_rel_diff, x64

EPOCH = 4  # micro-batches per epoch


class Net(torch.nn.Module):
  """A Linear, a Conv2d, a norm layer's scale and bias and a recurrent Linear (each optional)."""

  def __init__(self, parts=('fc', 'conv', 'norm', 'recurrent')):
    super().__init__()
    make = {
      'fc': lambda: torch.nn.Linear(4, 3),
      'conv': lambda: torch.nn.Conv2d(2, 3, (2, 3)),
      'norm': lambda: torch.nn.BatchNorm1d(3),
      'recurrent': lambda: torch.nn.Linear(3, 3),
      'proj': lambda: torch.nn.Linear(4, 3, bias=False),
      'square': lambda: torch.nn.Linear(3, 3, bias=False),
    }
    for part in parts:
      self.add_module(part, make[part]())
    self.double()


def torch_names(module):
  return [n for n, _ in module.named_parameters()]


def jax_params(module):
  return jax.tree.map(jnp.asarray, layouts.torch_params(dict(module.named_parameters())))


def gradients(module, count, seed=1):
  rng = np.random.default_rng(seed)
  return [{n: rng.normal(size=p.shape) for n, p in module.named_parameters()} for _ in range(count)]


def torch_run(config, module, optimizer, scheduler, grads, start, stop, metrics):
  """Lightning's loop over micro-batches ``start..stop`` (global indices): the parameters after each."""
  cfg = jaxsched.load_config(config)
  n, sc = cfg.accumulate_grad_batches, cfg.scheduler_configs
  params = dict(module.named_parameters())
  out = []
  for i in range(start, stop):
    epoch, b = divmod(i, EPOCH)
    for name, p in params.items():
      g = torch.tensor(grads[i][name]) / n
      p.grad = g if b % n == 0 else p.grad + g
      if cfg.optimizer == 'SparseAdam':
        p.grad = p.grad.to_sparse()
    if (b + 1) % n == 0 or b + 1 == EPOCH:
      optimizer.step()
      if scheduler is not None and sc['interval'] == 'step' and (b + 1) % sc['frequency'] == 0:
        scheduler.step()
    if b + 1 == EPOCH and scheduler is not None and sc['interval'] == 'epoch' and (epoch + 1) % sc['frequency'] == 0:
      if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(metrics[epoch])
      else:
        scheduler.step()
    out.append({k: v.detach().numpy().copy() for k, v in params.items()})
  return out


def optimizer_steps(config, batches):
  """Optimizer steps in the first ``batches`` micro-batches (Lightning's global_step)."""
  n = jaxsched.load_config(config).accumulate_grad_batches
  return sum(1 for i in range(batches) if (i % EPOCH + 1) % n == 0 or i % EPOCH + 1 == EPOCH)


def jitted_step(tx):
  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


def jax_run(step, params, state, grads, start, stop, metrics, names):
  out = []
  for i in range(start, stop):
    params, state = step(params, state, jax_params_of(grads[i]))
    if (i + 1) % EPOCH == 0:
      state = jaxsched.report(state, {'val_loss': metrics[i // EPOCH]})
    out.append(layouts.torch_state_dict(params, names))
  return params, state, out


def jax_params_of(torch_grads):
  return jax.tree.map(jnp.asarray, layouts.torch_params(torch_grads))


def assert_close(actual, expected, what):
  for step, (a, e) in enumerate(zip(actual, expected, strict=True)):
    d = max_rel_diff(a, e)
    assert d <= 1e-9, f'{what}, step {step} after the switch: max relative difference {d:.3g}'


METRICS = [1.0, 1.1, 0.9, 0.95, 0.97, 0.5]  # val_loss per epoch: a plateau cuts after the second


def switch_both_ways(
  config, parts=('fc', 'conv', 'norm', 'recurrent'), switch=6, stop=12, seed=0, at_switch=lambda scheduler_state: None
):
  """torch -> JAX and JAX -> torch after ``switch`` micro-batches, compared until ``stop``;
  ``at_switch`` sees torch's scheduler state dict at the switch."""
  metrics = METRICS
  with x64('float64'):
    torch.manual_seed(seed)
    module = Net(parts)
    names = torch_names(module)
    grads = gradients(module, stop, seed)
    init = copy.deepcopy(module)
    params0 = jax_params(module)
    tx = jaxsched.build(config, params0, batches_per_epoch=EPOCH)
    step = jitted_step(tx)

    # torch -> JAX
    optimizer = jaxsched.torch_optimizer(config, module.named_parameters())
    scheduler = jaxsched.torch_scheduler(config, optimizer)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      torch_run(config, module, optimizer, scheduler, grads, 0, switch, metrics)
      steps = optimizer_steps(config, switch)
      sd = copy.deepcopy(optimizer.state_dict())
      sched_sd = copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None
      at_switch(sched_sd)
      params = jax_params(module)
      expected = torch_run(config, module, optimizer, scheduler, grads, switch, stop, metrics)
    # torch's own step count where it keeps one (SGD and Muon do not)
    known = steps if jaxsched.load_config(config).optimizer in ('SGD', 'Muon') else None
    state = jaxsched.from_torch(config, params, sd, sched_sd, torch_names=names, batches_per_epoch=EPOCH, step=known)
    _, _, actual = jax_run(step, params, state, grads, switch, stop, metrics, names)
    assert_close(actual, expected, 'torch -> JAX')

    # JAX -> torch
    params, state, _ = jax_run(step, params0, tx.init(params0), grads, 0, switch, metrics, names)
    _, _, expected = jax_run(step, params, state, grads, switch, stop, metrics, names)
    sd, sched_sd = jaxsched.to_torch(config, state, params, torch_names=names, batches_per_epoch=EPOCH)
    module = init
    module.load_state_dict(
      {k: torch.from_numpy(v) for k, v in layouts.torch_state_dict(params, names).items()}, strict=False
    )
    optimizer = jaxsched.torch_optimizer(config, module.named_parameters())
    scheduler = jaxsched.torch_scheduler(config, optimizer)
    optimizer.load_state_dict(sd)
    if scheduler is not None:
      scheduler.load_state_dict(sched_sd)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      actual = torch_run(config, module, optimizer, scheduler, grads, switch, stop, metrics)
    assert_close(actual, expected, 'JAX -> torch')


def cfg(optimizer, scheduler=None, lr=0.01, **extra):
  return {'optimizer': optimizer, 'learning_rate': lr, 'scheduler': scheduler, **extra}


OPTIMIZER_CASES = {
  'SGD nesterov': cfg('SGD', optimizer_kwargs={'momentum': 0.9, 'nesterov': True, 'weight_decay': 0.01}),
  'SGD dampening': cfg('SGD', optimizer_kwargs={'momentum': 0.5, 'dampening': 0.3}),
  'Adam amsgrad': cfg('Adam', optimizer_kwargs={'amsgrad': True, 'weight_decay': 0.01}),
  'AdamW': cfg('AdamW'),
  'Adamax': cfg('Adamax'),
  'NAdam': cfg('NAdam'),
  'RAdam': cfg('RAdam'),
  'RMSprop centered momentum': cfg('RMSprop', optimizer_kwargs={'momentum': 0.9, 'centered': True}),
  'Adagrad': cfg('Adagrad', optimizer_kwargs={'lr_decay': 0.01, 'initial_accumulator_value': 0.1}),
  'Adadelta': cfg('Adadelta', lr=1.0),
  'Rprop': cfg('Rprop'),
  'ASGD averaging': cfg('ASGD', optimizer_kwargs={'t0': 2.0, 'lambd': 0.01}),
  'SparseAdam': cfg('SparseAdam'),
}


@pytest.mark.parametrize('name', OPTIMIZER_CASES)
def test_every_optimizer_switches_both_ways_mid_run(name):
  switch_both_ways(OPTIMIZER_CASES[name])


def test_adafactor_with_dense_kernels_switches_both_ways():
  # Adafactor factors the last two dimensions: a Dense kernel's swap keeps the same factors
  switch_both_ways(cfg('Adafactor', optimizer_kwargs={'weight_decay': 0.01}), parts=('fc', 'norm', 'recurrent'))


@pytest.mark.parametrize('kwargs', [{'adjust_lr_fn': 'match_rms_adamw'}, {'layout': 'in_out'}])
def test_muon_switches_both_ways_where_the_layout_keeps_its_math(kwargs):
  # Dense kernels are torch's weights transposed: the same math with a symmetric LR ratio, or with layout in_out
  config = cfg('Muon', lr=0.02, optimizer_kwargs={**kwargs, 'ns_dtype': 'float64'})
  with torch_newton_schulz('float64'):
    switch_both_ways(config, parts=('proj', 'square'))


SCHEDULER_CASES = {
  'StepLR epoch': cfg('SGD', 'StepLR', lr=0.1, scheduler_kwargs={'step_size': 1, 'gamma': 0.5}),
  'MultiStepLR step': cfg(
    'Adam', 'MultiStepLR', scheduler_kwargs={'milestones': [3, 7], 'gamma': 0.3}, scheduler_configs={'interval': 'step'}
  ),
  'CosineAnnealingLR recurrent group': cfg(
    'SGD',
    'CosineAnnealingLR',
    lr=0.1,
    recurrent_learning_rate_multiplier=0.3,
    scheduler_kwargs={'T_max': 5, 'eta_min': 0.001},
  ),
  'OneCycleLR mid-cycle, cycled beta1, two groups': cfg(
    'AdamW',
    'OneCycleLR',
    recurrent_learning_rate_multiplier=0.5,
    scheduler_configs={'interval': 'step'},
    scheduler_kwargs={'max_lr': [0.05, 0.02], 'total_steps': 20},
  ),
  'CyclicLR cycled momentum, frequency 2': cfg(
    'SGD',
    'CyclicLR',
    scheduler_configs={'interval': 'step', 'frequency': 2},
    scheduler_kwargs={'base_lr': 0.01, 'max_lr': 0.1, 'step_size_up': 2},
  ),
  'LinearWarmupCosineAnnealingLR': cfg(
    'Adam',
    'LinearWarmupCosineAnnealingLR',
    scheduler_configs={'interval': 'step'},
    scheduler_kwargs={'warmup_epochs': 4, 'max_epochs': 14, 'warmup_start_lr': 1e-4},
  ),
  'SequentialLR': cfg(
    'SGD',
    'SequentialLR',
    lr=0.1,
    scheduler_configs={'interval': 'step'},
    scheduler_kwargs={
      'milestones': [4],
      'schedulers': [
        {'scheduler': 'LinearLR', 'scheduler_kwargs': {'start_factor': 0.1, 'total_iters': 4}},
        {'scheduler': 'ExponentialLR', 'scheduler_kwargs': {'gamma': 0.8}},
      ],
    },
  ),
  'ChainedScheduler': cfg(
    'SGD',
    'ChainedScheduler',
    lr=0.1,
    scheduler_configs={'interval': 'step'},
    scheduler_kwargs={
      'schedulers': [
        {'scheduler': 'ConstantLR', 'scheduler_kwargs': {'factor': 0.5, 'total_iters': 8}},
        {'scheduler': 'ExponentialLR', 'scheduler_kwargs': {'gamma': 0.9}},
      ]
    },
  ),
  'CosineAnnealingWarmRestarts past a restart': cfg(
    'Adam',
    'CosineAnnealingWarmRestarts',
    scheduler_configs={'interval': 'step'},
    scheduler_kwargs={'T_0': 2, 'T_mult': 2},
  ),
  'LambdaLR step': cfg(
    'SGD', 'LambdaLR', lr=0.1, scheduler_configs={'interval': 'step'}, scheduler_kwargs={'lr_lambda': '0.9 ** epoch'}
  ),
  'MultiplicativeLR step': cfg(
    'Adam', 'MultiplicativeLR', scheduler_configs={'interval': 'step'}, scheduler_kwargs={'lr_lambda': '0.95'}
  ),
  'PolynomialLR step': cfg(
    'SGD',
    'PolynomialLR',
    lr=0.1,
    scheduler_configs={'interval': 'step'},
    scheduler_kwargs={'total_iters': 10, 'power': 2.0},
  ),
  'LinearLR step': cfg(
    'RMSprop',
    'LinearLR',
    scheduler_configs={'interval': 'step'},
    scheduler_kwargs={'start_factor': 0.2, 'total_iters': 9},
  ),
  'SWALR step': cfg(
    'SGD',
    'SWALR',
    lr=0.1,
    scheduler_configs={'interval': 'step'},
    scheduler_kwargs={'swa_lr': 0.01, 'anneal_epochs': 9},
  ),
  'accumulation mid-epoch, named group': cfg(
    'Adam',
    'ExponentialLR',
    accumulate_grad_batches=3,
    scheduler_kwargs={'gamma': 0.7},
    lr_parameter_groups={'conv': {'lr_factor': 0.1, 'weight_decay': 0.01}},
  ),
}


@pytest.mark.parametrize('name', SCHEDULER_CASES)
def test_schedulers_continue_from_their_position(name):
  switch = 7 if 'accumulation' in name else 6  # an optimizer step's boundary inside an epoch
  switch_both_ways(SCHEDULER_CASES[name], switch=switch, stop=switch + 7)


def test_reduce_lr_on_plateau_continues_in_cooldown():
  config = cfg(
    'SGD',
    'ReduceLROnPlateau',
    lr=0.1,
    scheduler_configs={'monitor': 'val_loss'},
    scheduler_kwargs={'patience': 0, 'cooldown': 2, 'factor': 0.5},
  )

  def in_cooldown(scheduler_state):
    assert scheduler_state['cooldown_counter'] == 2 and scheduler_state['_last_lr'] == [0.05]

  switch_both_ways(config, switch=10, stop=21, at_switch=in_cooldown)


def quartic(coefs):
  """sum(a p^2 / 2 + b p + p^4 / 10) over the parameters: LBFGS's closure, with its curvature pairs."""

  def loss(params):
    return sum((a * p * p / 2 + b * p + p**4 / 10).sum() for p, (a, b) in ((params[k], coefs[k]) for k in coefs))

  return loss


def lbfgs_problem(config, module, names, metrics=()):
  """The quartic's torch and JAX steppers for LBFGS (``metrics[j]`` reported to a plateau after step ``2j + 1``),
  each ``(model, optimizer or state, start, stop) -> (model, state, parameters after each step)``."""
  rng = np.random.default_rng(0)
  coefs = {n: (1 + rng.random(p.shape), rng.normal(size=p.shape)) for n, p in module.named_parameters()}
  torch_loss = quartic({n: tuple(map(torch.tensor, c)) for n, c in coefs.items()})
  jax_coefs = {n: tuple(layouts.flax_rule(n, np.ndim(c[0]))[1].to_jax(x) for x in c) for n, c in coefs.items()}
  jax_loss = quartic(jax_coefs)
  paths = {n: layouts.locate(layouts.flax_rule, n, layouts.leaf_paths(jax_params(module)))[0] for n in names}

  def value_fn(params):
    by_path = layouts.leaf_paths(params)
    return jax_loss({n: by_path[paths[n]] for n in names})

  def torch_steps(module, optimizer, start, stop, scheduler=None):
    params = dict(module.named_parameters())

    def closure():
      optimizer.zero_grad()
      loss = torch_loss(params)
      loss.backward()
      return loss

    out = []
    for i in range(start, stop):
      optimizer.step(closure)
      if scheduler is not None and i % 2:
        scheduler.step(metrics[i // 2])
      out.append({k: v.detach().numpy().copy() for k, v in params.items()})
    return module, optimizer, out

  tx = jaxsched.build(config, jax_params(module))

  @jax.jit
  def jax_step(params, state):
    updates, state = tx.update(jax.grad(value_fn)(params), state, params, value_fn=value_fn)
    return optax.apply_updates(params, updates), state

  def jax_steps(params, state, start, stop):
    out = []
    for i in range(start, stop):
      params, state = jax_step(params, state)
      if i % 2 and metrics:
        state = jaxsched.report(state, {'val_loss': metrics[i // 2]})
      out.append(layouts.torch_state_dict(params, names))
    return params, state, out

  return tx, torch_steps, jax_steps


def test_lbfgs_with_its_history_switches_both_ways():
  config = cfg('LBFGS', lr=0.5, optimizer_kwargs={'max_iter': 3, 'history_size': 3, 'line_search_fn': 'strong_wolfe'})
  switch, stop = 3, 6
  with x64('float64'):
    torch.manual_seed(0)
    module = Net(('fc', 'conv'))
    names = torch_names(module)
    tx, torch_steps, jax_steps = lbfgs_problem(config, module, names)
    params0 = jax_params(module)

    init = copy.deepcopy(module)
    optimizer = jaxsched.torch_optimizer(config, module.named_parameters())
    torch_steps(module, optimizer, 0, switch)
    sd = copy.deepcopy(optimizer.state_dict())
    assert len(sd['state'][0]['old_dirs']) == 3  # the history is full
    params = jax_params(module)
    expected = torch_steps(module, optimizer, switch, stop)[2]
    state = jaxsched.from_torch(config, params, sd, torch_names=names)
    assert_close(jax_steps(params, state, switch, stop)[2], expected, 'torch -> JAX')

    params, state, _ = jax_steps(params0, tx.init(params0), 0, switch)
    (lbfgs_state,) = [
      x for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, LBFGSState)) if isinstance(x, LBFGSState)
    ]
    assert int(lbfgs_state.head) != 0  # the ring has wrapped
    _, _, expected = jax_steps(params, state, switch, stop)
    sd, _ = jaxsched.to_torch(config, state, params, torch_names=names)
    init.load_state_dict(
      {k: torch.from_numpy(v) for k, v in layouts.torch_state_dict(params, names).items()}, strict=False
    )
    optimizer = jaxsched.torch_optimizer(config, init.named_parameters())
    optimizer.load_state_dict(sd)
    assert_close(torch_steps(init, optimizer, switch, stop)[2], expected, 'JAX -> torch')


PLATEAU_CUTS = {
  'scheduler': 'ReduceLROnPlateau',
  'scheduler_configs': {'monitor': 'val_loss'},
  'scheduler_kwargs': {'patience': 0, 'factor': 0.5},
}
# torch keeps no step for these: from_torch cannot tell the steps taken (and is not given step=)
NO_STEP_CASES = {
  'SGD momentum': (cfg('SGD', lr=0.05, optimizer_kwargs={'momentum': 0.9}), ('fc', 'conv', 'norm', 'recurrent')),
  'Muon': (
    cfg('Muon', lr=0.02, optimizer_kwargs={'adjust_lr_fn': 'match_rms_adamw', 'ns_dtype': 'float64'}),
    ('proj', 'square'),
  ),
  'LBFGS': (
    cfg('LBFGS', lr=0.5, optimizer_kwargs={'max_iter': 3, 'history_size': 3, 'line_search_fn': 'strong_wolfe'}),
    ('fc', 'conv'),
  ),
}


@pytest.mark.parametrize('plateau', [False, True], ids=['constant LR', 'ReduceLROnPlateau'])
@pytest.mark.parametrize('name', NO_STEP_CASES)
def test_state_without_a_step_count_crosses_over_and_back(name, plateau):
  # torch -> JAX (-> torch at once, and after JAX steps) against torch alone, and JAX -> torch -> JAX against
  # JAX alone: the momentum buffer (LBFGS's history) crosses each time, with no step= given
  base, parts = NO_STEP_CASES[name]
  config = {**base, **PLATEAU_CUTS} if plateau else base
  lbfgs = name == 'LBFGS'
  there, back, stop = (2, 5, 8) if lbfgs else (6, 13, 20)  # inside epochs (plateau reports every 4 batches)
  with x64('float64'), torch_newton_schulz('float64'):
    torch.manual_seed(0)
    init = Net(parts)
    names = torch_names(init)
    params0 = jax_params(init)
    grads = gradients(init, stop)
    if lbfgs:
      tx, lbfgs_torch, lbfgs_jax = lbfgs_problem(config, init, names, METRICS)

      def torch_steps(module, optimizer, scheduler, start, stop):
        return lbfgs_torch(module, optimizer, start, stop, scheduler)[2]

      def jax_steps(params, state, start, stop):
        return lbfgs_jax(params, state, start, stop)

    else:
      tx = jaxsched.build(config, params0, batches_per_epoch=EPOCH)
      step = jitted_step(tx)

      def torch_steps(module, optimizer, scheduler, start, stop):
        with warnings.catch_warnings():
          warnings.simplefilter('ignore')
          return torch_run(config, module, optimizer, scheduler, grads, start, stop, METRICS)

      def jax_steps(params, state, start, stop):
        return jax_run(step, params, state, grads, start, stop, METRICS, names)

    def torch_side(params=None, sd=None, sched_sd=None):
      module = copy.deepcopy(init)
      if params is not None:
        module.load_state_dict(
          {k: torch.from_numpy(v) for k, v in layouts.torch_state_dict(params, names).items()}, strict=False
        )
      optimizer = jaxsched.torch_optimizer(config, module.named_parameters())
      scheduler = jaxsched.torch_scheduler(config, optimizer)
      if sd is not None:
        optimizer.load_state_dict(sd)
      if sched_sd is not None:
        scheduler.load_state_dict(sched_sd)
      return module, optimizer, scheduler

    def from_torch(module, optimizer, scheduler):
      sd, sched_sd = copy.deepcopy(optimizer.state_dict()), scheduler and copy.deepcopy(scheduler.state_dict())
      assert sd['state']  # torch's state has started
      params = jax_params(module)
      return params, jaxsched.from_torch(config, params, sd, sched_sd, torch_names=names, batches_per_epoch=EPOCH)

    def to_torch(params, state):
      sd, sched_sd = jaxsched.to_torch(config, state, params, torch_names=names, batches_per_epoch=EPOCH)
      assert sd['state']  # what the JAX run keeps crosses
      return torch_side(params, sd, sched_sd)

    module, optimizer, scheduler = torch_side()
    expected = torch_steps(module, optimizer, scheduler, 0, stop)
    module, optimizer, scheduler = torch_side()
    torch_steps(module, optimizer, scheduler, 0, there)
    params, state = from_torch(module, optimizer, scheduler)
    module, optimizer, scheduler = to_torch(params, state)  # straight back: the JAX run has counted no step
    assert_close(
      torch_steps(module, optimizer, scheduler, there, stop), expected[there:], 'torch -> JAX at once -> torch'
    )
    params, state, actual = jax_steps(params, state, there, back)
    assert_close(actual, expected[there:back], 'torch -> JAX')
    module, optimizer, scheduler = to_torch(params, state)
    assert_close(torch_steps(module, optimizer, scheduler, back, stop), expected[back:], 'torch -> JAX -> torch')

    expected = jax_steps(params0, tx.init(params0), 0, stop)[2]
    params, state, _ = jax_steps(params0, tx.init(params0), 0, there)
    module, optimizer, scheduler = to_torch(params, state)
    assert_close(torch_steps(module, optimizer, scheduler, there, back), expected[there:back], 'JAX -> torch')
    params, state = from_torch(module, optimizer, scheduler)
    assert_close(jax_steps(params, state, back, stop)[2], expected[back:], 'JAX -> torch -> JAX')


class Tiny(pl.LightningModule):
  """A Linear and a recurrent Linear trained by Lightning from the config."""

  def __init__(self, config, data):
    super().__init__()
    torch.manual_seed(0)
    self.fc, self.recurrent = torch.nn.Linear(3, 2), torch.nn.Linear(2, 2, bias=False)
    self.config, self.data = config, data
    self.double()

  def training_step(self, batch, batch_idx):
    x, y = batch
    return ((self.recurrent(torch.tanh(self.fc(x))) - y) ** 2).mean()

  def train_dataloader(self):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*self.data), batch_size=4)

  def configure_optimizers(self):
    return jaxsched.configure_optimizers(self.config, self)


def tiny_loss(params, x, y):
  h = jnp.tanh(x @ params['fc']['kernel'] + params['fc']['bias'])
  return jnp.mean((h @ params['recurrent']['kernel'] - y) ** 2)


def fit(config, data, tmp_path, epochs, ckpt_path=None):
  trainer = pl.Trainer(
    max_epochs=epochs,
    accelerator='cpu',
    devices=1,
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=False,
    default_root_dir=tmp_path,
  )
  model = Tiny(config, data)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    logging.getLogger('pytorch_lightning').setLevel(logging.ERROR)
    trainer.fit(model, ckpt_path=ckpt_path)
  return trainer, model


def test_a_lightning_checkpoint_continues_in_jax_and_goes_back(tmp_path):
  config = cfg(
    'AdamW',
    'StepLR',
    lr=0.05,
    recurrent_learning_rate_multiplier=0.5,
    optimizer_kwargs={'amsgrad': True},
    scheduler_kwargs={'step_size': 1, 'gamma': 0.5},
  )
  rng = np.random.default_rng(0)
  data = (torch.tensor(rng.normal(size=(12, 3))), torch.tensor(rng.normal(size=(12, 2))))
  batches = 3
  trainer, _ = fit(config, data, tmp_path, 2)
  trainer.save_checkpoint(tmp_path / 'run.ckpt')
  _, resumed = fit(config, data, tmp_path, 3, tmp_path / 'run.ckpt')  # Lightning's own third epoch
  expected = {k: v.detach().numpy() for k, v in resumed.named_parameters()}
  with x64('float64'):
    like = {'fc': {'kernel': jnp.zeros((3, 2)), 'bias': jnp.zeros(2)}, 'recurrent': {'kernel': jnp.zeros((2, 2))}}
    ckpt = jaxsched.load_lightning_checkpoint(tmp_path / 'run.ckpt', config, like, batches_per_epoch=batches)
    assert (ckpt.epoch, ckpt.global_step) == (2, 6)
    assert jaxsched.current_lr(ckpt.opt_state) == pytest.approx({'regular': 0.0125, 'recurrent': 0.00625})
    tx = jaxsched.build(config, like, batches_per_epoch=batches)
    params, state = ckpt.params, ckpt.opt_state
    x, y = (jnp.asarray(t.numpy()) for t in data)
    for b in range(batches):  # the loader does not shuffle
      updates, state = tx.update(jax.grad(tiny_loss)(params, x[4 * b : 4 * b + 4], y[4 * b : 4 * b + 4]), state, params)
      params = optax.apply_updates(params, updates)
    names = ['fc.weight', 'fc.bias', 'recurrent.weight']
    assert max_rel_diff(layouts.torch_state_dict(params, names), expected) < 1e-9

    # and back: the checkpoint rewritten from the JAX state resumes in Lightning as the original
    sd, sched_sd = jaxsched.to_torch(config, ckpt.opt_state, ckpt.params, torch_names=names, batches_per_epoch=batches)
  saved = torch.load(tmp_path / 'run.ckpt', weights_only=True)
  saved['optimizer_states'], saved['lr_schedulers'] = [sd], [sched_sd]
  saved['state_dict'] = {k: torch.from_numpy(v) for k, v in layouts.torch_state_dict(ckpt.params, names).items()}
  torch.save(saved, tmp_path / 'back.ckpt')
  _, again = fit(config, data, tmp_path, 3, tmp_path / 'back.ckpt')
  assert max_rel_diff({k: v.detach().numpy() for k, v in again.named_parameters()}, expected) < 1e-12


def test_dense_and_conv_layers_compute_the_same_after_conversion():
  import flax.linen as nn

  with x64('float64'):
    torch.manual_seed(0)
    linear, conv = torch.nn.Linear(4, 3).double(), torch.nn.Conv2d(2, 3, (2, 3)).double()
    x = np.random.default_rng(0).normal(size=(5, 2, 6, 7))
    dense = layouts.torch_params(dict(linear.named_parameters()))
    kernel = layouts.torch_params(dict(conv.named_parameters()))
    assert dense['kernel'].shape == (4, 3) and kernel['kernel'].shape == (2, 3, 2, 3)
    np.testing.assert_allclose(
      nn.Dense(3).apply({'params': dense}, x[:, 0, 0, :4]),
      linear(torch.tensor(x[:, 0, 0, :4])).detach().numpy(),
      rtol=1e-12,
    )
    out = nn.Conv(3, (2, 3), padding='VALID').apply({'params': kernel}, x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(out.transpose(0, 3, 1, 2), conv(torch.tensor(x)).detach().numpy(), rtol=1e-10)
    # and back, by name
    back = layouts.torch_state_dict({'conv': kernel, 'fc': dense}, ['conv.weight', 'fc.weight'])
    np.testing.assert_array_equal(back['conv.weight'], conv.weight.detach().numpy())
    np.testing.assert_array_equal(back['fc.weight'], linear.weight.detach().numpy())


def test_a_rule_maps_what_flax_rule_does_not_know():
  embed = torch.nn.Embedding(5, 3)
  rule = layouts.with_overrides({'weight': ('embedding', layouts.SAME)})
  np.testing.assert_array_equal(
    layouts.torch_params(dict(embed.named_parameters()), rule)['embedding'], embed.weight.detach().numpy()
  )
  norm = torch.nn.BatchNorm1d(3)
  assert set(layouts.torch_params(norm.state_dict())) == {'scale', 'bias', 'mean', 'var'}  # num_batches_tracked: no


def adam_checkpoint(config, parts=('fc', 'recurrent')):
  """A torch optimizer (and scheduler) of ``config`` after two steps, and the JAX side's names and params."""
  module = Net(parts)
  optimizer = jaxsched.torch_optimizer(config, module.named_parameters())
  scheduler = jaxsched.torch_scheduler(config, optimizer)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    for _ in range(2):
      for p in module.parameters():
        p.grad = torch.ones_like(p)
      optimizer.step()
      if scheduler is not None:
        scheduler.step()
  return (
    optimizer.state_dict(),
    scheduler.state_dict() if scheduler is not None else None,
    torch_names(module),
    jax_params(module),
  )


MISMATCHES = {
  'another optimizer class': (cfg('Adam'), cfg('SGD'), ['keys', 'another optimizer', 'SGD']),
  'another setting': (cfg('Adam', optimizer_kwargs={'eps': 1e-6}), cfg('Adam'), ['eps=1e-06', 'eps=1e-08']),
  'another amsgrad': (cfg('Adam'), cfg('Adam', optimizer_kwargs={'amsgrad': True}), ['amsgrad=False', 'amsgrad=True']),
  'another number of groups': (
    cfg('Adam'),
    cfg('Adam', recurrent_learning_rate_multiplier=0.1),
    ['1 param groups', 'gives 2', 'regular, recurrent'],
  ),
  'another scheduler setting': (
    cfg('Adam', 'StepLR', scheduler_kwargs={'step_size': 2, 'gamma': 0.5}),
    cfg('Adam', 'StepLR', scheduler_kwargs={'step_size': 2}),
    ['gamma=0.5', 'gamma=0.1'],
  ),
  'another scheduler class': (
    cfg('Adam', 'StepLR', scheduler_kwargs={'step_size': 2}),
    cfg('Adam', 'ExponentialLR', scheduler_kwargs={'gamma': 0.5}),
    ['another scheduler class', 'ExponentialLR', 'step_size'],
  ),
  'another base lr': (
    cfg('Adam', 'StepLR', lr=0.1, scheduler_kwargs={'step_size': 2}),
    cfg('Adam', 'StepLR', lr=0.2, scheduler_kwargs={'step_size': 2}),
    ['base_lrs', '0.1', '0.2'],
  ),
  'another interval': (
    cfg('Adam', 'StepLR', scheduler_kwargs={'step_size': 5}, scheduler_configs={'interval': 'step'}),
    cfg('Adam', 'StepLR', scheduler_kwargs={'step_size': 5}),
    ['stepped 2 times', 'epoch'],
  ),
  'no scheduler in the config': (
    cfg('Adam', 'StepLR', scheduler_kwargs={'step_size': 2}),
    cfg('Adam'),
    ['scheduler: null'],
  ),
}


@pytest.mark.parametrize('name', MISMATCHES)
def test_a_checkpoint_that_does_not_fit_the_config_is_refused_with_the_difference(name):
  saved_config, config, words = MISMATCHES[name]
  with x64('float64'):
    sd, sched, names, params = adam_checkpoint(saved_config)
    assert_config_error(
      lambda: jaxsched.from_torch(config, params, sd, sched, torch_names=names, batches_per_epoch=EPOCH), words
    )


def test_another_shape_or_name_is_refused():
  with x64('float64'):
    sd, _, names, params = adam_checkpoint(cfg('Adam'))
    wider = dict(params, fc={'kernel': jnp.zeros((5, 3)), 'bias': jnp.zeros(3)})
    assert_config_error(
      lambda: jaxsched.from_torch(cfg('Adam'), wider, sd, torch_names=names),
      ['exp_avg', "'fc.weight'", '(4, 3)', '(5, 3)'],
    )
    assert_config_error(
      lambda: jaxsched.from_torch(cfg('Adam'), params, sd, torch_names=['head.weight', *names[1:]]),
      ["'head.weight'", 'no JAX counterpart'],
    )


def test_an_optimizer_without_a_step_count_needs_the_step_for_an_epoch_schedule():
  config = cfg('SGD', 'StepLR', scheduler_kwargs={'step_size': 2})
  with x64('float64'):
    sd, sched, names, params = adam_checkpoint(config)
    assert_config_error(
      lambda: jaxsched.from_torch(config, params, sd, sched, torch_names=names, batches_per_epoch=EPOCH), ['give step=']
    )


def test_layout_changes_that_change_the_math_are_refused():
  with x64('float64'):
    sd, _, names, params = adam_checkpoint(cfg('Adafactor'), parts=('conv',))
    assert_config_error(
      lambda: jaxsched.from_torch(cfg('Adafactor'), params, sd, torch_names=names),
      ['Adafactor factors the last two dimensions', "'conv.weight'", 'SAME'],
    )
    config = cfg('Muon')
    sd, _, names, params = adam_checkpoint(config, parts=('proj',))
    assert_config_error(
      lambda: jaxsched.from_torch(config, params, sd, torch_names=names),
      ['Muon', "'out_in'", "'proj.weight'", '(4, 3)', 'layout: in_out'],
    )
    assert_config_error(
      lambda: jaxsched.to_torch(config, jaxsched.build(config, params).init(params), params, torch_names=names),
      ['Muon', 'layout: in_out'],
    )
    # in torch's own layout Muon converts
    rule = layouts.with_overrides({'proj.weight': ('proj/weight', layouts.SAME)})
    params = {'proj': {'weight': jnp.zeros((3, 4))}}
    state = jaxsched.from_torch(config, params, sd, torch_names=names, rule=rule)
    buffer = jax.tree.leaves(state)[-1]
    np.testing.assert_array_equal(buffer, sd['state'][0]['momentum_buffer'].numpy())


def test_a_checkpoint_that_needs_more_than_weights_only_is_refused(tmp_path):
  torch.save({'state_dict': {}, 'optimizer_states': [], 'hparams': Net()}, tmp_path / 'pickled.ckpt')
  assert_config_error(
    lambda: jaxsched.load_lightning_checkpoint(tmp_path / 'pickled.ckpt', cfg('Adam'), {}),
    ['weights_only', 'pickled.ckpt'],
  )


def test_complex_parameters_are_refused():
  params = {'fc': {'kernel': jnp.zeros((4, 3), jnp.complex64)}}
  assert_config_error(
    lambda: jaxsched.from_torch(cfg('Adam'), params, {'state': {}, 'param_groups': []}, torch_names=['fc.weight']),
    ['complex', 'real views'],
  )


def test_importing_jaxsched_does_not_import_torch():
  import subprocess
  import sys

  code = 'import sys, jaxsched; assert "torch" not in sys.modules, "torch imported"'
  subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.parametrize(
  'key, value',
  [
    ('ema', {'decay': 0.9}),
    ('swa', {'swa_lrs': 0.01}),
    (
      'schedulers',
      [
        {'scheduler': 'StepLR', 'scheduler_kwargs': {'step_size': 2}},
        {'scheduler': 'ExponentialLR', 'scheduler_kwargs': {'gamma': 0.9}},
      ],
    ),
  ],
)
def test_state_that_is_not_converted_is_refused(key, value):
  # the weight average and a chain of schedulers are not converted: refused, never dropped silently
  base = cfg('SGD', 'StepLR', scheduler_kwargs={'step_size': 2})
  config = {**cfg('SGD'), key: value} if key == 'schedulers' else {**base, key: value}
  with x64('float64'):
    sd, _, names, params = adam_checkpoint(base)
    assert_config_error(
      lambda: jaxsched.from_torch(config, params, sd, torch_names=names, batches_per_epoch=EPOCH),
      [f'{key} is set', 'not converted'],
    )
