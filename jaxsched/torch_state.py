"""Continue a torch (or Lightning) run in JAX, and hand a JAX run back to torch, optimizer state and all.

:func:`from_torch` turns a ``torch.optim`` optimizer's ``state_dict()`` (and its LR
scheduler's) into the state of :func:`jaxsched.build` for the same config, so that
the next update is torch's next ``step()``; :func:`to_torch` goes back;
:func:`load_lightning_checkpoint` reads a Lightning ``.ckpt``. Parameters are
matched by name through a rule (:mod:`jaxsched.layouts`), and every per-parameter
state gets its parameter's layout change.

torch keys its state by the parameter's index in its param groups, taken in
order (regular, recurrent, then ``lr_parameter_groups``, each in
``named_parameters()`` order); :func:`jaxsched.torch_optimizer` builds them so.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxsched._errors import ConfigError
from jaxsched.accumulate import AccumulateState
from jaxsched.build import build
from jaxsched.config import Config
from jaxsched.groups import groups, labeller, path_name
from jaxsched.layouts import RUNNING_STATS, Layout, Rule, as_numpy, as_rule, leaf_paths, resolve, torch_params
from jaxsched.learning_rates import PLATEAU
from jaxsched.optimizers import OPTIMIZERS, _complex
from jaxsched.optimizers.adafactor import AdafactorState
from jaxsched.optimizers.lbfgs import LBFGSState
from jaxsched.plateau import PlateauState
from jaxsched.stepping import epoch_batches, optimizer_steps_per_epoch, scheduler_steps
from jaxsched.torch_build import as_config, import_torch, torch_optimizer, torch_scheduler

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
# The state classes the conversions walk to: every spec's (OptimizerSpec.torch_state says how torch names
# their fields), and the wrappers around them.
KNOWN = tuple({cls: None for spec in OPTIMIZERS.values() for cls in spec.torch_state}) + (
  optax.InjectStatefulHyperparamsState,
  AccumulateState,
  optax.MultiTransformState,
)


@dataclasses.dataclass(frozen=True)
class Param:
  """One torch parameter: its index in torch's state dict, name, JAX path, layout and group."""

  index: int
  name: str
  path: str
  layout: Layout
  group: str


@dataclasses.dataclass(frozen=True)
class Correspondence:
  """torch's parameters in state-dict order, matched to the JAX tree."""

  params: tuple[Param, ...]
  groups: tuple[str, ...]

  def by_path(self) -> dict[str, Param]:
    return {p.path: p for p in self.params}

  def in_group(self, name: str) -> list[Param]:
    return [p for p in self.params if p.group == name]


def correspondence(config: Config, params: Any, torch_names: Sequence[str], rule: Rule) -> Correspondence:
  """Matches torch's names to the JAX parameters and orders them as torch's param groups do.

  Raises:
    ConfigError: a name without a JAX parameter, two names for one, or a JAX parameter
      no name reaches.
  """
  if isinstance(torch_names, str) or not all(isinstance(n, str) for n in torch_names):
    raise ConfigError(
      f"torch_names must be the torch model's parameter names in named_parameters() order, got {torch_names!r}."
    )
  complex_params = _complex.complex_paths(params)
  if complex_params:
    raise ConfigError(
      f'complex parameters at {", ".join(complex_params)}: jaxsched keeps their optimizer state as '
      f'real views (a trailing axis of 2) where torch keeps complex tensors, and does not convert '
      f'those.'
    )
  by_path = leaf_paths(params)
  found = {name: resolve(rule, name, by_path) for name in torch_names}
  taken: dict[str, str] = {}
  for name, (path, _) in found.items():
    if path in taken:
      raise ConfigError(f'torch parameters {taken[path]!r} and {name!r} both map to the JAX parameter {path!r}.')
    taken[path] = name
  missing = [p for p in by_path if p not in taken]
  if missing:
    raise ConfigError(f'the JAX parameters {", ".join(missing)} have no torch parameter among torch_names.')
  label = labeller(config)
  group_list = [g.name for g in groups(config, params)]
  ordered = [(g, n) for g in group_list for n in torch_names if label(found[n][0]) == g]
  return Correspondence(
    tuple(Param(i, n, found[n][0], found[n][1], g) for i, (g, n) in enumerate(ordered)), tuple(group_list)
  )


