"""BatchNorm statistics recomputed over batches, as ``torch.optim.swa_utils.update_bn`` does.

After weight averaging (SWA, EMA) the BatchNorm running statistics belong to
none of the averaged weights. torch's ``update_bn(loader, model)`` resets every
BatchNorm's ``running_mean`` and ``running_var``, sets ``momentum=None`` (a
cumulative moving average: the ``k``-th batch enters with weight ``1 / k``), runs
the model in training mode over the batches and restores the momenta; Lightning's
``StochasticWeightAveraging`` does the same in an extra epoch after the last.
:func:`update_bn` does it for a Flax Linen or NNX model.

Each BatchNorm's statistics are the mean over its calls of each call's batch mean
and variance, taken over every axis but the feature axes (two passes, as torch).
torch averages the unbiased variances (Bessel's correction, ``n / (n - 1)`` for
``n`` values per feature); Flax's BatchNorm averages the biased ones: ``unbiased``
picks torch's. Flax keeps no ``num_batches_tracked``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.groups import path_name


def _input(batch: Any) -> Any:
  """The model's input in a batch: the batch, or its first element (torch's update_bn)."""
  return batch[0] if isinstance(batch, (list, tuple)) else batch


def _moments(name: str, x: Any, axis: Any, unbiased: bool) -> tuple[jax.Array, jax.Array]:
  """The batch mean and variance of ``x`` over all axes but ``axis`` (at least float32, as Flax computes)."""
  x = jnp.asarray(x)
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  features = {a % x.ndim for a in (axis if isinstance(axis, (tuple, list)) else (axis,))}
  reduce = tuple(a for a in range(x.ndim) if a not in features)
  n = math.prod(x.shape[a] for a in reduce)
  if unbiased and n < 2:
    raise ConfigError(
      f'BatchNorm {name!r} sees {n} value per feature in a batch: the unbiased variance needs 2 or more '
      f'(torch raises "Expected more than 1 value per channel when training").'
    )
  mean = x.mean(reduce)
  var = jnp.square(x - jnp.expand_dims(mean, reduce)).mean(reduce)
  return mean, var * (n / (n - 1)) if unbiased else var


def _average(running: dict, calls: dict) -> dict:
  """torch's cumulative moving average: the k-th value enters with weight 1 / k."""
  out = dict(running)
  for name, moments in calls.items():
    for mean, var in moments:
      old_mean, old_var, k = out.get(name, (jnp.zeros_like(mean), jnp.ones_like(var), jnp.zeros([], jnp.int32)))
      k = k + 1
      factor = 1 / k.astype(mean.dtype)
      out[name] = (factor * mean + (1 - factor) * old_mean, factor * var + (1 - factor) * old_var, k)
  return out


def _checked(name: str, running_average: Any, mask: Any, axis_name: Any) -> None:
  if running_average:
    raise ConfigError(
      f"BatchNorm {name!r} runs with use_running_average=True: update_bn needs the model in training mode (torch's "
      f'update_bn calls model.train()), e.g. an apply_fn with train=True and mutable=["batch_stats"].'
    )
  if mask is not None:
    raise ConfigError(f'BatchNorm {name!r} is called with a mask, which torch has no counterpart of.')
  if axis_name is not None:
    raise ConfigError(
      f'BatchNorm {name!r} averages over the device axis {axis_name!r}: update_bn runs on one device; '
      f'call it outside pmap/shard_map.'
    )


def update_bn(batches: Iterable[Any], model: Any, variables: Any = None, *, unbiased: bool = False) -> Any:
  """Recomputes the BatchNorm statistics of a Flax model over ``batches``, as
  ``torch.optim.swa_utils.update_bn(loader, model)`` does.

  Every BatchNorm's ``mean`` and ``var`` become the average over its calls of each
  call's batch statistics (torch's ``momentum=None``, whatever the layer's momentum);
  the rest of the model is untouched. Layers never called keep their statistics (torch
  resets them to 0 and 1).

  Args:
    batches: the model's inputs: arrays, or tuples/lists whose first element is the
      input (torch's rule); iterated once.
    model: a ``flax.nnx.Module`` (updated in place, run in training mode as ``model.train()``
      sets it, on a copy), or, for Flax Linen, an apply function ``apply_fn(variables, x)``
      that runs the model in training mode with its statistics mutable, e.g.
      ``lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'])`` (each call is
      jit-compiled; rngs such as dropout's are the function's own).
    variables: Linen only: the model's variables, with ``'batch_stats'``.
    unbiased: torch's convention, each batch's variance with Bessel's correction
      (``n / (n - 1)``, ``n`` values per feature), as torch's ``running_var``; by default
      the biased variance, as Flax's BatchNorm keeps it.

  Returns:
    Linen: ``variables`` with new ``'batch_stats'`` (each statistic in the wider of its
    dtype and the batch's, as Flax's own update gives). NNX: None.

  Raises:
    ConfigError: a BatchNorm in evaluation mode (``use_running_average=True``), with a
      mask, or averaging over devices; ``variables`` missing or given for an NNX model;
      ``unbiased`` not a bool.
  """
  from flax import nnx

  unbiased = _checks.Boolean()('unbiased', unbiased)

  if isinstance(model, nnx.Module):
    if variables is not None:
      raise ConfigError('variables= is for a Linen apply function; an NNX model holds its own statistics.')
    return _nnx(batches, model, unbiased)
  if not callable(model):
    raise ConfigError(f'model={model!r} must be a flax.nnx.Module or a Linen apply function (variables, x).')
  if variables is None or 'batch_stats' not in variables:
    raise ConfigError(
      "update_bn of a Linen model needs variables= with a 'batch_stats' collection (the model's BatchNorm statistics)."
    )
  return _linen(batches, model, variables, unbiased)


