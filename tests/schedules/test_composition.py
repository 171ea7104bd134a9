"""Schedulers composed as torch and Lightning compose them: composites nested in
composites, and Lightning's list of schedulers for one optimizer (``schedulers:``),
against torch's own classes stepped by hand and against a real Lightning Trainer.

The list's hand-stepped oracle follows Lightning 2.6's loop: after each optimizer
step the interval "step" schedulers whose ``(batch_idx + 1) % frequency == 0`` step
in list order, after the epoch's last batch the interval "epoch" ones, and after
validation the plateaus, each on its own monitor; jaxsched is fed the same
gradients, one ``update`` per batch and one ``report`` per epoch.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import pytorch_lightning as pl
import torch
from test_schedules import torch_curve, torch_scheduler

import jaxsched
from oracle import assert_config_error, lightning_fit, max_rel_diff, x64


def M(name, **kwargs):
  return {'scheduler': name, 'scheduler_kwargs': kwargs}


def E(name, interval='epoch', frequency=1, monitor='val_loss', **kwargs):
  """An entry of ``schedulers:``."""
  return {
    'scheduler': name,
    'scheduler_kwargs': kwargs,
    'scheduler_configs': {'interval': interval, 'frequency': frequency, 'monitor': monitor},
  }


# --- composites in composites ------------------------------------------------------------------------------------

CHAINED = M('ChainedScheduler', schedulers=[M('ConstantLR', factor=0.5, total_iters=3), M('ExponentialLR', gamma=0.9)])
NESTED = {
  # the chain SequentialLR starts at step 0 takes ExponentialLR's step at last_epoch 0 outside its initial step
  'chained first in sequential': ('SequentialLR', dict(schedulers=[CHAINED, M('StepLR', step_size=2)], milestones=[5])),
  'chained with cosine, multiplicative, polynomial first in sequential, restarts after': (
    'SequentialLR',
    dict(
      schedulers=[
        M(
          'ChainedScheduler',
          schedulers=[
            M('CosineAnnealingLR', T_max=4, eta_min=0.1),
            M('MultiplicativeLR', lr_lambda='0.95'),
            M('PolynomialLR', total_iters=6, power=2.0),
          ],
        ),
        M('ExponentialLR', gamma=0.8),
        M('MultiplicativeLR', lr_lambda='0.9'),
      ],
      milestones=[5, 9],
    ),
  ),
  'chained after milestone 0': (
    'SequentialLR',
    dict(schedulers=[M('LinearLR', start_factor=0.2, total_iters=3), CHAINED], milestones=[0]),
  ),
  'sequential in chained': (
    'ChainedScheduler',
    dict(
      schedulers=[
        M('StepLR', step_size=2, gamma=0.5),
        M(
          'SequentialLR',
          schedulers=[M('ConstantLR', factor=0.5, total_iters=3), M('ExponentialLR', gamma=0.9)],
          milestones=[2],
        ),
      ]
    ),
  ),
  'sequential and chained in chained, absolute members': (
    'ChainedScheduler',
    dict(
      schedulers=[
        M('ConstantLR', factor=0.5, total_iters=4),
        M(
          'SequentialLR',
          schedulers=[
            M('LinearLR', start_factor=0.1, total_iters=3),
            M('CosineAnnealingLR', T_max=3, eta_min=0.05),
            M('MultiplicativeLR', lr_lambda='0.9'),
          ],
          milestones=[3, 6],
        ),
        M('ChainedScheduler', schedulers=[M('ExponentialLR', gamma=0.97), M('LambdaLR', lr_lambda='1/(epoch+1)')]),
        M('MultiStepLR', milestones=[2, 5], gamma=0.5),
      ]
    ),
  ),
  'chained of chained first in sequential': (
    'SequentialLR',
    dict(
      schedulers=[
        M('ChainedScheduler', schedulers=[CHAINED, M('CosineAnnealingWarmRestarts', T_0=3)]),
        M('ConstantLR', factor=0.25, total_iters=2),
      ],
      milestones=[4],
    ),
  ),
}


@pytest.mark.parametrize('case', NESTED)
def test_nested_composites_take_torchs_lr_at_every_step(case):
  name, kwargs = NESTED[case]
  expected, _ = torch_curve(name, 0.7, kwargs, 16)
  with x64('float64'):
    sched = jaxsched.schedule(name, 0.7, **kwargs)
    actual = np.asarray(jax.jit(jax.vmap(sched))(jnp.arange(17)))
  np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
  'name, kwargs, words',
  [
    # torch: SequentialLR.step calls _update_lr(0) on the composite, whose get_lr raises NotImplementedError
    (
      'SequentialLR',
      dict(schedulers=[M('StepLR', step_size=2), CHAINED], milestones=[3]),
      ['schedulers[1]', 'milestone 3', 'NotImplementedError', 'ChainedScheduler'],
    ),
    # torch runs it, with the inner milestones one step early
    (
      'SequentialLR',
      dict(
        schedulers=[M('SequentialLR', schedulers=[M('StepLR', step_size=2)], milestones=[]), M('StepLR', step_size=2)],
        milestones=[4],
      ),
      ['SequentialLR inside a SequentialLR', 'one step early'],
    ),
    (
      'SequentialLR',
      dict(
        schedulers=[
          M('ChainedScheduler', schedulers=[M('SequentialLR', schedulers=[M('StepLR', step_size=2)], milestones=[])])
        ],
        milestones=[],
      ),
      ['SequentialLR inside a SequentialLR'],
    ),
    # torch: ZeroDivisionError in PolynomialLR.get_lr at last_epoch 0 outside the initial step
    (
      'SequentialLR',
      dict(
        schedulers=[M('ChainedScheduler', schedulers=[M('PolynomialLR', total_iters=0)]), M('StepLR', step_size=2)],
        milestones=[3],
      ),
      ['schedulers[0]', 'ZeroDivisionError', 'PolynomialLR with total_iters=0'],
    ),
    (
      'ChainedScheduler',
      dict(schedulers=[M('ChainedScheduler', schedulers=[M('CyclicLR', base_lr=0.1, max_lr=1.0)])]),
      ['CyclicLR', 'not supported'],
    ),
  ],
)
def test_nested_composites_that_torch_cannot_run_are_config_errors(name, kwargs, words):
  assert_config_error(lambda: jaxsched.schedule(name, 0.1, **kwargs), words)


def test_the_nesting_refusals_are_torchs():
  """What the refusals above say torch does."""

  def run(build, steps):
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=1.0)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      sched = build(opt)
      out = [opt.param_groups[0]['lr']]
      for _ in range(steps):
        opt.step()
        sched.step()
        out.append(opt.param_groups[0]['lr'])
    return out

  L = torch.optim.lr_scheduler
  with pytest.raises(NotImplementedError):
    run(lambda o: L.SequentialLR(o, [L.StepLR(o, 2), L.ChainedScheduler([L.ExponentialLR(o, 0.9)])], [3]), 4)
  nested = run(
    lambda o: L.SequentialLR(
      o, [L.SequentialLR(o, [L.ConstantLR(o, 0.5, 9), L.StepLR(o, 2, 0.1)], [4]), L.ExponentialLR(o, 0.5)], [8]
    ),
    8,
  )
  flat = run(lambda o: L.SequentialLR(o, [L.ConstantLR(o, 0.5, 9), L.StepLR(o, 2, 0.1)], [4]), 8)
  assert nested[3] == flat[4] != flat[3]  # the inner milestone 4 falls at step 3


# --- per-group lists inside composites --------------------------------------------------------------------------------

SWA_LRS = [0.03, 0.01, 0.05]  # regular, recurrent, head
PER_GROUP_INSIDE = {
  'SequentialLR': dict(
    schedulers=[M('ExponentialLR', gamma=0.5), M('SWALR', swa_lr=SWA_LRS, anneal_epochs=3, anneal_strategy='linear')],
    milestones=[2],
  ),
  'ChainedScheduler': dict(schedulers=[M('ExponentialLR', gamma=0.8), M('SWALR', swa_lr=SWA_LRS, anneal_epochs=4)]),
  'ChainedScheduler holding a SequentialLR': dict(
    schedulers=[
      M(
        'SequentialLR',
        schedulers=[M('ConstantLR', factor=0.5, total_iters=2), M('SWALR', swa_lr=SWA_LRS)],
        milestones=[3],
      ),
      M('ExponentialLR', gamma=0.9),
    ]
  ),
}


@pytest.mark.parametrize('case', PER_GROUP_INSIDE)
def test_swalrs_per_group_swa_lr_inside_composites_is_torchs(case):
  name, kwargs = case.split()[0], PER_GROUP_INSIDE[case]
  p = [torch.nn.Parameter(torch.zeros(1, dtype=torch.float64)) for _ in SWA_LRS]
  opt = torch.optim.SGD([{'params': [q], 'lr': lr} for q, lr in zip(p, [0.1, 0.05, 0.2])])
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    sched = torch_scheduler(name, opt, kwargs)
    expected = [[g['lr'] for g in opt.param_groups]]
    for _ in range(8):
      opt.step()
      sched.step()
      expected.append([g['lr'] for g in opt.param_groups])
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'optimizer_kwargs': {'momentum': 0.0},
    'recurrent_learning_rate_multiplier': 0.5,
    'lr_parameter_groups': {'head': {'lr_factor': 2.0}},
    'scheduler': name,
    'scheduler_kwargs': kwargs,
    'scheduler_configs': {'interval': 'step'},
  }
  with x64('float64'):
    params = {'w': jnp.zeros(2), 'recurrent': jnp.zeros(2), 'head': jnp.zeros(1)}
    tx = jaxsched.build(config, params)
    state = tx.init(params)
    step = jax.jit(lambda s: tx.update(params, s, params)[1])
    actual = []
    for _ in range(9):
      actual.append([float(v) for v in jaxsched.current_lr(state).values()])
      state = step(state)
  assert list(jaxsched.current_lr(state)) == ['regular', 'recurrent', 'head']
  assert len({tuple(lr) for lr in expected}) > 4
  np.testing.assert_allclose(actual, expected, rtol=1e-12)


def test_per_group_lists_inside_composites_are_checked_and_a_plateau_member_takes_one():
  sequential = {'schedulers': [M('ExponentialLR', gamma=0.5), M('SWALR', swa_lr=[0.1, 0.2, 0.3])], 'milestones': [2]}
  assert_config_error(
    lambda: jaxsched.build(
      {
        'optimizer': 'SGD',
        'recurrent_learning_rate_multiplier': 0.5,
        'scheduler': 'SequentialLR',
        'scheduler_kwargs': sequential,
      },
      {'w': jnp.ones(2), 'recurrent': jnp.ones(1)},
      batches_per_epoch=2,
    ),
    ['scheduler_kwargs.schedulers[1].scheduler_kwargs.swa_lr has 3 values, but there are 2 parameter groups'],
  )
  # a SequentialLR ending in ReduceLROnPlateau (jaxsched's own): the plateau's min_lr per group
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'recurrent_learning_rate_multiplier': 0.5,
    'scheduler': 'SequentialLR',
    'scheduler_kwargs': {
      'schedulers': [
        M('ConstantLR', factor=0.5, total_iters=1),
        M('ReduceLROnPlateau', patience=0, min_lr=[0.02, 0.03]),
      ],
      'milestones': [1],
    },
  }
  params = {'w': jnp.ones(2), 'recurrent': jnp.ones(1)}
  state = jaxsched.build(config, params, batches_per_epoch=1).init(params)
  for loss in [1.0, 1.0, 2.0, 3.0, 4.0, 5.0]:
    state = jaxsched.report(state, {'train_loss': loss})
  assert {k: float(v) for k, v in jaxsched.current_lr(state).items()} == pytest.approx(
    {'regular': 0.02, 'recurrent': 0.03}
  )


# --- Lightning's list of schedulers for one optimizer ---------------------------------------------------------------

LISTS = {
  # StepLR per epoch with a plateau on val_loss; a per-step warm-up with a per-epoch MultiStepLR
  'steplr epoch + plateau': (
    [E('StepLR', step_size=2, gamma=0.5), E('ReduceLROnPlateau', patience=0, factor=0.5, min_lr=[0.0, 0.004])],
    dict(batches=3, epochs=6),
  ),
  'linear warm-up step + multistep epoch': (
    [E('LinearLR', 'step', start_factor=0.1, total_iters=5), E('MultiStepLR', milestones=[1, 3], gamma=0.3)],
    dict(batches=4, epochs=4),
  ),
  # the recursive cosine differs from its closed form times the others' factors
  'cosine step freq 2 + exponential epoch freq 2 + two plateaus, accumulation': (
    [
      E('CosineAnnealingLR', 'step', 2, T_max=3, eta_min=0.01),
      E('ExponentialLR', 'epoch', 2, gamma=0.7),
      E('ReduceLROnPlateau', monitor='val_acc', mode='max', patience=1, factor=0.5, cooldown=1),
      E('ReduceLROnPlateau', 'epoch', 2, patience=0, factor=0.3),
    ],
    dict(batches=5, epochs=6, accumulate_grad_batches=2),
  ),
  # a composite member; an absolute member (LambdaLR) overwrites what the plateau and the others did
  'nested composite step + lambda epoch + plateau': (
    [
      E(
        'ChainedScheduler',
        'step',
        schedulers=[
          M('ConstantLR', factor=0.5, total_iters=4),
          M(
            'SequentialLR',
            schedulers=[M('LinearLR', start_factor=0.2, total_iters=3), M('ExponentialLR', gamma=0.9)],
            milestones=[3],
          ),
        ],
      ),
      E('ReduceLROnPlateau', patience=0, factor=0.5),
      E('LambdaLR', 'epoch', 3, lr_lambda='0.8 ** epoch'),
    ],
    dict(batches=3, epochs=7),
  ),
  'warm restarts step + multiplicative epoch + polynomial step freq 3': (
    [
      E('CosineAnnealingWarmRestarts', 'step', T_0=4, T_mult=2, eta_min=0.001),
      E('MultiplicativeLR', lr_lambda='0.9 + 0.01 * epoch'),
      E('PolynomialLR', 'step', 3, total_iters=4, power=1.5),
    ],
    dict(batches=4, epochs=4),
  ),
}
VAL_LOSS = [1.0, 0.9, 0.95, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9]
VAL_ACC = [0.1, 0.2, 0.2, 0.15, 0.1, 0.3, 0.3, 0.3, 0.3]


def _torch_scheduler(entry, opt):
  name, kwargs = entry['scheduler'], entry['scheduler_kwargs']
  if name == 'ReduceLROnPlateau':
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
  return torch_scheduler(name, opt, kwargs)


def torch_list_run(entries, lr, factor, params, grads, *, batches, epochs, accumulate_grad_batches=1):
  """Parameters and group LRs after every batch, Lightning's loop stepped by hand."""
  n = accumulate_grad_batches
  ts = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
  opt = torch.optim.SGD(
    [{'params': [ts['w']], 'lr': lr}, {'params': [ts['recurrent']], 'lr': lr * factor}], lr=lr, momentum=0.9
  )
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    scheds = [
      (e['scheduler_configs'], e['scheduler'] == 'ReduceLROnPlateau', _torch_scheduler(e, opt)) for e in entries
    ]
    out, i = [], 0
    for epoch in range(epochs):
      for b in range(batches):
        for k, t in ts.items():
          g = torch.tensor(grads[i][k]) / n
          t.grad = g if t.grad is None else t.grad + g
        i += 1
        if (b + 1) % n == 0 or b + 1 == batches:
          opt.step()
          opt.zero_grad(set_to_none=True)
          for sc, plateau, s in scheds:
            if sc['interval'] == 'step' and not plateau and (b + 1) % sc['frequency'] == 0:
              s.step()
        if b + 1 == batches:
          for sc, plateau, s in scheds:
            if sc['interval'] == 'epoch' and not plateau and (epoch + 1) % sc['frequency'] == 0:
              s.step()
        out.append(({k: t.detach().numpy().copy() for k, t in ts.items()}, [g['lr'] for g in opt.param_groups]))
      metrics = {'val_loss': VAL_LOSS[epoch], 'val_acc': VAL_ACC[epoch]}
      for interval in ('step', 'epoch'):  # plateaus after validation: Lightning's step-interval ones first
        for sc, plateau, s in scheds:
          if plateau and sc['interval'] == interval and (epoch + 1) % sc['frequency'] == 0:
            s.step(metrics[sc['monitor']])
      out[-1] = (out[-1][0], [g['lr'] for g in opt.param_groups])
  return out


