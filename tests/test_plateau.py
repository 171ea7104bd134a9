"""ReduceLROnPlateau against torch's, fed the same metrics; report() in and out of jit."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import jaxsched
from jaxsched import plateau as P
from oracle import assert_config_error, x64


def torch_lrs(base_lrs, metrics, **kwargs):
  """Each group's LR after every ``ReduceLROnPlateau.step(metric)`` in torch."""
  groups = [{'params': [torch.zeros(1, requires_grad=True)], 'lr': lr} for lr in base_lrs]
  opt = torch.optim.SGD(groups)
  sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
  out = []
  for m in metrics:
    sched.step(m)
    out.append([g['lr'] for g in opt.param_groups])
  return np.array(out)


def jax_lrs(base_lrs, metrics, min_lr=0.0, jit=True, **kwargs):
  """The same through jaxsched: one Plateau per group, fed by report()."""
  min_lrs = min_lr if isinstance(min_lr, (list, tuple)) else [min_lr] * len(base_lrs)
  plateaus = [P.reduce_on_plateau(lr, min_lr=m, **kwargs) for lr, m in zip(base_lrs, min_lrs)]
  state = tuple(p.init() for p in plateaus)
  step = jax.jit(P.report) if jit else P.report
  out = []
  for m in metrics:
    state = step(state, jnp.asarray(m))
    out.append([float(p(s)) for p, s in zip(plateaus, state)])
  return np.array(out)


metric_values = st.one_of(st.sampled_from([1.0, 0.5, 0.25, 2.0, math.nan, -1.0]), st.floats(-3, 3))


@pytest.mark.parametrize('dtype', ['float64', 'float32'])
@given(
  metrics=st.lists(metric_values, min_size=1, max_size=40),
  mode=st.sampled_from(['min', 'max']),
  threshold_mode=st.sampled_from(['rel', 'abs']),
  threshold=st.sampled_from([0.0, 1e-4, 0.1]),
  factor=st.sampled_from([0.1, 0.5, 0.9]),
  patience=st.integers(0, 4),
  cooldown=st.integers(0, 3),
  min_lr=st.one_of(st.sampled_from([0.0, 1e-3]), st.tuples(st.sampled_from([0.0, 0.02]), st.sampled_from([0.0, 1e-3]))),
  eps=st.sampled_from([0.0, 1e-8, 1e-3]),
)
def test_matches_torch(dtype, metrics, mode, threshold_mode, threshold, factor, patience, cooldown, min_lr, eps):
  if dtype == 'float32' and eps == 1e-3:
    # 0.01 - 0.01 * 0.9 == 1e-3 is a tie that only float64 resolves as torch's doubles do.
    eps = 1e-8
  kwargs = dict(
    mode=mode,
    threshold_mode=threshold_mode,
    threshold=threshold,
    factor=factor,
    patience=patience,
    cooldown=cooldown,
    eps=eps,
  )
  base = [0.1, 0.01]
  expected = torch_lrs(base, metrics, min_lr=list(min_lr) if isinstance(min_lr, tuple) else min_lr, **kwargs)
  with x64(dtype):
    actual = jax_lrs(base, metrics, min_lr=min_lr, **kwargs)
  np.testing.assert_allclose(actual, expected, rtol=1e-12 if dtype == 'float64' else 1e-6)