def _linen(batches: Iterable[Any], apply_fn: Callable, variables: Any, unbiased: bool) -> Any:
  import flax.linen as nn

  def calls_of(variables, x):
    calls: dict[str, list] = {}

    def record(next_fun, args, kwargs, context):
      module = context.module
      if isinstance(module, nn.BatchNorm) and context.method_name == '__call__':
        name = '/'.join(map(str, module.scope.path))
        given = kwargs.get('use_running_average', args[1] if len(args) > 1 else None)
        _checked(name, module.use_running_average if given is None else given, kwargs.get('mask'), module.axis_name)
        calls.setdefault(name, []).append(_moments(name, args[0], module.axis, unbiased))
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
      apply_fn(variables, x)
    return calls

  @jax.jit
  def step(variables, running, x):
    return _average(running, calls_of(variables, x))

  running: dict = {}
  for batch in batches:
    running = step(variables, running, _input(batch))
  return {**variables, 'batch_stats': _replaced(variables['batch_stats'], running)}


def _replaced(stats: Any, running: dict) -> Any:
  """``stats`` (a tree of BatchNorm ``mean``/``var`` leaves) with each recomputed layer's values."""

  def new(path, leaf):
    name, _, which = path_name(path).rpartition('/')
    if name not in running or which not in ('mean', 'var'):
      return leaf
    value = running[name][0 if which == 'mean' else 1]
    return jnp.asarray(value, jnp.result_type(leaf, value))

  return jax.tree_util.tree_map_with_path(new, stats)


def _nnx(batches: Iterable[Any], model: Any, unbiased: bool) -> None:
  from flax import nnx

  graphdef, state = nnx.split(model)

  def recording(cls: type, calls: dict, names: dict) -> type:
    def __call__(self, x, use_running_average=None, *, mask=None):
      name = names[id(self)]
      _checked(name, self.use_running_average if use_running_average is None else use_running_average, mask, None)
      _checked(name, False, None, self.axis_name)
      mean, var = _moments(name, x, self.axis, unbiased)
      calls.setdefault(name, []).append((mean, var))
      for stat in (self.mean, self.var):  # Flax's own update of this discarded copy, without a narrowing cast
        stat.set_value(jnp.asarray(stat.get_value(), jnp.result_type(stat.get_value(), mean)))
      return cls.__call__(self, x, use_running_average, mask=mask)

    return type(cls.__name__, (cls,), {'__call__': __call__})

  @jax.jit
  def step(state, running, x):
    copy = nnx.merge(graphdef, state)
    copy.train()
    calls: dict[str, list] = {}
    norms = [(path, m) for path, m in nnx.iter_modules(copy) if isinstance(m, nnx.BatchNorm)]
    names = {id(m): '/'.join(map(str, path)) for path, m in norms}
    for _, m in norms:
      m.__class__ = recording(type(m), calls, names)
    try:
      copy(x)
    finally:
      for _, m in norms:
        m.__class__ = m.__class__.__bases__[0]
    return nnx.state(copy), _average(running, calls)

  running: dict = {}
  for batch in batches:
    state, running = step(state, running, _input(batch))
  nnx.update(model, nnx.filter_state(state, nnx.Not(nnx.BatchStat)))  # what else the passes moved: dropout's rng counts
  for path, module in nnx.iter_modules(model):
    name = '/'.join(map(str, path))
    if isinstance(module, nnx.BatchNorm) and name in running:
      for which, value in (('mean', running[name][0]), ('var', running[name][1])):
        variable = getattr(module, which)
        variable.set_value(jnp.asarray(value, jnp.result_type(variable.get_value(), value)))