def jax_list_run(config, params, grads, *, batches, epochs, jit=True):
  with x64('float64'):
    p = {k: jnp.asarray(v) for k, v in params.items()}
    tx = jaxsched.build(config, p, batches_per_epoch=batches)
    state = tx.init(p)

    def step(p, state, g):
      u, state = tx.update(g, state, p)
      return optax.apply_updates(p, u), state

    step = jax.jit(step) if jit else step
    report = jax.jit(jaxsched.report) if jit else jaxsched.report
    out, i = [], 0
    for epoch in range(epochs):
      for b in range(batches):
        p, state = step(p, state, {k: jnp.asarray(v) for k, v in grads[i].items()})
        i += 1
        if b + 1 == batches:
          state = report(state, {'val_loss': VAL_LOSS[epoch], 'val_acc': VAL_ACC[epoch]})
        lrs = jaxsched.current_lr(state)
        out.append(({k: np.asarray(v) for k, v in p.items()}, [float(lrs['regular']), float(lrs['recurrent'])]))
  return out


def list_config(entries, accumulate_grad_batches):
  """SGD (momentum 0.9, lr 0.1) with a recurrent group at half the LR under the list of schedulers ``entries``:
  the config of the list comparisons, whose torch side is :func:`torch_list_run` with lr 0.1 and factor 0.5."""
  return {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'optimizer_kwargs': {'momentum': 0.9},
    'recurrent_learning_rate_multiplier': 0.5,
    'schedulers': entries,
    'accumulate_grad_batches': accumulate_grad_batches,
  }


