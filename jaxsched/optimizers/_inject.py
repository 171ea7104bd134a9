"""Hyperparameters in the optimizer state, as ``optax.inject_hyperparams`` keeps them,
holding the values of the next update."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


def hyperparam_dtype() -> jnp.dtype:
  """float64 when jax_enable_x64 is on, else float32: never narrower than float32."""
  return jax.dtypes.canonicalize_dtype(jnp.float64)


def inject(
  factory: Callable[..., optax.GradientTransformation], args: dict[str, Any]
) -> optax.GradientTransformationExtraArgs:
  """``factory(**args)`` with its floats and schedules in the state.

  Floats and schedules (callables of the update count, or Optax stateful
  schedules such as :class:`jaxsched.Plateau`) live in ``state.hyperparams``
  (an ``optax.InjectStatefulHyperparamsState``, in float32 or wider); ints,
  bools, strings, tuples and None shape the computation and stay static.

  ``state.hyperparams`` holds the values the NEXT update uses, as torch's
  ``param_group['lr']`` does (what Lightning's LearningRateMonitor logs): the
  update reads them, and evaluates each schedule once, for the step after it.
  (``optax.inject_hyperparams`` keeps the values of the update just made, and
  evaluates the schedule for the current one.) So a value written into
  ``state.hyperparams`` takes effect at the next update, without recompiling.
  ``state.hyperparams_states`` has an entry per scheduled hyperparameter: a
  stateful schedule's state, or None for a plain schedule, which reads ``count``.
  """
  dtype = hyperparam_dtype()
  static = {k: v for k, v in args.items() if not (isinstance(v, float) or callable(v))}
  numeric = {k: v for k, v in args.items() if isinstance(v, float)}
  schedules = {k: v for k, v in args.items() if callable(v)}
  stateful = {k: v for k, v in schedules.items() if isinstance(v, optax.schedules.StatefulSchedule)}

  def scheduled(count: jax.Array, states: dict[str, Any]) -> dict[str, jax.Array]:
    # a plain schedule reads the update count kept here; a stateful one (a plateau) its own state
    return {k: jnp.asarray(stateful[k](states[k]) if k in stateful else f(count), dtype) for k, f in schedules.items()}

  def inner(hyperparams: dict[str, jax.Array]) -> optax.GradientTransformationExtraArgs:
    return optax.with_extra_args_support(factory(**static, **hyperparams))

  def init_fn(params):
    # a plain schedule's entry is None: it marks the hyperparameter as scheduled, with no
    # counter of its own beside ``count``
    states = {k: stateful[k].init() if k in stateful else None for k in schedules}
    count = jnp.zeros([], jnp.int32)
    hyperparams = {**{k: jnp.asarray(v, dtype) for k, v in numeric.items()}, **scheduled(count, states)}
    return optax.InjectStatefulHyperparamsState(
      count=count, hyperparams=hyperparams, hyperparams_states=states, inner_state=inner(hyperparams).init(params)
    )

  def update_fn(updates, state, params=None, **extra_args):
    updates, inner_state = inner(state.hyperparams).update(updates, state.inner_state, params, **extra_args)
    count = optax.safe_increment(state.count)
    states = {
      k: stateful[k].update(state.hyperparams_states[k], **extra_args) if k in stateful else None for k in schedules
    }
    return updates, optax.InjectStatefulHyperparamsState(
      count=count,
      hyperparams={**state.hyperparams, **scheduled(count, states)},
      hyperparams_states=states,
      inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
