"""build(): whole configs train like torch with DynVision's param groups, stepped by Lightning's rules.

The torch side is a hand-written Lightning 2.x loop (facts-measured-here.md):
accumulate, clip, optimizer.step(), then scheduler.step() every `frequency`
batches (interval "step", batch_idx within the epoch) or after each
`frequency`-th epoch's validation (interval "epoch"; ReduceLROnPlateau gets
the monitored metric).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxsched
from jaxsched.build import build, current_lr, current_momentum, load_config, lr_log_names
from jaxsched.groups import groups, param_labels
from jaxsched.stepping import scheduler_steps
from oracle import assert_config_error, max_rel_diff, x64

SHAPES = {'conv/kernel': (3, 4), 'conv/bias': (4,), 'recurrent_conv/kernel': (4, 4), 'head/kernel': (4, 2)}


def nested(flat):
  out = {}
  for path, v in flat.items():
    a, b = path.split('/')
    out.setdefault(a, {})[b] = v
  return out


def run_both(
  config,
  torch_groups,
  torch_optimizer,
  torch_scheduler,
  *,
  epochs,
  batches,
  accumulate=1,
  metrics=None,
  clip=None,
  seed=0,
  grad_scale=1.0,
):
  """Parameters after training both sides; torch_groups: [(paths, lr, extra kwargs)].

  ``batches`` micro-batches per epoch; with ``accumulate`` N, Lightning divides each
  micro-batch's loss by N and steps on every N-th micro-batch of the epoch and on
  its last one (a partial group).
  """
  rng = np.random.default_rng(seed)
  init = {k: rng.normal(size=s) for k, s in SHAPES.items()}
  grads = [{k: grad_scale * rng.normal(size=s) for k, s in SHAPES.items()} for _ in range(epochs * batches)]
  metrics = metrics or [None] * epochs
  cfg = load_config(config)

  # torch, Lightning-style
  tensors = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
  opt = torch_optimizer([{'params': [tensors[p] for p in paths], 'lr': lr, **kw} for paths, lr, kw in torch_groups])
  sched = torch_scheduler(opt) if torch_scheduler else None
  interval, freq = cfg.scheduler_configs['interval'], cfg.scheduler_configs['frequency']
  i = 0
  for e in range(epochs):
    for b in range(batches):
      for k in tensors:
        g = torch.tensor(grads[i][k]) / accumulate
        tensors[k].grad = g if b % accumulate == 0 else tensors[k].grad + g
      i += 1
      if (b + 1) % accumulate and b + 1 != batches:
        continue
      if clip is not None:
        clip(list(tensors.values()))
      opt.step()
      if sched is not None and interval == 'step' and (b + 1) % freq == 0:
        sched.step()
    if sched is not None and interval == 'epoch' and (e + 1) % freq == 0:
      sched.step(metrics[e]) if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) else sched.step()
  expected = {k: t.detach().numpy() for k, t in tensors.items()}
  torch_lrs = [g['lr'] for g in opt.param_groups]

  # jaxsched
  with x64('float64'):
    params = nested({k: jnp.asarray(v) for k, v in init.items()})
    tx = build(cfg, params, batches_per_epoch=batches)
    state = tx.init(params)

    @jax.jit
    def step(params, state, g):
      updates, state = tx.update(g, state, params)
      return optax.apply_updates(params, updates), state

    i = 0
    for e in range(epochs):
      for _ in range(batches):
        params, state = step(params, state, nested({k: jnp.asarray(v) for k, v in grads[i].items()}))
        i += 1
      if metrics[e] is not None:
        state = jaxsched.report(state, {cfg.monitor: metrics[e], 'other': 0.0})
    actual = {'/'.join((a, b)): np.asarray(v) for a, d in params.items() for b, v in d.items()}
    # the LR each group would use next equals torch's param_group['lr'] (groups in torch's order)
    lrs = current_lr(state)
    np.testing.assert_allclose([float(lrs[g.name]) for g in groups(cfg, params)], torch_lrs, rtol=1e-12)
  return actual, expected, state


REC = ['recurrent_conv/kernel']
REG = ['conv/kernel', 'conv/bias', 'head/kernel']


def test_sgd_recurrent_multiplier_cosine_eta_min_epoch_interval_clip_norm():
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'optimizer_kwargs': {'momentum': 0.9, 'weight_decay': 1e-3},
    'scheduler': 'CosineAnnealingLR',
    'scheduler_kwargs': {'T_max': 4, 'eta_min': 0.01},
    'recurrent_learning_rate_multiplier': 0.1,
    'gradient_clip_val': 1.5,
  }
  actual, expected, state = run_both(
    config,
    [(REG, 0.1, {}), (REC, 0.01, {})],
    lambda g: torch.optim.SGD(g, momentum=0.9, weight_decay=1e-3),
    lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4, eta_min=0.01),
    epochs=6,
    batches=3,
    clip=lambda ps: torch.nn.utils.clip_grad_norm_(ps, 1.5),
  )
  assert max_rel_diff(actual, expected) < 1e-9
  # the recurrent LR is scheduled from its own base: not 0.1x the regular one (eta_min > 0)
  lrs = current_lr(state)
  assert float(lrs['recurrent']) != pytest.approx(0.1 * float(lrs['regular']))


def test_adamw_named_groups_onecycle_per_group_max_lr_step_interval_clip_value_accumulate():
  config = {
    'optimizer': 'AdamW',
    'learning_rate': 1e-3,
    'optimizer_kwargs': {'weight_decay': 0.05},
    'lr_parameter_groups': {'bias': {'lr_factor': 2.0, 'weight_decay': 0.0}},
    'recurrent_learning_rate_multiplier': 0.5,
    'scheduler': 'OneCycleLR',
    'scheduler_kwargs': {'max_lr': [0.01, 0.005, 0.02], 'total_steps': 12},
    'scheduler_configs': {'interval': 'step'},
    'gradient_clip_val': 0.8,
    'gradient_clip_algorithm': 'value',
    'accumulate_grad_batches': 2,
  }
  actual, expected, _ = run_both(
    config,
    [(['conv/kernel', 'head/kernel'], 1e-3, {}), (REC, 5e-4, {}), (['conv/bias'], 2e-3, {'weight_decay': 0.0})],
    lambda g: torch.optim.AdamW(g, weight_decay=0.05),
    lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=[0.01, 0.005, 0.02], total_steps=12),
    epochs=3,
    batches=8,
    accumulate=2,
    clip=lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.8),
  )
  assert max_rel_diff(actual, expected) < 1e-9


def test_adam_plateau_per_group_min_lr_val_loss():
  config = {
    'optimizer': 'Adam',
    'learning_rate': 0.01,
    'recurrent_learning_rate_multiplier': 0.1,
    'scheduler': 'ReduceLROnPlateau',
    'scheduler_kwargs': {'patience': 1, 'factor': 0.5, 'min_lr': [0.003, 0.0], 'cooldown': 1},
    'scheduler_configs': {'monitor': 'val_loss'},
    'gradient_clip_val': 2.0,
  }
  metrics = [1.0, 0.9, 0.9, 0.9, 0.9, 0.95, 0.8, 0.8, 0.8, 0.8]
  actual, expected, state = run_both(
    config,
    [(REG, 0.01, {}), (REC, 0.001, {})],
    torch.optim.Adam,
    lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=1, factor=0.5, min_lr=[0.003, 0.0], cooldown=1),
    epochs=10,
    batches=2,
    metrics=metrics,
    clip=lambda ps: torch.nn.utils.clip_grad_norm_(ps, 2.0),
  )
  assert max_rel_diff(actual, expected) < 1e-9
  lrs = current_lr(state)
  assert float(lrs['regular']) == pytest.approx(0.003)  # floored at its own min_lr


def test_step_interval_with_frequency_restarts_each_epoch():
  # facts-measured-here.md: interval step, frequency 3, 5 batches per epoch, StepLR(1, 0.5).
  config = {
    'optimizer': 'SGD',
    'learning_rate': 1.0,
    'optimizer_kwargs': {'momentum': 0.0},
    'scheduler': 'StepLR',
    'scheduler_kwargs': {'step_size': 1, 'gamma': 0.5},
    'scheduler_configs': {'interval': 'step', 'frequency': 3},
  }
  cfg = load_config(config)
  steps = scheduler_steps(cfg, 5)
  lrs = [0.5 ** int(steps(jnp.asarray(k))) for k in range(10)]
  assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]
  actual, expected, _ = run_both(
    config,
    [(REG + REC, 1.0, {})],
    lambda g: torch.optim.SGD(g, momentum=0.0),
    lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
    epochs=2,
    batches=5,
  )
  assert max_rel_diff(actual, expected) < 1e-12


def test_epoch_interval_frequency_two():
  cfg = load_config({'scheduler_configs': {'frequency': 2}})
  steps = scheduler_steps(cfg, 5)
  assert [int(steps(jnp.asarray(k))) for k in range(0, 30, 5)] == [0, 0, 1, 1, 2, 2]


def test_cycle_momentum_drives_sgd_momentum():
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'optimizer_kwargs': {'momentum': 0.9},
    'scheduler': 'OneCycleLR',
    'scheduler_kwargs': {'max_lr': 0.1, 'total_steps': 10},
    'scheduler_configs': {'interval': 'step'},
  }
  actual, expected, state = run_both(
    config,
    [(REG + REC, 0.1, {})],
    lambda g: torch.optim.SGD(g, momentum=0.9),
    lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=10),
    epochs=2,
    batches=5,
  )
  assert max_rel_diff(actual, expected) < 1e-9
  assert set(current_lr(state)) == set(current_momentum(state)) == {'regular'}


def test_groups_order_and_labels():
  cfg = load_config(
    {
      'recurrent_learning_rate_multiplier': 0.1,
      'lr_parameter_groups': {'head': {'lr_factor': 3}},
      'learning_rate': 0.01,
    }
  )
  params = nested({k: jnp.zeros(s) for k, s in SHAPES.items()})
  assert [(g.name, g.learning_rate) for g in groups(cfg, params)] == [
    ('regular', 0.01),
    ('recurrent', pytest.approx(0.001)),
    ('head', pytest.approx(0.03)),
  ]
  assert param_labels(cfg, params)['recurrent_conv']['kernel'] == 'recurrent'


@pytest.mark.parametrize(
  'config, words',
  [
    ({'lr_parameter_groups': {'lstm': {'lr_factor': 2}}}, ['lstm', 'conv/kernel', 'head/kernel']),
    ({'recurrent_learning_rate_multiplier': 0.1, 'recurrent_param_patterns': ['lateral']}, ['lateral', 'none']),
    ({'scheduler': 'StepLR', 'scheduler_kwargs': {'step_size': 2}}, ['batches_per_epoch', 'epoch']),
    (
      {
        'optimizer': 'Adagrad',
        'scheduler': 'OneCycleLR',
        'scheduler_kwargs': {'max_lr': 0.1, 'total_steps': 10},
        'scheduler_configs': {'interval': 'step'},
      },
      ['Adagrad', 'cycle_momentum'],
    ),
    (
      {
        'scheduler': 'OneCycleLR',
        'scheduler_kwargs': {'max_lr': [0.1, 0.2], 'total_steps': 10},
        'scheduler_configs': {'interval': 'step'},
      },
      ['max_lr', '2 values', '1 parameter'],
    ),
  ],
)
def test_build_errors(config, words):
  params = nested({k: jnp.zeros(s) for k, s in SHAPES.items()})
  assert_config_error(lambda: build(config, params), words)


def test_log_names():
  params = nested({k: jnp.zeros(s) for k, s in SHAPES.items()})
  cfg = {
    'optimizer': 'SGD',
    'recurrent_learning_rate_multiplier': 0.1,
    'scheduler': None,
    'scheduler_configs': {'name': 'lr_scheduled'},
  }
  state = build(cfg, params).init(params)
  assert set(lr_log_names(cfg, state)) == {'lr_scheduled/regular', 'lr_scheduled/recurrent'}
  single = {'optimizer': 'SGD', 'scheduler': None}
  assert set(lr_log_names(single, build(single, params).init(params))) == {'lr-SGD'}
  cycled = {
    'optimizer': 'SGD',
    'scheduler': 'OneCycleLR',
    'scheduler_kwargs': {'max_lr': 0.1, 'total_steps': 9},
    'scheduler_configs': {'interval': 'step'},
  }
  assert list(lr_log_names(cycled, build(cycled, params).init(params))) == ['lr-SGD', 'lr-SGD-momentum']


def test_current_lr_keys_keep_one_order_across_jit():
  params = {'zeta': jnp.ones(2), 'alpha': jnp.ones(2), 'recurrent': jnp.ones(2), 'other': jnp.ones(2)}
  cfg = {
    'optimizer': 'Adam',
    'recurrent_learning_rate_multiplier': 0.1,
    'scheduler': None,
    'lr_parameter_groups': {'zeta': {'lr_factor': 2.0}, 'alpha': {'lr_factor': 3.0}},
  }
  tx = build(cfg, params)
  state = tx.init(params)
  order = ['regular', 'recurrent', 'alpha', 'zeta']
  assert list(current_lr(state)) == order
  _, state = jax.jit(tx.update)(params, state, params)
  assert list(current_lr(state)) == order and current_momentum(state) == {}
  assert [float(v) for v in current_lr(state).values()] == pytest.approx([1e-3, 1e-4, 3e-3, 2e-3])


def test_warmup_then_plateau_from_a_config():
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'optimizer_kwargs': {'momentum': 0.0},
    'scheduler': 'SequentialLR',
    'scheduler_kwargs': {
      'schedulers': [
        {'scheduler': 'LinearLR', 'scheduler_kwargs': {'start_factor': 0.25, 'total_iters': 3}},
        {'scheduler': 'ReduceLROnPlateau', 'scheduler_kwargs': {'patience': 0, 'factor': 0.5}},
      ],
      'milestones': [3],
    },
    'scheduler_configs': {'monitor': 'val_loss'},
  }
  params = {'w': jnp.ones(2)}
  tx = build(config, params)
  state = tx.init(params)
  seen = [float(current_lr(state)['regular'])]
  for loss in [5.0, 5.0, 5.0, 1.0, 1.0, 1.0]:
    _, state = tx.update({'w': jnp.ones(2)}, state, params)
    state = jaxsched.report(state, {'val_loss': loss})
    seen.append(float(current_lr(state)['regular']))
  np.testing.assert_allclose(seen, [0.025, 0.05, 0.075, 0.1, 0.1, 0.05, 0.025], rtol=1e-6)


@pytest.mark.parametrize('name', ['adaptive_plateau', 'one_cycle', 'sgd_step_decay', 'warmup_cosine'])
def test_reference_patterns_build_and_step(name):
  path = jaxsched.patterns()[name]
  params = nested({k: jnp.zeros(s) for k, s in SHAPES.items()})
  tx = build(path, params, batches_per_epoch=100)
  state = tx.init(params)
  g = jax.tree.map(jnp.ones_like, params)
  updates, state = jax.jit(tx.update)(g, state, params)
  state = jaxsched.report(state, {'val_loss': 1.0, 'train_loss': 1.0})
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
  cfg = load_config(path)
  assert cfg.optimizer in jaxsched.OPTIMIZERS
  # the warm-up pattern starts above 0 (warmup_start_lr), so no epoch trains at LR 0
  assert float(current_lr(state)['regular']) > 0


def test_patterns_are_the_reference_pages():
  assert load_config(jaxsched.patterns()['sgd_step_decay']).scheduler_kwargs == {
    'milestones': [30, 60, 90],
    'gamma': 0.1,
  }
  assert load_config(jaxsched.patterns()['adaptive_plateau']).monitor == 'val_loss'


def test_a_run_longer_than_onecycle_total_steps_is_rejected_where_known():
  config = {
    'optimizer': 'SGD',
    'scheduler': 'OneCycleLR',
    'scheduler_kwargs': {'max_lr': 0.1, 'total_steps': 100},
    'scheduler_configs': {'interval': 'step'},
  }
  params = {'w': jnp.zeros(2)}
  build(config, params, run_steps=100)  # torch steps the scheduler 100 times: fine
  with pytest.raises(jaxsched.ConfigError, match='total_steps=100'):
    build(config, params, run_steps=101)


def test_groups_that_differ_only_in_lr_share_one_direction_and_cycle_beta1():
  # Adam with a recurrent group and OneCycleLR (per-group max_lr, cycled beta1): one Adam
  # computes the moments of every parameter; each group scales the step by its own LR.
  config = {
    'optimizer': 'Adam',
    'learning_rate': 1e-3,
    'recurrent_learning_rate_multiplier': 0.1,
    'scheduler': 'OneCycleLR',
    'scheduler_kwargs': {'max_lr': [0.01, 0.002], 'total_steps': 12},
    'scheduler_configs': {'interval': 'step'},
  }
  actual, expected, state = run_both(
    config,
    [(REG, 1e-3, {}), (REC, 1e-4, {})],
    torch.optim.Adam,
    lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=[0.01, 0.002], total_steps=12),
    epochs=2,
    batches=6,
  )
  assert max_rel_diff(actual, expected) < 1e-9
  shared = [s for s in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, 'mu')) if hasattr(s, 'mu')]
  assert len(shared) == 1 and set(shared[0].mu) == {'conv', 'recurrent_conv', 'head'}
  momenta = current_momentum(state)
  assert list(momenta) == list(current_lr(state)) == ['regular', 'recurrent']
  assert float(momenta['regular']) == float(momenta['recurrent']) != 0.9


# ----------------------------------------------------------------------------- Lightning's accumulation


@pytest.mark.parametrize('interval, freq', [('step', 1), ('step', 2), ('epoch', 1)])
def test_accumulation_with_partial_groups_is_lightnings(interval, freq):
  # 8 micro-batches per epoch in groups of 3: steps after micro-batches 3, 6 and 8 (a partial group),
  # every micro-batch's gradient divided by 3; with frequency 2 the scheduler steps after micro-batch 6 only
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'optimizer_kwargs': {'momentum': 0.9, 'weight_decay': 1e-3},
    'recurrent_learning_rate_multiplier': 0.5,
    'accumulate_grad_batches': 3,
    'gradient_clip_val': 1.0,
    'scheduler': 'StepLR',
    'scheduler_kwargs': {'step_size': 1, 'gamma': 0.7},
    'scheduler_configs': {'interval': interval, 'frequency': freq},
  }
  actual, expected, _ = run_both(
    config,
    [(REG, 0.1, {}), (REC, 0.05, {})],
    lambda g: torch.optim.SGD(g, momentum=0.9, weight_decay=1e-3),
    lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.7),
    epochs=3,
    batches=8,
    accumulate=3,
    clip=lambda ps: torch.nn.utils.clip_grad_norm_(ps, 1.0),
  )
  assert max_rel_diff(actual, expected) < 1e-9


@settings(max_examples=60)
@given(
  n=st.integers(1, 5), freq=st.integers(1, 6), batches=st.integers(1, 13), interval=st.sampled_from(['step', 'epoch'])
)
def test_scheduler_steps_follow_lightnings_loop(n, freq, batches, interval):
  cfg = load_config(
    {
      'scheduler': 'StepLR',
      'scheduler_kwargs': {'step_size': 1},
      'accumulate_grad_batches': n,
      'scheduler_configs': {'interval': interval, 'frequency': freq},
    }
  )
  before, taken = [], 0  # scheduler steps taken before each optimizer step, in Lightning's loop
  for e in range(3):
    for b in range(batches):
      if (b + 1) % n and b + 1 != batches:
        continue
      before.append(taken)
      taken += interval == 'step' and (b + 1) % freq == 0
    taken += interval == 'epoch' and (e + 1) % freq == 0
  steps = scheduler_steps(cfg, batches)
  assert [int(steps(k)) for k in range(len(before))] == before


def test_accumulation_keeps_float64():
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'optimizer_kwargs': {'momentum': 0.0},
    'scheduler': None,
    'accumulate_grad_batches': 3,
  }
  with x64('float64'):
    params = {'w': jnp.zeros(4, jnp.float64)}
    tx = build(config, params, batches_per_epoch=7)
    state = tx.init(params)
    assert jax.tree.leaves(state)[1].dtype == jnp.float64  # the accumulated gradients
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(21, 4)) * 1e3 + 1.0
    for g in grads:
      updates, state = tx.update({'w': jnp.asarray(g)}, state, params)
      params = optax.apply_updates(params, updates)
    groups_ = [grads[e * 7 + i : e * 7 + min(i + 3, 7)] for e in range(3) for i in (0, 3, 6)]
    expected = -0.1 * sum(np.sum(gr / 3, axis=0) for gr in groups_)
    np.testing.assert_allclose(params['w'], expected, rtol=1e-13)


@pytest.mark.parametrize(
  'kwargs, words',
  [
    ({'steps_per_epoch': 4}, ['steps_per_epoch=4', 'optimizer steps', 'batches_per_epoch', 'ceil']),
    ({}, ['accumulate_grad_batches=2', 'batches_per_epoch']),
    ({'batches_per_epoch': 4, 'steps_per_epoch': 2}, ['not both']),
    ({'batches_per_epoch': 0}, ['batches_per_epoch=0', 'integer']),
    ({'batches_per_epoch': 2.5}, ['batches_per_epoch=2.5', 'integer']),
    ({'batches_per_epoch': True}, ['batches_per_epoch=True', 'integer']),
    ({'batches_per_epoch': [4]}, ['batches_per_epoch=[4]', 'integer']),
  ],
)
def test_accumulation_needs_the_epochs_length_in_micro_batches(kwargs, words):
  params = {'w': jnp.zeros(2)}
  assert_config_error(lambda: build({'scheduler': None, 'accumulate_grad_batches': 2}, params, **kwargs), words)


def test_steps_per_epoch_is_batches_per_epoch_without_accumulation():
  params = {'w': jnp.zeros(2)}
  config = {'optimizer': 'SGD', 'scheduler': 'StepLR', 'scheduler_kwargs': {'step_size': 1}}
  a, b = build(config, params, steps_per_epoch=3), build(config, params, batches_per_epoch=3)
  sa, sb = a.init(params), b.init(params)
  for _ in range(4):
    _, sa = a.update(params, sa, params)
    _, sb = b.update(params, sb, params)
  assert float(current_lr(sa)['regular']) == float(current_lr(sb)['regular']) == pytest.approx(0.01 * 0.1)


@pytest.mark.parametrize('clip', [0, 0.0, None])
def test_gradient_clip_val_zero_or_none_means_no_clipping_as_in_lightning(clip):
  params = {'w': jnp.zeros(3)}
  config = {
    'optimizer': 'SGD',
    'learning_rate': 1.0,
    'optimizer_kwargs': {'momentum': 0.0},
    'scheduler': None,
    'gradient_clip_val': clip,
  }
  tx = build(config, params)
  updates, _ = tx.update({'w': jnp.array([3.0, -4.0, 12.0])}, tx.init(params), params)
  np.testing.assert_array_equal(updates['w'], [-3.0, 4.0, -12.0])
  assert_config_error(lambda: build({**config, 'gradient_clip_val': -1.0}, params), ['gradient_clip_val', '-1'])


def test_skip_nonfinite_with_accumulation_drops_bad_micro_batches_and_goes_on():
  params = {'w': jnp.ones(2)}
  config = {
    'optimizer': 'SGD',
    'learning_rate': 1.0,
    'optimizer_kwargs': {'momentum': 0.0},
    'scheduler': 'StepLR',
    'scheduler_kwargs': {'step_size': 1, 'gamma': 0.5},
    'scheduler_configs': {'interval': 'step'},
    'accumulate_grad_batches': 2,
    'skip_nonfinite': True,
  }
  tx = build(config, params, batches_per_epoch=4)
  state = tx.init(params)
  step = jax.jit(tx.update)
  nan, inf = float('nan'), float('inf')
  seen = []
  for g in (
    [1.0, 1.0],
    [nan, 1.0],  # group 1: the NaN micro-batch is dropped: (1 + 0) / 2 at LR 1
    [inf, 0.0],
    [nan, nan],  # group 2: nothing left: skipped; the schedule moves on
    [2.0, 2.0],
    [2.0, 2.0],  # group 3: 2 at LR 0.25
    [4.0, 4.0],
  ):  # the next epoch's first group is under way
    updates, state = step({'w': jnp.array(g)}, state, params)
    params = optax.apply_updates(params, updates)
    seen.append(float(params['w'][0]))
  assert seen == [1.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0]
  assert int(jaxsched.skipped_steps(state)) == 3
  assert float(current_lr(state)['regular']) == 0.125


# ----------------------------------------------------------------------------- setting an LR


def test_setting_the_lr_the_optax_way_reaches_exactly_the_groups_lrs():
  params = {'w': jnp.ones(3), 'recurrent': jnp.ones(3)}
  config = {'optimizer': 'Adam', 'learning_rate': 1.0, 'scheduler': None, 'recurrent_learning_rate_multiplier': 0.5}
  tx = build(config, params)
  g = {'w': jnp.ones(3), 'recurrent': jnp.ones(3)}
  state = optax.tree_utils.tree_set(tx.init(params), learning_rate=0.5)
  assert {k: float(v) for k, v in current_lr(state).items()} == {'regular': 0.5, 'recurrent': 0.5}
  updates, state = tx.update(g, state, params)  # Adam's first step is -lr * sign(g)
  np.testing.assert_allclose(updates['w'], -0.5, rtol=1e-6)
  np.testing.assert_allclose(updates['recurrent'], -0.5, rtol=1e-6)
  # one group's LR, and the others untouched
  state = jax.jit(jaxsched.set_lr)(state, {'recurrent': 0.1})
  assert {k: float(v) for k, v in current_lr(state).items()} == pytest.approx({'regular': 0.5, 'recurrent': 0.1})
  single = build({**config, 'recurrent_learning_rate_multiplier': 1.0}, params)
  assert float(optax.tree_utils.tree_get(single.init(params), 'learning_rate')) == 1.0
  assert_config_error(lambda: jaxsched.set_lr(state, {'recurent': 0.1}), ['recurent', 'recurrent'])


def test_set_lr_moves_a_plateau_and_does_not_recompile():
  params = {'w': jnp.ones(3), 'recurrent': jnp.ones(3)}
  config = {
    'optimizer': 'SGD',
    'learning_rate': 1.0,
    'recurrent_learning_rate_multiplier': 0.5,
    'scheduler': 'ReduceLROnPlateau',
    'scheduler_kwargs': {'patience': 0, 'factor': 0.5},
  }
  tx = build(config, params)
  traces = []

  @jax.jit
  def set_then_step(state, lr):
    traces.append(1)
    state = jaxsched.set_lr(state, {'regular': lr})
    return tx.update(jax.tree.map(jnp.ones_like, params), state, params)[1]

  state = set_then_step(tx.init(params), 0.2)
  state = set_then_step(state, 0.3)
  assert len(traces) == 1
  state = jaxsched.report(state, 1.0)
  state = jaxsched.report(state, 1.0)  # no improvement: each group halves its own LR
  assert {k: float(v) for k, v in current_lr(state).items()} == pytest.approx({'regular': 0.15, 'recurrent': 0.25})


# ----------------------------------------------------------------------------- group names


def test_regular_and_recurrent_in_lr_parameter_groups_configure_the_built_in_groups():
  params = nested({k: jnp.zeros(s) for k, s in SHAPES.items()})
  cfg = load_config(
    {
      'optimizer': 'SGD',
      'learning_rate': 0.1,
      'recurrent_learning_rate_multiplier': 0.1,
      'lr_parameter_groups': {
        'regular': {'lr_factor': 0.5, 'weight_decay': 0.01},
        'recurrent': {'weight_decay': 0.0},
        'head': {'lr_factor': 2.0},
      },
    }
  )
  assert [(g.name, g.learning_rate, dict(g.optimizer_kwargs)) for g in groups(cfg, params)] == [
    ('regular', 0.05, {'weight_decay': 0.01}),
    ('recurrent', pytest.approx(0.01), {'weight_decay': 0.0}),
    ('head', 0.2, {}),
  ]
  # a path containing 'regular' or 'recurrent' is not matched by name: the built-in rules place it
  labels = param_labels(cfg, {'irregular': 0, 'recurrent_conv': 0, 'head_recurrent': 0})
  assert labels == {'irregular': 'regular', 'recurrent_conv': 'recurrent', 'head_recurrent': 'head'}


def test_the_recurrent_lr_set_twice_is_an_error():
  assert_config_error(
    lambda: load_config(
      {'recurrent_learning_rate_multiplier': 0.1, 'lr_parameter_groups': {'recurrent': {'lr_factor': 0.01}}}
    ),
    ['recurrent', 'recurrent_learning_rate_multiplier=0.1', 'lr_parameter_groups.recurrent.lr_factor=0.01'],
  )


def test_adagrad_fills_every_accumulator_from_the_constructors_value_as_torch():
  config = {
    'optimizer': 'Adagrad',
    'learning_rate': 0.1,
    'optimizer_kwargs': {'initial_accumulator_value': 0.1},
    'lr_parameter_groups': {'head': {'lr_factor': 2.0, 'initial_accumulator_value': 5.0}},
    'scheduler': None,
  }
  actual, expected, _ = run_both(
    config,
    [
      (['conv/kernel', 'conv/bias', 'recurrent_conv/kernel'], 0.1, {}),
      (['head/kernel'], 0.2, {'initial_accumulator_value': 5.0}),
    ],
    lambda g: torch.optim.Adagrad(g, initial_accumulator_value=0.1),
    None,
    epochs=1,
    batches=3,
  )
  assert max_rel_diff(actual, expected) < 1e-9


def test_complex_parameters_with_value_clipping_are_refused_as_torch_cannot_clamp_them():
  params = {'w': jnp.zeros(2), 'layer': {'z': jnp.zeros(2, jnp.complex64)}}
  config = {'scheduler': None, 'gradient_clip_val': 1.0, 'gradient_clip_algorithm': 'value'}
  assert_config_error(lambda: build(config, params), ["['layer']['z']", 'gradient_clip_algorithm: value', 'norm'])
  tx = build({**config, 'gradient_clip_algorithm': 'norm'}, params)  # the norm of complex gradients is torch's
  updates, _ = tx.update({'w': jnp.zeros(2), 'layer': {'z': jnp.array([3 + 4j, 0j])}}, tx.init(params), params)
  assert updates['layer']['z'].dtype == jnp.complex64


def test_set_lr_checks_a_python_number():
  params = {'w': jnp.zeros(2)}
  state = build({'scheduler': None}, params).init(params)
  assert_config_error(lambda: jaxsched.set_lr(state, -0.1), ["'regular'", '-0.1'])
  tx = jaxsched.optimizer('SGD')
  assert_config_error(lambda: jaxsched.set_lr(tx.init(params), 0.1), ['build()', "hyperparams['learning_rate']"])


def test_an_optax_alias_takes_lr_parameter_groups_with_their_lr_factor():
  config = jaxsched.load_config(
    {
      'optimizer': 'optax.sgd',
      'learning_rate': 0.1,
      'scheduler': None,
      'lr_parameter_groups': {'head': {'lr_factor': 0.5}},
    }
  )
  params = {'body': {'kernel': jnp.ones(2)}, 'head': {'kernel': jnp.ones(2)}}
  tx = jaxsched.build(config, params)
  state = tx.init(params)
  assert {k: float(v) for k, v in jaxsched.current_lr(state).items()} == pytest.approx({'regular': 0.1, 'head': 0.05})
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
  np.testing.assert_allclose(updates['body']['kernel'], -0.1, rtol=1e-6)
  np.testing.assert_allclose(updates['head']['kernel'], -0.05, rtol=1e-6)
