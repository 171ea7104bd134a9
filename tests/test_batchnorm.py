"""BatchNorm statistics between torch and Flax (Linen and NNX), update_bn against torch's, and NNX parameter
states through the torch interop functions.

A torch model with a Conv2d + BatchNorm2d and a Linear + BatchNorm1d, and the same model in Flax Linen and in
NNX; float64 throughout.
"""

import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import jaxsched
from jaxsched.interop import layouts
from oracle import assert_config_error, max_rel_diff, x64

F64 = {'dtype': jnp.float64, 'param_dtype': jnp.float64}


class TorchNet(torch.nn.Module):
  def __init__(self, momentum=0.1):
    super().__init__()
    self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    self.bn2 = torch.nn.BatchNorm2d(3, momentum=momentum)
    self.fc = torch.nn.Linear(3, 5)
    self.bn1 = torch.nn.BatchNorm1d(5, momentum=momentum)
    self.out = torch.nn.Linear(5, 2)
    self.double()

  def forward(self, x):
    h = torch.relu(self.bn2(self.conv(x))).mean((2, 3))
    return self.out(self.bn1(self.fc(h)))


class LinenNet(nn.Module):
  momentum: float = 0.9  # torch's 0.1

  @nn.compact
  def __call__(self, x, train):
    norm = {'momentum': self.momentum, 'use_running_average': not train, **F64}
    h = nn.relu(nn.BatchNorm(name='bn2', **norm)(nn.Conv(3, (3, 3), padding=1, name='conv', **F64)(x))).mean((1, 2))
    return nn.Dense(2, name='out', **F64)(nn.BatchNorm(name='bn1', **norm)(nn.Dense(5, name='fc', **F64)(h)))


class NNXNet(nnx.Module):
  def __init__(self, momentum=0.9):
    rngs = nnx.Rngs(0)
    self.conv = nnx.Conv(2, 3, (3, 3), padding=1, rngs=rngs, **F64)
    self.bn2 = nnx.BatchNorm(3, momentum=momentum, rngs=rngs, **F64)
    self.fc = nnx.Linear(3, 5, rngs=rngs, **F64)
    self.bn1 = nnx.BatchNorm(5, momentum=momentum, rngs=rngs, **F64)
    self.out = nnx.Linear(5, 2, rngs=rngs, **F64)

  def __call__(self, x):
    h = nnx.relu(self.bn2(self.conv(x))).mean((1, 2))
    return self.out(self.bn1(self.fc(h)))


def inputs(count, seed=0, size=6):
  rng = np.random.default_rng(seed)
  return [rng.normal(1.0, 2.0, size=(size, 2, 4, 4)) for _ in range(count)]


def nhwc(x):
  return jnp.asarray(x.transpose(0, 2, 3, 1))


