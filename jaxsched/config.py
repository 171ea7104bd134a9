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
import os
import re
from typing import Any, Iterable, Mapping

import yaml

from jaxsched import _checks, averaging
from jaxsched._errors import ConfigError

SCHEDULER_CONFIG_KEYS = {
    # Lightning's lr_scheduler_config keys, with the reference page's defaults.
    'interval': ('epoch', _checks.Choice(('epoch', 'step'))),
    'frequency': (1, _checks.Integer(1)),
    'monitor': ('train_loss', None),
    'name': (None, None),
    'strict': (True, _checks.Boolean()),
}


@dataclasses.dataclass(frozen=True)
class Config:
  """The optimizer half of a DynVision config; defaults are the reference page's.

  Attributes:
    optimizer: a torch.optim class name, or "optax.<alias>".
    learning_rate: the base LR; None takes the optimizer's default (the
      reference page's table: Adam 0.001, SGD 0.01, ...).
    optimizer_kwargs: the optimizer's torch keywords.
    optimizer_configs: DynVision's optimizer_configs (its ``monitor`` is read
      when scheduler_configs has none).
    scheduler: a torch.optim.lr_scheduler class name, LinearWarmupCosineAnnealingLR,
      or None (constant LR).
    scheduler_kwargs: the scheduler's torch keywords.
    scheduler_configs: Lightning's interval, frequency, monitor, name, strict.
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
  """

  optimizer: str = 'Adam'
  learning_rate: float | None = None
  optimizer_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  optimizer_configs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  scheduler: str | None = 'CosineAnnealingLR'
  scheduler_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  scheduler_configs: Mapping[str, Any] = dataclasses.field(
      default_factory=lambda: {k: d for k, (d, _) in SCHEDULER_CONFIG_KEYS.items()})
  recurrent_learning_rate_multiplier: float = 1.0
  recurrent_param_patterns: tuple[str, ...] = ('recurren',)
  lr_parameter_groups: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  gradient_clip_val: float | None = None
  gradient_clip_algorithm: str = 'norm'
  accumulate_grad_batches: int = 1
  skip_nonfinite: bool = False
  ema: Mapping[str, Any] | None = None
  swa: Mapping[str, Any] | None = None

  @property
  def monitor(self) -> str:
    return self.scheduler_configs['monitor']

  def to_dict(self) -> dict[str, Any]:
    return _plain(dataclasses.asdict(self))


FIELDS = tuple(f.name for f in dataclasses.fields(Config))
ALIASES = {'lr': 'learning_rate'}


def _plain(x: Any) -> Any:
  """Mappings to dicts and sequences to lists, recursively (OmegaConf included)."""
  if isinstance(x, Mapping) or (hasattr(x, 'keys') and hasattr(x, '__getitem__') and not isinstance(x, type)):
    return {str(k) if not isinstance(k, str) else k: _plain(x[k]) for k in x.keys()}
  if isinstance(x, (list, tuple)) or (hasattr(x, '__iter__') and type(x).__name__ == 'ListConfig'):
    return [_plain(v) for v in x]
  return x


def _read_yaml(path: str | os.PathLike) -> Any:
  try:
    with open(path, encoding='utf-8') as f:
      return yaml.safe_load(f)
  except yaml.MarkedYAMLError as e:
    mark = e.problem_mark or e.context_mark
    where = f' line {mark.line + 1}, column {mark.column + 1}' if mark else ''
    raise ConfigError(f'{os.fspath(path)}:{where}: malformed YAML: {e.problem or e}') from None
  except yaml.YAMLError as e:
    raise ConfigError(f'{os.fspath(path)}: malformed YAML: {e}') from None
  except OSError as e:
    raise ConfigError(f'cannot read config {os.fspath(path)!r}: {e.strerror}') from None


_FLOW_COLON = re.compile(r'(?<=[^\s:{,\[]):(?=[^\s/])')


def parse_value(text: str) -> Any:
  """A command-line value as snakemake's ``--config`` reads it, through safe YAML.

  ``{momentum:0.9,weight_decay:0.0001}`` is a mapping (plain YAML would read one
  key "momentum:0.9"): inside ``{...}`` a colon followed by a value is a
  key/value separator.
  """
  stripped = text.strip()
  if stripped.startswith('{'):
    stripped = _FLOW_COLON.sub(': ', stripped)
    stripped = re.sub(r',(?=\S)', ', ', stripped)
  try:
    return yaml.safe_load(stripped) if stripped else None
  except yaml.YAMLError as e:
    raise ConfigError(f'cannot read the value {text!r}: {getattr(e, "problem", e)}') from None


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
  """``KEY=VALUE`` strings applied to ``data``; ``a.b=VALUE`` sets one nested value."""
  if isinstance(overrides, str):
    overrides = overrides.split()
  data = dict(data)
  for item in overrides:
    if not isinstance(item, str) or '=' not in item:
      raise ConfigError(f'override {item!r} must look like KEY=VALUE (e.g. learning_rate=0.01).')
    key, _, raw = item.partition('=')
    path = key.strip().split('.')
    if not all(path):
      raise ConfigError(f'override {item!r}: empty key.')
    node = data
    for part in path[:-1]:
      child = node.get(part)
      node[part] = dict(child) if isinstance(child, Mapping) else {}
      node = node[part]
    node[path[-1]] = parse_value(raw)
  return data


def _near_miss(key: str) -> str | None:
  known = [*FIELDS, *ALIASES]
  match = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
  return match[0] if match else None


