"""Continue a torch (or Lightning) run in JAX, and hand a JAX run back to torch, optimizer state and all.

:func:`from_torch` turns a ``torch.optim`` optimizer's ``state_dict()`` (and its LR
scheduler's) into the state of :func:`jaxsched.build` for the same config, so that
the next update is torch's next ``step()``; :func:`to_torch` goes back. Parameters are
matched by name through a rule (:mod:`jaxsched.interop.correspondence`).

Each direction is one walk over the JAX state (:mod:`jaxsched.state_tree`) to the optimizer's
state classes (its spec's ``torch_state``), each converted by its converter
(:mod:`jaxsched.interop.converters`); the run's position (LRs, cycled momentum, step counts,
ReduceLROnPlateau's counters) goes through the param groups and the scheduler's state dict.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import DictKey, GetAttrKey

from jaxsched._errors import ConfigError
from jaxsched.accumulate import AccumulateState
from jaxsched.build import build, current_lr, current_momentum, set_lr
from jaxsched.config import Config
from jaxsched.interop.converters import TorchState, converter
from jaxsched.interop.correspondence import Correspondence, check_layouts, correspondence
from jaxsched.interop.layouts import Rule, as_numpy, as_rule, leaf_paths
from jaxsched.interop.objects import import_torch, torch_optimizer, torch_scheduler
from jaxsched.learning_rates import PLATEAU
from jaxsched.optimizers import OPTIMIZERS
from jaxsched.plan import SchedulerEntry, plan_of
from jaxsched.plateau import PlateauState
from jaxsched.state_tree import find, find_one, replace, replace_with_path
from jaxsched.stepping import epoch_batches, optimizer_steps_per_epoch, scheduler_steps

# Group keys whose values are the run's position, not its settings (and torch's implementation switches, and
# the group's name, a label for loggers).
POSITION_KEYS = {
  'params',
  'param_names',
  'name',
  'lr',
  'initial_lr',
  'foreach',
  'fused',
  'capturable',
  'differentiable',
}
SCHEDULER_POSITION = {
  'last_epoch',
  '_step_count',
  '_last_lr',
  '_is_initial',
  '_get_lr_called_within_step',
  'verbose',
  'best',
  'num_bad_epochs',
  'cooldown_counter',
  'T_cur',
  'T_i',
  'lr_lambdas',
  '_schedulers',
  '_scale_fn_custom',
}


def _fresh_torch(config: Config, params: Any, corr: Correspondence, rule: Rule):
  """The torch optimizer and scheduler the config builds, on zero tensors of torch's shapes and the params' dtypes.

  Raises:
    ConfigError: hf.greedy, whose GreedyLR state (good-epoch, warmup and reset counters, the smoothing
      window) is not converted.
  """
  if config.scheduler == 'hf.greedy' or any(e['scheduler'] == 'hf.greedy' for e in config.schedulers or ()):
    raise ConfigError(
      "hf.greedy: converting transformers' GreedyLR state (its good-epoch, warmup and reset counters and "
      'smoothing window) to or from jaxsched is not supported; checkpoint the jaxsched state itself.'
    )
  torch = import_torch()
  by_path = leaf_paths(params)
  tensors = []
  for name, path, layout in corr.named:  # named_parameters() order, which timm's groups read
    zeros = layout.to_torch(np.zeros(np.shape(by_path[path]), np.asarray(by_path[path]).dtype))
    tensors.append((name, torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(zeros)))))
  optimizer = torch_optimizer(config, tensors, rule)
  return optimizer, torch_scheduler(config, optimizer)


def _same(a: Any, b: Any) -> bool:
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0) or a == b
  return a == b


def _plain(value: Any) -> bool:
  return (
    value is None
    or isinstance(value, (bool, int, float, str))
    or (isinstance(value, (list, tuple)) and all(_plain(v) for v in value))
  )


def check_optimizer(
  config: Config, saved: Mapping[str, Any], fresh: Mapping[str, Any], corr: Correspondence, cycled: Sequence[str]
) -> None:
  """ConfigError naming the first difference between a saved optimizer state dict and the
  one the config builds: the number or sizes of the groups, the keys (another optimizer
  class) or a setting."""
  saved_groups, fresh_groups = list(saved.get('param_groups', [])), fresh['param_groups']
  if len(saved_groups) != len(fresh_groups):
    raise ConfigError(
      f"the checkpoint's optimizer has {len(saved_groups)} param groups, the config gives "
      f'{len(fresh_groups)} ({", ".join(corr.groups)}).'
    )
  for name, s, f in zip(corr.groups, saved_groups, fresh_groups):
    if len(s['params']) != len(f['params']):
      raise ConfigError(
        f'param group {name!r} has {len(s["params"])} parameters in the checkpoint and '
        f'{len(f["params"])} under the config ({", ".join(p.name for p in corr.in_group(name))}).'
      )
    keys_s, keys_f = set(s) - POSITION_KEYS, set(f) - POSITION_KEYS
    if keys_s != keys_f:
      raise ConfigError(
        f"the checkpoint's param groups have the keys {sorted(keys_s)}, but torch.optim.{config.optimizer}'s have "
        f"{sorted(keys_f)}: the checkpoint comes from another optimizer (or scheduler) than the config's "
        f'{config.optimizer}.'
      )
    for key in sorted(keys_f):
      a, b = s[key], f[key]
      if key in cycled:  # the scheduler moves it; only the rest of betas is a setting
        a, b = (a[1:], b[1:]) if key == 'betas' else (None, None)
      if not _same(a, b):
        raise ConfigError(
          f'param group {name!r}: the checkpoint has {key}={s[key]!r}, the config gives {key}={f[key]!r}.'
        )


def check_scheduler(config: Config, saved: Mapping[str, Any] | None, fresh: Any, where: str = 'scheduler') -> None:
  """ConfigError naming a setting of a saved scheduler state dict that differs from the config's."""
  if saved is None:
    return
  if fresh is None:
    raise ConfigError('the checkpoint has an LR scheduler, but the config has scheduler: null.')
  fresh_dict = fresh.state_dict()
  settings, saved_settings = set(fresh_dict) - SCHEDULER_POSITION, set(saved) - SCHEDULER_POSITION
  if settings != saved_settings:
    raise ConfigError(
      f"the checkpoint's {where} has the settings {sorted(saved_settings)}, the config's "
      f'{type(fresh).__name__} {sorted(settings)}: it comes from another scheduler class.'
    )
  for key in sorted(settings):
    if _plain(fresh_dict[key]) and not _same(saved[key], fresh_dict[key]):
      raise ConfigError(
        f"the checkpoint's {where} has {key}={saved[key]!r}, the config's {type(fresh).__name__} "
        f'has {key}={fresh_dict[key]!r}.'
      )
  members = getattr(fresh, '_schedulers', None)
  if members is not None:
    saved_members = saved.get('_schedulers', [])
    if len(saved_members) != len(members):
      raise ConfigError(f"the checkpoint's {where} has {len(saved_members)} schedulers, the config's {len(members)}.")
    for i, (s, f) in enumerate(zip(saved_members, members)):
      check_scheduler(config, s, f, f'{where}._schedulers[{i}]')


