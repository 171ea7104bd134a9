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


def inject(factory: Callable[..., optax.GradientTransformation], args: dict[str, Any]) -> optax.GradientTransformationExtraArgs:
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
  """
  dtype = hyperparam_dtype()
  static = {k: v for k, v in args.items() if not (isinstance(v, float) or callable(v))}
  numeric = {k: v for k, v in args.items() if isinstance(v, float)}
  schedules = {
      k: v if isinstance(v, optax.schedules.StatefulSchedule) else optax.WrappedSchedule(v)
      for k, v in args.items() if callable(v)
  }

  def scheduled(states: dict[str, Any]) -> dict[str, jax.Array]:
    return {k: jnp.asarray(f(states[k]), dtype) for k, f in schedules.items()}

  def inner(hyperparams: dict[str, jax.Array]) -> optax.GradientTransformationExtraArgs:
    return optax.with_extra_args_support(factory(**static, **hyperparams))

  def init_fn(params):
    states = {k: f.init() for k, f in schedules.items()}
    hyperparams = {**{k: jnp.asarray(v, dtype) for k, v in numeric.items()}, **scheduled(states)}
    return optax.InjectStatefulHyperparamsState(
        count=jnp.zeros([], jnp.int32), hyperparams=hyperparams, hyperparams_states=states,
        inner_state=inner(hyperparams).init(params))

  def update_fn(updates, state, params=None, **extra_args):
    updates, inner_state = inner(state.hyperparams).update(updates, state.inner_state, params, **extra_args)
    states = {k: f.update(state.hyperparams_states[k], **extra_args) for k, f in schedules.items()}
    return updates, optax.InjectStatefulHyperparamsState(
        count=optax.safe_increment(state.count), hyperparams={**state.hyperparams, **scheduled(states)},
        hyperparams_states=states, inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