def _mapping(key: str, value: Any) -> dict[str, Any]:
  if value is None:
    return {}
  if not isinstance(value, Mapping):
    raise ConfigError(f'{key}={value!r} must be a mapping of keywords.')
  bad = [k for k in value if not isinstance(k, str)]
  if bad:
    raise ConfigError(f'{key}: keys must be strings, got {bad[0]!r}.')
  return dict(value)


PATTERNS_DIR = os.path.join(os.path.dirname(__file__), 'patterns')


def patterns() -> dict[str, str]:
  """The reference page's four patterns shipped with the package: name -> YAML path."""
  return {os.path.splitext(f)[0]: os.path.join(PATTERNS_DIR, f) for f in sorted(os.listdir(PATTERNS_DIR))}


def load_config(source: Any = None, overrides: Iterable[str] = ()) -> Config:
  """A checked :class:`Config` from a YAML path or a mapping, plus overrides.

  Args:
    source: a path to a YAML file, a mapping (dict, OmegaConf DictConfig, a
      Config), or None for the defaults.
    overrides: snakemake-style ``KEY=VALUE`` strings (or one space-separated
      string), applied after the source.

  Raises:
    ConfigError: malformed YAML (with file and line), a near-miss of a known
      key, a value of the wrong type, an unknown optimizer or scheduler or one
      of their keywords: the optimizer and schedule of each group kind are
      built once, so an accepted config builds.
  """
  if source is None:
    data: Any = {}
  elif isinstance(source, Config):
    data = source.to_dict()
  elif isinstance(source, (str, os.PathLike)):
    data = _read_yaml(source)
    data = {} if data is None else data
  else:
    data = source
  data = _plain(data)
  if not isinstance(data, dict):
    raise ConfigError(f'a config must be a mapping of keys to values, got {type(data).__name__}.')
  data = apply_overrides(data, overrides)

  values: dict[str, Any] = {}
  for key, value in data.items():
    if not isinstance(key, str):
      continue
    name = ALIASES.get(key, key)
    if name in FIELDS:
      if name in values:
        raise ConfigError(f'{key} is given twice (learning_rate and its alias lr).')
      values[name] = value
    elif (guess := _near_miss(key)) is not None:
      raise ConfigError(f'unknown key {key!r}: did you mean {guess!r}?')
  config = _check(values)
  from jaxsched.build import validate  # the optimizer layer imports this module

  return validate(config)


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
    s = v['scheduler']
    if s is not None and not isinstance(s, str):
      raise ConfigError(f'scheduler={s!r} must be a scheduler name, or null / "none" for a constant LR.')
    out['scheduler'] = None if s is None or s.lower() == 'none' else s

  given = _mapping('scheduler_configs', v.get('scheduler_configs'))
  for key in given:
    if key not in SCHEDULER_CONFIG_KEYS:
      from jaxsched._errors import unknown
      raise unknown('key of scheduler_configs', key, SCHEDULER_CONFIG_KEYS)
  configs = {}
  for key, (default, check) in SCHEDULER_CONFIG_KEYS.items():
    value = given.get(key, default)
    configs[key] = check(f'scheduler_configs.{key}', value) if check is not None else value
  if 'monitor' not in given and 'monitor' in out.get('optimizer_configs', {}):
    configs['monitor'] = out['optimizer_configs']['monitor']
  for key in ('monitor', 'name'):
    if configs[key] is not None and not isinstance(configs[key], str):
      raise ConfigError(f'scheduler_configs.{key}={configs[key]!r} must be a string.')
  out['scheduler_configs'] = configs

  if 'recurrent_learning_rate_multiplier' in v:
    out['recurrent_learning_rate_multiplier'] = _checks.NON_NEGATIVE(
        'recurrent_learning_rate_multiplier', v['recurrent_learning_rate_multiplier'])
  if 'recurrent_param_patterns' in v:
    patterns = v['recurrent_param_patterns']
    patterns = [patterns] if isinstance(patterns, str) else patterns
    out['recurrent_param_patterns'] = _checks.Sequence(_string)('recurrent_param_patterns', patterns)
  if 'lr_parameter_groups' in v:
    groups = _mapping('lr_parameter_groups', v['lr_parameter_groups'])
    out['lr_parameter_groups'] = {}
    for name, spec in groups.items():
      if not name:
        raise ConfigError('lr_parameter_groups: a group name must be a non-empty path substring (an empty one '
                          'would take every parameter).')
      spec = _mapping(f'lr_parameter_groups.{name}', spec)
      if 'lr_factor' in spec:
        spec['lr_factor'] = _checks.NON_NEGATIVE(f'lr_parameter_groups.{name}.lr_factor', spec['lr_factor'])
      out['lr_parameter_groups'][name] = spec
  if v.get('gradient_clip_val') is not None:
    out['gradient_clip_val'] = _checks.NON_NEGATIVE('gradient_clip_val', v['gradient_clip_val'])
  if v.get('gradient_clip_algorithm') is not None:
    out['gradient_clip_algorithm'] = _checks.Choice(('norm', 'value'))(
        'gradient_clip_algorithm', v['gradient_clip_algorithm'])
  if v.get('accumulate_grad_batches') is not None:
    out['accumulate_grad_batches'] = _checks.Integer(1)('accumulate_grad_batches', v['accumulate_grad_batches'])
  if v.get('skip_nonfinite') is not None:
    out['skip_nonfinite'] = _checks.Boolean()('skip_nonfinite', v['skip_nonfinite'])
  for key in ('ema', 'swa'):
    if v.get(key) is not None:
      out[key] = averaging.check_config(key, v[key])
  return Config(**out)


def _string(key: str, value: Any) -> str:
  if not isinstance(value, str) or not value:
    raise ConfigError(f'{key}={value!r} must be a non-empty string.')
  return value
