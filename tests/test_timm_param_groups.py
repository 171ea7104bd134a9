"""timm's parameter groups (``timm.optim.param_groups_weight_decay`` and ``param_groups_layer_decay``,
as ``create_optimizer_v2`` makes them) as config keys, against timm on the same model: the groups,
their members, weight decay and ``lr_scale``, then torch AdamW steps on timm's groups against
``jaxsched.build``."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxsched
from jaxsched.groups import FROZEN, group_paths, groups, labeller
from jaxsched.interop.layouts import flax_rule, torch_params
from jaxsched.lints import Run
from jaxsched.plan import plan_of
from jaxsched.simulate import simulate
from oracle import assert_config_error, import_timm, x64

BLOCKS = 6


class TorchBlock(torch.nn.Module):
  def __init__(self):
    super().__init__()
    self.norm = torch.nn.LayerNorm(4)
    self.fc = torch.nn.Linear(4, 4)


class TorchModel(torch.nn.Module):
  """Trunk: 28 parameters in torch's order (timm's fallback: three layers of up to 12), then the head."""

  def __init__(self):
    super().__init__()
    self.stem = torch.nn.Conv2d(1, 2, 3)
    self.embed = torch.nn.Linear(2, 4)
    for i in range(BLOCKS):
      self.add_module(f'blocks_{i}', TorchBlock())
    self.head = torch.nn.Linear(4, 3)
    self.pretrained_cfg = {'classifier': 'head'}


class Block(nn.Module):
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    x = nn.LayerNorm(param_dtype=self.param_dtype, name='norm')(x)
    return nn.Dense(4, param_dtype=self.param_dtype, name='fc')(x)


class Model(nn.Module):
  """The Linen model with TorchModel's parameters, created in the same order."""

  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(2, (3, 3), padding='VALID', param_dtype=self.param_dtype, name='stem')(x).mean((1, 2))
    x = nn.Dense(4, param_dtype=self.param_dtype, name='embed')(x)
    for i in range(BLOCKS):
      x = Block(self.param_dtype, name=f'blocks_{i}')(x)
    return nn.Dense(3, param_dtype=self.param_dtype, name='head')(x)


def in_order(tree, prefix=''):
  """A Linen tree's paths in its own order (the order its modules create the parameters)."""
  for k, v in tree.items():
    yield from in_order(v, f'{prefix}{k}/') if isinstance(v, dict) else [prefix + k]


def models():
  torch.manual_seed(0)
  model = TorchModel().double()
  like = Model(param_dtype=jnp.float64).init(jax.random.key(0), jnp.zeros((1, 5, 5, 1), jnp.float64))['params']
  named = dict(model.named_parameters())
  assert [flax_rule(n, p.ndim)[0] for n, p in named.items()] == list(in_order(like))  # the same order
  return model, own_order(like, torch_params({n: p.detach() for n, p in named.items()}, like=like))


def own_order(like, tree):
  """``tree`` (whose dicts jax sorted) with ``like``'s key order, the order timm's fallback reads."""
  return {k: own_order(v, tree[k]) if isinstance(v, dict) else tree[k] for k, v in like.items()}


def timm_groups(model, **kwargs):
  """timm's groups as (names or None, [flax paths], weight_decay, lr_scale)."""
  timm_optim, _ = import_timm()
  path = {id(p): flax_rule(n, p.ndim)[0] for n, p in model.named_parameters()}
  if 'layer_decay' in kwargs:
    made = timm_optim.param_groups_layer_decay(model, **kwargs)
  else:
    made = timm_optim._param_groups.param_groups_weight_decay(model, **kwargs)
  return made, [([path[id(p)] for p in g['params']], g['weight_decay'], g.get('lr_scale', 1.0)) for g in made]


