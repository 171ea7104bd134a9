"""timm's second-order optimizer ``timm.optim.Adahessian``, by the ID ``timm.adahessian``.

The ID is timm's class with the defaults ``timm.optim.create_optimizer_v2(..., opt='adahessian')``
passes (the class's own: lr 0.1, ``weight_decay=0``). Its step needs Hessian-vector products of the
loss, so, as ``torch.optim.LBFGS``'s closure, the loss comes as ``value_fn``:
``tx.update(grads, state, params, value_fn=f)`` with ``f(params)`` the scalar loss whose gradient is
``grads`` (timm's loop: ``loss.backward(create_graph=True); opt.step()``).

timm draws the Rademacher probe vectors from its own ``torch.Generator().manual_seed(2147483647)``:
``torch.randint(0, 2, p.size(), generator=g) * 2.0 - 1.0`` for each parameter in turn, ``n_samples``
times per update of the Hessian estimate. torch's CPU generator is MT19937 (``init_genrand`` of the
seed), and ``randint(0, 2)`` takes one 32-bit word per element in order, the element being the word
mod 2 (ATen's ``random_from_to``: ``random() % range + from``); the generator's state carries over
from call to call. The optimizer state holds that generator (its 624 words and how many of them
are used) and the step draws the words inside the compiled update (:func:`mt19937_words`), so the
probes are timm's, step after step. The draws follow the order of the parameters' leaves
(``jax.tree.leaves``), which is timm's order where the pytree lists the parameters as the torch
module does. timm draws across all its param groups in turn and differentiates all parameters
together, which separate optimizers per group cannot do: several param groups are refused.
timm's ``Adahessian`` fails at its first step for complex parameters (torch refuses its real probes as
``grad_outputs`` of complex gradients), and this ID refuses them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxsched import _checks
from jaxsched.optimizers import _common, adam
from jaxsched.optimizers._registry import OptimizerSpec

SEED = 2147483647  # timm's Adahessian.seed
_N, _M = 624, 397  # MT19937's state words and its twist offset
_UPPER, _LOWER, _MATRIX = 0x80000000, 0x7FFFFFFF, 0x9908B0DF


class MT19937(NamedTuple):
  """A ``torch.Generator``'s CPU state: MT19937's 624 words and how many of them are used
  (624 right after seeding: the next draw twists first, as torch's ``left_ == 1``)."""

  words: jax.Array
  used: jax.Array


class AdahessianState(NamedTuple):
  """timm's ``step`` (equal to its ``hessian step``), ``exp_avg``, ``exp_hessian_diag_sq``, each
  parameter's ``hess`` (the last Hessian-diagonal estimate, reused between updates of it) and the
  generator of the probes."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  mu: Any
  nu: Any
  hess: Any
  generator: MT19937


@functools.cache
def _seeded(seed: int) -> np.ndarray:
  """MT19937's ``init_genrand(seed)`` words (torch's ``manual_seed``)."""
  mt = [seed & 0xFFFFFFFF]
  for i in range(1, _N):
    mt.append((1812433253 * (mt[-1] ^ (mt[-1] >> 30)) + i) & 0xFFFFFFFF)
  return np.asarray(mt, np.uint32)


def seeded(seed: int = SEED) -> MT19937:
  """The generator of ``torch.Generator().manual_seed(seed)``."""
  return MT19937(jnp.asarray(_seeded(seed)), jnp.asarray(_N, jnp.int32))


def _twist(mt: jax.Array) -> jax.Array:
  """MT19937's ``next_state`` of 624 uint32 words: the sequential loop in four slices whose
  sources are ready (old words ahead of i, new words 227 behind)."""

  def mix(word, following, source):
    y = (word & jnp.uint32(_UPPER)) | (following & jnp.uint32(_LOWER))
    return source ^ (y >> 1) ^ ((y & 1) * jnp.uint32(_MATRIX))

  k = _N - _M
  first = mix(mt[:k], mt[1 : k + 1], mt[_M:])
  second = mix(mt[k : 2 * k], mt[k + 1 : 2 * k + 1], first)
  third = mix(mt[2 * k : _N - 1], mt[2 * k + 1 :], second[: _N - 1 - 2 * k])
  last = mix(mt[_N - 1 :], first[:1], second[_N - 1 - 2 * k : _N - 2 * k])
  return jnp.concatenate([first, second, third, last])


def _tempered(mt: jax.Array) -> jax.Array:
  y = mt ^ (mt >> 11)
  y = y ^ ((y << 7) & jnp.uint32(0x9D2C5680))
  y = y ^ ((y << 15) & jnp.uint32(0xEFC60000))
  return y ^ (y >> 18)


def mt19937_words(generator: MT19937, n: int) -> tuple[jax.Array, MT19937]:
  """The next ``n`` (static, >= 1) 32-bit outputs of ``generator`` and the generator after them,
  traced: the twists that may be needed (``ceil(n / 624)``, whatever ``used`` is) are all run, and
  the outputs and the state picked out of them."""
  twists = -(-n // _N)

  def twist(mt, _):
    mt = _twist(mt)
    return mt, mt

  _, later = lax.scan(twist, generator.words, None, length=twists)
  states = jnp.concatenate([generator.words[None], later])
  words = lax.dynamic_slice(_tempered(states).reshape(-1), (generator.used,), (n,))
  end = generator.used + n
  block = (end - 1) // _N
  return words, MT19937(states[block], end - block * _N)


def _power(x: jax.Array, exponent: jax.Array) -> jax.Array:
  """torch's ``x.pow_(exponent)`` for an exponent in [0, 0.5]: ones for 0, ``sqrt`` for 0.5 (as
  ATen's ``pow_tensor_scalar`` does), else ``pow``."""
  e = _common.cast(exponent, x)
  return jnp.where(e == 0.5, jnp.sqrt(x), jnp.where(e == 0, jnp.ones_like(x), x**e))


