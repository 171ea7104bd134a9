"""Section 8's steps: jaxsched's training-loop wrappers (accumulation, EMA, SWA), each
built from a config with ``jaxsched.build``, against the same wrapper written by hand
in Optax around the same inner optimizer.

Every variant is a whole train step ``(params, state, batch) -> (params, state)``:
the loss's gradient, ``update`` and ``apply_updates`` in one jit, params and state
donated. The inner optimizer is ``jaxsched.build`` of the same config without the
wrapper (Adam, constant LR) in both, so a ratio is the wrapper's cost alone;
section 1 compares jaxsched's Adam with ``optax.adam``.

The hand-written wrappers do what Lightning does, so that both sides compute the
same numbers (checked: :func:`max_rel_diff`):

* accumulation: ``optax.MultiSteps(inner, N)``, which averages the N micro-batches'
  gradients as Lightning's ``loss / N`` does; it runs the inner update on every
  micro-batch and keeps its result only on the N-th.
* EMA: after each optimizer step, ``avg = decay avg + (1 - decay) params``, the first
  update a copy (torch's ``AveragedModel``, Lightning's ``EMAWeightAveraging``).
* SWA: at the start of each epoch (``lax.cond`` on the batch counter), ``avg += (params
  - avg) / (n + 1)``, the first a copy (Lightning's ``StochasticWeightAveraging`` from
  epoch 1 on); SWALR's ``swa_lrs`` is the configured LR, so the LR stays constant on
  both sides.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

import jaxsched
from jaxsched import averaging

LR = 1e-3
DECAY = 0.999
EVERY = 4  # accumulate_grad_batches
EPOCH = 8  # micro-batches per epoch where the wrapper counts epochs
BATCH = 8  # rows of the model's input batch

# An MLP: 5 dense layers, kernel and bias each (10 leaves); (input, hidden) widths
MODELS = {
  'small': (16, 32),  # 3,745 parameters
  '4M': (256, 1104),  # 3,944,593 parameters
}


def make_model(size: str, key: int = 0) -> tuple[dict[str, Any], tuple[jax.Array, jax.Array]]:
  """The MLP's parameters and one fixed batch ``(x, y)``."""
  d_in, hidden = MODELS[size]
  widths = [d_in, hidden, hidden, hidden, hidden, 1]
  k = jax.random.PRNGKey(key)
  params = {}
  for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
    params[f'dense{i}'] = {
      'kernel': jax.random.normal(jax.random.fold_in(k, 2 * i), (a, b), jnp.float32) / jnp.sqrt(a),
      'bias': jnp.zeros((b,), jnp.float32),
    }
  x = jax.random.normal(jax.random.fold_in(k, 100), (BATCH, d_in), jnp.float32)
  y = jax.random.normal(jax.random.fold_in(k, 101), (BATCH, 1), jnp.float32)
  return params, (x, y)


def loss(params: dict[str, Any], data: tuple[jax.Array, jax.Array]) -> jax.Array:
  x, y = data
  n = len(params)
  for i in range(n):
    layer = params[f'dense{i}']
    x = x @ layer['kernel'] + layer['bias']
    x = jnp.tanh(x) if i < n - 1 else x
  return jnp.mean((x - y) ** 2)


def base_config() -> dict[str, Any]:
  return {'optimizer': 'Adam', 'learning_rate': LR, 'scheduler': None}


def configs() -> dict[str, dict[str, Any]]:
  return {
    'accumulation': dict(base_config(), accumulate_grad_batches=EVERY),
    'ema': dict(base_config(), ema={'decay': DECAY}),
    'swa': dict(base_config(), swa={'swa_lrs': LR, 'swa_epoch_start': 1}),
  }


class Step(NamedTuple):
  """A train step and the init of its state (the optimizer's and the wrapper's)."""

  init: Callable[[Any], Any]
  step: Callable[[Any, Any, Any], tuple[Any, Any]]


def from_tx(tx: optax.GradientTransformation) -> Step:
  def step(params, state, data):
    grads = jax.grad(loss)(params, data)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return Step(tx.init, step)