CASES = [
  (
    {'weight_decay_exclude_1d': True, 'no_weight_decay_list': ['stem/*']},
    {'weight_decay': 0.05, 'no_weight_decay_list': ['stem.*']},
    ['no_decay', 'decay'],
  ),
  (
    {
      'layer_decay': 0.5,
      'layer_decay_classifier': ['head'],
      'layer_decay_min_scale': 0.2,
      'layer_decay_no_opt_scale': 0.22,
    },
    {'weight_decay': 0.05, 'layer_decay': 0.5, 'min_scale': 0.2, 'no_opt_scale': 0.22},
    # layer 0 left out (scale 0.2 < 0.22); each group where its first parameter comes (blocks: the norm first)
    ['layer_1_no_decay', 'layer_1_decay', 'layer_2_no_decay', 'layer_2_decay', 'layer_3_decay', 'layer_3_no_decay'],
  ),
  (
    {'layer_decay': 0.7, 'layer_groups': ['stem|embed|blocks_[01]/', 'blocks_[234]/', 'blocks_5/', 'head']},
    {'weight_decay': 0.05, 'layer_decay': 0.7},
    [
      f'layer_{i}_{k}'
      for i, first in enumerate('dnnd')
      for k in (('decay', 'no_decay') if first == 'd' else ('no_decay', 'decay'))
    ],
  ),
]


@pytest.mark.parametrize(('keys', 'timm_kwargs', 'names'), CASES)
def test_groups_and_adamw_steps_match_timm(keys, timm_kwargs, names):
  with x64('float64'):
    check_against_timm(keys, timm_kwargs, names)


def test_layer_decay_with_sgd_shares_the_direction_and_leaves_frozen_params_alone():
  """Without weight decay the groups differ only in their LR: one SGD direction, scaled per group."""
  keys = {'layer_decay': 0.5, 'layer_decay_classifier': ['head'], 'layer_decay_no_opt_scale': 0.2}
  names = [
    'layer_1_no_decay',
    'layer_1_decay',
    'layer_2_no_decay',
    'layer_2_decay',
    'layer_3_decay',
    'layer_3_no_decay',
  ]
  with x64('float64'):
    plan = plan_of({'optimizer': 'SGD', 'optimizer_kwargs': {'momentum': 0.9}, **keys})
    assert plan.shares_direction(groups(plan.config, models()[1]))
    timm_kwargs = {'weight_decay': 0.0, 'layer_decay': 0.5, 'no_opt_scale': 0.2}
    check_against_timm(keys, timm_kwargs, names, 'SGD', {'momentum': 0.9, 'weight_decay': 0.0})


@pytest.mark.parametrize('optimizer', ['AdamW', 'timm.lamb'])
def test_frozen_parameters_are_not_in_the_clipping_norm_nor_lambs(optimizer):
  """torch's frozen parameters have no gradient: Lightning's clip_grad_norm_ over the optimizer's
  parameters and timm's Lamb's norm of all its groups' gradients leave them out."""
  keys = {'layer_decay': 0.5, 'layer_decay_classifier': ['head'], 'layer_decay_no_opt_scale': 0.22}
  timm_kwargs = {'weight_decay': 0.05, 'layer_decay': 0.5, 'no_opt_scale': 0.22}
  clip = 0.5 if optimizer == 'AdamW' else None
  config = {
    'optimizer': optimizer,
    'learning_rate': 0.1,
    'optimizer_kwargs': {'weight_decay': 0.05},
    'scheduler': None,
    'gradient_clip_val': clip,
    **keys,
  }
  with x64('float64'):
    model, params = models()
    made, _ = timm_groups(model, **timm_kwargs)
    assert any(not p.requires_grad for p in model.parameters())
    param_groups = [{**g, 'lr': 0.1 * g.get('lr_scale', 1.0)} for g in made]
    if optimizer == 'AdamW':
      opt = torch.optim.AdamW(param_groups, lr=0.1, weight_decay=0.0)
    else:
      opt = import_timm()[0].create_optimizer_v2(param_groups, opt='lamb', lr=0.1, weight_decay=0.0)
    assert_steps_match(config, model, params, opt, clip=clip)


