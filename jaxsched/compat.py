"""Does a saved optimizer state fit the optimizer a config builds now, and if not, why?

Restoring a checkpoint saved under another config usually fails deep inside a
tree-structure comparison. :func:`check_compatible` says instead which config
change made the state differ (given both configs) and which part of the state
differs, and what the user can do. :func:`carry_over` resumes across the changes
that only wrap the optimizer (clipping added or removed, ``skip_nonfinite``,
``accumulate_grad_batches``, ``ema``/``swa`` on, off or kept): the optimizer's own
state (moments, step counts, the schedules' and plateaus' positions) and the weight
average are carried into the new config's state.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping

import jax
import numpy as np
import optax

from jaxsched import state_tree
from jaxsched._checks import shown
from jaxsched._errors import ConfigError, ConfigWarning
from jaxsched.accumulate import AccumulateState
from jaxsched.averaging import COUNTS, AverageState
from jaxsched.stepping import optimizer_steps_per_epoch

_ACCUMULATE_FIELDS = frozenset({'batch', 'kept', 'skipped', 'inner_state'})
_AVERAGE_FIELDS = frozenset({'params', 'counts', 'inner_state'})


def _children(node: Any) -> dict[str, Any] | None:
  """A state node's children by name (NamedTuple fields, dict keys, list indices), or
  None for a leaf; works on live states and on restored or metadata trees alike (Orbax's
  ``item_metadata``, a ``TreeMetadata``, is read through its ``tree``)."""
  if isinstance(node, tuple) and hasattr(node, '_fields'):
    return {f: getattr(node, f) for f in node._fields}
  if getattr(type(node), '_flax_dataclass', False):  # flax struct states (PlateauState, AverageState)
    return {f.name: getattr(node, f.name) for f in dataclasses.fields(node) if f.metadata.get('pytree_node', True)}
  if isinstance(node, Mapping):  # dicts, and Orbax's Composite of items
    return {str(k): v for k, v in node.items()}
  if isinstance(node, (list, tuple)):
    return {str(i): v for i, v in enumerate(node)}
  if hasattr(node, 'tree') and hasattr(node, 'custom_metadata'):  # Orbax's TreeMetadata
    return _children(node.tree)
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
  weight averaging (``AverageState.inner_state``), accumulation
  (``AccumulateState.inner_state``) and clipping (a chain whose first, stateless
  element is the clip)."""
  wrappers = []
  while True:
    children = _children(tree)
    if children is not None and _AVERAGE_FIELDS <= set(children):
      wrappers.append('averaging')
      tree = children['inner_state']
    elif children is not None and _ACCUMULATE_FIELDS <= set(children):
      wrappers.append('accumulation')
      tree = children['inner_state']
    elif children is not None and set(children) == {'0', '1'} and not _entries(children['0']):
      wrappers.append('clipping')
      tree = children['1']
    else:
      return tree, wrappers


def _names_after(entries: dict[str, tuple], key: str) -> set[str]:
  """The names that follow ``key`` in the paths: the groups after 'inner_states', the
  optimizer's hyperparameters after 'hyperparams'."""
  out: set[str] = set()
  for path in entries:
    parts = path.split('/')
    out.update(parts[i + 1] for i, p in enumerate(parts[:-1]) if p == key)
  return out


def _listed(paths: list[str]) -> str:
  return ', '.join(paths[:5]) + (f' ... ({len(paths)} in all)' if len(paths) > 5 else '')