def list_runs(entries, run, seed):
  """(jaxsched's, torch's) parameters and LRs after every batch of an SGD run with two groups under the
  list of schedulers ``entries``."""
  rng = np.random.default_rng(seed)
  params = {'w': rng.normal(size=3), 'recurrent': rng.normal(size=2)}
  grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(run['batches'] * run['epochs'])]
  config = list_config(entries, run.get('accumulate_grad_batches', 1))
  expected = torch_list_run(entries, 0.1, 0.5, params, grads, **run)
  actual = jax_list_run(config, params, grads, batches=run['batches'], epochs=run['epochs'])
  assert len({tuple(lr) for _, lr in expected}) > 4, 'the case should move the LRs'
  return zip(actual, expected, strict=True)


@pytest.mark.parametrize('case', LISTS)
def test_a_list_of_schedulers_takes_lightnings_steps_on_torchs_lrs(case):
  for i, ((pa, la), (pe, le)) in enumerate(list_runs(*LISTS[case], seed=1)):
    np.testing.assert_allclose(la, le, rtol=1e-9, atol=0, err_msg=f'LRs after batch {i}')
    assert max_rel_diff(pa, pe) < 1e-9, f'parameters after batch {i}'


def test_a_list_runs_eagerly_as_under_jit():
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'recurrent_learning_rate_multiplier': 0.5,
    'schedulers': [E('CosineAnnealingLR', 'step', T_max=2), E('ReduceLROnPlateau', patience=0)],
  }
  params = {'w': np.ones(2), 'recurrent': np.ones(1)}
  grads = [{'w': np.full(2, 0.1 * i), 'recurrent': np.ones(1)} for i in range(4)]
  eager = jax_list_run(config, params, grads, batches=2, epochs=2, jit=False)
  jitted = jax_list_run(config, params, grads, batches=2, epochs=2)
  for (pa, la), (pb, lb) in zip(eager, jitted, strict=True):
    np.testing.assert_allclose(la, lb, rtol=1e-12)
    assert max_rel_diff(pa, pb) < 1e-12