def adahessian(
  learning_rate, b1, b2, eps, weight_decay, hessian_power, update_each: int, n_samples: int, avg_conv_kernel: bool
) -> optax.GradientTransformationExtraArgs:
  """AdaHessian, as ``timm.optim.Adahessian``; ``update`` needs ``value_fn`` (the loss).

  Every ``update_each`` steps (from the first) the Hessian-diagonal estimate is
  ``h = mean over n_samples of z * (H z)``, with ``z`` timm's Rademacher probes (see the module)
  and ``H z = jvp(grad(value_fn), params, z)``; between those steps the last ``h`` is kept. With
  avg_conv_kernel, a 4-d parameter's ``h`` becomes ``mean(|h|)`` over its last two dimensions,
  broadcast (each step, as timm reassigns ``p.hess``). Then ``p *= 1 - lr * wd``;
  ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) h²``;
  ``p += -lr / (1 - b1**t) * m / ((v / (1 - b2**t)) ** (hessian_power / 2) + eps)``.
  """

  def init_fn(params):
    zeros = _common.zeros_like
    return AdahessianState(jnp.zeros([], jnp.int32), zeros(params), zeros(params), zeros(params), seeded())

  def estimate(params, generator, value_fn):
    leaves, treedef = jax.tree.flatten(params)
    total = sum(leaf.size for leaf in leaves)
    words, generator = mt19937_words(generator, total * n_samples)
    bits = (words & 1).reshape(n_samples, total)
    offsets = np.cumsum([0] + [leaf.size for leaf in leaves])
    hvp = functools.partial(jax.jvp, jax.grad(lambda p: jnp.asarray(value_fn(p)).reshape(())), (params,))
    hess = [jnp.zeros_like(leaf) for leaf in leaves]
    for sample in bits:
      zs = [
        sample[lo:hi].reshape(leaf.shape).astype(leaf.dtype) * 2 - 1
        for leaf, lo, hi in zip(leaves, offsets, offsets[1:])
      ]
      h_zs = jax.tree.leaves(hvp((jax.tree.unflatten(treedef, zs),))[1])
      hess = [h + h_z * z / _common.cast(n_samples, h) for h, h_z, z in zip(hess, h_zs, zs)]
    return jax.tree.unflatten(treedef, hess), generator

  def average_kernel(h):
    if not (avg_conv_kernel and h.ndim == 4):
      return h
    return jnp.broadcast_to(jnp.mean(jnp.abs(h), axis=(2, 3), keepdims=True), h.shape)

  def update_fn(updates, state, params=None, *, value_fn: Callable[[Any], Any] | None = None, **extra_args):
    del extra_args
    if value_fn is None or params is None:
      raise TypeError(
        'timm.adahessian needs the loss function for its Hessian-vector products, as timm.optim.Adahessian '
        'needs loss.backward(create_graph=True): call tx.update(grads, state, params, value_fn=f) with '
        'f(params) -> scalar loss.'
      )
    count = optax.safe_increment(state.count)
    fresh = functools.partial(estimate, params, state.generator, value_fn)
    if update_each == 1:
      hess, generator = fresh()
    else:
      hess, generator = lax.cond(state.count % update_each == 0, fresh, lambda: (state.hess, state.generator))
    hess = jax.tree.map(average_kernel, hess)
    lr = jnp.asarray(learning_rate)
    keep = None if weight_decay is None else 1 - lr * weight_decay
    rest1 = 1 - b1
    average = _common.square_average(b2)
    mu = jax.tree.map(lambda m, g: m * _common.cast(b1, m) + _common.cast(rest1, g) * g, state.mu, updates)
    nu = jax.tree.map(average, state.nu, hess)
    bc2 = adam.bias_correction(b2, count)
    size = -(lr / adam.bias_correction(b1, count))
    exponent = jnp.asarray(hessian_power) / 2

    def leaf(m, v, p):
      denom = _power(v / _common.cast(bc2, v), exponent) + _common.cast(eps, v)
      new = p if keep is None else p * _common.cast(keep, p)
      return new + _common.cast(size, m) * m / denom - p

    out = jax.tree.map(leaf, mu, nu, params)
    return out, AdahessianState(count, mu, nu, hess, generator)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


SPECS = (
  OptimizerSpec(
    name='timm.adahessian',
    factory=adahessian,
    class_name='Adahessian',
    lr=0.1,
    kwargs={
      'betas': ((0.9, 0.999), adam.BETAS),
      'eps': (1e-8, _checks.NON_NEGATIVE),
      'weight_decay': (0.0, adam.WEIGHT_DECAY),
      'hessian_power': (1.0, _checks.Real(0.0, 1.0)),
      # timm fails at its first step for update_each=0 (modulo by zero) or n_samples=0 (no estimate)
      'update_each': (1, _checks.COUNT),
      'n_samples': (1, _checks.COUNT),
      'avg_conv_kernel': (False, _checks.Boolean()),
    },
    switchable=('weight_decay',),
    # attributes of timm's optimizer, not of its param groups
    constructor_only=('update_each', 'n_samples', 'avg_conv_kernel'),
    complex_params=False,
    lr_linear=True,
    groups=False,
    torch_step='int',
    closure=True,
  ),
)