def check_layouts(config: Config, corr: Correspondence, params: Any) -> None:
  """ConfigError where a layout change alters what the optimizer computes (the spec's
  ``check_layout``: Adafactor factors the last two dimensions, Muon reads the shape as
  torch's (out, in))."""
  check = OPTIMIZERS[config.optimizer].check_layout
  if check is None:
    return
  by_path = leaf_paths(params)
  group_kwargs = {g.name: g.optimizer_kwargs for g in groups(config, params)}
  for p in corr.params:
    check(p.layout, p.name, p.path, np.shape(by_path[p.path]), group_kwargs[p.group])


def _fresh_torch(config: Config, params: Any, corr: Correspondence, rule: Rule):
  """The torch optimizer and scheduler the config builds, on zero tensors of torch's shapes and the params' dtypes."""
  torch = import_torch()
  by_path = leaf_paths(params)
  tensors = {}
  for p in corr.params:
    zeros = p.layout.to_torch(np.zeros(np.shape(by_path[p.path]), np.asarray(by_path[p.path]).dtype))
    tensors[p.name] = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(zeros)))
  optimizer = torch_optimizer(config, [(p.name, tensors[p.name]) for p in corr.params], rule)
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


def _cycled(config: Config) -> tuple[str, ...]:
  """The optimizer keys the scheduler cycles (torch's cycle_momentum)."""
  if config.scheduler not in ('OneCycleLR', 'CyclicLR') or not config.scheduler_kwargs.get('cycle_momentum', True):
    return ()
  return ('momentum', 'betas')


def _optimizer_steps(config: Config, sd: Mapping[str, Any], sched: Mapping[str, Any] | None, step: int | None) -> int:
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
  scheduled = config.scheduler is not None and config.scheduler != PLATEAU
  sc = config.scheduler_configs
  if scheduled and sched is not None and sc['interval'] == 'step' and sc['frequency'] == 1:
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


def _torch_value(x: Any) -> Any:
  return as_numpy(x) if hasattr(x, 'detach') else np.asarray(x)


