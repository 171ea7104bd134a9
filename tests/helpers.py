"""Test helpers that need no torch: float64 mode, seeded problems, trajectory comparison and
ConfigError checks. The fast lane (``pytest --fast``, tests/conftest.py) can use them; tests/oracle.py
adds torch's side and re-exports these.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsched
from jaxsched import plateau

TOLERANCE = {'float64': 1e-9, 'float32': 1e-5}
# The names an lr_lambda expression may use, as Python's math has them: expressions are
# evaluated with these as the oracle for jaxsched's compiled ones.
PY_MATH = {
  'min': min,
  'max': max,
  'abs': abs,
  'exp': math.exp,
  'log': math.log,
  'sqrt': math.sqrt,
  'cos': math.cos,
  'sin': math.sin,
  'pi': math.pi,
}
SHAPES = {'w': (4, 3), 'b': (3,), 'k': (2, 3, 5)}


def x64(dtype: str):
  """The JAX precision mode a dtype's run uses."""
  return jax.enable_x64(dtype == 'float64')


def problem(
  shapes: Mapping[str, tuple[int, ...]] = SHAPES, steps: int = 10, seed: int = 0, scale: float = 1.0
) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
  """Seeded float64 initial parameters and a gradient sequence."""
  rng = np.random.default_rng(seed)
  params = {k: rng.normal(size=s) for k, s in shapes.items()}
  grads = [{k: scale * rng.normal(size=s) for k, s in shapes.items()} for _ in range(steps)]
  return params, grads


def jax_trajectory(tx_fn: Callable[[], optax.GradientTransformation], params, grads, dtype: str, **extra_args):
  """Parameters after each jit-compiled update of ``tx_fn()``, built in ``dtype``'s mode.

  Also checks that updates and the moments keep the parameters' dtype.
  """
  with x64(dtype):
    tx = tx_fn()
    p = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    state = jax.jit(tx.init)(p)

    @jax.jit
    def step(p, state, g):
      u, state = tx.update(g, state, p, **extra_args)
      return optax.apply_updates(p, u), u, state

    return _run(step, p, state, grads, dtype)


# jaxsched keywords -> the names of their float hyperparameters in the state
_HELD_AS = {'lr': ('learning_rate',), 'betas': ('b1', 'b2', 'b3')}
_STEPS: dict[tuple[Any, ...], Callable[..., Any]] = {}


def optimizer_trajectory(name: str, kwargs: Mapping[str, Any], params, grads, dtype: str):
  """:func:`jax_trajectory` of ``jaxsched.optimizer(name, **kwargs)``, compiled once for all the
  ``kwargs`` that differ only in float hyperparameters the state holds (drawn hyperparameters): each
  run starts from its own ``kwargs``' initial state, hyperparameters included, and takes the step
  compiled for the first of them, which reads the hyperparameters from the state."""
  with x64(dtype):
    tx = jaxsched.optimizer(name, **kwargs)
    p = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    state = tx.init(p)
    held = set(state.hyperparams)

    def in_state(key: str, value: Any) -> bool:  # a float the state holds (betas as b1, b2, ...)
      if isinstance(value, bool) or not isinstance(value, (int, float, tuple, list)):
        return False
      names = _HELD_AS.get(key, (key,))
      if isinstance(value, (tuple, list)):
        names = names[: len(value)] if key in _HELD_AS else ()
      return bool(names) and all(n in held for n in names)

    static = tuple(sorted((k, repr(v)) for k, v in kwargs.items() if not in_state(k, v)))
    key = (name, dtype, static, tuple(sorted(held)))
    if key not in _STEPS:

      @jax.jit
      def step(p, state, g):
        u, state = tx.update(g, state, p)
        return optax.apply_updates(p, u), u, state

      _STEPS[key] = step
    return _run(_STEPS[key], p, state, grads, dtype)


def _run(step: Callable[..., Any], p, state, grads, dtype: str):
  state_dtypes = jax.tree.map(lambda x: x.dtype, state)
  out = []
  for g in grads:
    gj = {k: jnp.asarray(v, dtype) for k, v in g.items()}
    p, u, state = step(p, state, gj)
    for leaf in jax.tree.leaves(u):
      assert leaf.dtype == jnp.dtype(dtype), f'update dtype {leaf.dtype} != {dtype}'
    assert jax.tree.map(lambda x: x.dtype, state) == state_dtypes, 'state dtypes changed'
    out.append({k: np.asarray(v) for k, v in p.items()})
  return out


def max_rel_diff(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> float:
  """max over leaves of max|a - e| / max|e|."""
  return max(float(np.max(np.abs(actual[k] - expected[k])) / max(np.max(np.abs(expected[k])), 1e-30)) for k in expected)


def assert_trajectories_close(actual, expected, dtype: str, rtol: float | None = None) -> None:
  rtol = TOLERANCE[dtype] if rtol is None else rtol
  for step, (a, e) in enumerate(zip(actual, expected, strict=True)):
    d = max_rel_diff(a, e)
    assert d <= rtol, f'step {step}: max relative difference {d:.3g} > {rtol:g}'


DTYPES = ('float64', 'float32')


def assert_config_error(call: Callable[[], Any], words) -> None:
  """``call()`` raises a ConfigError whose message holds every word."""
  with pytest.raises(jaxsched.ConfigError) as e:
    call()
  for w in words:
    assert w in str(e.value), str(e.value)


def assert_rejected(name: str, kwargs: Mapping[str, Any], words) -> None:
  """jaxsched.optimizer(name, **kwargs) raises a ConfigError whose message holds every word."""
  assert_config_error(lambda: jaxsched.optimizer(name, **kwargs), words)


def reported_lrs(config: Any, metrics, monitor: str = 'val_loss') -> list[float]:
  """The LR of ``jaxsched.build(config, ...)``'s metric-driven scheduler after each of ``metrics``
  reported under ``monitor`` (float64), one parameter group."""
  with x64('float64'):
    params = {'w': jnp.ones(2)}
    state = jaxsched.build(config, params).init(params)
    out = []
    for m in metrics:
      state = jaxsched.report(state, {monitor: jnp.asarray(m)})
      out.append(float(plateau.value(plateau.plateau_states(state)[0])))
  return out
