"""The optimizers the benchmark compares: jaxsched.build(...) and the hand-written
Optax that does the same math, plus diagnostic variants that take jaxsched's
transformation apart (each one removes one layer) to show where time goes.

Every factory returns an ``optax.GradientTransformation``; the runner times
``update + apply_updates`` of each inside one jit with params and state donated.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

import jaxsched
from jaxsched.optimizers.adam import bias_correction

LR = 1e-3
T_MAX = 100_000  # CosineAnnealingLR's period, far beyond the steps timed
RECURRENT_FACTOR = 0.1
B1, B2, EPS = 0.9, 0.999, 1e-8


def make_params(
  leaves: int, size: int, key: int = 0, recurrent: bool = False, distinct: bool = False
) -> dict[str, jax.Array]:
  """``leaves`` float32 vectors of ``size`` (with ``distinct``, of ``size - 8 i``: no two
  leaves share a shape, and each is a multiple of 8 where ``size`` is, as layer widths
  are); with ``recurrent``, every other leaf is named ``recurrent<i>`` (DynVision's
  recurrent group), the rest ``layer<i>``."""
  k = jax.random.PRNGKey(key)
  out = {}
  for i in range(leaves):
    name = f'recurrent{i:04d}' if recurrent and i % 2 else f'layer{i:04d}'
    out[name] = jax.random.normal(jax.random.fold_in(k, i), (size - 8 * i if distinct else size,), jnp.float32)
  return out


def make_grads(params: Any, key: int = 1) -> Any:
  k = jax.random.PRNGKey(key)
  leaves, tree = jax.tree.flatten(params)
  return jax.tree.unflatten(
    tree, [0.01 * jax.random.normal(jax.random.fold_in(k, i), x.shape, x.dtype) for i, x in enumerate(leaves)]
  )


def labels_of(tree: Any) -> Any:
  return jax.tree_util.tree_map_with_path(
    lambda path, _: 'recurrent' if 'recurren' in jax.tree_util.keystr(path) else 'regular', tree
  )


def cosine(lr: float = LR) -> Callable[[jax.Array], jax.Array]:
  """torch's CosineAnnealingLR(T_max) closed form (eta_min 0), as a hand-writer would."""
  return optax.cosine_decay_schedule(lr, T_MAX)


# ---------------------------------------------------------------- configs


def config(scenario: str, optimizer: str = 'Adam', **optimizer_kwargs) -> dict[str, Any]:
  base: dict[str, Any] = {'optimizer': optimizer, 'learning_rate': LR, 'optimizer_kwargs': optimizer_kwargs}
  if scenario in ('one_group', 'groups_schedule'):
    base.update(
      scheduler='CosineAnnealingLR', scheduler_kwargs={'T_max': T_MAX}, scheduler_configs={'interval': 'step'}
    )
  elif scenario == 'groups_plateau':
    base.update(
      scheduler='ReduceLROnPlateau',
      scheduler_kwargs={'patience': 2, 'factor': 0.5},
      scheduler_configs={'interval': 'epoch', 'monitor': 'val_loss'},
    )
  else:
    raise ValueError(scenario)
  if scenario.startswith('groups'):
    base['recurrent_learning_rate_multiplier'] = RECURRENT_FACTOR
  return base


# ---------------------------------------------------------------- hand-written Optax


def hand_written(scenario: str, optimizer: str = 'Adam') -> optax.GradientTransformation:
  """What a user would write in Optax for the same config (same math as torch)."""
  if scenario == 'one_group':
    s = cosine()
    if optimizer == 'Adam':
      return optax.adam(s, b1=B1, b2=B2, eps=EPS)
    if optimizer == 'AdamW':  # torch: p *= 1 - lr*wd, wd 0.01; optax.adamw multiplies wd by the lr too
      return optax.adamw(s, b1=B1, b2=B2, eps=EPS, weight_decay=0.01)
    if optimizer == 'SGD':  # torch: buf = 0.9 buf + g (first step buf = g), p -= lr buf
      return optax.sgd(s, momentum=0.9)
    raise ValueError(optimizer)
  assert optimizer == 'Adam'
  if scenario == 'groups_schedule':
    s = cosine()
    per_group = {
      'regular': optax.scale_by_learning_rate(s),
      'recurrent': optax.scale_by_learning_rate(lambda c: RECURRENT_FACTOR * s(c)),
    }
  elif scenario == 'groups_plateau':
    lr_tx = optax.inject_hyperparams(optax.scale_by_learning_rate)
    per_group = {'regular': lr_tx(learning_rate=LR), 'recurrent': lr_tx(learning_rate=LR * RECURRENT_FACTOR)}
  else:
    raise ValueError(scenario)
  # ONE moment computation for all leaves; only the LR scaling is partitioned.
  return optax.chain(optax.scale_by_adam(b1=B1, b2=B2, eps=EPS), optax.multi_transform(per_group, labels_of))