def test_lr_log_names_name_each_entry_as_lightnings_monitor():
  config = jaxsched.load_config(
    {
      'optimizer': 'SGD',
      'schedulers': [
        E('StepLR', step_size=1),
        {**E('ExponentialLR', gamma=0.9), 'scheduler_configs': {'name': 'decay'}},
        E('ReduceLROnPlateau'),
      ],
    }
  )
  state = jaxsched.build(config, {'w': jnp.ones(2)}, batches_per_epoch=2).init({'w': jnp.ones(2)})
  assert list(jaxsched.lr_log_names(config, state)) == ['lr-SGD', 'decay/regular', 'lr-SGD-1']


def test_set_lr_under_a_list_goes_on_from_the_new_lr_as_torch():
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'schedulers': [E('ExponentialLR', 'step', gamma=0.5), E('ReduceLROnPlateau', patience=0, factor=0.1)],
  }
  with x64('float64'):
    params = {'w': jnp.ones(2)}
    tx = jaxsched.build(config, params, batches_per_epoch=2)
    state = tx.init(params)
    _, state = tx.update({'w': jnp.ones(2)}, state, params)
    state = jaxsched.set_lr(state, 1.0)
    assert float(jaxsched.current_lr(state)['regular']) == 1.0
    _, state = tx.update({'w': jnp.ones(2)}, state, params)
    assert float(jaxsched.current_lr(state)['regular']) == 0.5  # torch: param_group['lr'] * gamma
    state = jaxsched.report(state, {'val_loss': 1.0})
    state = jaxsched.report(state, {'val_loss': 2.0})
    assert float(jaxsched.current_lr(state)['regular']) == pytest.approx(0.05, rel=1e-12)


