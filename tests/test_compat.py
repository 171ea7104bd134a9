"""check_compatible names the config change behind a state that no longer fits, and
carry_over resumes across changes that only wrap the optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsched
from oracle import assert_config_error

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