def check_against_timm(keys, timm_kwargs, names, optimizer='AdamW', kwargs=None):
  model, params = models()
  kwargs = {'weight_decay': 0.05} if kwargs is None else kwargs
  config = {'optimizer': optimizer, 'learning_rate': 0.1, 'optimizer_kwargs': kwargs, 'scheduler': None, **keys}
  made, expected = timm_groups(model, **timm_kwargs)
  got = groups(jaxsched.load_config(config), params)
  paths = group_paths(jaxsched.load_config(config), params)
  assert [g.name for g in got] == names
  assert [paths[g.name] for g in got] == [members for members, _, _ in expected]
  np.testing.assert_allclose(
    [(g.optimizer_kwargs['weight_decay'], g.lr_factor) for g in got], [e[1:] for e in expected], rtol=1e-15
  )
  frozen = [flax_rule(n, p.ndim)[0] for n, p in model.named_parameters() if not p.requires_grad]
  assert paths.get(FROZEN, []) == frozen
  # torch AdamW on timm's groups, each group's lr set as timm's scheduler sets it (base * lr_scale)
  opt = getattr(torch.optim, optimizer)(
    [{**g, 'lr': 0.1 * g.get('lr_scale', 1.0)} for g in made], lr=0.1, **{**kwargs, 'weight_decay': 0.0}
  )
  state = assert_steps_match(config, model, params, opt)
  lrs = jaxsched.current_lr(state)  # the groups' names, alphabetically
  assert lrs == pytest.approx({g.name: 0.1 * g.lr_factor for g in got}, rel=1e-12)
  assert list(lrs) == sorted(names)


def assert_steps_match(config, model, params, opt, clip=None):
  """Three steps of the torch optimizer ``opt`` on ``model`` (the frozen parameters without a gradient;
  with ``clip``, the optimizer's gradients clipped to that norm first, as Lightning clips) against
  ``jaxsched.build(config, params)`` on the same gradients; the JAX initial state."""
  rng = np.random.default_rng(0)
  named = dict(model.named_parameters())
  grads = [{n: rng.standard_normal(p.shape) for n, p in named.items()} for _ in range(3)]
  for g in grads:
    for n, p in named.items():
      p.grad = torch.tensor(g[n]) if p.requires_grad else None
    if clip is not None:
      torch.nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group['params']], clip)
    opt.step()
  tx = jaxsched.build(config, params)
  state = tx.init(params)

  @jax.jit
  def run(params, state, gs):
    for g in gs:
      updates, state = tx.update(g, state, params)
      params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params

  final = run(params, state, [torch_params(g, like=params) for g in grads])
  want = torch_params({n: p.detach() for n, p in named.items()}, like=params)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(final)[0], jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=jax.tree_util.keystr(path))
  return state


@pytest.mark.parametrize(('keys', 'timm_kwargs', 'names'), CASES)
def test_configure_optimizers_makes_timm_param_groups(keys, timm_kwargs, names):
  """The torch side's groups are timm's, in its order: members, weight decay and the LR timm's
  scheduler sets (base * lr_scale); the optimizer gets timm's weight_decay=0 and the base LR."""
  with x64('float64'):
    model = models()[0]
  made, _ = timm_groups(model, **timm_kwargs)
  config = {'optimizer': 'AdamW', 'learning_rate': 0.1, 'optimizer_kwargs': {'weight_decay': 0.05}, **keys}
  out = jaxsched.configure_optimizers({**config, 'scheduler': None}, model)
  assert isinstance(out, torch.optim.AdamW)
  assert (out.defaults['lr'], out.defaults['weight_decay']) == (0.1, 0.0)
  assert [g['name'] for g in out.param_groups] == names
  assert [([id(p) for p in g['params']], g['weight_decay']) for g in out.param_groups] == [
    ([id(p) for p in g['params']], g['weight_decay']) for g in made
  ]
  assert [g['lr'] for g in out.param_groups] == pytest.approx([0.1 * g.get('lr_scale', 1.0) for g in made], rel=1e-15)


