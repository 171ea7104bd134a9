"""From a config to one Optax transformation for a parameter tree.

:func:`build` chains what Lightning does around a torch optimizer step:
gradient accumulation, clipping, the optimizer with DynVision's parameter
groups (each group with its own LR, scheduled from its own base LR) and
ReduceLROnPlateau. :func:`current_lr` reads each group's learning rate back.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks, averaging, state_tree
from jaxsched._errors import ConfigError, unknown
from jaxsched.accumulate import AccumulateState, accumulate
from jaxsched.config import Config, read_config
from jaxsched.groups import FROZEN, RECURRENT, REGULAR, groups, labels_of, path_name
from jaxsched.learning_rates import group_learning_rate
from jaxsched.optimizers import _common, _complex, _inject, optimizer, optimizer_direction, resolve
from jaxsched.plan import make_plan, plan_of
from jaxsched.plateau import ChainState, PlateauState
from jaxsched.stepping import epoch_batches, optimizer_steps_per_epoch


def load_config(source: Any = None, overrides: Iterable[str] | str | None = ()) -> Config:
  """A checked :class:`Config` from a YAML path, a shipped pattern's name or a mapping, plus overrides.

  Args:
    source: a path to a YAML file, the name of a shipped pattern
      (:func:`jaxsched.patterns`), a mapping (dict, OmegaConf DictConfig, a
      Config), or None for the defaults.
    overrides: snakemake-style ``KEY=VALUE`` strings (or one space-separated
      string), applied after the source. An override that changes the optimizer
      (scheduler) drops the source's optimizer_kwargs (scheduler_kwargs) that the
      new one does not take, with a :class:`jaxsched.ConfigWarning`.

  Raises:
    ConfigError: malformed YAML (with file and line), a file beyond the bounds in
      :mod:`jaxsched.config`, a near-miss of a known key, a value of the wrong
      type, an unknown optimizer or scheduler or one of their keywords: the
      optimizer and schedule of each group kind are built once, so an accepted
      config builds.
  """
  return make_plan(read_config(source, overrides)).config


def torch_clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  """``torch.nn.utils.clip_grad_norm_``: g * min(1, max_norm / (norm + 1e-6)).

  ``optax.clip_by_global_norm`` has no 1e-6 and leaves g alone below max_norm.
  """

  def fn(updates, params):
    del params
    norm = optax.tree.norm(updates)
    coef = jnp.minimum(max_norm / (norm + 1e-6), 1.0)
    return jax.tree.map(lambda g: g * coef.astype(g.dtype), updates)

  return optax.stateless(fn)


def build(
  config: Any,
  params: Any,
  *,
  batches_per_epoch: int | None = None,
  steps_per_epoch: int | None = None,
  run_steps: int | None = None,
  max_epochs: int | None = None,
) -> optax.GradientTransformationExtraArgs:
  """One Optax transformation for ``params`` from a config; one ``update`` per training batch.

  Args:
    config: a :class:`Config` or anything :func:`load_config` accepts.
    params: the parameter tree (its paths name the groups).
    batches_per_epoch: the training batches (micro-batches) in one epoch,
      ``len(train_loader)`` (Lightning's ``num_training_batches``). Needed for
      interval "epoch" schedules, for interval "step" with frequency > 1 and for
      accumulate_grad_batches > 1 (the optimizer also steps on each epoch's
      last batch).
    steps_per_epoch: the same number under its older name, accepted without
      accumulation only (where batches and optimizer steps are one thing).
    run_steps: the run's optimizer steps, where known: a schedule torch cannot
      step that far (OneCycleLR past total_steps, where torch raises) is then a
      ConfigError here rather than a held LR inside jit.
    max_epochs: the run's epochs (Lightning's ``Trainer(max_epochs)``), for ``swa``:
      needed for a float ``swa_epoch_start``; the weights become the average when
      that many epochs have run.

  Raises:
    ConfigError: a bad config; a leaf of ``params`` that is not a float or
      complex array (torch trains only those: leave integer, boolean and PRNG-key
      leaves out of the tree, e.g. ``nnx.state(model, nnx.Param)``); a configured
      group that matches no parameter; a bad ``batches_per_epoch``,
      ``steps_per_epoch`` or ``run_steps``.

  Returns:
    ``accumulate(clip -> multi_transform({group: optimizer(lr=schedule)}))``,
    or, where the groups differ only in their LR and the optimizer's step is
    linear in it (``OptimizerSpec.lr_linear``), ``... clip -> optimizer(lr=1) ->
    multi_transform({group: lr schedule})``: one moment computation for every
    parameter, the same numbers. The accumulation wrapper (:mod:`jaxsched.accumulate`)
    is there with accumulate_grad_batches > 1 or skip_nonfinite. ``report`` feeds the
    plateaus, ``current_lr`` and ``set_lr`` read and write the groups' LRs, and
    ``skipped_steps`` counts the batches dropped for non-finite gradients.
    With ``ema`` or ``swa`` the whole is wrapped by :func:`jaxsched.averaging.average`,
    which keeps the average (one copy of the parameters) in the state.
  """
  plan = plan_of(config)
  config = plan.config
  batches = epoch_batches(config, batches_per_epoch, steps_per_epoch)
  if run_steps is not None:
    run_steps = _checks.Integer(0, _checks.COUNT_MAX)('run_steps', run_steps)
  _trainable(params)
  group_list = groups(config, params)
  if plan.spec is not None:
    plan.spec.check_groups(len(group_list))
  rules = averaging.averaging_rules(plan.ema, plan.swa, batches, max_epochs, plan.accumulate_grad_batches)
  swa_swap = None
  if rules is not None and rules.start_epochs is not None and batches is not None:  # swa: SWALR takes over
    swa_swap = (rules.start_epochs[0], optimizer_steps_per_epoch(batches, plan.accumulate_grad_batches))
    if swa_swap[0] * swa_swap[1] > _checks.COUNT_MAX:
      raise ConfigError(
        f'swa starts at epoch {swa_swap[0]}, optimizer step {swa_swap[0] * swa_swap[1]}: beyond the int32 step '
        f'counter (at most {_checks.COUNT_MAX}); lower swa.swa_epoch_start or max_epochs.'
      )
  rates, kwargs = {}, {}
  for i, group in enumerate(group_list):
    rates[group.name], kwargs[group.name] = group_learning_rate(
      plan, group, i, len(group_list), batches, run_steps, swa_swap
    )
  # labels as a function of the tree, so containers such as nnx.State keep their own type
  labels = labels_of(config, params)
  # timm's layer_decay_no_opt_scale: parameters torch would not optimize get no update
  frozen = {FROZEN: optax.set_to_zero()} if FROZEN in jax.tree.leaves(labels(params)) else {}
  if plan.shares_direction(group_list):
    direction = optimizer_direction(plan.optimizer, **kwargs[group_list[0].name])
    tx = optax.chain(
      direction,
      optax.multi_transform(
        {name: _inject.inject(_scale_by_learning_rate, {'learning_rate': lr}) for name, lr in rates.items()} | frozen,
        labels,
      ),
    )
  else:
    # an optimizer whose step reads every group's gradients together (OptimizerSpec.across_groups)
    spec = plan.spec if len(group_list) > 1 else None
    first = dict(kwargs[group_list[0].name])
    across = {} if spec is None else {key: resolve(spec, None, first)[1][key] for key in spec.across_groups}
    tx = optax.multi_transform(
      {
        name: optimizer(plan.optimizer, learning_rate=rates[name], **{**kwargs[name], **dict.fromkeys(across)})
        for name in rates
      }
      | frozen,
      labels,
    )
    if spec is not None and across:
      tx = optax.chain(*(spec.across_groups[key](value) for key, value in across.items()), tx)
  if plan.clipping is not None:
    if plan.clipping.algorithm == 'norm':
      clip = torch_clip_by_global_norm(plan.clipping.value)
    else:
      _no_complex(
        params,
        'gradient_clip_algorithm: value (torch.nn.utils.clip_grad_value_ clamps, and torch '
        'cannot clamp complex numbers); clip by norm instead',
      )
      clip = optax.clip(plan.clipping.value)
    tx = optax.chain(clip, tx)
  if plan.accumulate_grad_batches > 1 or plan.skip_nonfinite:
    tx = accumulate(tx, plan.accumulate_grad_batches, batches, plan.skip_nonfinite)
  if frozen:  # torch's frozen parameters have no gradient: no norm (clipping, timm's Lamb) or check reads theirs
    is_frozen = lambda tree: jax.tree.map(lambda label: label == FROZEN, labels(tree))  # noqa: E731
    tx = optax.chain(optax.masked(optax.set_to_zero(), is_frozen), tx)
  if rules is not None:
    tx = averaging.average(tx, rules, plan.accumulate_grad_batches, batches)
  init = tx.init
  return tx._replace(init=lambda tree: init(_trainable(tree)))


def _trainable(params: Any) -> Any:
  """``params``, or a ConfigError naming each leaf that is not a float or complex array."""
  bad = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    dtype = getattr(leaf, 'dtype', None)
    dtype = jnp.result_type(leaf) if dtype is None else dtype
    if not jnp.issubdtype(dtype, jnp.inexact):
      bad.append(f'{path_name(path) or "the root"} ({dtype})')
  if bad:
    raise ConfigError(
      f'parameters must be float or complex arrays, as torch trains only those; not: '
      f'{", ".join(bad[:5])}{" ..." if len(bad) > 5 else ""}. Leave integer, boolean and PRNG-key '
      f'leaves out of the tree given to build() and init() (with Flax NNX: '
      f'nnx.state(model, nnx.Param)).'
    )
  return params


def _no_complex(params: Any, what: str) -> None:
  paths = _complex.complex_paths(params)
  if paths:
    raise ConfigError(f'complex parameter at {", ".join(paths)}: {what}.')


def _scale_by_learning_rate(learning_rate: Any) -> optax.GradientTransformation:
  """A group's LR applied to the shared direction (which already carries torch's minus sign)."""
  return optax.stateless(lambda u, _: jax.tree.map(lambda x: x * _common.cast(learning_rate, x), u))


def _group_order(name: str) -> tuple[int, str]:
  return ({REGULAR: 0, RECURRENT: 1}.get(name, 2), name)


def _per_group_hyperparams(opt_state: Any) -> tuple[dict[str, Any], dict[str, Any]]:
  """Each group's learning rate and, where a scheduler cycles it, momentum/beta1."""
  lrs: dict[str, Any] = {}
  momenta: dict[str, Any] = {}
  shared_momentum = None  # cycled by the direction shared by all groups
  for node in state_tree.find(opt_state, (optax.MultiTransformState, optax.InjectStatefulHyperparamsState)):
    if isinstance(node, optax.InjectStatefulHyperparamsState):
      shared_momentum = _scheduled_momentum(node)
    elif isinstance(node, optax.MultiTransformState):
      for name in sorted(node.inner_states, key=_group_order):
        inner = node.inner_states[name]
        inner = getattr(inner, 'inner_state', inner)
        if not hasattr(inner, 'hyperparams'):  # the frozen parameters' optax.set_to_zero
          continue
        lrs[name] = inner.hyperparams['learning_rate']
        if (momentum := _scheduled_momentum(inner)) is not None:
          momenta[name] = momentum
  if shared_momentum is not None:
    momenta = dict.fromkeys(lrs, shared_momentum)
  return lrs, momenta


