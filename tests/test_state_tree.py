"""jaxsched.state_tree: finding and replacing the nodes of an optimizer state by kind (no torch: the fast lane)."""

import jax.numpy as jnp
import optax
from jax.tree_util import SequenceKey

import jaxsched
from jaxsched.plateau import PlateauState
from jaxsched.state_tree import find, find_one, find_with_path, replace


def state():
  params = {'a': jnp.ones(2), 'b': {'c': jnp.zeros(3)}}
  tx = optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(0.1), optax.scale_by_adam(b1=0.5))
  return tx.init(params)


def test_find_returns_every_node_of_a_kind_in_order_with_its_path():
  s = state()
  found = find(s, optax.ScaleByAdamState)
  assert len(found) == 2 and found[0] is s[0] and found[1] is s[2]
  assert [path for path, _ in find_with_path(s, optax.ScaleByAdamState)] == [(SequenceKey(0),), (SequenceKey(2),)]
  assert find_one(s, PlateauState, 'none') == 'none'
  # a predicate works as a kind; the nodes inside a found node are not looked into
  assert find(s, lambda node: isinstance(node, tuple) and len(node) == 3) == [s]


def test_replace_changes_only_the_nodes_of_the_kind():
  s = state()
  out = replace(s, optax.ScaleByAdamState, lambda node: node._replace(count=node.count + 5))
  assert [int(node.count) for node in find(out, optax.ScaleByAdamState)] == [5, 5]
  assert jnp.array_equal(out[0].mu['a'], s[0].mu['a'])


def test_a_built_states_plateau_is_found():
  tx = jaxsched.build({'optimizer': 'SGD', 'scheduler': 'ReduceLROnPlateau'}, {'w': jnp.ones(2)}, batches_per_epoch=2)
  s = tx.init({'w': jnp.ones(2)})
  (plateau,) = find(s, PlateauState)
  assert find_one(s, PlateauState) is plateau