@pytest.mark.parametrize(('keys', 'timm_kwargs', 'names'), CASES[1:2])
def test_torch_optimizer_with_timm_groups_steps_as_build(keys, timm_kwargs, names):
  """A torch AdamW from torch_optimizer (the frozen parameters in no group) against jaxsched.build."""
  with x64('float64'):
    model, params = models()
    config = {'optimizer': 'AdamW', 'learning_rate': 0.1, 'optimizer_kwargs': {'weight_decay': 0.05}, **keys}
    opt = jaxsched.torch_optimizer({**config, 'scheduler': None}, model.named_parameters())
    assert [g['name'] for g in opt.param_groups] == names
    assert_steps_match({**config, 'scheduler': None}, model, params, opt)


def test_no_weight_decay_puts_every_parameter_in_no_decay_as_timm():
  with x64('float64'):
    model, params = models()
  config = jaxsched.load_config(
    {'optimizer': 'AdamW', 'optimizer_kwargs': {'weight_decay': 0}, 'weight_decay_exclude_1d': True}
  )
  _, expected = timm_groups(model, weight_decay=0.0)
  assert group_paths(config, params) == {'no_decay': expected[0][0]}
  assert [(g.name, g.optimizer_kwargs['weight_decay']) for g in groups(config, params)] == [('no_decay', 0.0)]


def test_layer_groups_with_a_number_make_one_layer_per_number_in_numeric_order():
  params = {f'blocks_{i}': {'kernel': jnp.zeros((2, 2))} for i in (10, 2, 0)} | {'head': {'kernel': jnp.zeros((2, 2))}}
  config = jaxsched.load_config({'optimizer': 'AdamW', 'layer_decay': 0.5, 'layer_groups': [r'blocks_(\d+)/', 'head']})
  assert [(g.name, g.lr_factor) for g in groups(config, params)] == [
    ('layer_2_decay', 0.5),  # blocks_10
    ('layer_1_decay', 0.25),  # blocks_2
    ('layer_0_decay', 0.125),
    ('layer_3_decay', 1.0),
  ]
  # a path no entry matches is in the last layer (timm: layer_map.get(name, layer_max))
  extra = params | {'pos_embed': jnp.zeros((2, 2))}
  assert group_paths(config, extra)['layer_3_decay'] == ['head/kernel', 'pos_embed']


BAD = [
  ({'layer_decay_min_scale': 0.1}, ['layer_decay_min_scale=0.1', 'only with layer_decay']),
  (
    {'layer_decay': 0.7, 'lr_parameter_groups': {'head': {'lr_factor': 2}}},
    ['layer_decay', 'lr_parameter_groups', 'replace'],
  ),
  (
    {'weight_decay_exclude_1d': True, 'recurrent_learning_rate_multiplier': 0.5},
    ['recurrent_learning_rate_multiplier=0.5'],
  ),
  ({'layer_decay': 0.7, 'layer_groups': ['blocks_(']}, ["layer_groups[0]='blocks_('", 'not a regular expression']),
  ({'layer_decay': 0.7, 'layer_groups': []}, ['layer_groups=[]']),
  ({'layer_decay': -0.5}, ['layer_decay=-0.5', 'expected a finite real number >= 0']),
  ({'no_weight_decay_list': 3}, ['no_weight_decay_list=3', 'list']),
  ({'layer_decay_min_scal': 0.1}, ['layer_decay_min_scal', "did you mean 'layer_decay_min_scale'"]),
  ({'optimizer': 'Rprop', 'weight_decay_exclude_1d': True}, ['weight_decay_exclude_1d', 'Rprop takes no weight_decay']),
]


@pytest.mark.parametrize(('keys', 'words'), BAD)
def test_bad_keys_are_config_errors(keys, words):
  assert_config_error(lambda: jaxsched.load_config({'optimizer': 'AdamW', **keys}), words)