def _cycled(entry: SchedulerEntry | None) -> tuple[str, ...]:
  """The optimizer keys the scheduler cycles (torch's cycle_momentum)."""
  if entry is None or entry.scheduler not in ('OneCycleLR', 'CyclicLR') or not entry.kwargs.get('cycle_momentum', True):
    return ()
  return ('momentum', 'betas')


def _optimizer_steps(
  config: Config, entry: SchedulerEntry | None, sd: Mapping[str, Any], sched: Mapping[str, Any] | None, step: int | None
) -> int:
  """Optimizer steps taken so far (Lightning's global_step): ``step`` if given, else torch's
  ``step`` in the state, else the scheduler's position where it is stepped once per optimizer
  step; 0 where nothing depends on it (no schedule of the step count, no accumulation)."""
  if step is not None:
    return int(step)
  steps = {int(as_numpy(s['step'])) for s in sd['state'].values() if 'step' in s}
  if len(steps) > 1:
    raise ConfigError(
      f"the checkpoint's parameters have taken different numbers of steps ({sorted(steps)}); "
      f'jaxsched steps all parameters of a group together. Give step= (optimizer steps taken).'
    )
  if steps:
    return steps.pop()
  scheduled = entry is not None and entry.scheduler != PLATEAU
  if entry is not None and scheduled and sched is not None and entry.interval == 'step' and entry.frequency == 1:
    return _position(sched)
  if scheduled or config.accumulate_grad_batches > 1:
    raise ConfigError(
      f'the checkpoint does not say how many optimizer steps were taken ({config.optimizer} keeps no step count, '
      f'and the scheduler is not stepped once per optimizer step), which the '
      f"{'schedule' if scheduled else 'accumulation'} needs: give step= (Lightning's global_step)."
    )
  return 0


def _position(sched: Mapping[str, Any]) -> int:
  """The scheduler's steps (ChainedScheduler: its members')."""
  return int(sched['last_epoch']) if 'last_epoch' in sched else _position(sched['_schedulers'][0])