class _Filler:
  """Writes torch's state into a fresh state of :func:`jaxsched.build` (from_torch)."""

  def __init__(self, config, corr, sd, k, params):
    self.config, self.corr, self.k = config, corr, k
    self.by_path = corr.by_path()
    self.params = params
    self.spec = OPTIMIZERS[config.optimizer]
    self.torch_groups = dict(zip(corr.groups, sd['param_groups']))
    # torch's state is keyed by indices (ints, or strings after some serializers)
    self.state = {int(i): s for i, s in sd['state'].items()}

  def entry(self, p: Param, key: str, like: Any) -> jax.Array:
    s = self.state.get(p.index, {})
    if key not in s or s[key] is None:
      raise ConfigError(
        f"the checkpoint's state of {p.name!r} has no {key!r} (it has {', '.join(s) or 'nothing'}); "
        f"the config's {self.config.optimizer} keeps one (another setting, e.g. amsgrad or "
        f'momentum?).'
      )
    return self.checked(p, key, p.layout.to_jax(_torch_value(s[key])), like)

  def checked(self, p, key, value, like):
    if value.shape != tuple(like.shape):
      raise ConfigError(
        f"the checkpoint's {key} of {p.name!r} has shape {value.shape} in JAX's layout, the JAX "
        f'parameter {p.path!r} {tuple(like.shape)}.'
      )
    return jnp.asarray(value, like.dtype)

  def covered(self, node) -> list[Param]:
    for field in node._fields:
      tree = getattr(node, field)
      if field != 'count' and tree is not None and (type(node), field) not in self.spec.torch_scalars:
        found = []
        for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
          name = path_name(path)
          p = self.by_path.get(name) or self.by_path.get(path_name(path[:-1]))
          if p is not None and p not in found:
            found.append(p)
        return found
    return []

  def steps_of(self, covered: list[Param]) -> int:
    # without torch's step (SGD, Muon), a state that exists has had k >= 1 updates
    steps = {
      int(_torch_value(self.state[p.index]['step']))
      if 'step' in self.state.get(p.index, {})
      else (max(self.k, 1) if self.state.get(p.index) else 0)
      for p in covered
    }
    if len(steps) > 1:
      raise ConfigError(
        f'the parameters {", ".join(p.name for p in covered)} have taken different numbers of steps '
        f'in the checkpoint ({sorted(steps)}); jaxsched steps them together.'
      )
    return steps.pop() if steps else 0

  def optimizer_state(self, node):
    if isinstance(node, LBFGSState):
      return self.lbfgs(node) if self.state.get(0) else node
    covered = self.covered(node)
    if not any(self.state.get(p.index) for p in covered):  # not stepped yet: the fresh state is torch's
      return node
    fields = self.spec.torch_state[type(node)]
    new = {}
    for field, key in fields.items():
      value = getattr(node, field)
      if value is None:
        continue
      if (type(node), field) in self.spec.torch_scalars:
        values = {float(_torch_value(self.state[p.index][key])) for p in covered if key in self.state.get(p.index, {})}
        if len(values) > 1:
          raise ConfigError(
            f"the checkpoint's {key} differs between {', '.join(p.name for p in covered)}; jaxsched keeps one for them."
          )
        new[field] = jnp.asarray(values.pop(), value.dtype) if values else value
      else:
        new[field] = jax.tree_util.tree_map_with_path(
          lambda path, like: self.entry(self.by_path[path_name(path)], key, like),  # noqa: B023
          value,  # noqa: B023
        )
    if isinstance(node, AdafactorState):
      new['moments'] = self.adafactor(node.moments)
    if 'count' in node._fields:
      new['count'] = jnp.asarray(self.steps_of(covered), node.count.dtype)
    return node._replace(**new)

  def adafactor(self, moments):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(moments)
    out = []
    for path, like in leaves:
      p = self.by_path.get(path_name(path))
      if p is not None:
        out.append(self.entry(p, 'variance', like))
        continue
      p, which = self.by_path[path_name(path[:-1])], path[-1].idx
      ndim = like.ndim
      # a swapped pair of axes turns torch's row means into JAX's column means
      swap = not p.layout.keeps_axes(ndim)
      key = ('row_var', 'col_var')[1 - which if swap else which]
      value = _torch_value(self.state[p.index][key])
      out.append(self.checked(p, key, np.swapaxes(value, -1, -2) if swap else value, like))
    return jax.tree_util.tree_unflatten(treedef, out)

  def flat(self, vectors: Sequence[Any], like: jax.Array) -> jax.Array:
    """torch's flattened parameter vectors (its group's params in order, each in torch's layout)
    as JAX's ``ravel_pytree`` order and layout."""
    by_path = leaf_paths(self.params)
    ordered = sorted(self.corr.params, key=lambda p: p.index)
    sizes = [int(np.size(by_path[p.path])) for p in ordered]
    out = []
    for vector in vectors:
      vector = _torch_value(vector)
      pieces = np.split(vector, np.cumsum(sizes)[:-1])
      leaves = {
        p.path: p.layout.to_jax(piece.reshape(p.layout.to_torch(np.asarray(by_path[p.path])).shape))
        for p, piece in zip(ordered, pieces)
      }
      tree = jax.tree_util.tree_map_with_path(lambda path, _: leaves[path_name(path)], self.params)  # noqa: B023
      out.append(ravel_pytree(jax.tree.map(lambda x: np.asarray(x, like.dtype), tree))[0])
    return jnp.stack(out) if out else jnp.zeros((0,) + like.shape[-1:], like.dtype)

  def lbfgs(self, node: LBFGSState) -> LBFGSState:
    s = self.state[0]
    history = node.old_dirs.shape[0]
    num_old = len(s.get('old_dirs', []))
    if num_old > history:
      raise ConfigError(f"the checkpoint's LBFGS holds {num_old} curvature pairs, history_size is {history}.")
    dtype = node.d.dtype

    def rows(ring, key):
      return ring.at[:num_old].set(self.flat(s[key], node.d)) if num_old else ring

    return node._replace(
      func_evals=jnp.asarray(s['func_evals'], jnp.int32),
      n_iter=jnp.asarray(s['n_iter'], jnp.int32),
      d=self.flat([s['d']], node.d)[0],
      t=jnp.asarray(_torch_value(s['t']), dtype),
      old_dirs=rows(node.old_dirs, 'old_dirs'),
      old_stps=rows(node.old_stps, 'old_stps'),
      ro=node.ro.at[:num_old].set(jnp.asarray([float(_torch_value(r)) for r in s.get('ro', [])], dtype)),
      head=jnp.zeros([], jnp.int32),
      num_old=jnp.asarray(num_old, jnp.int32),
      h_diag=jnp.asarray(_torch_value(s['H_diag']), dtype),
      prev_flat_grad=self.flat([s['prev_flat_grad']], node.d)[0],
      prev_loss=jnp.asarray(_torch_value(s['prev_loss']), dtype),
    )