def f64(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


class Flax:
  """One interface over the Linen and the NNX model: trees in, eval and train passes."""

  def __init__(self, kind):
    self.kind = kind
    if kind == 'linen':
      self.net = LinenNet()
      variables = self.net.init(jax.random.key(0), nhwc(inputs(1)[0]), False)
      self.params, self.stats = variables['params'], f64(variables['batch_stats'])  # Flax keeps them in float32
    else:
      self.net = NNXNet()
      nnx.update(self.net, f64(nnx.state(self.net, nnx.BatchStat)))
      self.params, self.stats = nnx.state(self.net, nnx.Param), nnx.state(self.net, nnx.BatchStat)

  def set(self, params, stats):
    self.params, self.stats = params, stats
    if self.kind == 'nnx':
      nnx.update(self.net, params, stats)

  def eval(self, x):
    if self.kind == 'linen':
      return np.asarray(self.net.apply({'params': self.params, 'batch_stats': self.stats}, nhwc(x), False))
    self.net.eval()
    return np.asarray(self.net(nhwc(x)))

  def train(self, x):
    if self.kind == 'linen':
      _, new = self.net.apply(
        {'params': self.params, 'batch_stats': self.stats}, nhwc(x), True, mutable=['batch_stats']
      )
      self.stats = new['batch_stats']
    else:
      self.net.train()
      self.net(nhwc(x))
      self.stats = nnx.state(self.net, nnx.BatchStat)

  def update_bn(self, batches, **kwargs):
    if self.kind == 'linen':
      apply = lambda v, x: self.net.apply(v, x, True, mutable=['batch_stats'])  # noqa: E731
      self.stats = jaxsched.update_bn(batches, apply, {'params': self.params, 'batch_stats': self.stats}, **kwargs)[
        'batch_stats'
      ]
    else:
      self.net.eval()  # update_bn runs it in training mode on its own
      jaxsched.update_bn(batches, self.net, **kwargs)
      assert self.net.bn1.use_running_average  # and leaves the model's mode as it was
      self.stats = nnx.state(self.net, nnx.BatchStat)


def stats_of(module):
  return {
    k: v.detach().numpy().copy()
    for k, v in module.state_dict().items()
    if k.rpartition('.')[2] in layouts.RUNNING_STATS
  }


def trained_torch(batches=3):
  torch.manual_seed(0)
  module = TorchNet()
  for x in inputs(batches, seed=1):  # training passes move the running statistics
    module(torch.tensor(x))
  return module.eval()


@pytest.mark.parametrize('kind', ['linen', 'nnx'])
def test_batch_statistics_cross_both_ways_exactly(kind):
  with x64('float64'):
    module = trained_torch()
    flax = Flax(kind)
    params, stats = layouts.torch_params(module.state_dict(), like=flax.params, batch_stats=flax.stats)
    flax.set(params, stats)
    expected = stats_of(module)
    back = layouts.torch_state_dict(params, list(expected), batch_stats=stats)
    for name, value in expected.items():
      np.testing.assert_array_equal(back[name], value, err_msg=name)
    x = inputs(1, seed=2)[0]
    assert max_rel_diff({'y': flax.eval(x)}, {'y': module(torch.tensor(x)).detach().numpy()}) < 1e-12

    # Flax's own training moves them; the whole state_dict goes back, strict
    for x in inputs(2, seed=3):
      flax.train(x)
    sd = layouts.torch_state_dict(flax.params, list(module.state_dict()), batch_stats=flax.stats, num_batches_tracked=5)
    fresh = TorchNet()
    fresh.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})  # strict: every key
    fresh.eval()
    assert int(fresh.bn1.num_batches_tracked) == 5
    for name, leaf in layouts.leaf_paths(flax.stats).items():
      scope, _, which = name.rpartition('/')
      torch_name = f'{scope}.running_{which}'
      np.testing.assert_array_equal(stats_of(fresh)[torch_name], np.asarray(leaf), err_msg=torch_name)
    assert max_rel_diff({'y': fresh(torch.tensor(x)).detach().numpy()}, {'y': flax.eval(x)}) < 1e-12


def test_statistics_that_would_be_dropped_are_named():
  with x64('float64'):
    module = trained_torch()
    flax = Flax('linen')
    with pytest.warns(jaxsched.ConfigWarning, match='bn2.running_mean, bn2.running_var, bn1.running_mean'):
      layouts.torch_params(module.state_dict(), like=flax.params)
    names = list(module.state_dict())
    assert_config_error(
      lambda: layouts.torch_state_dict(flax.params, names, num_batches_tracked=0),
      ["'bn2.running_mean'", 'batch_stats=', 'nnx.BatchStat'],
    )
    assert_config_error(
      lambda: layouts.torch_state_dict(flax.params, names, batch_stats=flax.stats),
      ["'bn2.num_batches_tracked'", 'num_batches_tracked='],
    )


def test_momentum_means_the_other_weight_in_flax():
  # torch's momentum 0.1 weights the new batch; Flax's 0.9 the old average: one training pass agrees
  # on the mean (the variance: torch averages the unbiased one)
  with x64('float64'):
    module = trained_torch(batches=0).train()
    flax = Flax('linen')
    flax.set(*layouts.torch_params(module.state_dict(), like=flax.params, batch_stats=flax.stats))
    x = inputs(1, seed=4)[0]
    module(torch.tensor(x))
    flax.train(x)
    np.testing.assert_allclose(np.asarray(flax.stats['bn2']['mean']), stats_of(module)['bn2.running_mean'], rtol=1e-12)
    n = x.shape[0] * x.shape[2] * x.shape[3]
    biased = (np.asarray(flax.stats['bn2']['var']) - 0.9 * 1.0) / 0.1  # the batch's, from the fresh 1
    np.testing.assert_allclose(0.9 * 1.0 + 0.1 * biased * n / (n - 1), stats_of(module)['bn2.running_var'], rtol=1e-12)