def test_ties_nans_cooldown_eps_and_floors_by_hand():
  metrics = [1.0, 1.0, math.nan, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
  kwargs = dict(patience=1, factor=0.5, cooldown=1, min_lr=[0.03, 0.0], eps=1e-3)
  with x64('float64'):
    np.testing.assert_allclose(
      jax_lrs([0.1, 0.0015], metrics, **kwargs), torch_lrs([0.1, 0.0015], metrics, **kwargs), rtol=1e-15
    )


def test_through_the_optimizer_lightning_epoch_stepping():
  # facts-measured-here.md: patience 1, factor 0.5, val_loss per epoch; LR used in each epoch.
  val_loss = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8]
  tx = jaxsched.optimizer(
    'SGD', learning_rate=P.reduce_on_plateau(1.0, patience=1, factor=0.5, monitor='val_loss'), momentum=0.0
  )
  params = {'w': jnp.ones(1)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  used = []
  for loss in val_loss:
    for _ in range(5):  # batches
      updates, state = update({'w': jnp.ones(1)}, state, params)
      used.append(-float(updates['w'][0]))
    state = jaxsched.report(state, {'val_loss': loss, 'train_loss': 123.0})
  per_epoch = [used[5 * e] for e in range(10)]
  assert all(used[5 * e + b] == per_epoch[e] for e in range(10) for b in range(5))
  assert per_epoch == [1.0] * 4 + [0.5] * 2 + [0.25] * 3 + [0.125]


def test_frequency_counts_every_nth_report():
  pl = P.reduce_on_plateau(1.0, patience=0, factor=0.5, frequency=2)
  state = pl.init()
  lrs = []
  for m in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]:
    state = P.report(state, m)
    lrs.append(float(state.lr))
  # counted reports: 2nd (improves from inf), 4th (bad -> cut), 6th (bad -> cut)
  assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]


def test_no_retrace_when_the_lr_drops():
  tx = jaxsched.optimizer('Adam', learning_rate=P.reduce_on_plateau(0.1, patience=0))
  params = {'w': jnp.ones(3)}
  traces = []

  @jax.jit
  def train_step(params, state, loss):
    traces.append(1)
    updates, state = tx.update({'w': params['w'] * loss}, state, params)
    state = jaxsched.report(state, {'train_loss': loss})
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for loss in [1.0, 2.0, 3.0, 4.0]:
    params, state = train_step(params, state, jnp.asarray(loss))
  assert len(traces) == 1
  assert float(P.plateau_states(state)[0].lr) == pytest.approx(1e-4)


def test_missing_monitor_strict_and_lenient():
  state = P.reduce_on_plateau(0.1, monitor='val_loss').init()
  with pytest.raises(jaxsched.ConfigError, match=r"'val_loss'.*'train_loss', 'val_acc'"):
    P.report(state, {'train_loss': 1.0, 'val_acc': 0.5})
  lenient = P.reduce_on_plateau(0.1, monitor='val_loss', strict=False).init()
  with pytest.warns(UserWarning, match='val_loss'):
    skipped = P.report(lenient, {'train_loss': 1.0})
  assert int(skipped.reports) == 0 and float(skipped.lr) == pytest.approx(0.1)


@pytest.mark.parametrize(
  'metric, words',
  [
    (jnp.array([0.5, 0.7]), ["'val_loss'", 'shape (2,)', '.mean()']),  # a forgotten .mean()
    (jnp.ones(1), ["'val_loss'", 'shape (1,)']),
    (np.ones((2, 2)), ["'val_loss'", 'shape (2, 2)']),
    ([0.5], ["'val_loss'", '[0.5]', 'one real number']),
    ('abc', ["'val_loss'", "'abc'", 'one real number']),
    (True, ["'val_loss'", 'True']),
    (jnp.array(1 + 2j), ["'val_loss'", 'one real number']),
    (None, ["'val_loss'", 'is None']),
  ],
)
def test_a_metric_that_is_not_one_number_is_an_error(metric, words):
  # torch's ReduceLROnPlateau takes float(metrics); a vector would turn every LR into a vector
  state = P.reduce_on_plateau(0.1, monitor='val_loss').init()
  assert_config_error(lambda: P.report(state, {'val_loss': metric}), words)
  if metric is not None and not isinstance(metric, str):  # the same under jit, at trace time
    assert_config_error(lambda: jax.jit(P.report)(state, {'val_loss': metric}), words[:1])


def test_a_metric_given_alone_is_checked_too():
  state = P.reduce_on_plateau(0.1, monitor='val_loss').init()
  assert_config_error(lambda: P.report(state, jnp.zeros(3)), ['report()', 'shape (3,)'])
  assert_config_error(lambda: P.report(state, None), ['report()', 'None'])
  lenient = P.reduce_on_plateau(0.1, monitor='val_loss', strict=False).init()
  with pytest.warns(UserWarning, match='strict: false'):
    assert int(P.report(lenient, {'val_loss': None}).reports) == 0  # Lightning: skipped, with a warning
  for scalar in (0.5, 1, np.float32(0.5), jnp.float32(0.5), np.array(0.5), jnp.array(2, jnp.int32)):
    assert int(P.report(state, {'val_loss': scalar}).reports) == 1