def _prepare(
  config: Any, params: Any, torch_names: Any, rule: Any, batches_per_epoch: int | None, steps_per_epoch: int | None
) -> tuple[Config, Rule, Any, int | None]:
  """What both directions check first: the config, the rule, the parameters' correspondence
  (with layouts that keep the optimizer's math) and the epoch's batches."""
  config = as_config(config)
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
  return config, rule, corr, epoch_batches(config, batches_per_epoch, steps_per_epoch)


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
    params: the JAX parameter tree (its values are not read; :func:`jaxsched.layouts.torch_params`
      converts torch's).
    optimizer_state_dict: ``optimizer.state_dict()``.
    scheduler_state_dict: ``scheduler.state_dict()``, or None.
    torch_names: the torch model's ``named_parameters()`` names, in order.
    batches_per_epoch: as for :func:`jaxsched.build`.
    steps_per_epoch: as for :func:`jaxsched.build`.
    rule: torch name -> (JAX path, layout); default :func:`jaxsched.layouts.flax_rule`.
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
  config, rule, corr, batches = _prepare(config, params, torch_names, rule, batches_per_epoch, steps_per_epoch)
  fresh_optimizer, fresh_scheduler = _fresh_torch(config, params, corr, rule)
  check_optimizer(config, optimizer_state_dict, fresh_optimizer.state_dict(), corr, _cycled(config))
  check_scheduler(config, scheduler_state_dict, fresh_scheduler)
  k = _optimizer_steps(config, optimizer_state_dict, scheduler_state_dict, step)
  if scheduler_state_dict is not None and config.scheduler != PLATEAU:
    n, expected = _position(scheduler_state_dict), int(scheduler_steps(config, batches)(k))
    if n != expected:
      raise ConfigError(
        f"the scheduler has stepped {n} times, but after {k} optimizer steps the config's "
        f'scheduler_configs ({config.scheduler_configs["interval"]}, frequency '
        f'{config.scheduler_configs["frequency"]}) step it {expected} times: another interval, '
        f'frequency or epoch length, or give step= (optimizer steps taken).'
      )
  tx = build(config, params, batches_per_epoch=batches_per_epoch, steps_per_epoch=steps_per_epoch)
  state = tx.init(params)
  filler = _Filler(config, corr, optimizer_state_dict, k, params)
  per_epoch = None if batches is None else optimizer_steps_per_epoch(batches, config.accumulate_grad_batches)

  def inject(node, group):
    torch_group = filler.torch_groups[group if group is not None else corr.groups[0]]
    hyper, states = dict(node.hyperparams), dict(node.hyperparams_states)
    if 'learning_rate' in hyper:
      if isinstance(states.get('learning_rate'), PlateauState):
        states['learning_rate'] = _plateau(states['learning_rate'], torch_group, scheduler_state_dict)
      hyper['learning_rate'] = jnp.asarray(torch_group['lr'], hyper['learning_rate'].dtype)
    for key, value in (('momentum', lambda g: g['momentum']), ('b1', lambda g: g['betas'][0])):
      if key in states and key in hyper:
        hyper[key] = jnp.asarray(value(torch_group), hyper[key].dtype)
    return node._replace(
      count=jnp.asarray(k, node.count.dtype),
      hyperparams=hyper,
      hyperparams_states=states,
      inner_state=walk(node.inner_state, group),
    )

  def visit(node, group):
    if isinstance(node, optax.MultiTransformState):
      return node._replace(inner_states={name: walk(inner, name) for name, inner in node.inner_states.items()})
    if isinstance(node, optax.InjectStatefulHyperparamsState):
      return inject(node, group)
    if isinstance(node, AccumulateState):
      batch = 0 if per_epoch is None else (k % per_epoch) * config.accumulate_grad_batches
      return node._replace(batch=jnp.asarray(batch, node.batch.dtype), inner_state=walk(node.inner_state, group))
    if isinstance(node, KNOWN):
      return filler.optimizer_state(node)
    return node

  def walk(tree, group=None):
    return jax.tree.map(lambda node: visit(node, group), tree, is_leaf=lambda x: isinstance(x, KNOWN))

  return walk(state)


def _plateau(plateau: PlateauState, torch_group: Mapping[str, Any], sched: Mapping[str, Any] | None) -> PlateauState:
  """torch's ReduceLROnPlateau state for one group (its counters are shared by all groups)."""
  lr = jnp.asarray(torch_group['lr'], plateau.lr.dtype)
  if sched is None:
    return plateau.replace(lr=lr)
  steps = int(sched['last_epoch'])
  return plateau.replace(
    lr=lr,
    best=jnp.asarray(sched['best'], plateau.best.dtype),
    num_bad_epochs=jnp.asarray(sched['num_bad_epochs'], jnp.int32),
    cooldown_counter=jnp.asarray(sched['cooldown_counter'], jnp.int32),
    steps=jnp.asarray(steps, jnp.int32),
    reports=jnp.asarray(steps * plateau.config.frequency, jnp.int32),
  )


def _scheduler_position(config: Config, sched: Any, sd: dict[str, Any], n: int, lrs: list[float]) -> dict[str, Any]:
  """A fresh scheduler's state dict moved to ``n`` steps, with the current LRs."""
  from bisect import bisect_right

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
  own), on the torch model's parameters (:func:`jaxsched.layouts.torch_state_dict`), with
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
  config, rule, corr, batches = _prepare(config, params, torch_names, rule, batches_per_epoch, steps_per_epoch)
  optimizer, scheduler = _fresh_torch(config, params, corr, rule)
  reader = _Reader(config, corr, params, torch)
  reader.walk(opt_state)
  sd = optimizer.state_dict()
  k = reader.k
  sd['state'] = reader.torch_state(k)
  for name, group in zip(corr.groups, sd['param_groups']):
    group['lr'] = reader.lr[name]
    if name in reader.momentum or None in reader.momentum:
      momentum = reader.momentum.get(name, reader.momentum.get(None))
      if 'betas' in group:
        group['betas'] = (momentum, *group['betas'][1:])
      else:
        group['momentum'] = momentum
  if scheduler is None:
    return sd, None
  lrs = [reader.lr[name] for name in corr.groups]
  sched = scheduler.state_dict()
  if reader.plateau is not None:
    p = reader.plateau
    sched.update(
      best=float(p.best),
      num_bad_epochs=int(p.num_bad_epochs),
      cooldown_counter=int(p.cooldown_counter),
      last_epoch=int(p.steps),
      _last_lr=lrs,
    )
    return sd, sched
  return sd, _scheduler_position(config, scheduler, sched, int(scheduler_steps(config, batches)(k)), lrs)


