"""Does a saved optimizer state fit the optimizer a config builds now?

Restoring a checkpoint saved under another config usually fails deep inside a
tree-structure comparison. :func:`check_compatible` says instead which part of
the optimizer differs: a group that is new or gone, a state entry that one
optimizer keeps and the other does not, or a shape or dtype that changed.
"""

from __future__ import annotations

from typing import Any

import jax

from jaxsched._errors import ConfigError


def _entries(tree: Any) -> dict[str, tuple]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path, simple=True, separator='/'): (tuple(getattr(leaf, 'shape', ())),
                                                                   str(getattr(leaf, 'dtype', type(leaf).__name__)))
          for path, leaf in leaves}


def _groups(entries: dict[str, tuple]) -> set[str]:
  """Group names appear as the keys after 'inner_states/'."""
  out = set()
  for path in entries:
    parts = path.split('/')
    out.update(parts[i + 1] for i, p in enumerate(parts[:-1]) if p == 'inner_states')
  return out


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
    lines.append(f'only in the saved state: {", ".join(only_saved[:5])}' + (' ...' if len(only_saved) > 5 else ''))
  if only_here:
    lines.append(f'only in this config\'s state: {", ".join(only_here[:5])}' + (' ...' if len(only_here) > 5 else ''))
  for path in want:
    if path in got and want[path] != got[path]:
      lines.append(f'{path}: saved shape/dtype {got[path]}, this config {want[path]}')
      break
  return '; '.join(lines)


def check_compatible(expected: Any, saved: Any) -> None:
  """Raises ConfigError, naming what differs, if ``saved`` does not fit ``expected``.

  Args:
    expected: the state the current config builds (``tx.init(params)``).
    saved: a restored state, or its metadata tree (e.g. Orbax's
      ``CheckpointManager.item_metadata``), whose leaves have shape and dtype.
  """
  diff = mismatch(expected, saved)
  if diff is not None:
    raise ConfigError(f'the saved optimizer state was made by another config: {diff}.')