def test_a_layer_groups_entry_that_matches_nothing_is_a_config_error_at_build():
  config = {'optimizer': 'AdamW', 'layer_decay': 0.7, 'layer_groups': ['blocks', 'heads']}
  params = {'blocks': {'kernel': jnp.zeros((2, 2))}, 'head': {'kernel': jnp.zeros((2, 2))}}
  assert_config_error(
    lambda: jaxsched.build(config, params), ["layer_groups[1]='heads' matches no parameter", 'head/kernel']
  )


def test_a_label_by_path_alone_is_refused_with_timm_groups():
  config = jaxsched.load_config({'optimizer': 'AdamW', 'weight_decay_exclude_1d': True})
  assert_config_error(lambda: labeller(config), ['depend on each parameter', 'group_paths'])


@pytest.mark.parametrize(
  ('keys', 'lrs'),
  [
    ({'weight_decay_exclude_1d': True}, {'decay': 0.01, 'no_decay': 0.01}),
    ({'layer_decay': 0.5, 'layer_groups': ['blocks']}, {'layer_0_decay': 0.01, 'layer_0_no_decay': 0.01}),
  ],
)
def test_check_curves_show_timm_groups(keys, lrs):
  """``jaxsched check``'s curve: timm's groups of a kernel and a bias (with layer_decay, one layer)."""
  config = jaxsched.load_config({'optimizer': 'AdamW', 'learning_rate': 0.01, 'scheduler': None, **keys})
  curve = simulate(config, Run(epochs=2, batches_per_epoch=1))
  assert {k: float(v[0]) for k, v in curve.lrs.items()} == pytest.approx(lrs)


@pytest.mark.parametrize(('optimizer', 'kwargs'), [('AdamW', {'weight_decay': 0.05}), ('SGD', {'momentum': 0.9})])
def test_from_torch_continues_a_torch_run_on_timm_groups(optimizer, kwargs):
  """Two torch steps on torch_optimizer's groups (layer 0 frozen), from_torch, then one JAX step against
  torch's third; to_torch gives torch's state back. SGD without weight decay: one direction shared by the
  groups, whose state covers the frozen parameters too (torch keeps none for them)."""
  keys = CASES[1][0]
  config = {'optimizer': optimizer, 'learning_rate': 0.1, 'optimizer_kwargs': kwargs, 'scheduler': None, **keys}
  with x64('float64'):
    model, params = models()
    opt = jaxsched.torch_optimizer(config, model.named_parameters())
    named = dict(model.named_parameters())
    names = list(named)
    rng = np.random.default_rng(0)
    grads = [{n: rng.standard_normal(p.shape) for n, p in named.items()} for _ in range(3)]
    for g in grads[:2]:
      for n, p in named.items():
        p.grad = torch.tensor(g[n])
      opt.step()
    saved = opt.state_dict()
    params = own_order(params, torch_params({n: p.detach() for n, p in named.items()}, like=params))
    state = jaxsched.from_torch(config, params, saved, torch_names=names, step=2)
    back, _ = jaxsched.to_torch(config, state, params, torch_names=names)
    assert back['state'].keys() == saved['state'].keys()
    for i, s in saved['state'].items():
      for k, v in s.items():
        np.testing.assert_allclose(np.asarray(back['state'][i][k]), v.numpy(), rtol=1e-15, err_msg=f'{i} {k}')
    for n, p in named.items():
      p.grad = torch.tensor(grads[2][n])
    opt.step()
    tx = jaxsched.build(config, params)
    updates, _ = tx.update(torch_params(grads[2], like=params), state, params)
    final = jax.tree.map(lambda p, u: p + u, params, updates)
    want = torch_params({n: p.detach() for n, p in named.items()}, like=params)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(final)[0], jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=jax.tree_util.keystr(path))