def _prepare(
  config: Any, params: Any, torch_names: Any, rule: Any, batches_per_epoch: int | None, steps_per_epoch: int | None
) -> tuple[Config, SchedulerEntry | None, Rule, Any, int | None]:
  """What both directions check first: the config and its one scheduler (a list is refused), the
  rule, the parameters' correspondence (with layouts that keep the optimizer's math) and the
  epoch's batches."""
  plan = plan_of(config)
  config = plan.config
  rule = as_rule(rule)
  if config.optimizer not in OPTIMIZERS or not OPTIMIZERS[config.optimizer].torch_state:
    raise ConfigError(f'optimizer={config.optimizer!r} has no torch.optim counterpart.')
  for key, why in (
    ('ema', "Lightning keeps the average in the callback's state, which is not converted"),
    ('swa', "Lightning keeps the average in the callback's state, which is not converted"),
    ('schedulers', "a list of schedulers keeps each group's LR in a chain state, which is not converted"),
  ):
    if getattr(config, key):
      raise ConfigError(
        f'{key} is set: {why}, so the JAX run would not continue where torch stopped. Convert the run without '
        f'{key} (or start {key} afresh after converting).'
      )
  corr = correspondence(config, params, torch_names, rule)
  check_layouts(config, corr, params)
  entry = plan.schedulers[0] if plan.schedulers else None
  return config, entry, rule, corr, epoch_batches(config, batches_per_epoch, steps_per_epoch)


def from_torch(
  config: Any,
  params: Any,
  optimizer_state_dict: Mapping[str, Any],
  scheduler_state_dict: Mapping[str, Any] | None = None,
  *,
  torch_names: Sequence[str],
  batches_per_epoch: int | None = None,
  steps_per_epoch: int | None = None,
  rule: Rule | Mapping | None = None,
  step: int | None = None,
) -> Any:
  """The state of ``jaxsched.build(config, params, batches_per_epoch=...)`` that continues a torch run.

  The next update is torch's next ``optimizer.step()`` (after ``scheduler.step()``
  where the scheduler stepped): moments and buffers come from the optimizer's state,
  each group's LR (and cycled momentum) from its param group, the schedules' step
  count from the optimizer steps taken, ReduceLROnPlateau's ``best``,
  ``num_bad_epochs`` and ``cooldown_counter`` from the scheduler. A checkpoint sits
  at an optimizer-step boundary, so an accumulation group starts afresh.

  Args:
    config: the run's config (a :class:`jaxsched.Config` or anything ``load_config`` accepts).
    params: the JAX parameter tree (its values are not read; :func:`jaxsched.interop.layouts.torch_params`
      converts torch's).
    optimizer_state_dict: ``optimizer.state_dict()``.
    scheduler_state_dict: ``scheduler.state_dict()``, or None.
    torch_names: the torch model's ``named_parameters()`` names, in order.
    batches_per_epoch: as for :func:`jaxsched.build`.
    steps_per_epoch: as for :func:`jaxsched.build`.
    rule: torch name -> (JAX path, layout); default :func:`jaxsched.interop.layouts.flax_rule`.
    step: optimizer steps taken (Lightning's ``global_step``); by default torch's
      ``step`` in the state, or the scheduler's position where it tells. SGD, Muon and
      LBFGS keep no ``step``: without ``step=``, under a constant LR or ReduceLROnPlateau
      (whose counters come from its own state) the JAX step count restarts at 0, which
      none of their numbers read; their buffers and history carry over either way, and
      :func:`to_torch` hands them back.

  Raises:
    ConfigError: the checkpoint does not fit the config (another optimizer, number or size of
      groups, shape, optimizer or scheduler setting, a scheduler position the step count does
      not give), or a layout change that would change the optimizer's math (Adafactor, Muon).
  """
  config, entry, rule, corr, batches = _prepare(config, params, torch_names, rule, batches_per_epoch, steps_per_epoch)
  fresh_optimizer, fresh_scheduler = _fresh_torch(config, params, corr, rule)
  check_optimizer(config, optimizer_state_dict, fresh_optimizer.state_dict(), corr, _cycled(entry))
  check_scheduler(config, scheduler_state_dict, fresh_scheduler)
  k = _optimizer_steps(config, entry, optimizer_state_dict, scheduler_state_dict, step)
  if scheduler_state_dict is not None and entry is not None and entry.scheduler != PLATEAU:
    n, expected = _position(scheduler_state_dict), int(scheduler_steps(config, batches, entry)(k))
    if n != expected:
      raise ConfigError(
        f"the scheduler has stepped {n} times, but after {k} optimizer steps the config's "
        f'scheduler_configs ({entry.interval}, frequency {entry.frequency}) step it {expected} times: '
        'another interval, frequency or epoch length, or give step= (optimizer steps taken).'
      )
  tx = build(config, params, batches_per_epoch=batches_per_epoch, steps_per_epoch=steps_per_epoch)
  spec = OPTIMIZERS[config.optimizer]
  # torch's state is keyed by indices (ints, or strings after some serializers)
  torch_state = TorchState(spec, corr, params, k, {int(i): s for i, s in optimizer_state_dict['state'].items()})
  state = replace(
    tx.init(params), tuple(spec.torch_state), lambda node: converter(spec, type(node)).from_torch(node, torch_state)
  )
  torch_groups = dict(zip(corr.groups, optimizer_state_dict['param_groups']))

  def position(path, node):  # the step count, and the momentum or beta1 a scheduler cycles
    group = torch_groups[_group(path) or corr.groups[0]]  # the direction all groups share: the first's
    hyper, states = dict(node.hyperparams), node.hyperparams_states
    for key, value in (('momentum', lambda g: g['momentum']), ('b1', lambda g: g['betas'][0])):
      if key in states and key in hyper:
        hyper[key] = jnp.asarray(value(group), hyper[key].dtype)
    return node._replace(count=jnp.asarray(k, node.count.dtype), hyperparams=hyper)

  state = replace_with_path(state, optax.InjectStatefulHyperparamsState, position)
  # a checkpoint sits at an optimizer-step boundary: the accumulation starts afresh, at the epoch's batches so far
  per_epoch = None if batches is None else optimizer_steps_per_epoch(batches, config.accumulate_grad_batches)
  batch = 0 if per_epoch is None else (k % per_epoch) * config.accumulate_grad_batches
  state = replace(state, AccumulateState, lambda node: node._replace(batch=jnp.asarray(batch, node.batch.dtype)))
  state = set_lr(state, {name: group['lr'] for name, group in torch_groups.items()})
  if scheduler_state_dict is not None:
    state = replace(state, PlateauState, lambda plateau: _plateau(plateau, scheduler_state_dict))
  return state