def test_carry_over_keeps_a_lists_lr_and_plateaus():
  config = {
    'optimizer': 'Adam',
    'learning_rate': 0.01,
    'schedulers': [E('ExponentialLR', 'step', gamma=0.5), E('ReduceLROnPlateau', patience=0, factor=0.1)],
  }
  params = {'w': jnp.ones(2)}
  tx = jaxsched.build(config, params, batches_per_epoch=2)
  state = tx.init(params)
  _, state = tx.update({'w': jnp.ones(2)}, state, params)
  state = jaxsched.report(jaxsched.report(state, {'val_loss': 1.0}), {'val_loss': 2.0})
  clipped = jaxsched.build({**config, 'gradient_clip_val': 1.0}, params, batches_per_epoch=2)
  moved = jaxsched.carry_over(state, clipped.init(params))
  assert float(jaxsched.current_lr(moved)['regular']) == pytest.approx(0.0005, rel=1e-6)
  assert jaxsched.plateau.plateau_states(moved)[0].best == 1.0


def test_a_one_entry_list_is_the_single_scheduler():
  single = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'scheduler': 'OneCycleLR',
    'scheduler_kwargs': {'max_lr': 1.0, 'total_steps': 12},
    'scheduler_configs': {'interval': 'step', 'monitor': 'val_loss'},
  }
  listed = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'schedulers': [E('OneCycleLR', 'step', max_lr=1.0, total_steps=12)],
  }
  assert jaxsched.load_config(listed) == jaxsched.load_config(single)
  params = {'w': np.ones(2, np.float32)}
  grads = [{'w': np.ones(2, np.float32)}] * 10
  for a, b in zip(jax_list_run_single(single, params, grads), jax_list_run_single(listed, params, grads), strict=True):
    assert a == b


def jax_list_run_single(config, params, grads):
  tx = jaxsched.build(config, params, batches_per_epoch=5)
  state, p, out = tx.init(params), params, []
  for g in grads:
    u, state = tx.update(g, state, p)
    p = optax.apply_updates(p, u)
    out.append((float(jaxsched.current_lr(state)['regular']), float(jaxsched.current_momentum(state)['regular'])))
  return out


def test_the_list_config_checks_loads_back_and_converts_numbers():
  c = jaxsched.load_config(
    {
      'optimizer': 'SGD',
      'schedulers': [
        {'scheduler': 'StepLR', 'scheduler_kwargs': {'step_size': 2, 'gamma': '1e-1'}},
        {'scheduler': 'ReduceLROnPlateau', 'scheduler_configs': {'monitor': 'val_loss'}},
      ],
    }
  )
  assert c.scheduler is None and c.monitor == 'val_loss'
  assert c.schedulers[0]['scheduler_kwargs']['gamma'] == 0.1
  assert c.schedulers[0]['scheduler_configs'] == {
    'interval': 'epoch',
    'frequency': 1,
    'monitor': 'train_loss',
    'name': None,
    'strict': True,
  }
  out = c.to_dict()
  assert 'scheduler' not in out and 'scheduler_configs' not in out
  assert jaxsched.load_config(out) == c and jaxsched.load_config(c) == c
  assert 'schedulers' not in jaxsched.load_config({}).to_dict()
  assert jaxsched.load_config({'scheduler': 'none', 'schedulers': [E('StepLR', step_size=1)]}).scheduler == 'StepLR'