def current_lr(opt_state: Any) -> dict[str, jax.Array]:
  """Each group's learning rate for the next step, from a state of :func:`build`, as
  torch's ``param_group['lr']``.

  The values are 0-d JAX arrays, so this works inside jit too (``float(v)`` for a
  plain number); the keys are the groups' names, in the same order for every state:
  regular, recurrent, then the named groups alphabetically.
  """
  return _per_group_hyperparams(opt_state)[0]


def current_momentum(opt_state: Any) -> dict[str, jax.Array]:
  """Each group's momentum (SGD, RMSprop) or beta1 (the Adam family) for the next step,
  for the groups whose scheduler cycles it (OneCycleLR, CyclicLR with
  ``cycle_momentum``); empty otherwise. Keys and values as :func:`current_lr`'s."""
  return _per_group_hyperparams(opt_state)[1]


def _scheduled_momentum(inject_state: Any) -> Any:
  for key in ('momentum', 'b1'):
    if key in inject_state.hyperparams and key in inject_state.hyperparams_states:
      return inject_state.hyperparams[key]
  return None


def set_lr(opt_state: Any, learning_rate: Any) -> Any:
  """The state of :func:`build` with new learning rates for the next step, as
  setting torch's ``param_group['lr']``.

  Args:
    opt_state: a state of :func:`build`.
    learning_rate: one LR for every group, or a mapping of group names (as
      :func:`current_lr` gives them) to LRs.

  Returns:
    The new state. A group under ReduceLROnPlateau or several schedulers
    (``schedulers:``) goes on from the new LR (torch's plateau and chainable steps
    act on ``param_group['lr']``); under one schedule of the step count the new LR
    holds for the next step, after which the schedule gives its own values.
    Pure: works inside ``jax.jit`` and does not recompile for a new value.

  Raises:
    ConfigError: a group name the state does not have.
  """
  known = [k for k in current_lr(opt_state) if '/' not in k]
  if not known:
    raise ConfigError(
      'set_lr takes a state of jaxsched.build(); in a state of jaxsched.optimizer(), set '
      "opt_state.hyperparams['learning_rate'] (or use optax.tree_utils.tree_set)."
    )
  wanted = dict(learning_rate) if isinstance(learning_rate, Mapping) else dict.fromkeys(known, learning_rate)
  for name, lr in wanted.items():
    if name not in known:
      raise unknown('parameter group', name, known)
    if not isinstance(lr, jax.Array):  # a traced or device value is the caller's to check
      _checks.NON_NEGATIVE(f'learning_rate of group {name!r}', lr)

  def visit(node):
    inner_states = dict(node.inner_states)
    for name, lr in wanted.items():
      masked = inner_states[name]
      inject = masked.inner_state
      hyper = inject.hyperparams
      value = jnp.asarray(lr, hyper['learning_rate'].dtype)
      states = dict(inject.hyperparams_states)
      held = states.get('learning_rate')
      if isinstance(held, PlateauState):
        states['learning_rate'] = held.replace(lr=jnp.asarray(lr, held.lr.dtype))
      elif isinstance(held, ChainState):
        states['learning_rate'] = held._replace(lr=jnp.asarray(lr, held.lr.dtype))
      inject = inject._replace(hyperparams={**hyper, 'learning_rate': value}, hyperparams_states=states)
      inner_states[name] = masked._replace(inner_state=inject)
    return node._replace(inner_states=inner_states)

  return state_tree.replace(opt_state, optax.MultiTransformState, visit)


