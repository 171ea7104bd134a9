"""Finding and replacing nodes of an optimizer state: the one walk every reader and writer uses.

A state of :func:`jaxsched.build` is a tree of Optax NamedTuples (``MultiTransformState``,
``InjectStatefulHyperparamsState``, ``ScaleByAdamState`` ...) and jaxsched's own
(``PlateauState``, ``ChainState``, ``AccumulateState``, ``AverageState``). A reader asks for the
nodes of a kind (:func:`find`, :func:`find_one`), a writer gives a function that returns the
new node (:func:`replace`), as optax's ``tree_utils.tree_get_all_with_path`` and ``tree_set``
do by name; here the kind is a class, or any predicate, and a found node is not looked into.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

Kind = type | tuple[type, ...] | Callable[[Any], bool]


def _matches(kind: Kind) -> Callable[[Any], bool]:
  if isinstance(kind, (type, tuple)):
    return lambda node: isinstance(node, kind)
  return kind


def find_with_path(state: Any, kind: Kind) -> list[tuple[tuple[Any, ...], Any]]:
  """Every node of ``state`` that is a ``kind`` (a class, a tuple of classes or a predicate),
  with its key path, in the tree's order; the nodes inside a found node are not looked at."""
  match = _matches(kind)
  leaves = jax.tree_util.tree_flatten_with_path(state, is_leaf=match)[0]
  return [(path, node) for path, node in leaves if match(node)]


def find(state: Any, kind: Kind) -> list[Any]:
  """Every node of ``state`` that is a ``kind``, in the tree's order (see :func:`find_with_path`)."""
  return [node for _, node in find_with_path(state, kind)]


def find_one(state: Any, kind: Kind, default: Any = None) -> Any:
  """The first node of ``state`` that is a ``kind``, or ``default`` where there is none."""
  found = find(state, kind)
  return found[0] if found else default


def replace(state: Any, kind: Kind, fn: Callable[..., Any], *others: Any) -> Any:
  """``state`` with every node that is a ``kind`` replaced by ``fn(node)``; the rest is kept as it is.

  With ``others``, trees of ``state``'s structure (down to its ``kind`` nodes), ``fn`` also gets
  the node at the same place in each, ``fn(node, *theirs)``, as ``jax.tree.map`` over several trees.
  """
  match = _matches(kind)
  return jax.tree.map(lambda node, *theirs: fn(node, *theirs) if match(node) else node, state, *others, is_leaf=match)


def is_array(node: Any) -> bool:
  """Whether ``node`` is an array of the tree (a leaf), not a node: ``None`` and states without
  fields (``optax.EmptyState()``) are nodes with no leaves. A ``kind`` for :func:`replace`
  where every array is to be replaced."""
  leaves = jax.tree.leaves(node)
  return len(leaves) == 1 and leaves[0] is node


def replace_with_path(state: Any, kind: Kind, fn: Callable[[tuple[Any, ...], Any], Any]) -> Any:
  """``state`` with every node that is a ``kind`` replaced by ``fn(path, node)`` (its key path, as
  :func:`find_with_path` gives it); the rest is kept as it is."""
  match = _matches(kind)
  return jax.tree_util.tree_map_with_path(
    lambda path, node: fn(path, node) if match(node) else node, state, is_leaf=match
  )