@pytest.mark.parametrize('kind', ['linen', 'nnx'])
def test_update_bn_matches_torch(kind):
  with x64('float64'):
    module = trained_torch()
    flax = Flax(kind)
    flax.set(*layouts.torch_params(module.state_dict(), like=flax.params, batch_stats=flax.stats))
    batches = inputs(4, seed=5, size=5)
    labels = np.zeros(5)
    torch.optim.swa_utils.update_bn([(torch.tensor(x), torch.tensor(labels)) for x in batches], module)
    flax.update_bn([(nhwc(x), labels) for x in batches], unbiased=True)  # the input is a tuple's first element
    expected = stats_of(module)
    got = layouts.torch_state_dict(flax.params, list(expected), batch_stats=flax.stats)
    assert max_rel_diff(got, expected) < 1e-12

    # Flax's convention: the biased variances (and the same means)
    flax.update_bn([nhwc(x) for x in batches])
    biased = layouts.torch_state_dict(flax.params, list(expected), batch_stats=flax.stats)
    n = 5 * 4 * 4
    assert max_rel_diff({'v': biased['bn2.running_var'] * n / (n - 1)}, {'v': expected['bn2.running_var']}) < 1e-12
    assert max_rel_diff({'v': biased['bn1.running_var'] * 5 / 4}, {'v': expected['bn1.running_var']}) < 1e-12
    np.testing.assert_array_equal(biased['bn1.running_mean'], got['bn1.running_mean'])


def test_update_bn_refuses_a_model_in_evaluation_mode():
  with x64('float64'):
    flax = Flax('linen')
    variables = {'params': flax.params, 'batch_stats': flax.stats}
    assert_config_error(
      lambda: jaxsched.update_bn([nhwc(inputs(1)[0])], lambda v, x: flax.net.apply(v, x, False), variables),
      ["'bn2'", 'use_running_average=True', 'training mode'],
    )
    assert_config_error(lambda: jaxsched.update_bn([], lambda v, x: None, {'params': flax.params}), ["'batch_stats'"])
    assert_config_error(
      lambda: jaxsched.update_bn([], lambda v, x: None, variables, unbiased='yes'), ["unbiased='yes'", 'true or false']
    )


def test_nnx_parameter_states_go_through_the_interop(tmp_path):
  # nnx.state(model, nnx.Param) (leaves under .value) in from_torch, to_torch and load_lightning_checkpoint
  config = {'optimizer': 'SGD', 'learning_rate': 0.05, 'scheduler': None, 'optimizer_kwargs': {'momentum': 0.9}}
  with x64('float64'):
    module = trained_torch().train()
    names = [n for n, _ in module.named_parameters()]
    optimizer = jaxsched.torch_optimizer(config, module.named_parameters())
    rng = np.random.default_rng(6)
    grads = [{n: rng.normal(size=p.shape) for n, p in module.named_parameters()} for _ in range(6)]

    def torch_steps(module, optimizer, start, stop):
      out = []
      for g in grads[start:stop]:
        for n, p in module.named_parameters():
          p.grad = torch.tensor(g[n])
        optimizer.step()
        out.append({n: p.detach().numpy().copy() for n, p in module.named_parameters()})
      return out

    torch_steps(module, optimizer, 0, 3)
    torch.save(
      {
        'state_dict': module.state_dict(),
        'optimizer_states': [optimizer.state_dict()],
        'lr_schedulers': [],
        'epoch': 1,
        'global_step': 3,
      },
      tmp_path / 'bn.ckpt',
    )
    init = copy.deepcopy(module)
    expected = torch_steps(module, optimizer, 3, 6)
    flax = Flax('nnx')
    with pytest.warns(jaxsched.ConfigWarning, match='bn1.running_var'):
      jaxsched.load_lightning_checkpoint(tmp_path / 'bn.ckpt', config, flax.params)
    ckpt = jaxsched.load_lightning_checkpoint(tmp_path / 'bn.ckpt', config, flax.params, batch_stats=flax.stats)
    assert isinstance(ckpt.params, nnx.State) and isinstance(ckpt.batch_stats, nnx.State)
    for name, value in stats_of(init).items():
      np.testing.assert_array_equal(
        layouts.torch_state_dict(ckpt.params, [name], batch_stats=ckpt.batch_stats)[name], value
      )

    tx = jaxsched.build(config, flax.params)
    params, state, actual = ckpt.params, ckpt.opt_state, []
    for g in grads[3:6]:
      updates, state = tx.update(layouts.torch_params(g, like=params), state, params)
      params = optax.apply_updates(params, updates)
      actual.append(layouts.torch_state_dict(params, names))
    for a, e in zip(actual, expected, strict=True):
      assert max_rel_diff(a, e) < 1e-9

    sd, _ = jaxsched.to_torch(config, ckpt.opt_state, ckpt.params, torch_names=names)
    optimizer = jaxsched.torch_optimizer(config, init.named_parameters())
    optimizer.load_state_dict(sd)
    for a, e in zip(torch_steps(init, optimizer, 3, 6), expected, strict=True):
      assert max_rel_diff(a, e) < 1e-12
