"""check_compatible names the config change behind a state that no longer fits, and
carry_over resumes across changes that only wrap the optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging, StochasticWeightAveraging

import jaxsched
from oracle import assert_config_error, lightning_fit, max_rel_diff, problem, x64

PARAMS = {'conv': jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), 'recurrent': jnp.linspace(0.5, 1.5, 3)}
BASE = {
  'optimizer': 'AdamW',
  'recurrent_learning_rate_multiplier': 0.1,
  'scheduler': 'StepLR',
  'scheduler_kwargs': {'step_size': 2},
  'scheduler_configs': {'interval': 'step'},
}


def trained(config, steps=3, batches=4):
  tx = jaxsched.build(config, PARAMS, batches_per_epoch=batches)
  state, params = tx.init(PARAMS), PARAMS
  for i in range(steps):
    grads = jax.tree.map(lambda p: jnp.cos(p * (i + 1)), params)  # noqa: B023
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return tx, params, state


def test_a_changed_optimizer_is_named_with_what_to_do():
  _, _, saved = trained(BASE)
  new = {**BASE, 'optimizer': 'SGD'}
  fresh = jaxsched.build(new, PARAMS).init(PARAMS)
  assert_config_error(
    lambda: jaxsched.check_compatible(fresh, saved, config=new, saved_config=BASE),
    ["optimizer 'AdamW' -> 'SGD'", 'fresh optimizer state', 'revert'],
  )
  with pytest.raises(jaxsched.ConfigError, match='the optimizer itself differs'):
    jaxsched.carry_over(saved, fresh)


@pytest.mark.parametrize(
  'change, words',
  [
    ({'gradient_clip_val': 1.0}, ['gradient_clip_val None -> 1.0']),
    ({'skip_nonfinite': True}, ['skip_nonfinite False -> True']),
    ({'accumulate_grad_batches': 2}, ['accumulate_grad_batches 1 -> 2']),
  ],
)
def test_wrapper_changes_carry_the_optimizer_state_over(change, words):
  _, params, saved = trained(BASE)
  new = {**BASE, **change}
  tx = jaxsched.build(new, PARAMS, batches_per_epoch=4)
  fresh = tx.init(params)
  assert_config_error(
    lambda: jaxsched.check_compatible(fresh, saved, config=new, saved_config=BASE),
    [*words, 'jaxsched.carry_over(saved, tx.init(params))'],
  )
  state = jaxsched.carry_over(saved, fresh)
  jaxsched.check_compatible(fresh, state)
  assert jax.tree.structure(state) == jax.tree.structure(fresh)
  # the moments, counts and LRs are the saved ones: the next step equals the old config's next step
  grads = jax.tree.map(lambda p: jnp.cos(3 * p) * 1e-3, params)  # small: clipping at 1.0 does not bite
  old_tx = jaxsched.build(BASE, PARAMS, batches_per_epoch=4)
  want, _ = old_tx.update(grads, saved, params)
  if change.get('accumulate_grad_batches', 1) > 1:  # the optimizer steps after the group's second batch
    _, state = tx.update(grads, state, params)
  got, _ = tx.update(grads, state, params)
  assert jaxsched.current_lr(state) == jaxsched.current_lr(saved)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_carry_over_takes_a_raw_restored_tree(tmp_path):
  import orbax.checkpoint as ocp

  _, params, saved = trained(BASE)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / 'state', {'opt_state': saved})
  checkpointer.wait_until_finished()
  raw = checkpointer.restore(tmp_path / 'state')['opt_state']  # no target: nested dicts
  new = {**BASE, 'gradient_clip_val': 0.5}
  fresh = jaxsched.build(new, PARAMS).init(params)
  metadata = checkpointer.metadata(tmp_path / 'state')
  tree = getattr(metadata, 'item_metadata', metadata)
  tree = getattr(tree, 'tree', tree)
  assert_config_error(lambda: jaxsched.check_compatible({'opt_state': fresh}, tree), ['jaxsched.carry_over'])
  state = jaxsched.carry_over(raw, fresh)
  for a, b in zip(jax.tree.leaves(jaxsched.compat._core(state)[0]), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(a, b)


def test_carry_over_warns_when_it_drops_pending_gradients():
  config = {**BASE, 'accumulate_grad_batches': 2}
  _, params, saved = trained(config, steps=3)
  fresh = jaxsched.build(BASE, PARAMS, batches_per_epoch=4).init(params)
  with pytest.warns(jaxsched.ConfigWarning, match='1 micro-batch'):
    jaxsched.carry_over(saved, fresh)


def test_carry_over_between_accumulating_states_keeps_the_epoch_position():
  config = {**BASE, 'accumulate_grad_batches': 2}
  _, params, saved = trained(config, steps=2)  # at a group boundary, two batches into the epoch
  new = {**config, 'gradient_clip_val': 1.0}
  state = jaxsched.carry_over(saved, jaxsched.build(new, PARAMS, batches_per_epoch=4).init(params))
  assert int(state.batch) == int(saved.batch) == 2 and int(state.kept) == 0


# ------------------------------------------------------------------------------------------ ema and swa

AVERAGED = {
  'optimizer': 'SGD',
  'optimizer_kwargs': {'momentum': 0.9},
  'learning_rate': 0.1,
  'recurrent_learning_rate_multiplier': 0.5,
  'scheduler': 'StepLR',
  'scheduler_kwargs': {'step_size': 1, 'gamma': 0.8},
  'accumulate_grad_batches': 2,
}
AVERAGES = {
  'ema': {'ema': {'decay': 0.7, 'update_every_n_steps': 2, 'update_starting_at_epoch': 1}},
  'swa': {'swa': {'swa_lrs': [0.02, 0.01], 'swa_epoch_start': 2, 'annealing_epochs': 2}},
}
BATCHES, EPOCHS = 5, 4  # 3 optimizer steps an epoch, the last group of one micro-batch


def run(config, params, state, grads):
  """``params`` and ``state`` after one update per gradient, in float64."""
  tx = jaxsched.build(config, params, batches_per_epoch=BATCHES, max_epochs=EPOCHS)
  step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p)))
  for g in grads:
    params, state = step(params, state, g)
  return params, state


def assert_same(actual, expected):
  """Equal trees up to rounding: another compiled step may round differently (float64)."""
  for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def restored(tmp_path, state, raw):
  """``state`` as it is, or saved with Orbax and restored without a target (nested dicts and lists)."""
  if not raw:
    return state
  import orbax.checkpoint as ocp

  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / 'state', {'opt_state': state})
  checkpointer.wait_until_finished()
  return checkpointer.restore(tmp_path / 'state')['opt_state']


@pytest.mark.parametrize('raw', [False, True], ids=['live', 'restored without a target'])
@pytest.mark.parametrize('average', AVERAGES)
@pytest.mark.parametrize('change', [{'gradient_clip_val': 1e6}, {'skip_nonfinite': True}], ids=['clip', 'skip'])
def test_wrapper_changes_with_ema_or_swa_on_go_on_as_the_uninterrupted_run(tmp_path, change, average, raw):
  # clipping at 1e6 and skipping non-finite gradients change nothing here: the resumed run is the
  # uninterrupted one, average, n_averaged, loop position and all
  params, grads = problem({'w': (3, 2), 'recurrent': (2,)}, steps=BATCHES * EPOCHS, seed=4)
  config = {**AVERAGED, **AVERAGES[average]}
  new = {**config, **change}
  with x64('float64'):
    params = jax.tree.map(jnp.asarray, params)
    grads = [jax.tree.map(jnp.asarray, g) for g in grads]
    init = lambda c, p: jaxsched.build(c, p, batches_per_epoch=BATCHES, max_epochs=EPOCHS).init(p)  # noqa: E731
    full_params, full_state = run(config, params, init(config, params), grads)
    mid_params, mid_state = run(config, params, init(config, params), grads[:7])  # epoch 1, at a group's end
    fresh = init(new, mid_params)
    if 'gradient_clip_val' in change:  # a new chain around the optimizer
      assert_config_error(lambda: jaxsched.check_compatible(fresh, mid_state), ['jaxsched.carry_over'])
    else:  # skip_nonfinite under accumulation keeps the state's structure
      jaxsched.check_compatible(fresh, mid_state)
    state = jaxsched.carry_over(restored(tmp_path, mid_state, raw), fresh)
    assert jax.tree.structure(state) == jax.tree.structure(fresh)
    end_params, end_state = run(new, mid_params, state, grads[7:])
    assert_same(end_params, full_params)
    for fn in (jaxsched.averaged_params, jaxsched.final_params):
      assert_same(fn(end_state, end_params), fn(full_state, full_params))
    for key in ('n_averaged', 'step', 'batch', 'epoch', 'pending'):
      assert int(getattr(end_state, key)) == int(getattr(full_state, key)), key
    assert jaxsched.current_lr(end_state) == jaxsched.current_lr(full_state)
  assert int(full_state.n_averaged) >= 2


@pytest.mark.parametrize('raw', [False, True], ids=['live', 'restored without a target'])
def test_averaging_turned_off_is_dropped_with_a_note_and_training_goes_on(tmp_path, raw):
  params, grads = problem({'w': (3, 2), 'recurrent': (2,)}, steps=BATCHES * EPOCHS, seed=5)
  config = {**AVERAGED, **AVERAGES['ema']}
  with x64('float64'):
    params = jax.tree.map(jnp.asarray, params)
    grads = [jax.tree.map(jnp.asarray, g) for g in grads]
    tx = jaxsched.build(config, params, batches_per_epoch=BATCHES)
    full_params, _ = run(config, params, tx.init(params), grads)
    mid_params, mid_state = run(config, params, tx.init(params), grads[:10])  # the end of epoch 1
    n = int(mid_state.n_averaged)
    fresh = jaxsched.build(AVERAGED, params, batches_per_epoch=BATCHES).init(mid_params)
    with pytest.warns(jaxsched.ConfigWarning, match=f'weight average \\(ema or swa, {n} update\\(s\\)\\) is dropped'):
      state = jaxsched.carry_over(restored(tmp_path, mid_state, raw), fresh)
    end_params, _ = run(AVERAGED, mid_params, state, grads[10:])
  assert_same(end_params, full_params)  # the weights train as they did with ema on (ema only reads them)


def lightning_resumed(tmp_path, callback, config, make_scheduler, first, init, coefs):
  """Lightning's weights after ``first`` epochs without ``callback``, a checkpoint, and the
  rest of the run resumed from it with ``callback`` added."""
  from test_averaging import KnownGradients

  def model():
    return KnownGradients(init, coefs, BATCHES, config['learning_rate'], make_scheduler, 'epoch')

  loop = {'accumulate_grad_batches': config['accumulate_grad_batches'], 'limit_val_batches': 1}
  trainer = lightning_fit(model(), max_epochs=first, **loop)
  trainer.save_checkpoint(tmp_path / 'first.ckpt')
  resumed = model()
  lightning_fit(resumed, ckpt_path=str(tmp_path / 'first.ckpt'), max_epochs=EPOCHS, callbacks=[callback], **loop)
  return resumed.w.detach().numpy()


TURNED_ON = {
  # updates after the optimizer steps that are multiples of 4 (of the run: 8, not the resumed run's 0 and 4)
  # and at the end of epoch 3 (of the run)
  'ema': (
    {'ema': {'decay': 0.7, 'update_every_n_steps': 4, 'update_starting_at_epoch': 3}},
    lambda: EMAWeightAveraging(decay=0.7, update_every_n_steps=4, update_starting_at_epoch=3),
  ),
  # SWA from epoch 3 (1-based), after the resume at the start of epoch 2 (0-based)
  'swa': (
    {'swa': {'swa_lrs': 0.02, 'swa_epoch_start': 3, 'annealing_epochs': 2}},
    lambda: StochasticWeightAveraging(swa_lrs=0.02, swa_epoch_start=3, annealing_epochs=2),
  ),
}


@pytest.mark.parametrize('average', TURNED_ON)
def test_averaging_turned_on_at_resume_starts_as_lightnings_callback(tmp_path, average):
  extra, callback = TURNED_ON[average]
  saved_config = {**AVERAGED, 'recurrent_learning_rate_multiplier': 1.0}
  config = {**saved_config, **extra}
  rng = np.random.default_rng(6)
  init, coefs = rng.normal(size=4), rng.normal(size=(EPOCHS * BATCHES, 4))
  first = 2
  expected = lightning_resumed(
    tmp_path, callback(), config, lambda o: torch.optim.lr_scheduler.StepLR(o, 1, 0.8), first, init, coefs
  )
  with x64('float64'):
    grads = [{'w': jnp.asarray(c)} for c in coefs]
    params = {'w': jnp.asarray(init)}
    tx = jaxsched.build(saved_config, params, batches_per_epoch=BATCHES)
    mid_params, saved = run(saved_config, params, tx.init(params), grads[: first * BATCHES])
    fresh = jaxsched.build(config, params, batches_per_epoch=BATCHES, max_epochs=EPOCHS).init(mid_params)
    state = jaxsched.carry_over(saved, fresh)
    assert (int(state.step), int(state.epoch), int(state.batch), int(state.n_averaged)) == (6, 2, 0, 0)
    end_params, end_state = run(config, mid_params, state, grads[first * BATCHES :])
    actual = np.asarray(jaxsched.final_params(end_state, end_params)['w'])
  assert int(end_state.n_averaged) >= 1
  assert max_rel_diff({'w': actual}, {'w': expected}) < 1e-9


def test_swa_turned_on_after_its_start_says_where_the_lr_differs():
  config = {**AVERAGED, **AVERAGES['swa']}
  params, grads = problem({'w': (3, 2), 'recurrent': (2,)}, steps=2 * BATCHES, seed=7)
  with x64('float64'):
    params = jax.tree.map(jnp.asarray, params)
    mid_params, saved = run(
      AVERAGED,
      params,
      jaxsched.build(AVERAGED, params, batches_per_epoch=BATCHES).init(params),
      [jax.tree.map(jnp.asarray, g) for g in grads],
    )
    fresh = jaxsched.build(config, params, batches_per_epoch=BATCHES, max_epochs=EPOCHS).init(mid_params)
    with pytest.warns(jaxsched.ConfigWarning, match='swa is turned on at epoch 2 .* after its first epoch 1'):
      state = jaxsched.carry_over(saved, fresh)
  assert (int(state.step), int(state.epoch), int(state.n_averaged)) == (6, 2, 0)


# ------------------------------------------------------------------------------------- Orbax's metadata

METADATA_CONFIGS = {
  'ema, accumulation, clipping': {**AVERAGED, **AVERAGES['ema'], 'gradient_clip_val': 1.0},
  'swa': {**AVERAGED, **AVERAGES['swa']},
  'plateau, skip_nonfinite': {
    **BASE,
    'scheduler': 'ReduceLROnPlateau',
    'scheduler_kwargs': {'patience': 1},
    'scheduler_configs': {'interval': 'epoch'},
    'skip_nonfinite': True,
  },
  'schedulers list with a plateau': {
    **{k: v for k, v in BASE.items() if not k.startswith('scheduler')},
    'schedulers': [
      {'scheduler': 'StepLR', 'scheduler_kwargs': {'step_size': 2}},
      {'scheduler': 'ReduceLROnPlateau', 'scheduler_configs': {'monitor': 'val_loss'}},
    ],
  },
}


@pytest.mark.parametrize('name', METADATA_CONFIGS)
def test_orbax_item_metadata_of_an_unchanged_config_passes(tmp_path, name):
  import orbax.checkpoint as ocp

  config = METADATA_CONFIGS[name]
  tx = jaxsched.build(config, PARAMS, batches_per_epoch=BATCHES, max_epochs=EPOCHS)
  state, params = tx.init(PARAMS), PARAMS
  for i in range(3):
    updates, state = tx.update(jax.tree.map(lambda p: jnp.sin(p * (i + 1)), params), state, params)  # noqa: B023
    params = optax.apply_updates(params, updates)
  state = jaxsched.report(state, {'train_loss': 1.0, 'val_loss': 1.0})
  manager = ocp.CheckpointManager(tmp_path / 'run')
  manager.save(3, args=ocp.args.StandardSave({'params': params, 'opt_state': state}))
  manager.wait_until_finished()
  metadata = manager.item_metadata(3)
  jaxsched.check_compatible({'params': PARAMS, 'opt_state': tx.init(PARAMS)}, metadata)
  # a changed config is still told apart, by structure, shape and dtype
  changed = {**config, 'gradient_clip_val': None if config.get('gradient_clip_val') else 0.5}
  fresh = jaxsched.build(changed, PARAMS, batches_per_epoch=BATCHES, max_epochs=EPOCHS).init(PARAMS)
  assert_config_error(
    lambda: jaxsched.check_compatible({'params': PARAMS, 'opt_state': fresh}, metadata), ['jaxsched.carry_over']
  )
  with jax.enable_x64(True):  # float64 parameters: every shape matches, no dtype does
    wide = jax.tree.map(lambda p: p.astype(jnp.float64), PARAMS)
    assert_config_error(
      lambda: jaxsched.check_compatible({'params': wide, 'opt_state': tx.init(wide)}, metadata),
      ["saved shape/dtype ((2, 3), 'float32'), this config ((2, 3), 'float64')"],
    )
  # several items (args.Composite): the item's entry
  items = ocp.CheckpointManager(tmp_path / 'items', item_names=('state', 'meta'))
  items.save(
    3, args=ocp.args.Composite(state=ocp.args.StandardSave({'opt_state': state}), meta=ocp.args.JsonSave({'a': 1}))
  )
  items.wait_until_finished()
  jaxsched.check_compatible({'opt_state': tx.init(PARAMS)}, items.item_metadata(3)['state'])


# ---------------------------------------------------------------------------- naming the change at the top


def test_another_optimizer_is_named_before_the_state_fields():
  saved_config = {**BASE, 'optimizer_kwargs': {'amsgrad': True}}
  new = {**BASE, 'optimizer': 'Adam'}
  _, _, saved = trained(saved_config)
  fresh = jaxsched.build(new, PARAMS).init(PARAMS)
  with pytest.raises(jaxsched.ConfigError) as e:
    jaxsched.check_compatible(fresh, saved, config=new, saved_config=saved_config)
  message = str(e.value)
  top = message.index("the config changed: optimizer 'AdamW' -> 'Adam'")
  assert top < message.index('In the state') < message.index('nu_max'), message
  # without the configs, the state still says the optimizer differs before naming its fields
  with pytest.raises(jaxsched.ConfigError) as e:
    jaxsched.check_compatible(fresh, saved)
  message = str(e.value)
  top = message.index(
    "the optimizer or its keywords differ: the saved state's optimizer has hyperparameters b1, b2, eps, "
    "learning_rate, weight_decay, this config's b1, b2, eps, learning_rate"
  )
  assert top < message.index('nu_max'), message