class _Reader:
  """Reads a state of :func:`jaxsched.build` into torch's terms (to_torch)."""

  def __init__(self, config, corr, params, torch):
    self.config, self.corr, self.params, self.torch = config, corr, params, torch
    self.by_path = corr.by_path()
    self.spec = OPTIMIZERS[config.optimizer]
    self.k = 0
    self.lr: dict[str, float] = {}
    self.momentum: dict[str | None, float] = {}
    self.plateau: PlateauState | None = None
    self.state: dict[int, dict[str, Any]] = {p.index: {} for p in corr.params}
    self.scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32

  def tensor(self, x: Any) -> Any:
    return self.torch.from_numpy(np.array(x))  # a writable copy

  def walk(self, tree: Any, group: str | None = None) -> None:
    for node in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, KNOWN)):
      self.visit(node, group)

  def visit(self, node: Any, group: str | None) -> None:
    if isinstance(node, optax.MultiTransformState):
      for name, inner in node.inner_states.items():
        self.walk(inner, name)
    elif isinstance(node, optax.InjectStatefulHyperparamsState):
      self.k = int(node.count)
      hyper, states = node.hyperparams, node.hyperparams_states
      if 'learning_rate' in hyper:
        self.lr[str(group)] = float(hyper['learning_rate'])
        if isinstance(states.get('learning_rate'), PlateauState):
          self.plateau = states['learning_rate']
      for key in ('momentum', 'b1'):
        if key in states and key in hyper:
          self.momentum[group] = float(hyper[key])
      self.walk(node.inner_state, group)
    elif isinstance(node, AccumulateState):
      if int(node.kept) or int(node.batch) % self.config.accumulate_grad_batches:
        raise ConfigError(
          f'the state is in the middle of an accumulation group ({int(node.kept)} micro-batches '
          f'gathered): torch keeps those gradients in p.grad, not in its state. Hand it over after '
          f'an optimizer step.'
        )
      self.walk(node.inner_state, group)
    elif isinstance(node, LBFGSState):
      self.lbfgs(node)
    elif isinstance(node, KNOWN):
      self.optimizer_state(node)

  def started(self, node: Any) -> bool:
    """Whether torch would have this state yet (torch creates it on a parameter's first step):
    its own count where it keeps one; else the optimizer steps taken, which SGD, Muon and LBFGS
    cannot tell after :func:`from_torch` without ``step=`` (torch keeps no ``step`` for them), so
    there a state counts as started where its tensors are not all zeros (a zero momentum buffer is
    what torch's Muon starts from)."""
    if 'count' in node._fields:
      return int(node.count) > 0
    if self.k:
      return True
    return self.spec.torch_step is None and any(np.any(np.asarray(x)) for x in jax.tree.leaves(node))

  def optimizer_state(self, node: Any) -> None:
    if not self.started(node):
      return
    count = int(node.count) if 'count' in node._fields else None
    covered = []
    for field, key in self.spec.torch_state[type(node)].items():
      value = getattr(node, field)
      if value is None or (type(node), field) in self.spec.torch_scalars:
        continue
      for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
        p = self.by_path[path_name(path)]
        covered.append(p)
        self.state[p.index][key] = self.tensor(p.layout.to_torch(np.asarray(leaf)))
    if isinstance(node, AdafactorState):
      covered += self.adafactor(node.moments)
    for field, key in self.spec.torch_state[type(node)].items():
      if (type(node), field) in self.spec.torch_scalars:
        for p in covered:
          self.state[p.index][key] = self.torch.tensor(float(getattr(node, field)), dtype=self.scalar)
    if count is not None:
      for p in covered:
        self.state[p.index]['count'] = count

  def adafactor(self, moments: Any) -> list[Param]:
    covered = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(moments)[0]:
      leaf = np.asarray(leaf)
      p = self.by_path.get(path_name(path))
      if p is not None:
        self.state[p.index]['variance'] = self.tensor(leaf)
      else:
        p, which = self.by_path[path_name(path[:-1])], path[-1].idx
        swap = not p.layout.keeps_axes(leaf.ndim)
        key = ('row_var', 'col_var')[1 - which if swap else which]
        self.state[p.index][key] = self.tensor(np.swapaxes(leaf, -1, -2) if swap else leaf)
      covered.append(p)
    return covered

  def flat(self, vector: jax.Array) -> Any:
    """A JAX ``ravel_pytree`` vector as torch's flattened parameters (group order, torch's layout)."""
    _, unravel = ravel_pytree(self.params)
    by_path = leaf_paths(unravel(vector))
    ordered = sorted(self.corr.params, key=lambda p: p.index)
    return self.tensor(np.concatenate([p.layout.to_torch(np.asarray(by_path[p.path])).reshape(-1) for p in ordered]))

  def lbfgs(self, node: LBFGSState) -> None:
    if int(node.n_iter) == 0:
      return
    history, num_old, head = node.old_dirs.shape[0], int(node.num_old), int(node.head)
    rows = [(head + i) % history for i in range(num_old)]  # oldest first, as torch's lists
    self.state[0] = {
      'func_evals': int(node.func_evals),
      'n_iter': int(node.n_iter),
      'd': self.flat(node.d),
      't': float(node.t),
      'old_dirs': [self.flat(node.old_dirs[r]) for r in rows],
      'old_stps': [self.flat(node.old_stps[r]) for r in rows],
      'ro': [self.tensor(np.asarray(node.ro[r])) for r in rows],
      'H_diag': self.tensor(np.asarray(node.h_diag)),
      'prev_flat_grad': self.flat(node.prev_flat_grad),
      'prev_loss': float(node.prev_loss),
      'al': [None] * history,
    }

  def torch_state(self, k: int) -> dict[int, dict[str, Any]]:
    """Each parameter's torch state, with torch's ``step`` (its updates, or the optimizer's ``k``)."""
    out = {}
    for index, entries in self.state.items():
      if not entries:
        continue
      entries = dict(entries)
      steps = entries.pop('count', k)
      if self.spec.torch_step == 'int':
        entries['step'] = steps
      elif self.spec.torch_step == 'float':
        entries['step'] = self.torch.tensor(float(steps), dtype=self.scalar)
      out[index] = entries
    return out