def test_report_without_plateau_is_a_no_op():
  tx = jaxsched.optimizer('Adam')
  state = tx.init({'w': jnp.ones(2)})
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    new = jaxsched.report(state, {'anything': 1.0})
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), new, state))


def test_warmup_then_plateau():
  # LinearLR-style warm-up for 3 counted reports, then plateau control from the base LR.
  warm = lambda k: 0.1 * (k + 1) / 4  # noqa: E731
  pl = P.reduce_on_plateau(0.1, patience=0, factor=0.5, warmup=warm, warmup_steps=3)
  state = pl.init()
  seen = [float(pl(state))]
  for m in [5.0, 5.0, 5.0, 1.0, 1.0, 1.0]:
    state = P.report(state, m)
    seen.append(float(pl(state)))
  # warm-up reports do not count: the first plateau report (1.0) improves, the next are bad.
  np.testing.assert_allclose(seen, [0.025, 0.05, 0.075, 0.1, 0.1, 0.05, 0.025], rtol=1e-6)


@pytest.mark.parametrize(
  'kwargs, words',
  [
    (dict(factor=1.0), ['factor', '1.0']),
    (dict(mode='minimum'), ['mode', "'minimum'", "Did you mean 'min'"]),
    (dict(patience=-1), ['patience', '-1']),
    (dict(threshold_mode='relative'), ['threshold_mode', "'rel'"]),
    (dict(pateince=3), ["'pateince'", "Did you mean 'patience'"]),
    (dict(frequency=0), ['frequency', '0']),
  ],
)
def test_bad_input(kwargs, words):
  assert_config_error(lambda: P.reduce_on_plateau(0.1, **kwargs), words)


def test_linen_train_state():
  from flax.training import train_state

  tx = jaxsched.optimizer('SGD', learning_rate=P.reduce_on_plateau(0.5, patience=0), momentum=0.0)
  state = train_state.TrainState.create(apply_fn=None, params={'w': jnp.ones(2)}, tx=tx)
  state = state.apply_gradients(grads={'w': jnp.ones(2)})
  state = state.replace(opt_state=jaxsched.report(state.opt_state, 1.0))
  state = state.replace(opt_state=jaxsched.report(state.opt_state, 1.0))  # bad: 0.5 -> 0.05
  state = state.apply_gradients(grads={'w': jnp.ones(2)})
  np.testing.assert_allclose(state.params['w'], 1.0 - 0.5 - 0.05, rtol=1e-6)


def test_nnx_optimizer():
  from flax import nnx

  model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
  tx = jaxsched.optimizer('SGD', learning_rate=P.reduce_on_plateau(0.5, patience=0), momentum=0.0)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  jaxsched.report(opt, 1.0)
  jaxsched.report(opt, 1.0)
  assert float(P.plateau_states(nnx.as_pure(opt.opt_state))[0].lr) == pytest.approx(0.05)
  before = np.asarray(model.bias[...])
  grads = nnx.state(model, nnx.Param)
  grads = jax.tree.map(jnp.ones_like, grads)
  opt.update(model, grads)
  np.testing.assert_allclose(model.bias[...], before - 0.05, rtol=1e-6)


def test_orbax_checkpoint_round_trip(tmp_path):
  import orbax.checkpoint as ocp

  tx = jaxsched.optimizer('Adam', learning_rate=P.reduce_on_plateau(0.1, patience=0))
  state = tx.init({'w': jnp.ones(3)})
  state = jaxsched.report(jaxsched.report(state, 1.0), 2.0)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / 'state', state)
  with ocp.StandardCheckpointer() as ckpt:
    restored = ckpt.restore(tmp_path / 'state', tx.init({'w': jnp.ones(3)}))
  assert float(P.plateau_states(restored)[0].lr) == pytest.approx(0.01)
  assert int(P.plateau_states(restored)[0].steps) == 2
