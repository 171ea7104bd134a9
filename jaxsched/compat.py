"""Does a saved optimizer state fit the optimizer a config builds now, and if not, why?

Restoring a checkpoint saved under another config usually fails deep inside a
tree-structure comparison. :func:`check_compatible` says instead which config
change made the state differ (given both configs) and which part of the state
differs, and what the user can do. :func:`carry_over` resumes across the changes
that only wrap the optimizer (clipping added or removed, ``skip_nonfinite``,
``accumulate_grad_batches``): the optimizer's own state (moments, step counts,
the schedules' and plateaus' positions) is carried into the new config's state.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import jax
import numpy as np

from jaxsched._checks import shown
from jaxsched._errors import ConfigError, ConfigWarning

_ACCUMULATE_FIELDS = frozenset({'batch', 'kept', 'skipped', 'inner_state'})


def _children(node: Any) -> dict[str, Any] | None:
  """A state node's children by name (NamedTuple fields, dict keys, list indices), or
  None for a leaf; works on live states and on restored or metadata trees alike."""
  if isinstance(node, tuple) and hasattr(node, '_fields'):
    return {f: getattr(node, f) for f in node._fields}
  if getattr(type(node), '_flax_dataclass', False):  # flax struct states (PlateauState)
    return {f.name: getattr(node, f.name) for f in dataclasses.fields(node) if f.metadata.get('pytree_node', True)}
  if isinstance(node, dict):
    return {str(k): v for k, v in node.items()}
  if isinstance(node, (list, tuple)):
    return {str(i): v for i, v in enumerate(node)}
  return None


def _entries(tree: Any, prefix: str = '') -> dict[str, tuple]:
  """'/'-joined path -> (shape, dtype) of every leaf."""
  children = _children(tree)
  if children is None:
    if tree is None:
      return {}
    return {prefix: (tuple(getattr(tree, 'shape', ())), str(getattr(tree, 'dtype', type(tree).__name__)))}
  out: dict[str, tuple] = {}
  for name, child in children.items():
    out.update(_entries(child, f'{prefix}/{name}' if prefix else name))
  return out


def _core(tree: Any) -> tuple[Any, list[str]]:
  """The optimizer's own state inside build()'s wrappers, and the wrappers found:
  accumulation (``AccumulateState.inner_state``) and clipping (a chain whose first,
  stateless element is the clip)."""
  wrappers = []
  while True:
    children = _children(tree)
    if children is not None and _ACCUMULATE_FIELDS <= set(children):
      wrappers.append('accumulation')
      tree = children['inner_state']
    elif children is not None and set(children) == {'0', '1'} and not _entries(children['0']):
      wrappers.append('clipping')
      tree = children['1']
    else:
      return tree, wrappers


def _groups(entries: dict[str, tuple]) -> set[str]:
  """Group names appear as the keys after 'inner_states/'."""
  out: set[str] = set()
  for path in entries:
    parts = path.split('/')
    out.update(parts[i + 1] for i, p in enumerate(parts[:-1]) if p == 'inner_states')
  return out


def _listed(paths: list[str]) -> str:
  return ', '.join(paths[:5]) + (f' ... ({len(paths)} in all)' if len(paths) > 5 else '')


def mismatch(expected: Any, saved: Any) -> str | None:
  """What differs between two optimizer states (arrays or shape/dtype metadata), or None."""
  want, got = _entries(expected), _entries(saved)
  if want == got:
    return None
  lines = []
  gw, gg = _groups(want), _groups(got)
  if gw != gg:
    lines.append(f'parameter groups: saved {sorted(gg)}, this config {sorted(gw)}')
  only_saved = [p for p in got if p not in want]
  only_here = [p for p in want if p not in got]
  if only_saved:
    lines.append(f'only in the saved state: {_listed(only_saved)}')
  if only_here:
    lines.append(f"only in this config's state: {_listed(only_here)}")
  for path in want:
    if path in got and want[path] != got[path]:
      lines.append(f'{path}: saved shape/dtype {got[path]}, this config {want[path]}')
      break
  return '; '.join(lines)


def config_changes(saved_config: Any, config: Any) -> list[str]:
  """The keys whose values differ between two configs, as 'key old -> new' lines."""
  from jaxsched.build import load_config

  old = load_config(saved_config).to_dict()
  new = load_config(config).to_dict()
  out = []
  for key in {**old, **new}:
    a, b = old.get(key), new.get(key)
    if a == b:
      continue
    if isinstance(a, dict) and isinstance(b, dict):
      for sub in sorted(set(a) | set(b)):
        if a.get(sub) != b.get(sub):
          out.append(f'{key}.{sub} {shown(a.get(sub))} -> {shown(b.get(sub))}')
    else:
      out.append(f'{key} {shown(a)} -> {shown(b)}')
  return out


def _opt_state(tree: Any) -> Any:
  """The optimizer state in a checkpoint tree such as ``{'params': ..., 'opt_state': ...}``."""
  children = _children(tree)
  return children['opt_state'] if children is not None and 'opt_state' in children else tree


def check_compatible(expected: Any, saved: Any, *, config: Any = None, saved_config: Any = None) -> None:
  """Raises ConfigError, naming what differs and what to do, if ``saved`` does not fit ``expected``.

  Args:
    expected: the state the current config builds (``tx.init(params)``), or a
      tree holding it (``{'params': ..., 'opt_state': ...}``).
    saved: a restored state, or its metadata tree (e.g. Orbax's
      ``CheckpointManager.item_metadata``), whose leaves have shape and dtype.
    config: the current config (anything :func:`jaxsched.load_config` takes).
    saved_config: the config the state was saved under; given with ``config``,
      the message names the config changes ("optimizer 'AdamW' -> 'SGD'").
  """
  diff = mismatch(expected, saved)
  if diff is None:
    return
  changes = config_changes(saved_config, config) if config is not None and saved_config is not None else []
  because = f' The config changed: {"; ".join(changes)}.' if changes else ''
  want_core, got_core = _core(_opt_state(expected))[0], _core(_opt_state(saved))[0]
  if _entries(want_core) and _entries(want_core) == _entries(got_core):
    todo = (
      'Only the wrappers around the optimizer differ (clipping, accumulation or skip_nonfinite), so the '
      'optimizer state can be carried over: restore the saved state as it is and pass it to '
      'jaxsched.carry_over(saved, tx.init(params)).'
    )
  else:
    todo = (
      'Resume with a fresh optimizer state (tx.init(params)) and the saved parameters only, or revert the '
      'config change.'
    )
  raise ConfigError(f"the saved optimizer state does not fit this config's optimizer: {diff}.{because} {todo}")


def carry_over(saved: Any, fresh: Any) -> Any:
  """``fresh`` with the optimizer's own state taken from ``saved``.

  For resuming after a config change that only wraps the optimizer: clipping added
  or removed, ``skip_nonfinite`` turned on or off, ``accumulate_grad_batches``
  changed. The moments, the step counts and the schedules' and plateaus'
  positions come from ``saved``. Where both states accumulate, the position in
  the epoch and the skipped-batch count are carried too; pending accumulated
  gradients are dropped, with a ConfigWarning. Where only ``fresh`` accumulates,
  its epoch starts at the first batch: carry over at an epoch's end.

  Args:
    saved: the restored optimizer state, as saved or as a checkpoint library
      restores it without a target (nested dicts and lists).
    fresh: ``tx.init(params)`` of the current config.

  Returns:
    A state with ``fresh``'s structure and types.

  Raises:
    ConfigError: the optimizers themselves differ (another optimizer, other
      groups, other shapes), naming the difference.
  """
  fresh_core, fresh_wrappers = _core(fresh)
  saved_core, _ = _core(saved)
  diff = mismatch(fresh_core, saved_core)
  if diff is not None:
    raise ConfigError(
      f'carry_over: the optimizer itself differs, not only its wrappers: {diff}. Resume with a '
      f'fresh optimizer state, or revert the config change.'
    )
  children = _children(saved)
  saved_loop = children if children is not None and _ACCUMULATE_FIELDS <= set(children) else None
  if saved_loop is not None and (pending := int(np.asarray(saved_loop['kept']))):
    warnings.warn(
      f'carry_over: the saved state was {pending} micro-batch(es) into an accumulation group; '
      f'their summed gradients are dropped.',
      ConfigWarning,
      stacklevel=2,
    )
  saved_entries = dict(_flat(saved_core))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(fresh_core)
  core = jax.tree_util.tree_unflatten(
    treedef,
    [
      jax.device_put(
        np.asarray(saved_entries[jax.tree_util.keystr(path, simple=True, separator='/')], leaf.dtype),
        getattr(leaf, 'sharding', None),
      )
      for path, leaf in leaves
    ],
  )
  state = _replace_core(fresh, core, len(fresh_wrappers))
  if saved_loop is not None and fresh_wrappers[:1] == ['accumulation']:
    state = state._replace(
      **{k: jax.device_put(np.asarray(saved_loop[k], getattr(state, k).dtype)) for k in ('batch', 'skipped')}
    )
  return state


def _flat(tree: Any, prefix: str = ''):
  children = _children(tree)
  if children is None:
    if tree is not None:
      yield prefix, tree
    return
  for name, child in children.items():
    yield from _flat(child, f'{prefix}/{name}' if prefix else name)


def _replace_core(tree: Any, core: Any, depth: int) -> Any:
  """``tree`` with the node ``depth`` wrappers down (see :func:`_core`) replaced by ``core``."""
  if depth == 0:
    return core
  if hasattr(tree, 'inner_state') and _ACCUMULATE_FIELDS <= set(getattr(tree, '_fields', ())):
    return tree._replace(inner_state=_replace_core(tree.inner_state, core, depth - 1))
  return type(tree)((tree[0], _replace_core(tree[1], core, depth - 1)))