def test_from_torch_refuses_a_tree_whose_order_makes_other_timm_groups():
  """timm's fallback layers read the order: a tree with sorted keys (jax.tree.map) groups otherwise."""
  config = {'optimizer': 'AdamW', 'scheduler': None, **CASES[1][0]}
  with x64('float64'):
    model, params = models()
  opt = jaxsched.torch_optimizer(config, model.named_parameters())
  assert_config_error(
    lambda: jaxsched.from_torch(
      config, jax.tree.map(np.asarray, params), opt.state_dict(), torch_names=[n for n, _ in model.named_parameters()]
    ),
    ["timm's groups depend on the parameters' order", 'blocks_5/fc/bias in layer_1_no_decay', 'layer_groups'],
  )


def test_timm_schedule_scales_each_layer_decay_group_as_timm():
  """timm's scheduler sets each group's lr to its schedule of the base LR times the group's ``lr_scale``
  (``Scheduler._update_param_groups``): the warm-up start and ``lr_min`` are scaled too."""
  timm_optim, timm_scheduler = import_timm()
  keys = {'layer_decay': 0.5, 'layer_decay_classifier': ['head']}
  kwargs = {'t_initial': 6, 'warmup_t': 2, 'warmup_lr_init': 0.01, 'lr_min': 0.005}
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'optimizer_kwargs': {'momentum': 0.0},
    'scheduler': 'timm.cosine',
    'scheduler_kwargs': kwargs,
    **keys,
  }
  with x64('float64'):
    model, params = models()
    opt = timm_optim.create_optimizer_v2(model, opt='momentum', lr=0.1, momentum=0.0, layer_decay=0.5)
    sched = timm_scheduler.CosineLRScheduler(opt, **kwargs)
    tx = jaxsched.build(config, params, batches_per_epoch=1)
    state = tx.init(params)
    names = [g.name for g in groups(jaxsched.load_config(config), params)]
    update = jax.jit(tx.update)
    for epoch in range(8):
      got = jaxsched.current_lr(state)
      want = {name: g['lr'] for name, g in zip(names, opt.param_groups)}
      assert {k: float(v) for k, v in got.items()} == pytest.approx(want, rel=1e-12), epoch
      _, state = update(jax.tree.map(jnp.zeros_like, params), state, params)
      sched.step(epoch + 1)


def test_timm_plateau_scales_each_layer_decay_group_as_timm():
  """timm's PlateauLRScheduler sets each group's lr to its value times ``lr_scale`` at construction and
  through the warm-up; torch's ReduceLROnPlateau then steps the group's (scaled) lr."""
  timm_optim, timm_scheduler = import_timm()
  kwargs = {'warmup_t': 2, 'warmup_lr_init': 0.01, 'patience_t': 1, 'decay_rate': 0.5, 'mode': 'min'}
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'optimizer_kwargs': {'momentum': 0.0},
    'scheduler': 'timm.plateau',
    'scheduler_kwargs': kwargs,
    'scheduler_configs': {'monitor': 'val_loss'},
    'layer_decay': 0.5,
    'layer_decay_classifier': ['head'],
  }
  metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7]
  with x64('float64'):
    model, params = models()
    opt = timm_optim.create_optimizer_v2(model, opt='momentum', lr=0.1, momentum=0.0, layer_decay=0.5)
    with pytest.warns(FutureWarning):
      sched = timm_scheduler.PlateauLRScheduler(opt, **kwargs)
    state = jaxsched.build(config, params).init(params)
    names = [g.name for g in groups(jaxsched.load_config(config), params)]
    for epoch, metric in enumerate([None, *metrics]):
      if metric is not None:
        state = jaxsched.report(state, {'val_loss': jnp.asarray(metric)})
        sched.step(epoch, metric)
      got = {k: float(v) for k, v in jaxsched.current_lr(state).items()}
      assert got == pytest.approx({n: g['lr'] for n, g in zip(names, opt.param_groups)}, rel=1e-12), epoch