def _group(path: tuple[Any, ...]) -> str | None:
  """The param group of the node at ``path``: its key in the groups' ``multi_transform`` (None: a
  direction shared by all groups)."""
  for parent, key in zip(path, path[1:]):
    if isinstance(parent, GetAttrKey) and parent.name == 'inner_states' and isinstance(key, DictKey):
      return str(key.key)
  return None


def _plateau(plateau: PlateauState, sched: Mapping[str, Any]) -> PlateauState:
  """torch's ReduceLROnPlateau counters (shared by all groups; each group's LR is its param group's)."""
  steps = int(sched['last_epoch'])
  return plateau.replace(
    best=jnp.asarray(sched['best'], plateau.best.dtype),
    num_bad_epochs=jnp.asarray(sched['num_bad_epochs'], jnp.int32),
    cooldown_counter=jnp.asarray(sched['cooldown_counter'], jnp.int32),
    steps=jnp.asarray(steps, jnp.int32),
    reports=jnp.asarray(steps * plateau.config.frequency, jnp.int32),
  )


def _scheduler_position(config: Config, sched: Any, sd: dict[str, Any], n: int, lrs: list[float]) -> dict[str, Any]:
  """A fresh scheduler's state dict moved to ``n`` steps, with the current LRs."""
  position = {'last_epoch': n, '_step_count': n + 1, '_last_lr': list(lrs), '_is_initial': False}
  sd.update({k: v for k, v in position.items() if k in sd})
  if 'T_cur' in sd:  # CosineAnnealingWarmRestarts: torch's own recurrence for the cycle
    t_cur, t_i = 0, sd['T_0']
    for _ in range(n):
      t_cur += 1
      if t_cur >= t_i:
        t_cur, t_i = t_cur - t_i, t_i * sd['T_mult']
    sd.update(T_cur=t_cur, T_i=t_i)
  members = getattr(sched, '_schedulers', None)
  if members is None:
    return sd
  if type(sched).__name__ == 'ChainedScheduler':
    sd['_schedulers'] = [_scheduler_position(config, m, s, n, lrs) for m, s in zip(members, sd['_schedulers'])]
    return sd
  milestones = list(sd['_milestones'])
  active = bisect_right(milestones, n)
  starts = [0, *milestones]
  for i, (member, member_sd) in enumerate(zip(members, sd['_schedulers'])):
    if i < active:  # it stopped one step before its successor's milestone
      _scheduler_position(config, member, member_sd, milestones[i] - 1 - starts[i], lrs)
    elif i == active:
      _scheduler_position(config, member, member_sd, n - starts[i], lrs)
  return sd