@pytest.mark.parametrize(
  'data, words',
  [
    ({'scheduler': 'StepLR', 'schedulers': [E('StepLR', step_size=1)]}, ['schedulers', 'together with scheduler']),
    (
      {'scheduler_configs': {'interval': 'step'}, 'schedulers': [E('StepLR', step_size=1)]},
      ['together with scheduler_configs'],
    ),
    ({'schedulers': []}, ['schedulers=[]', 'non-empty list']),
    ({'schedulers': {'scheduler': 'StepLR'}}, ['non-empty list']),
    ({'schedulers': ['StepLR']}, ['schedulers[0]', 'mapping']),
    ({'schedulers': [{'scheduler': 'StepLR', 'scheduler_kwarg': {}}]}, ['schedulers[0]', "'scheduler_kwargs'"]),
    ({'schedulers': [{'scheduler': None}]}, ['schedulers[0].scheduler', 'needs a scheduler name']),
    ({'schedulers': [E('StepLR', 'hourly', step_size=1)]}, ['schedulers[0].scheduler_configs.interval']),
    ({'schedulers': [E('StepLR', step_size=1), E('StepLR', gama=0.5)]}, ['schedulers[1]', "'gamma'"]),
    (
      {'schedulers': [E('StepLR', step_size=1), E('OneCycleLR', max_lr=1.0, total_steps=10)]},
      ['schedulers[1]', 'OneCycleLR cannot share', 'initial_lr'],
    ),
    (
      {'schedulers': [E('CyclicLR', base_lr=0.01, max_lr=0.1), E('StepLR', step_size=1)]},
      ['schedulers[0]', 'CyclicLR cannot share'],
    ),
    (
      {
        'schedulers': [
          E('StepLR', step_size=1),
          E('SequentialLR', schedulers=[M('LinearLR'), M('ReduceLROnPlateau')], milestones=[3]),
        ]
      },
      ['schedulers[1]', 'ends in ReduceLROnPlateau', 'only scheduler'],
    ),
    (
      {
        'lr_parameter_groups': {'head': {'lr_factor': 2}},
        'schedulers': [E('StepLR', step_size=1), E('ReduceLROnPlateau', min_lr=[0.0, 0.1, 0.2])],
      },
      ['schedulers[1].scheduler_kwargs.min_lr has 3 values, but there are 2 parameter groups'],
    ),
  ],
)
def test_bad_lists_are_config_errors(data, words):
  def load_and_build():
    config = jaxsched.load_config(data)
    jaxsched.build(config, {'w': jnp.ones(2), 'head': jnp.ones(1)}, batches_per_epoch=2)

  assert_config_error(load_and_build, words)


# --- a SequentialLR entry in the list ---------------------------------------------------------------------------------
# torch builds the list in order, a SequentialLR's members just before it: its constructor resets every group's lr to
# initial_lr (dropping what the entries built before it did at construction) and starts its first member; at a milestone
# it restarts the next member from its closed form (dropping what the other entries did since), else it steps the
# member on the lr the others left. ConstantLR's end still multiplies by 1 / factor after a reset undid its start.

SEQ = lambda schedulers, milestones: dict(schedulers=schedulers, milestones=milestones)  # noqa: E731
SEQUENTIAL_LISTS = {
  'steplr epoch, then a sequential step': (
    [
      E('StepLR', step_size=2, gamma=0.5),
      E(
        'SequentialLR',
        'step',
        **SEQ([M('LinearLR', start_factor=0.2, total_iters=3), M('ExponentialLR', gamma=0.9)], [3]),
      ),
    ],
    dict(batches=3, epochs=5),
  ),
  'sequential step freq 2 with three members, exponential epoch, plateau, accumulation': (
    [
      E(
        'SequentialLR',
        'step',
        2,
        **SEQ(
          [
            M('ConstantLR', factor=0.5, total_iters=2),
            M('ExponentialLR', gamma=0.8),
            M('MultiplicativeLR', lr_lambda='0.9'),
          ],
          [2, 4],
        ),
      ),
      E('ExponentialLR', gamma=0.7),
      E('ReduceLROnPlateau', patience=0, factor=0.5),
    ],
    dict(batches=5, epochs=6, accumulate_grad_batches=2),
  ),
  'constant step, then a sequential epoch ending in swalr with one swa_lr per group': (
    [
      E('ConstantLR', 'step', factor=0.5, total_iters=4),
      E('SequentialLR', **SEQ([M('ExponentialLR', gamma=0.5), M('SWALR', swa_lr=[0.02, 0.004], anneal_epochs=3)], [3])),
    ],
    dict(batches=3, epochs=8),
  ),
  'two sequentials, the second resetting the first': (
    [
      E(
        'SequentialLR',
        **SEQ([M('LinearLR', start_factor=0.2, total_iters=2), M('StepLR', step_size=1, gamma=0.5)], [2]),
      ),
      E(
        'SequentialLR',
        'step',
        **SEQ([M('ConstantLR', factor=0.3, total_iters=2), M('CosineAnnealingLR', T_max=5)], [3]),
      ),
    ],
    dict(batches=3, epochs=5),
  ),
  'plateau, then a sequential epoch freq 2 starting with a chain, then polynomial step': (
    [
      E('ReduceLROnPlateau', patience=0, factor=0.5),
      E('SequentialLR', 'epoch', 2, **SEQ([CHAINED, M('StepLR', step_size=1, gamma=0.6)], [2])),
      E('PolynomialLR', 'step', total_iters=10, power=1.5),
    ],
    dict(batches=3, epochs=8),
  ),
}