def mismatch(expected: Any, saved: Any) -> str | None:
  """What differs between two optimizer states (arrays, or shape/dtype metadata such as
  Orbax's), or None: the optimizer (its hyperparameters) and the groups first, then the
  entries of the state."""
  want, got = _entries(expected), _entries(saved)
  if want == got:
    return None
  lines = []
  hw, hg = _names_after(want, 'hyperparams'), _names_after(got, 'hyperparams')
  if hw != hg:
    lines.append(
      f"the optimizer or its keywords differ: the saved state's optimizer has hyperparameters "
      f"{', '.join(sorted(hg)) or 'none'}, this config's {', '.join(sorted(hw)) or 'none'}"
    )
  gw, gg = _names_after(want, 'inner_states'), _names_after(got, 'inner_states')
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
    saved: a restored state, or its metadata tree, whose leaves have shape and
      dtype: Orbax's ``CheckpointManager.item_metadata(step)`` (a ``TreeMetadata``,
      or with several items the item's entry), compared by structure, shape and dtype.
    config: the current config (anything :func:`jaxsched.load_config` takes).
    saved_config: the config the state was saved under (anything
      :func:`jaxsched.load_config` takes); given with ``config``, the message
      starts with the config changes ("optimizer 'AdamW' -> 'Adam'"), then what
      differs in the state.
  """
  diff = mismatch(expected, saved)
  if diff is None:
    return
  changes = config_changes(saved_config, config) if config is not None and saved_config is not None else []
  what = f'the config changed: {"; ".join(changes)}. In the state: {diff}' if changes else diff
  want_core, got_core = _core(_opt_state(expected))[0], _core(_opt_state(saved))[0]
  if _entries(want_core) and _entries(want_core) == _entries(got_core):
    todo = (
      'Only the wrappers around the optimizer differ (clipping, accumulation, skip_nonfinite, ema or swa), so '
      'the optimizer state can be carried over: restore the saved state as it is and pass it to '
      'jaxsched.carry_over(saved, tx.init(params)).'
    )
  else:
    todo = (
      'Resume with a fresh optimizer state (tx.init(params)) and the saved parameters only, or revert the '
      'config change.'
    )
  raise ConfigError(f"the saved optimizer state does not fit this config's optimizer: {what}. {todo}")


def carry_over(saved: Any, fresh: Any) -> Any:
  """``fresh`` with the optimizer's own state, and the weight average, taken from ``saved``.

  For resuming after a config change that only wraps the optimizer: clipping added
  or removed, ``skip_nonfinite`` turned on or off, ``accumulate_grad_batches``
  changed, ``ema``/``swa`` turned on or off. The moments, the step counts and the
  schedules' and plateaus' positions come from ``saved``. Where both states
  accumulate, the position in the epoch and the skipped-batch count are carried too;
  pending accumulated gradients are dropped, with a ConfigWarning. Where only
  ``fresh`` accumulates, its epoch starts at the first batch (unless ``saved``
  averages, which knows the position): carry over at an epoch's end.

  Weight averaging (``ema``/``swa``, :mod:`jaxsched.averaging`):

  * on in both: the average, ``n_averaged`` and the loop's position are carried,
    so the run goes on as if uninterrupted;
  * turned on: the average starts as Lightning's callback starts when it is added
    to a resumed run (``WeightAveraging.setup`` builds its ``AveragedModel`` from the
    restored weights, ``StochasticWeightAveraging`` from ``n_averaged = 0``): from
    the parameters given to ``tx.init`` with ``n_averaged = 0``, so the first update
    copies the weights of that moment. The step (Lightning's ``global_step``, which
    ``update_every_n_steps`` and ``update_starting_at_step`` read) is the saved
    optimizer's step count, and the epoch follows from it and the new config's
    ``batches_per_epoch`` and ``accumulate_grad_batches``;
  * turned off: the average is dropped with a ConfigWarning; training goes on from
    the parameters (not the average).

  Args:
    saved: the restored optimizer state, as saved or as a checkpoint library
      restores it without a target (nested dicts and lists).
    fresh: ``tx.init(params)`` of the current config, with the restored parameters.

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
  saved_average = _wrapper(saved, _AVERAGE_FIELDS)
  saved_loop = _wrapper(saved, _ACCUMULATE_FIELDS)
  if saved_loop is not None and (pending := int(np.asarray(saved_loop['kept']))):
    warnings.warn(
      f'carry_over: the saved state was {pending} micro-batch(es) into an accumulation group; '
      f'their summed gradients are dropped.',
      ConfigWarning,
      stacklevel=2,
    )
  saved_counts = None if saved_average is None else dict(zip(COUNTS, np.asarray(saved_average['counts']).tolist()))
  if saved_counts is not None and not isinstance(fresh, AverageState):
    warnings.warn(
      f'carry_over: the saved weight average (ema or swa, {saved_counts["n_averaged"]} '
      f'update(s)) is dropped, as this config averages no weights; training goes on from the parameters, '
      f'not the average.',
      ConfigWarning,
      stacklevel=2,
    )
  state = _replace_core(fresh, _like(saved_core, fresh_core), len(fresh_wrappers))
  position = (saved_loop or saved_counts or {}).get('batch')
  if isinstance(state, AverageState):
    if saved_average is not None:
      kept = _AVERAGE_FIELDS - {'inner_state'}
      state = state.replace(**{k: _like(saved_average[k], getattr(state, k)) for k in kept})
    else:
      state, position = _started(state, position)
  loop = state_tree.find_one(state, AccumulateState)
  if loop is not None:
    carried = {'batch': position} if position is not None else {}
    if saved_loop is not None:
      carried['skipped'] = saved_loop['skipped']
    loop = loop._replace(**{k: _like(v, getattr(loop, k)) for k, v in carried.items()})
    state = state_tree.replace(state, AccumulateState, lambda _: loop)
  return state