def skipped_steps(opt_state: Any) -> jax.Array:
  """Micro-batches dropped for non-finite gradients (``skip_nonfinite: true``); 0 otherwise."""
  loop = state_tree.find_one(opt_state, AccumulateState)
  return loop.skipped if loop is not None else jnp.zeros([], jnp.int32)


def lr_log_names(config: Any, opt_state: Any) -> dict[str, Any]:
  """current_lr and current_momentum keyed as Lightning's LearningRateMonitor names
  them: ``lr-<Optimizer>`` for one group, ``lr-<Optimizer>/<group>`` for several, or
  ``<scheduler_configs.name>/<group>`` when a name is configured; momentum as the
  same name plus ``-momentum`` (``log_momentum=True``). With ``schedulers:`` each
  entry logs the same LRs under its own name, the unnamed ones as ``lr-<Optimizer>``,
  ``lr-<Optimizer>-1``, ... in list order."""
  plan = plan_of(config)
  lrs, momenta = _per_group_hyperparams(opt_state)
  names = [e.name for e in plan.schedulers] or [plan.config.scheduler_configs['name']]
  out, unnamed = {}, 0
  for given in names:
    base = given
    if not base:
      unnamed += 1
      optimizer = plan.optimizer if plan.spec is None else plan.spec.logged_name
      base = f'lr-{optimizer}' + (f'-{unnamed - 1}' if unnamed > 1 else '')
    single = len(lrs) == 1 and not given
    for group, v in lrs.items():
      name = base if single else f'{base}/{group}'
      out[name] = v
      if group in momenta:
        out[f'{name}-momentum'] = momenta[group]
  return out