class LightningCheckpoint(NamedTuple):
  """A Lightning checkpoint in JAX's terms.

  Attributes:
    params: the model's parameters, converted (:func:`jaxsched.layouts.torch_params`).
    opt_state: the state of :func:`jaxsched.build` that continues the run (:func:`from_torch`).
    epoch: the checkpoint's ``epoch`` (Lightning's ``current_epoch`` when it was saved).
    global_step: the checkpoint's ``global_step`` (optimizer steps taken).
    batch_stats: the model's BatchNorm statistics (torch's ``running_mean`` and
      ``running_var``) in the structure given as ``batch_stats=``; None without it. torch's
      ``num_batches_tracked`` has no Flax counterpart and is not read.
  """

  params: Any
  opt_state: Any
  epoch: int
  global_step: int
  batch_stats: Any = None


def load_lightning_checkpoint(
  path: Any,
  config: Any,
  params: Any,
  *,
  rule: Rule | Mapping | None = None,
  torch_names: Sequence[str] | None = None,
  batches_per_epoch: int | None = None,
  steps_per_epoch: int | None = None,
  batch_stats: Any = None,
) -> LightningCheckpoint:
  """Reads a PyTorch Lightning ``.ckpt`` (``state_dict``, ``optimizer_states``, ``lr_schedulers``,
  ``epoch``, ``global_step``) for a JAX run of the same config.

  The file is read with ``torch.load(path, weights_only=True)``: tensors and plain values only.

  Args:
    path: the ``.ckpt`` file.
    config: the run's config.
    params: a JAX parameter tree of the model's structure (its values are replaced).
    rule: torch name -> (JAX path, layout); default :func:`jaxsched.layouts.flax_rule`.
    torch_names: the LightningModule's ``named_parameters()`` names in order; by default
      the ``state_dict`` entries the rule maps to a JAX parameter, in the file's order
      (which is ``named_parameters()``'s, buffers aside).
    batches_per_epoch: as for :func:`jaxsched.build`.
    steps_per_epoch: as for :func:`jaxsched.build`.
    batch_stats: a tree of the model's BatchNorm statistics (Linen's ``variables['batch_stats']``,
      or ``nnx.state(model, nnx.BatchStat)``; its values are replaced): the checkpoint's
      ``running_mean`` and ``running_var`` fill it. Without it a checkpoint that has them
      gives a :class:`jaxsched.ConfigWarning` naming them.

  Raises:
    ConfigError: a file ``weights_only`` cannot read (say why), several optimizers or
      schedulers, or what :func:`from_torch` refuses.
  """
  torch = import_torch()
  import pickle

  try:
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, AttributeError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(
      f'{path} cannot be loaded with torch.load(weights_only=True), which reads tensors and plain '
      f'values only: {first}. Save the checkpoint without such objects (e.g. hyperparameters that '
      f'are plain numbers and strings), or convert it once in a trusted session.'
    ) from None
  missing = [k for k in ('state_dict', 'optimizer_states') if k not in ckpt]
  if missing:
    raise ConfigError(
      f'{path} is not a Lightning training checkpoint: it has no {", ".join(missing)} '
      f'(keys: {", ".join(map(str, ckpt))}).'
    )
  optimizers, schedulers = ckpt['optimizer_states'], ckpt.get('lr_schedulers') or []
  if len(optimizers) != 1 or len(schedulers) > 1:
    raise ConfigError(
      f'{path} holds {len(optimizers)} optimizers and {len(schedulers)} LR schedulers; a config builds one of each.'
    )
  rule = as_rule(rule)
  weights = ckpt['state_dict']
  if torch_names is None:
    by_path = leaf_paths(params)
    torch_names = [
      name
      for name, tensor in weights.items()
      if (target := rule(name, tensor.ndim)) is not None and target[0] in by_path
    ]
  stats = {name: t for name, t in weights.items() if name.rpartition('.')[2] in RUNNING_STATS}
  converted = torch_params(
    {**{name: weights[name] for name in torch_names}, **stats}, rule, like=params, batch_stats=batch_stats
  )
  new_params, new_stats = converted if batch_stats is not None else (converted, None)
  opt_state = from_torch(
    config,
    params,
    optimizers[0],
    schedulers[0] if schedulers else None,
    torch_names=torch_names,
    batches_per_epoch=batches_per_epoch,
    steps_per_epoch=steps_per_epoch,
    rule=rule,
    step=ckpt.get('global_step'),
  )
  return LightningCheckpoint(
    new_params, opt_state, int(ckpt.get('epoch', 0)), int(ckpt.get('global_step', 0)), new_stats
  )