def to_torch(
  config: Any,
  opt_state: Any,
  params: Any,
  *,
  torch_names: Sequence[str],
  batches_per_epoch: int | None = None,
  steps_per_epoch: int | None = None,
  rule: Rule | Mapping | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
  """torch's ``(optimizer.state_dict(), scheduler.state_dict())`` for a state of :func:`jaxsched.build`.

  Load them into the optimizer and scheduler built from the same config
  (:func:`jaxsched.torch_optimizer`, :func:`jaxsched.torch_scheduler`, or a LightningModule's
  own), on the torch model's parameters (:func:`jaxsched.interop.layouts.torch_state_dict`), with
  ``load_state_dict``; torch's next ``step()`` is then the next JAX update. The scheduler's
  dict is None without a scheduler.

  Args:
    config: as for :func:`from_torch`.
    opt_state: the JAX state, at an optimizer-step boundary.
    params: as for :func:`from_torch`.
    torch_names: as for :func:`from_torch`.
    batches_per_epoch: as for :func:`from_torch`.
    steps_per_epoch: as for :func:`from_torch`.
    rule: as for :func:`from_torch`.

  Raises:
    ConfigError: a state in the middle of an accumulation group (torch keeps that in ``p.grad``),
      a layout change that would change the optimizer's math, what :func:`from_torch` refuses.
  """
  torch = import_torch()
  config, _, rule, corr, batches = _prepare(config, params, torch_names, rule, batches_per_epoch, steps_per_epoch)
  optimizer, scheduler = _fresh_torch(config, params, corr, rule)
  accumulated = find_one(opt_state, AccumulateState)
  if accumulated is not None and (int(accumulated.kept) or int(accumulated.batch) % config.accumulate_grad_batches):
    raise ConfigError(
      f'the state is in the middle of an accumulation group ({int(accumulated.kept)} micro-batches '
      f'gathered): torch keeps those gradients in p.grad, not in its state. Hand it over after '
      f'an optimizer step.'
    )
  spec = OPTIMIZERS[config.optimizer]
  k = int(find_one(opt_state, optax.InjectStatefulHyperparamsState).count)
  scalar = np.float64 if torch.get_default_dtype() == torch.float64 else np.float32
  torch_state = TorchState(spec, corr, params, k, {p.index: {} for p in corr.params}, scalar=scalar)
  for node in find(opt_state, tuple(spec.torch_state)):
    converter(spec, type(node)).to_torch(node, torch_state)
  sd = optimizer.state_dict()
  sd['state'] = {
    index: _tensors(torch, {**entries, **_step(spec.torch_step, torch_state.steps.get(index, k), scalar)})
    for index, entries in torch_state.state.items()
    if entries
  }
  lrs = [float(current_lr(opt_state)[name]) for name in corr.groups]
  momenta = current_momentum(opt_state)
  for name, lr, group in zip(corr.groups, lrs, sd['param_groups']):
    group['lr'] = lr
    if name in momenta:
      momentum = float(momenta[name])
      if 'betas' in group:
        group['betas'] = (momentum, *group['betas'][1:])
      else:
        group['momentum'] = momentum
  if scheduler is None:
    return sd, None
  sched = scheduler.state_dict()
  plateau = find_one(opt_state, PlateauState)
  if plateau is not None:
    sched.update(
      best=float(plateau.best),
      num_bad_epochs=int(plateau.num_bad_epochs),
      cooldown_counter=int(plateau.cooldown_counter),
      last_epoch=int(plateau.steps),
      _last_lr=lrs,
    )
    return sd, sched
  return sd, _scheduler_position(config, scheduler, sched, int(scheduler_steps(config, batches)(k)), lrs)


def _step(torch_step: str | None, steps: int, scalar: Any) -> dict[str, Any]:
  """torch's ``step`` entry (:attr:`OptimizerSpec.torch_step`): a 0-d tensor, a Python int, or none."""
  if torch_step == 'int':
    return {'step': steps}
  return {} if torch_step is None else {'step': np.asarray(float(steps), scalar)}


def _tensors(torch: Any, value: Any) -> Any:
  """``value`` with its numpy arrays as torch tensors (writable copies), in dicts and lists."""
  if isinstance(value, np.ndarray):
    return torch.from_numpy(np.array(value))
  if isinstance(value, dict):
    return {k: _tensors(torch, v) for k, v in value.items()}
  if isinstance(value, list):
    return [_tensors(torch, v) for v in value]
  return value