def inner(params: Any) -> optax.GradientTransformation:
  """The optimizer inside every wrapper: jaxsched's Adam of the same config."""
  return jaxsched.build(base_config(), params)


def jaxsched_step(wrapper: str, params: Any) -> Step:
  # accumulation and SWA need the epoch's length (Lightning's partial last group, SWA's epochs);
  # EPOCH is a multiple of EVERY, so the groups are MultiSteps' and jaxsched only checks for the end
  kw = {} if wrapper == 'ema' else {'batches_per_epoch': EPOCH}
  return from_tx(jaxsched.build(configs()[wrapper], params, **kw))


def multi_steps(params: Any) -> Step:
  return from_tx(optax.MultiSteps(inner(params), every_k_schedule=EVERY).gradient_transformation())


def hand_ema(params: Any) -> Step:
  tx = inner(params)

  def init(p):
    return tx.init(p), jax.tree.map(jnp.copy, p), jnp.zeros([], jnp.int32)

  def step(p, state, data):
    s, avg, n = state
    grads = jax.grad(loss)(p, data)
    updates, s = tx.update(grads, s, p)
    p = optax.apply_updates(p, updates)
    avg = jax.tree.map(lambda a, x: jnp.where(n == 0, x, DECAY * a + (1 - DECAY) * x), avg, p)
    return p, (s, avg, n + 1)

  return Step(init, step)


def hand_swa(params: Any) -> Step:
  tx = inner(params)

  def init(p):
    zero = lambda: jnp.zeros([], jnp.int32)  # noqa: E731
    return tx.init(p), jax.tree.map(jnp.copy, p), zero(), zero()

  def step(p, state, data):
    s, avg, n, batch = state

    def swa(avg, n):
      return jax.tree.map(lambda a, x: jnp.where(n == 0, x, a + (x - a) / (n + 1).astype(a.dtype)), avg, p), n + 1

    avg, n = jax.lax.cond(batch == 0, swa, lambda avg, n: (avg, n), avg, n)
    grads = jax.grad(loss)(p, data)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), (s, avg, n, (batch + 1) % EPOCH)

  return Step(init, step)


def variants(wrapper: str, params: Any) -> list[tuple[str, str, Step]]:
  """(name, role, step) of one wrapper: the hand-written baseline first."""
  if wrapper == 'accumulation':
    out = [
      ('hand-written: optax.MultiSteps(inner, 4)', 'baseline', multi_steps(params)),
      (f'jaxsched.build: accumulate_grad_batches 4, {EPOCH} batches/epoch', 'jaxsched', jaxsched_step(wrapper, params)),
      ('control: optax.MultiSteps, compiled again', 'control', multi_steps(params)),
    ]
  elif wrapper == 'ema':
    out = [
      ('hand-written: EMA of params in the step', 'baseline', hand_ema(params)),
      ('jaxsched.build: ema decay 0.999', 'jaxsched', jaxsched_step(wrapper, params)),
      ('control: hand-written EMA, compiled again', 'control', hand_ema(params)),
    ]
  elif wrapper == 'swa':
    out = [
      ('hand-written: SWA at epoch starts (lax.cond)', 'baseline', hand_swa(params)),
      (f'jaxsched.build: swa from epoch 1, {EPOCH} batches/epoch', 'jaxsched', jaxsched_step(wrapper, params)),
      ('control: hand-written SWA, compiled again', 'control', hand_swa(params)),
    ]
  else:
    raise ValueError(wrapper)
  out.append(('reference: the inner optimizer alone, no wrapper', 'reference', from_tx(inner(params))))
  return out


def average_of(state: Any) -> Any:
  """The average (or None) of a variant's state: jaxsched's or the hand-written one."""
  found = averaging.running_average(state)
  if found is not None:
    return found[0]
  if isinstance(state, tuple) and len(state) in (3, 4) and not hasattr(state, '_fields'):
    return state[1]
  return None


def max_rel_diff(a: Any, b: Any) -> float:
  """max |a - b| / max |b| over the leaves of two trees."""
  return max(
    float(jnp.max(jnp.abs(x - y)) / jnp.maximum(jnp.max(jnp.abs(y)), 1e-30))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )
