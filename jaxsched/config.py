"""Configs: DynVision's optimizer and scheduler keys, from YAML or a mapping, with overrides.

:func:`load_config` reads a YAML file or a mapping (dict, OmegaConf DictConfig),
applies snakemake-style ``KEY=VALUE`` overrides, checks every key it knows and
returns a frozen :class:`Config`. Keys it does not know (a DynVision file's
model, data and trainer settings) are ignored, unless they are a near-miss of a
known key ("optimzer"), which is a ConfigError with the suggestion.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import warnings
from typing import Any, Iterable, Mapping, Sequence

import yaml

from jaxsched import _checks, averaging
from jaxsched._errors import ConfigError, ConfigWarning, unknown
from jaxsched.optimizers import IMPLEMENTATION_FLAGS, optax_aliases, spec_of
from jaxsched.plateau import METRIC_KWARGS
from jaxsched.schedules import SCHEDULES, hf

SCHEDULER_CONFIG_KEYS: dict[str, tuple[Any, Any]] = {
  # Lightning's lr_scheduler_config keys, with the reference page's defaults.
  'interval': ('epoch', _checks.Choice(('epoch', 'step'))),
  'frequency': (1, _checks.COUNT),
  'monitor': ('train_loss', None),
  'name': (None, None),
  'strict': (True, _checks.Boolean()),
}


@dataclasses.dataclass(frozen=True)
class Config:
  """The optimizer half of a DynVision config; defaults are the reference page's.

  Attributes:
    optimizer: a torch.optim class name, or ``"optax.<alias>"``.
    learning_rate: the base LR; None takes the optimizer's default (the
      reference page's table: Adam 0.001, SGD 0.01, ...).
    optimizer_kwargs: the optimizer's torch keywords.
    optimizer_configs: DynVision's optimizer_configs (its ``monitor`` is read
      when scheduler_configs has none).
    scheduler: a torch.optim.lr_scheduler class name, LinearWarmupCosineAnnealingLR,
      or None (constant LR).
    scheduler_kwargs: the scheduler's torch keywords.
    scheduler_configs: Lightning's interval, frequency, monitor, name, strict.
    schedulers: None, or Lightning's list of schedulers for the one optimizer:
      ``{scheduler, scheduler_kwargs, scheduler_configs}`` mappings (each
      scheduler_configs complete), stepped in list order on the same LRs, each
      under its own interval and frequency (a plateau on its own monitor). With
      it, scheduler is None and scheduler_kwargs and scheduler_configs are unused;
      a one-entry list is read into those three instead.
    recurrent_learning_rate_multiplier: LR factor of params whose path matches
      ``recurrent_param_patterns``.
    recurrent_param_patterns: case-insensitive substrings of '/'-joined paths.
    lr_parameter_groups: group name (a path substring) -> {lr_factor, and
      per-group optimizer keywords}; first match in the given order wins.
    gradient_clip_val, gradient_clip_algorithm: Lightning's clipping
      (torch's clip_grad_norm_ or clip_grad_value_); None: no clipping.
    accumulate_grad_batches: micro-batches per optimizer step.
    skip_nonfinite: skip (and count) steps whose gradient holds a NaN or an
      Inf (``optax.apply_if_finite``); by default they propagate, as in torch.
    ema, swa: Lightning's EMAWeightAveraging / StochasticWeightAveraging
      arguments with every default filled in (:mod:`jaxsched.averaging`), or None.
    weight_decay_exclude_1d: timm's ``create_optimizer_v2`` ``filter_bias_and_bn``: biases, norms
      and 1-D parameters get weight_decay 0. With it, ``no_weight_decay_list`` or ``layer_decay`` set
      (:data:`TIMM_KEYS`), timm's parameter groups replace DynVision's
      (:func:`jaxsched.groups.timm_groups`). None: timm's default, True, where timm's groups are made.
    no_weight_decay_list: fnmatch patterns of parameter paths without weight decay (what timm's
      ``model.no_weight_decay()`` gives).
    layer_decay: timm's layer-wise LR decay: layer i's LR scale is ``layer_decay ** (last - i)``.
    layer_decay_min_scale: the smallest layer scale (timm's ``layer_decay_min_scale``).
    layer_decay_no_opt_scale: layers whose scale is below it are not optimized (timm's
      ``layer_decay_no_opt_scale``).
    layer_groups: the layers for ``layer_decay``, in order (timm's ``group_matcher``):
      regexes matched at the start of a parameter's path; one with a group, such as
      ``blocks_(\\d+)``, is one layer per number. None: timm's fallback by parameter order
      (``auto_group_layers``).
    layer_decay_classifier: the fallback's head: path prefixes (timm's
      ``pretrained_cfg['classifier']``).
  """

  optimizer: str = 'Adam'
  learning_rate: float | None = None
  optimizer_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  optimizer_configs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  scheduler: str | None = 'CosineAnnealingLR'
  scheduler_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  scheduler_configs: Mapping[str, Any] = dataclasses.field(
    default_factory=lambda: {k: d for k, (d, _) in SCHEDULER_CONFIG_KEYS.items()}
  )
  recurrent_learning_rate_multiplier: float = 1.0
  recurrent_param_patterns: tuple[str, ...] = ('recurren',)
  lr_parameter_groups: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  gradient_clip_val: float | None = None
  gradient_clip_algorithm: str = 'norm'
  accumulate_grad_batches: int = 1
  skip_nonfinite: bool = False
  ema: Mapping[str, Any] | None = None
  swa: Mapping[str, Any] | None = None
  schedulers: tuple[Mapping[str, Any], ...] | None = None
  weight_decay_exclude_1d: bool | None = None
  no_weight_decay_list: tuple[str, ...] = ()
  layer_decay: float | None = None
  layer_decay_min_scale: float = 0.0
  layer_decay_no_opt_scale: float | None = None
  layer_groups: tuple[str, ...] | None = None
  layer_decay_classifier: tuple[str, ...] = ()

  @property
  def monitor(self) -> str:
    """The monitored metric: scheduler_configs.monitor, or with ``schedulers`` the
    first metric-driven one's (ReduceLROnPlateau; else the first entry's)."""
    if not self.schedulers:
      return self.scheduler_configs['monitor']
    plateaus = [e for e in self.schedulers if e['scheduler'] in METRIC_KWARGS]
    return (plateaus or list(self.schedulers))[0]['scheduler_configs']['monitor']

  def to_dict(self) -> dict[str, Any]:
    """The config as plain dicts and lists: with ``schedulers``, without the
    single scheduler's keys; without it, without ``schedulers``; timm's group keys
    only where one is not at its default."""
    out = _plain(dataclasses.asdict(self), 'the config')
    for key in SINGLE_SCHEDULER_KEYS if self.schedulers else ('schedulers',):
      del out[key]
    for key in (*TIMM_KEYS, *LAYER_DECAY_KEYS):
      if getattr(self, key) == getattr(Config, key):
        del out[key]
    return out


FIELDS = tuple(f.name for f in dataclasses.fields(Config))
# The keys of one scheduler, at the top level or in an entry of schedulers.
SINGLE_SCHEDULER_KEYS = ('scheduler', 'scheduler_kwargs', 'scheduler_configs')
ALIASES = {'lr': 'learning_rate'}
# The keys that make timm's parameter groups (jaxsched.groups.timm_groups), and those read only with layer_decay.
TIMM_KEYS = ('weight_decay_exclude_1d', 'no_weight_decay_list', 'layer_decay')
LAYER_DECAY_KEYS = ('layer_decay_min_scale', 'layer_decay_no_opt_scale', 'layer_groups', 'layer_decay_classifier')


# Bounds on what a config may hold. A DynVision file needs a few levels, a few
# aliases and a few hundred values; these stop a hostile file (a "billion laughs"
# of nested aliases, a list that contains itself, 5,000 nested brackets) with a
# ConfigError before it costs time or memory: in the whole file, and again in the
# values of the keys jaxsched reads (a mapping given in Python).
MAX_DEPTH = 64
MAX_ALIASES = 1000
MAX_VALUES = 100_000
# Optimizer keywords that a file might set at the top level by mistake, where
# neither DynVision nor jaxsched reads them: a ConfigError that points to optimizer_kwargs.
TOP_LEVEL_MISTAKES = ('weight_decay', 'momentum', 'betas', 'eps', 'nesterov', 'amsgrad', 'dampening', 'lr_decay')
# Lightning Trainer arguments that a LightningCLI-style file sets under trainer:.
TRAINER_KEYS = ('gradient_clip_val', 'gradient_clip_algorithm', 'accumulate_grad_batches')


def _plain(x: Any, where: str, _depth: int = 0, _count: list[int] | None = None) -> Any:
  """Mappings to dicts and sequences to lists, recursively (OmegaConf included), within
  :data:`MAX_DEPTH` levels and :data:`MAX_VALUES` values."""
  count = [0] if _count is None else _count
  count[0] += 1
  if count[0] > MAX_VALUES:
    raise ConfigError(
      f'{where} holds more than {MAX_VALUES} values (YAML aliases that expand into copies of '
      f'copies?); a config needs far fewer.'
    )
  if _depth > MAX_DEPTH:
    raise ConfigError(f'{where} is nested more than {MAX_DEPTH} levels deep, or contains itself.')
  if isinstance(x, Mapping) or (hasattr(x, 'keys') and hasattr(x, '__getitem__') and not isinstance(x, type)):
    return {k if isinstance(k, str) else str(k): _plain(x[k], where, _depth + 1, count) for k in x.keys()}
  if isinstance(x, (list, tuple)) or (hasattr(x, '__iter__') and type(x).__name__ == 'ListConfig'):
    return [_plain(v, where, _depth + 1, count) for v in x]
  return x


def _top_level(x: Any, where: str) -> dict[Any, Any]:
  """The config's top-level mapping, one level deep: the values of keys jaxsched does
  not read are never walked (an alias bomb under ``model:`` costs nothing)."""
  if isinstance(x, Mapping) or (hasattr(x, 'keys') and hasattr(x, '__getitem__') and not isinstance(x, type)):
    return {k: x[k] for k in x.keys()}
  raise ConfigError(f'{where}: a config must be a mapping of keys to values, got {type(x).__name__}.')


class _Beyond(yaml.YAMLError):
  """A YAML file beyond this module's bounds (well-formed, but not a config)."""


def _expanded_size(root: yaml.Node) -> int:
  """How many nodes ``root`` holds once every alias is expanded (the node graph shares
  them), counted without expanding; a ``yaml.YAMLError`` if a node contains itself or
  the count passes :data:`MAX_VALUES`."""
  sizes: dict[int, int] = {}
  stack: list[tuple[yaml.Node, bool]] = [(root, False)]
  open_nodes: set[int] = set()
  while stack:
    node, done = stack.pop()
    children = (
      node.value
      if isinstance(node, yaml.SequenceNode)
      else ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
    )
    if done:
      open_nodes.discard(id(node))
      sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
      if sizes[id(node)] > MAX_VALUES:
        raise yaml.YAMLError(
          f'its aliases expand to more than {MAX_VALUES} values (copies of copies); a config needs far fewer'
        )
      continue
    if id(node) in sizes:
      continue
    if id(node) in open_nodes:
      raise _Beyond('an alias (*name) refers to a node that contains it, so the document contains itself')
    open_nodes.add(id(node))
    stack.append((node, True))
    stack.extend((c, False) for c in children if id(c) not in sizes)
  return sizes[id(root)]


class _BoundedLoader(yaml.SafeLoader):
  """yaml.SafeLoader with at most :data:`MAX_DEPTH` levels and :data:`MAX_ALIASES` aliases,
  and a document that expands to at most :data:`MAX_VALUES` values: a "billion laughs"
  anywhere in the file, even under keys jaxsched ignores, is an error before it is built."""

  def compose_document(self) -> Any:
    node = super().compose_document()
    if node is not None:
      _expanded_size(node)
    return node

  def __init__(self, stream: Any) -> None:
    super().__init__(stream)
    self._depth = 0
    self._aliases = 0

  def compose_node(self, parent: Any, index: Any) -> Any:
    if self.check_event(yaml.AliasEvent):
      self._aliases += 1
      if self._aliases > MAX_ALIASES:
        raise _Beyond(f'more than {MAX_ALIASES} aliases (*name); a config needs far fewer')
      return super().compose_node(parent, index)
    self._depth += 1
    try:
      if self._depth > MAX_DEPTH:
        mark = self.peek_event().start_mark
        raise _Beyond(f'line {mark.line + 1}: nested more than {MAX_DEPTH} levels deep')
      return super().compose_node(parent, index)
    finally:
      self._depth -= 1


def _read_yaml(path: str | os.PathLike) -> Any:
  name = os.fspath(path)
  try:
    with open(path, encoding='utf-8') as f:
      return yaml.load(f, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader)
  except _Beyond as e:
    raise ConfigError(f'{name}: {e}.') from None
  except UnicodeDecodeError as e:
    raise ConfigError(
      f'{name} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save it as UTF-8.'
    ) from None
  except yaml.MarkedYAMLError as e:
    mark = e.problem_mark or e.context_mark
    where = f' line {mark.line + 1}, column {mark.column + 1}' if mark else ''
    raise ConfigError(f'{name}:{where}: malformed YAML: {e.problem or e}') from None
  except yaml.YAMLError as e:
    raise ConfigError(f'{name}: malformed YAML: {e}') from None
  except OSError as e:
    raise ConfigError(f'cannot read config {name!r}: {e.strerror}') from None


def _split_top(text: str, sep: str) -> list[str]:
  """``text`` split at each ``sep`` outside brackets and quotes."""
  parts, depth, quote, start = [], 0, '', 0
  for i, c in enumerate(text):
    if quote:
      quote = '' if c == quote else quote
    elif c in '\'"':
      quote = c
    elif c in '([{':
      depth += 1
    elif c in ')]}':
      depth -= 1
    elif c == sep and depth == 0:
      parts.append(text[start:i])
      start = i + 1
      if sep == ':':
        break
  return [*parts, text[start:]]


def parse_value(text: str) -> Any:
  """A command-line value as snakemake's ``--config`` reads it, through safe YAML.

  ``{momentum:0.9,weight_decay:0.0001}`` is a mapping (plain YAML would read one
  key "momentum:0.9"): inside ``{...}`` each comma outside brackets and quotes
  ends an item and its first colon ends the key, so
  ``{lr_lambda:min(1.0,(epoch+1)/5)}`` keeps its expression whole; ``[...]`` is
  read item by item the same way, so a list may hold such mappings.
  """
  stripped = text.strip()
  if stripped.startswith('{') and stripped.endswith('}'):
    out = {}
    for item in _split_top(stripped[1:-1], ','):
      if not item.strip():
        continue
      key, *rest = _split_top(item, ':')
      if not rest:
        raise ConfigError(f'cannot read the value {text!r}: {item.strip()!r} is not KEY:VALUE.')
      out[parse_value(key)] = parse_value(rest[0])
    return out
  if stripped.startswith('[') and stripped.endswith(']'):  # items may be {k:v} mappings
    return [parse_value(item) for item in _split_top(stripped[1:-1], ',') if item.strip()]
  try:
    return yaml.load(stripped, Loader=_BoundedLoader) if stripped else None  # noqa: S506 (a SafeLoader)
  except yaml.YAMLError as e:
    raise ConfigError(f'cannot read the value {text!r}: {getattr(e, "problem", None) or e}') from None


def _overrides(overrides: Iterable[str] | str | None) -> list[tuple[list[str], Any]]:
  """``KEY=VALUE`` strings (or one space-separated string) as (key path, value) pairs."""
  if overrides is None:
    return []
  if isinstance(overrides, str):
    overrides = overrides.split()
  out = []
  for item in overrides:
    if not isinstance(item, str) or '=' not in item:
      raise ConfigError(f'override {item!r} must look like KEY=VALUE (e.g. learning_rate=0.01).')
    key, _, raw = item.partition('=')
    path = key.strip().split('.')
    if not all(path):
      raise ConfigError(f'override {item!r}: empty key.')
    out.append((path, parse_value(raw)))
  return out


def apply_overrides(data: dict[str, Any], overrides: Iterable[str] | str | None) -> dict[str, Any]:
  """``KEY=VALUE`` strings applied to ``data``; ``a.b=VALUE`` sets one nested value, and a
  number indexes a list (``schedulers.0.scheduler_kwargs.gamma=0.5``).

  An override replaces the key's other spelling too: ``lr=0.01`` on a file that
  sets ``learning_rate`` replaces it.

  Raises:
    ConfigError: an index that is not a number, or out of the list's range (named with
      the override, the list's length and its valid indices), or an index into a key
      that holds no list.
  """
  return _apply(data, _overrides(overrides))


def _apply(data: dict[str, Any], changes: list[tuple[list[str], Any]]) -> dict[str, Any]:
  data = dict(data)
  for path, value in changes:
    if len(path) == 1:
      field = ALIASES.get(path[0], path[0])
      for other in [k for k in data if k != path[0] and ALIASES.get(k, k) == field]:
        del data[other]
    data = _set(data, path, value, path)
  return data


def _is_list(x: Any) -> bool:
  return isinstance(x, Sequence) and not isinstance(x, (str, bytes))


def _is_index(part: str) -> bool:
  """Whether an override's path segment is a list index (ASCII digits only)."""
  return part.isdecimal() and part.isascii()


def _set(node: Any, path: list[str], value: Any, key: list[str]) -> Any:
  """A copy of ``node`` (a mapping or a list) with ``value`` at ``path``: mapping keys, or list
  indices where the node is a list; a missing step becomes a mapping. ``key``: the override's."""
  part, rest = path[0], path[1:]
  if _is_list(node):
    items = list(node)
    where = '.'.join(key[: len(key) - len(path)])
    valid = f'valid indices: 0 to {len(items) - 1}' if items else 'it is empty, so no index is valid'
    if not _is_index(part):
      raise ConfigError(
        f'override {".".join(key)}: {where} is a list of {len(items)}, indexed by number ({valid}), not {part!r}.'
      )
    if int(part) >= len(items):
      raise ConfigError(
        f'override {".".join(key)}: {where} has {len(items)} entries, so {part} is out of range ({valid}).'
      )
    i = int(part)
    items[i] = _set(items[i], rest, value, key) if rest else value
    return items
  out = dict(node) if isinstance(node, Mapping) else {}
  if not rest:
    out[part] = value
    return out
  child = out.get(part)
  if not (isinstance(child, Mapping) or _is_list(child)) and _is_index(rest[0]):
    where = '.'.join(key[: len(key) - len(rest)])
    held = 'it is not set' if part not in out else f'it is {_checks.shown(child)}'
    raise ConfigError(
      f'override {".".join(key)}: {where} is not a list ({held}), so it has no entry {rest[0]}; set the whole '
      f'list instead (e.g. {where}=[...]).'
    )
  out[part] = _set(child, rest, value, key)
  return out


def _near_miss(key: str) -> str | None:
  """The known key that ``key`` nearly spells, case-insensitively ("LEARNING_RATE", "optimzer")."""
  known = {k.lower(): k for k in (*FIELDS, *ALIASES)}
  match = difflib.get_close_matches(key.lower(), list(known), n=1, cutoff=0.8)
  return known[match[0]] if match else None


def _mapping(key: str, value: Any) -> dict[str, Any]:
  if value is None:
    return {}
  if not isinstance(value, Mapping):
    raise ConfigError(f'{key}={_checks.shown(value)} must be a mapping of keywords.')
  bad = [k for k in value if not isinstance(k, str)]
  if bad:
    raise ConfigError(f'{key}: keys must be strings, got {bad[0]!r}.')
  return dict(value)


PATTERNS_DIR = os.path.join(os.path.dirname(__file__), 'patterns')


def patterns() -> dict[str, str]:
  """The reference page's four patterns shipped with the package: name -> YAML path."""
  return {os.path.splitext(f)[0]: os.path.join(PATTERNS_DIR, f) for f in sorted(os.listdir(PATTERNS_DIR))}


def _source(source: Any) -> tuple[dict[Any, Any], str]:
  """The source's top-level mapping and a name for messages."""
  if source is None:
    return {}, 'the config'
  if isinstance(source, Config):
    return source.to_dict(), 'the config'
  if isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    if not os.path.exists(path) and path in patterns():
      path = patterns()[path]
    data = _read_yaml(path)
    return ({} if data is None else _top_level(data, path)), path
  return _top_level(source, 'the config'), 'the config'


def _keywords(kind: str, name: Any) -> frozenset[str] | None:
  """The keywords the optimizer or scheduler ``name`` takes; None if ``name`` is unknown."""
  if not isinstance(name, str):
    return None
  if kind == 'optimizer':
    if name.startswith('optax.'):
      alias = name[len('optax.') :]
      return frozenset(optax_aliases.parameters(alias)) if alias in optax_aliases.ALIASES else None
    spec = spec_of(name)
    return None if spec is None else frozenset({*spec.kwargs, 'lr', *IMPLEMENTATION_FLAGS})
  if name in METRIC_KWARGS:
    return frozenset(METRIC_KWARGS[name])
  schedule = SCHEDULES.get(name)
  return None if schedule is None else frozenset(schedule.kwargs)


def _drop_foreign_kwargs(data: dict[str, Any], given: dict[str, Any], changes: list[tuple[list[str], Any]]) -> None:
  """After an override changes the optimizer (scheduler, or an entry's of ``schedulers``), the
  file's optimizer_kwargs (scheduler_kwargs) that the new one does not take are dropped, with a
  ConfigWarning. Keywords that the overrides set are kept: a wrong one is still an error."""
  places: list[tuple[list[str], Any, Any]] = [([], data, given)]
  entries, before = data.get('schedulers'), given.get('schedulers')
  if isinstance(entries, list) and _is_list(before):
    places += [(['schedulers', str(i)], e, b) for i, (e, b) in enumerate(zip(entries, before or ()))]
  for prefix, node, old_node in places:
    if not (isinstance(node, dict) and isinstance(old_node, Mapping)):
      continue
    for kind in ('scheduler',) if prefix else ('optimizer', 'scheduler'):
      key = f'{kind}_kwargs'
      old, new = old_node.get(kind), node.get(kind)
      if (
        not any(path == [*prefix, kind] for path, _ in changes) or old == new or not isinstance(node.get(key), Mapping)
      ):
        continue
      if any(path == [*prefix, key] for path, _ in changes):
        continue  # the whole mapping came from the overrides
      takes = _keywords(kind, new)
      if takes is None:
        continue  # an unknown name: load_config says so
      ours = {path[-1] for path, _ in changes if path[:-1] == [*prefix, key]}
      dropped = [k for k in node[key] if k not in takes and k not in ours]
      if dropped:
        node[key] = {k: v for k, v in node[key].items() if k not in dropped}
        listed = ', '.join(f'{k}={_checks.shown(old_node[key][k])}' for k in dropped)
        where = '.'.join([*prefix, key])
        warnings.warn(
          f'{where} {listed} dropped: the override {".".join([*prefix, kind])}={new} replaced {old}, which took '
          f'{"it" if len(dropped) == 1 else "them"}, and {new} does not.',
          ConfigWarning,
          stacklevel=4,
        )


def _trainer_keys(data: dict[str, Any]) -> None:
  """LightningCLI's ``trainer.gradient_clip_val`` (and the other Trainer arguments jaxsched
  applies) read as the top-level keys; the same key in both places must agree."""
  trainer: Any = data.get('trainer')
  if not (isinstance(trainer, Mapping) or hasattr(trainer, 'keys')):
    return
  for key in TRAINER_KEYS:
    if key not in trainer.keys():
      continue
    value = trainer[key]
    if key in data and data[key] != value:
      raise ConfigError(
        f'{key} is set twice, to {_checks.shown(data[key])} at the top level and to '
        f'{_checks.shown(value)} under trainer; keep one.'
      )
    data[key] = value


def read_config(source: Any = None, overrides: Iterable[str] | str | None = ()) -> Config:
  """The :class:`Config` a source and overrides describe, each key checked on its own.

  :func:`jaxsched.load_config` also checks that the optimizer and the schedule
  build; use that one.
  """
  data, where = _source(source)
  changes = _overrides(overrides)
  given = data
  data = _apply(data, changes)
  _trainer_keys(data)
  values: dict[str, Any] = {}
  for key, value in data.items():
    if not isinstance(key, str):
      continue
    name = ALIASES.get(key, key)
    if name in FIELDS:
      if name in values:
        raise ConfigError(f'{where}: the learning rate is given twice, as learning_rate and as lr; keep one.')
      values[name] = _plain(value, key)
    elif key in TOP_LEVEL_MISTAKES:
      raise ConfigError(
        f'{key}={_checks.shown(value)} at the top level is not read: it is an optimizer keyword, '
        f'so set optimizer_kwargs.{key} instead.'
      )
    elif (guess := _near_miss(key)) is not None:
      raise ConfigError(f'unknown key {key!r}: did you mean {guess!r}?')
  _drop_foreign_kwargs(
    values,
    {ALIASES.get(k, k): v for k, v in given.items() if isinstance(k, str)},
    [([ALIASES.get(p[0], p[0]), *p[1:]], v) for p, v in changes],
  )
  return _check(values)


def _check(v: dict[str, Any]) -> Config:
  out: dict[str, Any] = {}
  if 'optimizer' in v:
    if not isinstance(v['optimizer'], str):
      raise ConfigError(f'optimizer={v["optimizer"]!r} must be a string ID such as "Adam".')
    out['optimizer'] = v['optimizer']
  if v.get('learning_rate') is not None:
    out['learning_rate'] = _checks.NON_NEGATIVE('learning_rate', v['learning_rate'])
  for key in ('optimizer_kwargs', 'optimizer_configs', 'scheduler_kwargs'):
    if key in v:
      out[key] = _mapping(key, v[key])
  if 'scheduler' in v:
    out['scheduler'] = _scheduler_name('scheduler', v['scheduler'])
  out['scheduler_configs'] = _scheduler_configs(
    'scheduler_configs', v.get('scheduler_configs'), out, out.get('scheduler', Config.scheduler)
  )
  if v.get('schedulers') is not None:
    entries = _schedulers(v, out)
    # one entry is the single scheduler's form
    out.update(entries[0] if len(entries) == 1 else {'scheduler': None, 'scheduler_kwargs': {}, 'schedulers': entries})

  if 'recurrent_learning_rate_multiplier' in v:
    out['recurrent_learning_rate_multiplier'] = _checks.NON_NEGATIVE(
      'recurrent_learning_rate_multiplier', v['recurrent_learning_rate_multiplier']
    )
  if 'recurrent_param_patterns' in v:
    patterns = v['recurrent_param_patterns']
    patterns = [patterns] if isinstance(patterns, str) else patterns
    out['recurrent_param_patterns'] = _checks.Sequence(_checks.Text())('recurrent_param_patterns', patterns)
  if 'lr_parameter_groups' in v:
    groups = _mapping('lr_parameter_groups', v['lr_parameter_groups'])
    out['lr_parameter_groups'] = {}
    for name, spec in groups.items():
      if not name:
        raise ConfigError(
          'lr_parameter_groups: a group name must be a non-empty path substring (an empty one '
          'would take every parameter).'
        )
      spec = _mapping(f'lr_parameter_groups.{name}', spec)
      for key in ('lr', 'learning_rate'):
        if key in spec:
          raise ConfigError(_group_lr_message(name, key, spec[key], v))
      if 'lr_factor' in spec:
        spec['lr_factor'] = _checks.NON_NEGATIVE(f'lr_parameter_groups.{name}.lr_factor', spec['lr_factor'])
      out['lr_parameter_groups'][name] = spec
  if v.get('gradient_clip_val') is not None:
    out['gradient_clip_val'] = _checks.NON_NEGATIVE('gradient_clip_val', v['gradient_clip_val'])
  if v.get('gradient_clip_algorithm') is not None:
    out['gradient_clip_algorithm'] = _checks.Choice(('norm', 'value'))(
      'gradient_clip_algorithm', v['gradient_clip_algorithm']
    )
  if v.get('accumulate_grad_batches') is not None:
    out['accumulate_grad_batches'] = _checks.COUNT('accumulate_grad_batches', v['accumulate_grad_batches'])
  if v.get('skip_nonfinite') is not None:
    out['skip_nonfinite'] = _checks.Boolean()('skip_nonfinite', v['skip_nonfinite'])
  for key in ('ema', 'swa'):
    if v.get(key) is not None:
      out[key] = averaging.check_config(key, v[key])
  out.update(_timm_keys(v, out))
  return Config(**out)


def _texts(key: str, value: Any) -> tuple[str, ...]:
  return _checks.Sequence(_checks.Text())(key, [value] if isinstance(value, str) else value)


def _timm_keys(v: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
  """timm's parameter-group keys (:data:`TIMM_KEYS`, :data:`LAYER_DECAY_KEYS`), checked."""
  got: dict[str, Any] = {}
  if v.get('weight_decay_exclude_1d') is not None:
    got['weight_decay_exclude_1d'] = _checks.Boolean()('weight_decay_exclude_1d', v['weight_decay_exclude_1d'])
  for key in ('no_weight_decay_list', 'layer_decay_classifier'):
    if v.get(key) is not None:
      got[key] = _texts(key, v[key])
  for key in ('layer_decay', 'layer_decay_min_scale', 'layer_decay_no_opt_scale'):
    if v.get(key) is not None:
      got[key] = _checks.NON_NEGATIVE(key, v[key])
  if v.get('layer_groups') is not None:
    got['layer_groups'] = _texts('layer_groups', v['layer_groups'])
    if not got['layer_groups']:
      raise ConfigError(
        "layer_groups=[] names no layer: give the layers in order, or leave it out for timm's fallback."
      )
    for i, pattern in enumerate(got['layer_groups']):
      try:
        re.compile(pattern)
      except re.error as e:
        raise ConfigError(f'layer_groups[{i}]={pattern!r} is not a regular expression: {e}.') from None
  if got.get('layer_decay') is None:
    stray = [k for k in LAYER_DECAY_KEYS if k in got and got[k] != getattr(Config, k)]
    if stray:
      raise ConfigError(
        f"{stray[0]}={_checks.shown(got[stray[0]])} is read only with layer_decay (timm's create_optimizer_v2 "
        f'reads it only then); set layer_decay too, or leave {stray[0]} out.'
      )
  timm = [k for k in TIMM_KEYS if got.get(k) not in (None, False, ())]
  dynvision = [
    k
    for k, unset in (('recurrent_learning_rate_multiplier', 1.0), ('lr_parameter_groups', {}))
    if out.get(k, unset) != unset
  ]
  if timm and dynvision:
    raise ConfigError(
      f"{timm[0]} makes timm's parameter groups, which replace DynVision's, so {dynvision[0]}="
      f'{_checks.shown(out[dynvision[0]])} would not be read; use one kind of groups (timm: {", ".join(TIMM_KEYS)}; '
      f'DynVision: recurrent_learning_rate_multiplier, lr_parameter_groups).'
    )
  return got


def _scheduler_name(key: str, value: Any) -> str | None:
  """The scheduler's name; a Hugging Face alias (``hf.reduce_lr_on_plateau``) as the
  scheduler it names (ReduceLROnPlateau: interval 'epoch', as torch's schedulers)."""
  if value is not None and not isinstance(value, str):
    raise ConfigError(f'{key}={value!r} must be a scheduler name, or null / "none" for a constant LR.')
  if value in hf.REFUSED:
    raise ConfigError(f'{key}: {hf.REFUSED[value]}')
  return None if value is None or value.lower() == 'none' else hf.ALIASES.get(value, value)


def _scheduler_configs(key: str, value: Any, out: dict[str, Any], scheduler: str | None) -> dict[str, Any]:
  """Lightning's lr_scheduler_config keys, checked, with the defaults filled in; the
  monitor falls back to DynVision's optimizer_configs.monitor, the interval to the
  scheduler's own default (:attr:`jaxsched.schedules.ScheduleSpec.default_interval`)."""
  given = _mapping(key, value)
  for k in given:
    if k not in SCHEDULER_CONFIG_KEYS:
      raise unknown(f'key of {key}', k, SCHEDULER_CONFIG_KEYS)
  configs = {}
  for k, (default, check) in SCHEDULER_CONFIG_KEYS.items():
    v = given.get(k, default)
    configs[k] = check(f'{key}.{k}', v) if check is not None else v
  if 'interval' not in given and scheduler in SCHEDULES:
    configs['interval'] = SCHEDULES[scheduler].default_interval
  if 'monitor' not in given and 'monitor' in out.get('optimizer_configs', {}):
    configs['monitor'] = out['optimizer_configs']['monitor']
  for k in ('monitor', 'name'):
    if configs[k] is not None and not isinstance(configs[k], str):
      raise ConfigError(f'{key}.{k}={configs[k]!r} must be a string.')
  return configs


def _schedulers(v: dict[str, Any], out: dict[str, Any]) -> tuple[dict[str, Any], ...]:
  """The ``schedulers`` list: Lightning's several schedulers for the one optimizer,
  each ``{scheduler, scheduler_kwargs, scheduler_configs}``, checked key by key."""
  value = v['schedulers']
  shape = 'a non-empty list of {scheduler, scheduler_kwargs, scheduler_configs} mappings'
  if not isinstance(value, list) or not value:
    raise ConfigError(
      f"schedulers={_checks.shown(value)} must be {shape} (Lightning's list of schedulers for "
      f'one optimizer); for a constant LR set scheduler: null instead.'
    )
  given = [
    k
    for k in SINGLE_SCHEDULER_KEYS
    if k in v and v[k] not in (None, {}) and not (k == 'scheduler' and out.get('scheduler') is None)
  ]
  if given:
    raise ConfigError(
      f'schedulers is given together with {", ".join(given)}: give one scheduler with '
      f'scheduler, scheduler_kwargs and scheduler_configs, or several with schedulers (each entry '
      f'with its own scheduler_kwargs and scheduler_configs), not both.'
    )
  entries = []
  for i, item in enumerate(value):
    where = f'schedulers[{i}]'
    if not isinstance(item, Mapping):
      raise ConfigError(
        f'{where}={_checks.shown(item)} must be a mapping with the keys {", ".join(SINGLE_SCHEDULER_KEYS)}.'
      )
    for k in item:
      if k not in SINGLE_SCHEDULER_KEYS:
        raise unknown(f'key in {where}', k, SINGLE_SCHEDULER_KEYS)
    name = _scheduler_name(f'{where}.scheduler', item.get('scheduler'))
    if name is None:
      raise ConfigError(
        f'{where}.scheduler={_checks.shown(item.get("scheduler"))}: each entry of schedulers needs a '
        f'scheduler name; leave a constant LR out of the list.'
      )
    entries.append(
      {
        'scheduler': name,
        'scheduler_kwargs': _mapping(f'{where}.scheduler_kwargs', item.get('scheduler_kwargs')),
        'scheduler_configs': _scheduler_configs(f'{where}.scheduler_configs', item.get('scheduler_configs'), out, name),
      }
    )
  return tuple(entries)


def _group_lr_message(name: str, key: str, value: Any, v: dict[str, Any]) -> str:
  """Why ``lr_parameter_groups.<name>.lr`` is refused, and the lr_factor that gives that LR."""
  base: Any = v.get('learning_rate')
  if base is None and isinstance(v.get('optimizer', 'Adam'), str):
    spec = spec_of(v.get('optimizer', 'Adam'))
    base = None if spec is None else spec.lr
  hint = ''
  try:
    lr, base = float(value), float(base)
    if base > 0 and math.isfinite(lr):
      hint = f' (lr_factor: {lr / base:g} gives {lr:g} with learning_rate {base:g})'
  except (TypeError, ValueError):
    pass
  return (
    f"lr_parameter_groups.{name}.{key}={_checks.shown(value)}: a group's learning rate is set with "
    f'lr_factor, a multiple of learning_rate{hint}, so that the scheduler scales every group alike.'
  )
