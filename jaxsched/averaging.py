"""Weight averaging inside the optimizer state: Lightning's EMAWeightAveraging and
StochasticWeightAveraging, with ``torch.optim.swa_utils``' numbers.

torch's ``AveragedModel`` keeps a copy of the parameters and ``n_averaged``; its
first ``update_parameters`` copies the model's parameters, each later one applies
``avg_fn(averaged, current, n_averaged)``. Here that copy (:class:`AverageState`)
lives in the optimizer state of :func:`jaxsched.build`, updated inside ``update``
where Lightning's callbacks update it:

* ``EMAWeightAveraging`` (``pytorch_lightning.callbacks.weight_averaging``): after
  an optimizer step k (0-based, micro-batches that do not step the optimizer do not
  count) when ``k % update_every_n_steps == 0`` and ``k >= update_starting_at_step``;
  with ``update_starting_at_epoch`` also at the end of each epoch from that one on,
  after the epoch's validation. Validation and the end of training use the average.
* ``StochasticWeightAveraging`` (``pytorch_lightning.callbacks.stochastic_weight_avg``):
  at the start of each epoch from ``swa_start`` to the run's last, with the weights
  as they are then (so the last epoch's training is not in the average); from
  ``swa_start`` on ``SWALR`` replaces the configured scheduler, stepped once per
  epoch; validation uses the current weights, and the weights become the average
  when a run of ``max_epochs`` epochs ends.

:func:`averaged_params` gives the weights Lightning validates with, :func:`final_params`
the weights it holds when training ends.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxsched import _checks, state_tree
from jaxsched._errors import ConfigError, unknown
from jaxsched.schedules import _numeric
from jaxsched.schedules.swalr import STRATEGIES, swalr_value
from jaxsched.stepping import steps_after

AvgFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def swa_avg_fn(averaged: jax.Array, current: jax.Array, n_averaged: jax.Array) -> jax.Array:
  """torch's ``get_swa_avg_fn()`` (and Lightning's ``StochasticWeightAveraging.avg_fn``):
  ``averaged + (current - averaged) / (n_averaged + 1)``, the equal-weight mean."""
  return averaged + (current - averaged) / (n_averaged + 1).astype(averaged.dtype)


def ema_avg_fn(decay: float = 0.999) -> AvgFn:
  """torch's ``get_ema_avg_fn(decay)`` (Lightning's EMAWeightAveraging):
  ``decay * averaged + (1 - decay) * current``."""
  decay = _checks.Real(0.0, 1.0)('decay', decay)
  return lambda averaged, current, n_averaged: decay * averaged + (1 - decay) * current


def ema_multi_avg_fn(decay: float = 0.999) -> AvgFn:
  """torch's ``get_ema_multi_avg_fn(decay)``: ``torch.lerp(averaged, current, 1 - decay)``,
  which rounds as ``averaged + w (current - averaged)`` for ``w < 0.5``, else
  ``current - (current - averaged)(1 - w)``."""
  decay = _checks.Real(0.0, 1.0)('decay', decay)
  w = 1 - decay
  if w < 0.5:
    return lambda averaged, current, n_averaged: averaged + w * (current - averaged)
  return lambda averaged, current, n_averaged: current - (current - averaged) * (1 - w)


@dataclasses.dataclass(frozen=True)
class Averaging:
  """When a Lightning weight-averaging callback updates the average, and what it does with it.

  Attributes:
    avg_fn: torch's averaging function.
    every_n_steps: after optimizer step k: ``k % every_n_steps == 0`` (0 or None: never).
    start_step: ... and ``k >= start_step`` (None: from the first).
    end_epoch_from: at the end of epoch e (after its validation) when ``e >= end_epoch_from``.
    start_epochs: at the start of epoch e when ``lo <= e <= hi`` (hi None: no end).
    validate_with_average: validation swaps the average in (EMA) or not (SWA).
    max_epochs: the average replaces the weights at the end of training once this many
      epochs have run (None: whenever training ends).
    batches_per_epoch, accumulate_grad_batches: the loop's shape, where
      :func:`jaxsched.carry_over` starts an average on a resumed run (its epoch).
  """

  avg_fn: AvgFn
  every_n_steps: int | None = None
  start_step: int | None = None
  end_epoch_from: int | None = None
  start_epochs: tuple[int, int | None] | None = None
  validate_with_average: bool = True
  max_epochs: int | None = None
  batches_per_epoch: int | None = None
  accumulate_grad_batches: int = 1


# The loop's counters of an AverageState, in the order of its ``counts`` array.
COUNTS = ('n_averaged', 'step', 'batch', 'epoch', 'pending')
_AT = {name: i for i, name in enumerate(COUNTS)}


class AverageState(struct.PyTreeNode):
  """The averaged weights and the training loop's position, around the optimizer's state.

  Attributes:
    params: the average (torch's ``AveragedModel`` parameters); the parameters
      given to ``init`` until the first update, as Lightning's copy of the model.
    counts: the loop's counters as one int32 array, in the order of :data:`COUNTS`, read
      by name through the properties below. One leaf, so a step updates them all in one
      kernel and passes one buffer in and out of ``jax.jit``, where five scalars cost a
      small model's step a kernel and four more arguments (benchmarks section 8).
    inner_state: the optimizer's state.
    rules: static; not a leaf, so checkpoints hold the numbers only.
  """

  params: Any
  counts: jax.Array
  inner_state: Any
  rules: Averaging = struct.field(pytree_node=False)

  @property
  def n_averaged(self) -> jax.Array:
    """Updates so far (torch's ``n_averaged``; the first one copies)."""
    return self.counts[_AT['n_averaged']]

  @property
  def step(self) -> jax.Array:
    """Optimizer steps so far (Lightning's ``global_step``)."""
    return self.counts[_AT['step']]

  @property
  def batch(self) -> jax.Array:
    """Micro-batches seen so far in the current epoch."""
    return self.counts[_AT['batch']]

  @property
  def epoch(self) -> jax.Array:
    """Epochs completed (Lightning's ``current_epoch``)."""
    return self.counts[_AT['epoch']]

  @property
  def pending(self) -> jax.Array:
    """An end-of-epoch update is owed (it comes after the epoch's validation: the next
    ``update`` or :func:`final_params` makes it)."""
    return self.counts[_AT['pending']].astype(bool)

  def with_counts(self, **values: Any) -> AverageState:
    """This state with the counters named (see :data:`COUNTS`) set to ``values``."""
    return self.replace(counts=packed(**{name: values.get(name, getattr(self, name)) for name in COUNTS}))


def packed(n_averaged: Any, step: Any, batch: Any, epoch: Any, pending: Any) -> jax.Array:
  """The ``counts`` array of an :class:`AverageState` with these counters."""
  return jnp.stack([jnp.asarray(v).astype(jnp.int32) for v in (n_averaged, step, batch, epoch, pending)])


class _SwaLrs:
  """A positive float SWA learning rate, or a list of them (one per parameter group).

  Lightning's ``StochasticWeightAveraging.__init__`` raises a MisconfigurationException
  for anything else: ``swa_lrs`` must be a float or a list, and every value a positive
  float, so an integer (``1``, or ``[1, 0.1]``) is refused there, and here.
  """

  def __call__(self, key: str, value: Any) -> Any:
    if isinstance(value, (list, tuple)):
      return tuple(self._one(f'{key}[{i}]', v) for i, v in enumerate(value))
    return self._one(key, value)

  def _one(self, key: str, value: Any) -> float:
    kind = getattr(getattr(value, 'dtype', None), 'kind', None)
    if isinstance(value, int) or kind in ('i', 'u', 'b'):
      hint = f' (write {int(value)}.0)' if not isinstance(value, bool) and kind != 'b' else ''
      raise ConfigError(
        f"{key}={_checks.shown(value)} is not allowed: Lightning's StochasticWeightAveraging requires a "
        f'positive float, or a list of positive floats (one per parameter group), and refuses an integer{hint}.'
      )
    return _checks.POSITIVE(key, value)

  def __str__(self) -> str:
    return 'a positive float, or a list of them (one per parameter group)'


class _EpochStart:
  """Lightning's swa_epoch_start: an integer epoch >= 1 (1-based) or a float
  fraction of max_epochs in [0, 1]."""

  def __call__(self, key: str, value: Any) -> int | float:
    if isinstance(value, float):
      return _checks.Real(0.0, 1.0)(key, value)
    if isinstance(value, int) and not isinstance(value, bool):
      return _checks.Integer(1, _checks.COUNT_MAX)(key, value)
    raise ConfigError(f'{key}={value!r} is not allowed: expected {self}.')

  def __str__(self) -> str:
    return 'an integer epoch >= 1, or a float in [0, 1] (a fraction of max_epochs)'


_REQUIRED = object()
# Lightning 2.6's constructor arguments (minus device, use_buffers, avg_fn), defaults and checks.
KEYS: dict[str, dict[str, tuple[Any, _checks.Check]]] = {
  'ema': {  # EMAWeightAveraging
    'decay': (0.999, _checks.Real(0.0, 1.0)),
    'update_every_n_steps': (1, _checks.Integer(0, _checks.COUNT_MAX)),
    'update_starting_at_step': (None, _checks.Optional(_checks.Integer(0, _checks.COUNT_MAX))),
    'update_starting_at_epoch': (None, _checks.Optional(_checks.Integer(0, _checks.COUNT_MAX))),
  },
  'swa': {  # StochasticWeightAveraging
    'swa_lrs': (_REQUIRED, _SwaLrs()),
    'swa_epoch_start': (0.8, _EpochStart()),
    'annealing_epochs': (10, _checks.Integer(0, _checks.COUNT_MAX)),
    'annealing_strategy': ('cos', _checks.Choice(STRATEGIES)),
  },
}


def check_config(key: str, value: Any) -> dict[str, Any] | None:
  """The config's ``ema`` or ``swa`` entry with every default filled in: null or
  false is off, true or a mapping (``{}`` for the defaults) is on.

  Raises:
    ConfigError: another type, an unknown or missing keyword, a bad value.
  """
  if value is None or value is False:
    return None
  value = {} if value is True else value
  if not isinstance(value, Mapping):
    raise ConfigError(f'{key}={value!r} must be a mapping of keywords ({", ".join(KEYS[key])}), true, or null.')
  spec = KEYS[key]
  for k in value:
    if k not in spec:
      raise unknown(f'keyword of {key}', k, spec)
  out = {}
  for k, (default, check) in spec.items():
    if k not in value and default is _REQUIRED:
      raise ConfigError(f'{key}.{k} is required ({check}).')
    out[k] = check(f'{key}.{k}', value.get(k, default))
  return out


def check_combination(ema: Any, swa: Any, scheduler: str | None, metric_driven: bool) -> None:
  """ConfigError for ema and swa together (two averages of one model, each callback
  overwriting the weights at the end) and for swa with a metric-driven ``scheduler``
  (ReduceLROnPlateau, alone or ending a SequentialLR; timm.plateau; hf.greedy)."""
  if ema is not None and swa is not None:
    raise ConfigError(
      'ema and swa are both set: Lightning would run EMAWeightAveraging and StochasticWeightAveraging side by '
      'side, two averages of one model, each overwriting the weights with its own at the end of training; '
      'configure one weight average.'
    )
  if swa is not None and metric_driven:
    raise ConfigError(
      f"swa with scheduler {scheduler} is not supported: Lightning's StochasticWeightAveraging replaces the "
      f"plateau with SWALR at swa_epoch_start, annealing from the LR the metrics left, which jaxsched's SWALR "
      f'does not start from; use a schedule of the step count, or ema.'
    )


def swa_start_epoch(swa: Mapping[str, Any], max_epochs: int | None) -> int:
  """The 0-based epoch SWA starts at: ``swa_epoch_start - 1`` for an integer, ``int(f *
  max_epochs) - 1`` for a float f (Lightning's ``swa_start``, at least 0).

  Raises:
    ConfigError: a float without max_epochs, or a start after the run's last epoch.
  """
  start = swa['swa_epoch_start']
  if isinstance(start, float):
    if max_epochs is None:
      raise ConfigError(
        f"swa.swa_epoch_start={start} is a fraction of the run's epochs: give build() "
        f"and trainer_kwargs() max_epochs=... (Lightning's Trainer(max_epochs)), or an integer epoch."
      )
    start = int(max_epochs * start)
  first = max(start - 1, 0)
  if max_epochs is not None and first > max_epochs - 1:
    raise ConfigError(
      f'swa.swa_epoch_start={swa["swa_epoch_start"]} starts SWA at epoch {first + 1}, after the '
      f"run's {max_epochs} epochs (Lightning would end with the weights it started from)."
    )
  return first


def averaging_rules(
  ema: Mapping[str, Any] | None,
  swa: Mapping[str, Any] | None,
  batches_per_epoch: int | None,
  max_epochs: int | None,
  accumulate_grad_batches: int = 1,
) -> Averaging | None:
  """The :class:`Averaging` of a config's ``ema``/``swa`` entry, or None.

  Raises:
    ConfigError: swa, or ema with update_starting_at_epoch, without batches_per_epoch
      (epochs must be known); a bad max_epochs; see :func:`swa_start_epoch`.
  """
  if max_epochs is not None:
    max_epochs = _checks.Integer(1, _checks.COUNT_MAX)('max_epochs', max_epochs)
  if ema is not None:
    if ema['update_starting_at_epoch'] is not None and batches_per_epoch is None:
      raise ConfigError(
        'ema.update_starting_at_epoch needs build(..., batches_per_epoch=len(train_loader)): the '
        'average is also updated at the end of each epoch.'
      )
    return Averaging(
      ema_avg_fn(ema['decay']),
      every_n_steps=ema['update_every_n_steps'],
      start_step=ema['update_starting_at_step'],
      end_epoch_from=ema['update_starting_at_epoch'],
      batches_per_epoch=batches_per_epoch,
      accumulate_grad_batches=accumulate_grad_batches,
    )
  if swa is not None:
    if batches_per_epoch is None:
      raise ConfigError(
        'swa needs build(..., batches_per_epoch=len(train_loader)): StochasticWeightAveraging '
        'averages at the start of each epoch and SWALR steps once per epoch.'
      )
    first = swa_start_epoch(swa, max_epochs)
    return Averaging(
      swa_avg_fn,
      start_epochs=(first, None if max_epochs is None else max_epochs - 1),
      validate_with_average=False,
      max_epochs=max_epochs,
      batches_per_epoch=batches_per_epoch,
      accumulate_grad_batches=accumulate_grad_batches,
    )
  return None


def swa_learning_rate(
  swa: Mapping[str, Any],
  lr: Any,
  momentum: Callable | None,
  index: int,
  count: int,
  first_epoch: int,
  steps_per_epoch: int,
) -> tuple[Callable, Callable | None]:
  """A group's LR (and cycled momentum) under StochasticWeightAveraging.

  Before epoch ``first_epoch`` the configured one; from then on SWALR, built at
  that epoch's start from the group's LR of that moment and stepped at the end of
  each epoch; the momentum keeps the value the configured scheduler last wrote.

  Raises:
    ConfigError: swa_lrs is a list whose length is not the number of groups.
  """
  swa_lrs = swa['swa_lrs']
  if isinstance(swa_lrs, tuple):
    if len(swa_lrs) != count:
      raise ConfigError(
        f'swa.swa_lrs has {len(swa_lrs)} values, but there are {count} parameter groups '
        f"(torch's SWALR: one value per param group)."
      )
    swa_lrs = swa_lrs[index]
  anneal = swalr_value(swa_lrs, swa['annealing_epochs'], swa['annealing_strategy'])
  takeover = first_epoch * steps_per_epoch  # the optimizer step that starts epoch first_epoch
  before = lr if callable(lr) else (lambda k: jnp.asarray(lr, _numeric.float_dtype()))

  def rate(count_):
    k = _numeric.as_count(count_)
    epoch = k // steps_per_epoch
    start = before(jnp.asarray(takeover, k.dtype))
    return jnp.where(epoch < first_epoch, before(k), anneal(epoch - first_epoch, start))

  held = None if momentum is None else (lambda k: momentum(jnp.minimum(_numeric.as_count(k), takeover)))
  return rate, held


def _update(avg_fn: AvgFn, average: Any, counts: jax.Array, params: Any) -> Any:
  """``AveragedModel.update_parameters``: a copy at n_averaged == 0, else avg_fn (``counts``
  an :class:`AverageState`'s)."""
  n_averaged = counts[_AT['n_averaged']]

  def one(a, p):
    p = jnp.asarray(p).astype(a.dtype)
    return jnp.where(n_averaged == 0, p, avg_fn(a, p, n_averaged).astype(a.dtype))

  return jax.tree.map(one, average, params)


def _counted(counts: jax.Array, updated: Any) -> jax.Array:
  """``counts`` with n_averaged advanced where ``updated``."""
  return counts.at[_AT['n_averaged']].add(jnp.asarray(updated).astype(counts.dtype))


def _maybe_update(avg_fn: AvgFn, when: jax.Array, average: Any, counts: jax.Array, params: Any):
  """:func:`_update` where ``when``, in a ``lax.cond``; the average and ``counts`` after it.

  The conditional takes the counts whole and returns the average only: n_averaged sliced
  out before it, or returned by it, would cost a kernel or a copy of its own.
  """
  average = jax.lax.cond(when, lambda c: _update(avg_fn, average, c, params), lambda c: average, counts)
  return average, _counted(counts, when)


def average(
  inner: optax.GradientTransformation, rules: Averaging, every: int = 1, batches_per_epoch: int | None = None
) -> optax.GradientTransformationExtraArgs:
  """Keeps a weight average of the parameters around ``inner``, one ``update`` per micro-batch.

  Args:
    inner: the optimizer (with Lightning's accumulation, if any): its updates are
      applied as ``optax.apply_updates`` does to give the weights after a step.
    rules: when the average is updated.
    every: Lightning's ``accumulate_grad_batches``: which micro-batches step the optimizer.
    batches_per_epoch: micro-batches per epoch, where the epochs matter.

  Returns:
    A transformation whose state is an :class:`AverageState`; ``update`` needs ``params``.
  """
  inner = optax.with_extra_args_support(inner)
  period = every if batches_per_epoch is None else batches_per_epoch

  def init_fn(params):
    return AverageState(
      params=jax.tree.map(lambda p: jnp.array(p, copy=True), params),
      counts=packed(n_averaged=0, step=0, batch=0, epoch=0, pending=False),
      inner_state=inner.init(params),
      rules=rules,
    )

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError(optax.NO_PARAMS_MSG)
    avg, counts = state.params, state.counts
    if rules.end_epoch_from is not None:  # last epoch's on_train_epoch_end, after its validation
      avg, counts = _maybe_update(rules.avg_fn, state.pending, avg, counts, params)
    if rules.start_epochs is not None:  # on_train_epoch_start
      lo, hi = rules.start_epochs
      when = (state.batch == 0) & (state.epoch >= lo)
      avg, counts = _maybe_update(rules.avg_fn, when if hi is None else when & (state.epoch <= hi), avg, counts, params)
    new_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    # without accumulation every micro-batch steps, and with period 1 the batch count stays 0: constants
    # for XLA, not scalar kernels reading the counter
    stepped = steps_after(state.batch, every, batches_per_epoch) if every > 1 else jnp.ones([], bool)
    if rules.every_n_steps:  # on_train_batch_end after an optimizer step
      new_params = optax.apply_updates(params, new_updates)
      if every == 1 and rules.every_n_steps == 1 and not rules.start_step:
        # after every micro-batch: the update itself, without a lax.cond around it, which costs
        # a small model's step more than the update (a conditional, its operands' copies)
        avg, counts = _update(rules.avg_fn, avg, counts, new_params), _counted(counts, 1)
      else:
        when = stepped & (state.step % rules.every_n_steps == 0)
        when = when if rules.start_step is None else when & (state.step >= rules.start_step)
        avg, counts = _maybe_update(rules.avg_fn, when, avg, counts, new_params)
    last = state.batch + 1 == period if batches_per_epoch is not None else jnp.zeros([], bool)
    pending = last & (state.epoch >= rules.end_epoch_from) if rules.end_epoch_from is not None else state.pending
    return new_updates, AverageState(
      params=avg,
      counts=packed(
        n_averaged=counts[_AT['n_averaged']],
        step=state.step + stepped.astype(jnp.int32),
        batch=state.batch if period == 1 else jnp.where(state.batch + 1 == period, 0, state.batch + 1),
        epoch=state.epoch + last.astype(jnp.int32),
        pending=pending,
      ),
      inner_state=inner_state,
      rules=rules,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _found(opt_state: Any) -> AverageState | None:
  from flax import nnx

  if isinstance(opt_state, nnx.Optimizer):
    opt_state = nnx.as_pure(opt_state.opt_state)
  return state_tree.find_one(opt_state, AverageState)


def running_average(opt_state: Any) -> tuple[Any, int] | None:
  """The average as it stands (torch's ``AveragedModel`` parameters) and its
  ``n_averaged``, to log or plot the averaged model beside the raw one; None
  without ``ema``/``swa``. Until the first update the average is the initial
  parameters and ``n_averaged`` is 0. Outside jit (it returns a Python int)."""
  state = _found(opt_state)
  return None if state is None else (state.params, int(state.n_averaged))


def averaged_params(opt_state: Any, params: Any) -> Any:
  """The weights Lightning validates with after the updates that made ``opt_state``.

  Args:
    opt_state: a state of :func:`jaxsched.build` (or a ``flax.nnx.Optimizer``).
    params: the current parameters.

  Returns:
    With ``ema``, the average (EMAWeightAveraging swaps it in for validation);
    with ``swa`` or without averaging, ``params`` (StochasticWeightAveraging
    validates with the current weights). Pure, inside or outside ``jax.jit``.
  """
  state = _found(opt_state)
  return state.params if state is not None and state.rules.validate_with_average else params


def final_params(opt_state: Any, params: Any) -> Any:
  """The weights Lightning's model holds when training ends (``on_train_end``).

  Returns:
    With ``ema``, the average, with the last epoch's end-of-epoch update where
    ``update_starting_at_epoch`` asks for it; with ``swa``, the average once
    ``max_epochs`` epochs have run (always without max_epochs), else ``params``
    (Lightning transfers the average only at the end of the full run); without
    averaging, ``params``.
  """
  state = _found(opt_state)
  if state is None:
    return params
  rules, avg = state.rules, state.params
  if rules.end_epoch_from is not None:
    avg = _maybe_update(rules.avg_fn, state.pending, avg, state.counts, params)[0]
  if rules.max_epochs is None:
    return avg
  done = state.epoch >= rules.max_epochs
  return jax.tree.map(lambda a, p: jnp.where(done, a, jnp.asarray(p).astype(a.dtype)), avg, params)