@pytest.mark.parametrize('case', SEQUENTIAL_LISTS)
def test_a_sequential_entry_in_a_list_takes_torchs_lrs_with_its_resets(case):
  for i, ((pa, la), (pe, le)) in enumerate(list_runs(*SEQUENTIAL_LISTS[case], seed=3)):
    np.testing.assert_allclose(la, le, rtol=1e-12, atol=1e-15, err_msg=f'LRs after batch {i}')
    assert max_rel_diff(pa, pe) < 1e-9, f'parameters after batch {i}'


def test_a_sequential_entry_is_no_plateau_and_one_ending_in_a_plateau_says_why():
  config = jaxsched.load_config(
    {
      'optimizer': 'SGD',
      'schedulers': [
        E('StepLR', step_size=1),
        E('SequentialLR', **SEQ([M('LinearLR'), M('StepLR', step_size=1)], [3])),
      ],
    }
  )
  state = jaxsched.build(config, {'w': jnp.ones(2)}, batches_per_epoch=2).init({'w': jnp.ones(2)})
  assert list(jaxsched.lr_log_names(config, state)) == ['lr-SGD', 'lr-SGD-1']
  plateau_ended = {
    'schedulers': [
      E('SequentialLR', **SEQ([M('LinearLR'), M('ReduceLROnPlateau')], [3])),
      E('StepLR', step_size=1),
    ]
  }
  assert_config_error(
    lambda: jaxsched.load_config(plateau_ended),
    ['schedulers[0]', 'SequentialLR cannot share', "jaxsched's own", 'pytorch#68978', 'only scheduler'],
  )


@pytest.mark.parametrize(
  'case',
  [
    'steplr epoch, then a sequential step',
    'constant step, then a sequential epoch ending in swalr with one swa_lr per group',
    'plateau, then a sequential epoch freq 2 starting with a chain, then polynomial step',
  ],
)
def test_lr_curve_follows_a_sequential_entry_as_torch(case):
  entries, run = SEQUENTIAL_LISTS[case]
  batches, epochs = run['batches'], run['epochs']
  params = {'w': np.zeros(3), 'recurrent': np.zeros(2)}
  expected = torch_list_run(entries, 0.1, 0.5, params, [params] * (batches * epochs), **run)
  config = {'optimizer': 'SGD', 'learning_rate': 0.1, 'recurrent_learning_rate_multiplier': 0.5, 'schedulers': entries}
  with x64('float64'):
    curve = jaxsched.lr_curve(config, epochs=epochs, batches_per_epoch=batches, metrics={'val_loss': VAL_LOSS[:epochs]})
  assert curve.steps.tolist() == list(range(batches * epochs))
  lrs = np.stack([curve.lrs['regular'], curve.lrs['recurrent']], axis=1)
  np.testing.assert_allclose(lrs[1:], [lr for _, lr in expected[:-1]], rtol=1e-12)  # before step k: after batch k - 1


# --- a real Lightning Trainer with two schedulers of different intervals ----------------------------------------------


class TwoSchedulers(pl.LightningModule):
  """The run's i-th batch has the loss ``sum(w * coefs[i])``; SGD with a per-step LinearLR
  warm-up and a per-epoch MultiStepLR, returned as Lightning's list for one optimizer."""

  def __init__(self, init, coefs, batches):
    super().__init__()
    self.w = torch.nn.Parameter(torch.tensor(init))
    self.coefs, self.batches, self.lrs = torch.tensor(coefs), batches, []

  def training_step(self, batch, batch_idx):
    return (self.w * self.coefs[self.current_epoch * self.batches + batch_idx]).sum()

  def on_before_optimizer_step(self, optimizer):
    self.lrs.append(optimizer.param_groups[0]['lr'])

  def train_dataloader(self):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(self.batches)), batch_size=1)

  def configure_optimizers(self):
    opt = torch.optim.SGD([self.w], lr=0.1, momentum=0.9)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=4)
    decay = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1, 2], gamma=0.5)
    return [opt], [{'scheduler': warmup, 'interval': 'step', 'frequency': 2}, {'scheduler': decay, 'interval': 'epoch'}]


