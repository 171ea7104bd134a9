"""state_tree: finding and replacing nodes of an optimizer state by class or predicate."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsched import state_tree

PARAMS = {'a': jnp.ones(2), 'b': jnp.ones(3), 'c': jnp.ones(1)}


def labels(params):
  return {'a': 'adam', 'b': 'inner', 'c': 'inner'}


def inner_labels(params):
  return {'a': 'sgd', 'b': 'sgd', 'c': 'adam'}


@functools.cache
def nested_state():
  """chain(clip, multi_transform(adam with an injected LR | multi_transform(sgd | adam)))."""
  tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    optax.multi_transform(
      {
        'adam': optax.inject_hyperparams(optax.adam)(learning_rate=0.1),
        'inner': optax.multi_transform({'sgd': optax.sgd(0.1, momentum=0.9), 'adam': optax.adam(0.2)}, inner_labels),
      },
      labels,
    ),
  )
  return jax.jit(lambda p: tx.update(p, tx.init(p), p)[1])(PARAMS)  # counts at 1


def test_find_by_class_in_tree_order_through_nested_multi_transform():
  state = nested_state()
  found = state_tree.find_with_path(state, optax.ScaleByAdamState)
  paths = [jax.tree_util.keystr(path) for path, _ in found]
  assert paths == [
    "[1].inner_states['adam'].inner_state.inner_state[0]",
    "[1].inner_states['inner'].inner_state.inner_states['adam'].inner_state[0]",
  ]
  assert [int(n.count) for _, n in found] == [1, 1]
  assert state_tree.find(state, optax.ScaleByAdamState) == [n for _, n in found]
  kinds = (optax.ScaleByAdamState, optax.TraceState)
  assert [type(n) for n in state_tree.find(state, kinds)] == [
    optax.ScaleByAdamState,
    optax.ScaleByAdamState,
    optax.TraceState,
  ]


def test_find_one_and_default():
  state = nested_state()
  inject = state_tree.find_one(state, optax.InjectStatefulHyperparamsState)
  assert float(inject.hyperparams['learning_rate']) == np.float32(0.1)
  assert state_tree.find_one(state, optax.ScaleByScheduleState) is None
  assert state_tree.find_one(state, optax.ScaleByScheduleState, default='none') == 'none'


def test_predicate_kind():
  state = nested_state()
  of_c = lambda n: isinstance(n, optax.ScaleByAdamState) and not isinstance(n.mu['c'], optax.MaskedNode)  # noqa: E731
  found = state_tree.find(state, of_c)
  assert found == [state_tree.find(state, optax.ScaleByAdamState)[1]]


def test_found_node_is_not_looked_into():
  state = nested_state()
  outer = state_tree.find(state, optax.MultiTransformState)
  assert len(outer) == 1 and set(outer[0].inner_states) == {'adam', 'inner'}
  seen = []
  state_tree.replace(state, optax.MultiTransformState, lambda n: seen.append(n) or n)
  assert seen == outer


def test_replace_changes_only_the_found_nodes():
  state = nested_state()
  later = lambda n: n._replace(count=n.count + 10)  # noqa: E731
  new = jax.jit(lambda s: state_tree.replace(s, optax.ScaleByAdamState, later))(state)
  assert jax.tree.structure(new) == jax.tree.structure(state)
  assert [int(n.count) for n in state_tree.find(new, optax.ScaleByAdamState)] == [11, 11]
  kept = lambda s: state_tree.replace(s, optax.ScaleByAdamState, lambda n: n._replace(count=None))  # noqa: E731
  jax.tree.map(np.testing.assert_array_equal, kept(new), kept(state))


def test_replace_with_another_tree_gets_its_nodes_at_the_same_place():
  state = nested_state()
  other = state_tree.replace(state, optax.ScaleByAdamState, lambda n: n._replace(count=n.count + 5))
  merged = state_tree.replace(
    state, optax.ScaleByAdamState, lambda mine, theirs: mine._replace(count=mine.count * 100 + theirs.count), other
  )
  assert [int(n.count) for n in state_tree.find(merged, optax.ScaleByAdamState)] == [106, 106]


def test_is_array():
  assert state_tree.is_array(jnp.ones(2)) and state_tree.is_array(1.0)
  assert not state_tree.is_array(None)
  assert not state_tree.is_array(optax.EmptyState())
  assert not state_tree.is_array((jnp.ones(1),))
  assert not state_tree.is_array(optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32)))