def naive_groups(scenario: str) -> optax.GradientTransformation:
  """multi_transform around whole optimizers: one Adam per group."""
  s = cosine()
  return optax.multi_transform(
    {
      'regular': optax.adam(s, b1=B1, b2=B2, eps=EPS),
      'recurrent': optax.adam(lambda c: RECURRENT_FACTOR * s(c), b1=B1, b2=B2, eps=EPS),
    },
    labels_of,
  )


# ---------------------------------------------------------------- jaxsched and its layers


def jaxsched_build(scenario: str, params: Any, optimizer: str = 'Adam', **kw) -> optax.GradientTransformation:
  return jaxsched.build(config(scenario, optimizer, **kw), params)


def _js_schedule():
  return jaxsched.schedule('CosineAnnealingLR', LR, T_max=T_MAX)


def optax_injected() -> optax.GradientTransformation:
  """Hand-written Optax with its hyperparameters in the state, as jaxsched keeps them
  (``optax.inject_hyperparams(optax.adam)``): what the same feature costs in plain Optax."""
  return optax.inject_hyperparams(optax.adam)(learning_rate=cosine(), b1=B1, b2=B2, eps=EPS)


def js_optimizer_only() -> optax.GradientTransformation:
  """jaxsched.optimizer('Adam', lr=schedule): inject_hyperparams + _show_next_values,
  without build()'s multi_transform."""
  return jaxsched.optimizer('Adam', learning_rate=_js_schedule())


def js_factory_only() -> optax.GradientTransformation:
  """jaxsched's torch-faithful Adam chain with Python-float hyperparameters and a
  constant LR (the raw factory takes no schedule): no inject_hyperparams, no
  multi_transform."""
  from jaxsched.optimizers import adam as js_adam

  return js_adam.adam(LR, B1, B2, EPS, None, False, False, False)


def one_pass_adam_step(chunk: int = 1 << 16) -> Callable:
  """A direct Adam step (not an Optax transformation) that walks each large leaf in
  cache-sized chunks (lax.fori_loop + dynamic_update_slice), so that p, m and v are
  read and written once per step: the single memory pass of torch's fused kernel.
  Returns ``step(params, (count, mu, nu), grads) -> (params, state)``."""
  lr_fn = _js_schedule()

  def leaf(p, g, m, v, c_step, c_bc2):
    m = m + (1 - B1) * (g - m)
    v = B2 * v + (1 - B2) * g * g
    p = p + c_step * (m / (jnp.sqrt(v) * c_bc2 + EPS))
    return p, m, v

  def chunked(p, g, m, v, c_step, c_bc2):
    n = p.size
    if p.ndim != 1 or n <= 2 * chunk:
      return leaf(p, g, m, v, c_step, c_bc2)
    full = n - n % chunk
    if full != n:  # the tail, then the whole chunks
      pt, mt, vt = leaf(p[full:], g[full:], m[full:], v[full:], c_step, c_bc2)
      p, m, v = (jax.lax.dynamic_update_slice(x, t, (full,)) for x, t in ((p, pt), (m, mt), (v, vt)))

    def body(i, carry):
      p, m, v = carry
      s = i * chunk
      sl = lambda x: jax.lax.dynamic_slice(x, (s,), (chunk,))  # noqa: E731
      pc, mc, vc = leaf(sl(p), sl(g), sl(m), sl(v), c_step, c_bc2)
      dus = functools.partial(jax.lax.dynamic_update_slice, start_indices=(s,))
      return dus(p, pc), dus(m, mc), dus(v, vc)

    return jax.lax.fori_loop(0, full // chunk, body, (p, m, v))

  def step(params, state, grads):
    count, mu, nu = state
    new = optax.safe_increment(count)
    c_step = -lr_fn(count) / bias_correction(B1, new)
    c_bc2 = jax.lax.rsqrt(bias_correction(B2, new))
    out = jax.tree.map(lambda p, g, m, v: chunked(p, g, m, v, c_step, c_bc2), params, grads, mu, nu)
    pick = lambda i: jax.tree.map(lambda t: t[i], out, is_leaf=lambda x: isinstance(x, tuple))  # noqa: E731
    return pick(0), (new, pick(1), pick(2))

  return step


def one_pass_init(params: Any) -> tuple:
  return (jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params))


# ---------------------------------------------------------------- torch


def torch_optimizer(name: str, impl: str, tensors: list) -> Any:
  """torch.optim's Adam / AdamW / SGD with jaxsched's config values; impl is
  'for-loop' (foreach=False, fused=False), 'foreach' or 'fused'."""
  import torch

  flags = {'for-loop': {'foreach': False}, 'foreach': {'foreach': True}, 'fused': {'fused': True}}[impl]
  if name == 'Adam':
    return torch.optim.Adam(tensors, lr=LR, betas=(B1, B2), eps=EPS, **flags)
  if name == 'AdamW':
    return torch.optim.AdamW(tensors, lr=LR, betas=(B1, B2), eps=EPS, weight_decay=0.01, **flags)
  if name == 'SGD':
    return torch.optim.SGD(tensors, lr=LR, momentum=0.9, **flags)
  raise ValueError(name)