def _wrapper(tree: Any, fields: frozenset[str]) -> dict[str, Any] | None:
  """The children of the wrapper of ``tree`` with ``fields`` (an AverageState's or an
  AccumulateState's, live or restored), or None."""
  children = _children(tree)
  while children is not None and (_AVERAGE_FIELDS <= set(children) or _ACCUMULATE_FIELDS <= set(children)):
    if fields <= set(children):
      return children
    children = _children(children['inner_state'])
  return None


def _like(value: Any, like: Any) -> Any:
  """``value`` (arrays, or nested dicts and lists restored without a target) in ``like``'s
  structure, each leaf with its counterpart's dtype and sharding."""
  entries = dict(_flat(value))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
  return jax.tree_util.tree_unflatten(
    treedef,
    [
      jax.device_put(
        np.asarray(entries[jax.tree_util.keystr(path, simple=True, separator='/')], leaf.dtype),
        getattr(leaf, 'sharding', None),
      )
      for path, leaf in leaves
    ],
  )


def _started(state: AverageState, position: Any) -> tuple[AverageState, Any]:
  """A new average on a resumed run, Lightning's way (see :func:`carry_over`): ``n_averaged`` 0,
  the step the optimizer's step count, the epoch and micro-batch position from it.

  Args:
    state: the new config's state, with the saved optimizer state carried in.
    position: the saved micro-batch position within the epoch, or None where the
      saved state does not keep one (it did not accumulate: one optimizer step per batch).

  Returns:
    The state, and the micro-batch position within the epoch (None where unknown).
  """
  rules = state.rules
  step = int(np.asarray(state_tree.find_one(state.inner_state, optax.InjectStatefulHyperparamsState).count))
  epoch = 0
  if rules.batches_per_epoch is not None:
    if position is None:  # the saved run stepped the optimizer on every micro-batch
      epoch, position = divmod(step, rules.batches_per_epoch)
    else:
      epoch = step // optimizer_steps_per_epoch(rules.batches_per_epoch, rules.accumulate_grad_batches)
  if rules.start_epochs is not None:
    first = rules.start_epochs[0]
    if epoch > first or (epoch == first and position is not None and int(np.asarray(position)) > 0):
      warnings.warn(
        f'carry_over: swa is turned on at epoch {epoch} (0-based), after its first epoch {first}. The '
        f'average starts at the next epoch with a copy of the weights, as Lightning starts it (which warns '
        f'"SWA is initializing after swa_start without any checkpoint data"), but the LR follows SWALR as if it '
        f'had taken over at epoch {first}, where Lightning starts SWALR at the epoch it resumes in.',
        ConfigWarning,
        stacklevel=3,
      )
  moved = {'step': step, 'epoch': epoch, **({'batch': position} if position is not None else {})}
  return state.with_counts(**moved), position


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
  if isinstance(tree, AverageState):
    return tree.replace(inner_state=_replace_core(tree.inner_state, core, depth - 1))
  if isinstance(tree, AccumulateState):
    return tree._replace(inner_state=_replace_core(tree.inner_state, core, depth - 1))
  return type(tree)((tree[0], _replace_core(tree[1], core, depth - 1)))