def test_a_lightning_trainer_with_two_schedulers_ends_where_jaxsched_does():
  epochs, batches = 3, 5
  rng = np.random.default_rng(2)
  init, coefs = rng.normal(size=3), rng.normal(size=(epochs * batches, 3))
  model = TwoSchedulers(init, coefs, batches)
  lightning_fit(model, max_epochs=epochs, accumulate_grad_batches=2, limit_val_batches=0)
  config = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'optimizer_kwargs': {'momentum': 0.9},
    'accumulate_grad_batches': 2,
    'schedulers': [
      E('LinearLR', 'step', 2, start_factor=0.1, total_iters=4),
      E('MultiStepLR', milestones=[1, 2], gamma=0.5),
    ],
  }
  with x64('float64'):
    params = {'w': jnp.asarray(init)}
    tx = jaxsched.build(config, params, batches_per_epoch=batches)
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update({'w': g}, s, p)))
    lrs = []
    for i in range(epochs * batches):
      if (i % batches + 1) % 2 == 0 or i % batches + 1 == batches:  # the batch that steps the optimizer
        lrs.append(float(jaxsched.current_lr(state)['regular']))
      params, state = step(params, state, jnp.asarray(coefs[i]))
  assert len(set(model.lrs)) > 4
  np.testing.assert_allclose(lrs, model.lrs, rtol=1e-12)
  assert max_rel_diff({'w': np.asarray(params['w'])}, {'w': model.w.detach().numpy()}) < 1e-9


class ListOfSchedulers(pl.LightningModule):
  """Two param groups (``w``, ``recurrent`` at half its LR) under SGD and a list of schedulers built in
  list order from ``entries`` (:data:`SEQUENTIAL_LISTS`' form), validated each epoch with ``VAL_LOSS``."""

  def __init__(self, params, grads, batches, entries):
    super().__init__()
    self.w = torch.nn.Parameter(torch.tensor(params['w']))
    self.recurrent = torch.nn.Parameter(torch.tensor(params['recurrent']))
    self.grads, self.batches, self.entries, self.lrs = grads, batches, entries, []

  def training_step(self, batch, batch_idx):
    g = self.grads[self.current_epoch * self.batches + batch_idx]
    return (self.w * torch.tensor(g['w'])).sum() + (self.recurrent * torch.tensor(g['recurrent'])).sum()

  def on_before_optimizer_step(self, optimizer):
    self.lrs.append([g['lr'] for g in optimizer.param_groups])

  def validation_step(self, batch, batch_idx):
    self.log('val_loss', VAL_LOSS[self.current_epoch])

  def train_dataloader(self):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(self.batches)), batch_size=1)

  def val_dataloader(self):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(1)), batch_size=1)

  def configure_optimizers(self):
    opt = torch.optim.SGD([{'params': [self.w], 'lr': 0.1}, {'params': [self.recurrent], 'lr': 0.05}], momentum=0.9)
    return [opt], [{'scheduler': _torch_scheduler(e, opt), **e['scheduler_configs']} for e in self.entries]


@pytest.mark.parametrize(
  'case',
  [
    'steplr epoch, then a sequential step',
    'sequential step freq 2 with three members, exponential epoch, plateau, accumulation',
    'constant step, then a sequential epoch ending in swalr with one swa_lr per group',
  ],
)
def test_a_lightning_trainer_with_a_sequential_entry_takes_jaxscheds_lrs(case):
  entries, run = SEQUENTIAL_LISTS[case]
  batches, epochs, n = run['batches'], run['epochs'], run.get('accumulate_grad_batches', 1)
  rng = np.random.default_rng(4)
  params = {'w': rng.normal(size=3), 'recurrent': rng.normal(size=2)}
  grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(batches * epochs)]
  model = ListOfSchedulers(params, grads, batches, entries)
  lightning_fit(model, max_epochs=epochs, accumulate_grad_batches=n, limit_val_batches=1)
  config = list_config(entries, n)
  with x64('float64'):
    p = {k: jnp.asarray(v) for k, v in params.items()}
    tx = jaxsched.build(config, p, batches_per_epoch=batches)
    state = tx.init(p)
    step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p)))
    lrs = []
    for i in range(epochs * batches):
      b = i % batches
      if (b + 1) % n == 0 or b + 1 == batches:  # the batch that steps the optimizer
        lrs.append([float(v) for v in jaxsched.current_lr(state).values()])
      p, state = step(p, state, {k: jnp.asarray(v) for k, v in grads[i].items()})
      if b + 1 == batches:
        state = jaxsched.report(state, {'val_loss': VAL_LOSS[i // batches]})
  assert len({tuple(lr) for lr in model.lrs}) > 4
  np.testing.assert_allclose(lrs, model.lrs, rtol=1e-12, atol=1e-15)
  expected = {'w': model.w.detach().numpy(), 'recurrent': model.recurrent.detach().numpy()}
  assert max_rel_diff({k: np.asarray(v) for k, v in p.items()}, expected) < 1e-9
