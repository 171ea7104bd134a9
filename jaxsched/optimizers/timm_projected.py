"""timm's projected optimizers ('Slowing Down the Weight Norm Increase in Momentum-based
Optimizers', arXiv:2006.08217): ``timm.optim.AdamP`` and ``timm.optim.SGDP``, by the IDs
``timm.adamp``, ``timm.cadamp``, ``timm.sgdp`` and ``timm.csgdp``.

Each ID is timm's class with the defaults ``timm.optim.create_optimizer_v2(..., opt=<name>)``
passes (the class's own, then ``weight_decay=0``, SGDP's ``momentum=0.9`` and the registry entry's
``wd_ratio``, ``nesterov`` and ``caution``); the numbers are those of timm's implementations. timm's
SGDP has no default lr (``lr=required``): here it is 1e-3, torch.optim.SGD's. There is no
torch.optim counterpart, so no torch state conversion (``torch_state`` is empty). Neither takes the
real view of complex parameters: complex parameters are refused.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched.optimizers import _common, adam, sgd, timm_legacy
from jaxsched.optimizers._registry import OptimizerSpec


def _row_norms(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(x * x, axis=1))


def _cosine(x1: jax.Array, x2: jax.Array, eps: jax.Array) -> jax.Array:
  """``F.cosine_similarity(x1, x2, dim=1, eps=eps)``: each row divided by its norm (at least eps)."""
  n1 = jnp.maximum(_row_norms(x1), eps)[:, None]
  n2 = jnp.maximum(_row_norms(x2), eps)[:, None]
  return jnp.sum((x1 / n1) * (x2 / n2), axis=1)


def projection(p, grad, perturb, delta, wd_ratio, eps, caution: bool) -> tuple[jax.Array, jax.Array]:
  """``timm.optim.adamp.projection`` for one parameter of 2 or more dimensions: the step
  ``perturb`` and the weight decay's factor.

  For the channel view (a row per output channel), then the layer view (one row): if every row's
  ``|cos(g, p)| < delta / sqrt(row length)`` (a scale-invariant weight), the step loses its
  component along each row's unit ``p_n = p / (|p| + eps)`` and the decay is scaled by wd_ratio;
  with caution, the step is masked as :func:`_common.cautious` against the gradient's part
  orthogonal to ``p_n`` and projected again. The first view that holds decides; if none, the step
  is kept (caution against ``g``) and the factor is 1.
  """
  eps = _common.cast(eps, p)
  expand = (-1,) + (1,) * (p.ndim - 1)

  def projected(rows: int) -> tuple[jax.Array, jax.Array]:
    def view(x):
      return x.reshape(rows, -1)

    length = view(p).shape[1]
    cosine = jnp.abs(_cosine(view(grad), view(p), eps))
    scale_invariant = jnp.max(cosine) < _common.cast(delta / math.sqrt(length), p)
    unit = p / (_row_norms(view(p)) + eps).reshape(expand)

    def project(x):
      return x - unit * jnp.sum(view(unit * x), axis=1).reshape(expand)

    step = project(perturb)
    if caution:
      step = project(_common.cautious(step, project(grad)))
    return scale_invariant, step

  channel, channel_step = projected(p.shape[0])  # timm's _channel_view first, then _layer_view
  layer, layer_step = projected(1)
  kept = _common.cautious(perturb, grad) if caution else perturb
  step = jax.lax.select(channel, channel_step, jax.lax.select(layer, layer_step, kept))
  return step, jnp.where(channel | layer, wd_ratio, jnp.ones_like(jnp.asarray(wd_ratio)))


def _projected_step(p, g, perturb, delta, wd_ratio, eps, caution: bool) -> tuple[jax.Array, Any]:
  """timm's step of AdamP and SGDP: :func:`projection` for arrays of 2 or more dimensions, else
  the step (caution against ``g``) and the factor 1."""
  if p.ndim > 1:
    return projection(p, g, perturb, delta, wd_ratio, eps, caution)
  return (_common.cautious(perturb, g) if caution else perturb), 1.0


def _with_decay(p, step, size, decay, factor) -> jax.Array:
  """``size * step`` plus timm's decay ``p *= 1 - decay * factor`` as an update (None: no decay)."""
  u = _common.cast(size, step) * step
  return u if decay is None else _common.cast(-(decay * factor), p) * p + u


def adamp(learning_rate, b1, b2, eps, weight_decay, delta, wd_ratio, nesterov: bool, caution: bool):
  """AdamP, as ``timm.optim.AdamP``.

  ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g²``, ``d = sqrt(v) / sqrt(1 - b2**t) + eps``;
  the step ``s = m / d``, with nesterov ``(b1 m + (1 - b1) g) / d``; for arrays of 2 or more
  dimensions :func:`projection` (which gives the decay's factor ``r``: wd_ratio or 1), else caution
  as :func:`_common.cautious` (``r = 1``); ``p *= 1 - lr * wd * r``; ``p += -lr / (1 - b1**t) * s``.
  """

  def init_fn(params):
    zeros = _common.zeros_like
    return adam.AdamState(jnp.zeros([], jnp.int32), zeros(params), zeros(params))

  def update_fn(updates, state, params):
    count = optax.safe_increment(state.count)
    average = timm_legacy.momentum_average(b1)
    mu = jax.tree.map(average, state.mu, updates)
    nu = jax.tree.map(_common.square_average(b2), state.nu, updates)
    lr = jnp.asarray(learning_rate)
    size = -(lr / adam.bias_correction(b1, count))
    bc2_sqrt = jnp.sqrt(adam.bias_correction(b2, count))
    decay = None if weight_decay is None else lr * weight_decay

    def leaf(g, m, v, p):
      denom = jnp.sqrt(v) / _common.cast(bc2_sqrt, v) + _common.cast(eps, v)
      perturb = (average(m, g) if nesterov else m) / denom
      step, factor = _projected_step(p, g, perturb, delta, wd_ratio, eps, caution)
      return _with_decay(p, step, size, decay, factor)

    return jax.tree.map(leaf, updates, mu, nu, params), adam.AdamState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def sgdp(learning_rate, momentum, dampening, weight_decay, nesterov: bool, eps, delta, wd_ratio, caution: bool):
  """SGDP, as ``timm.optim.SGDP``.

  ``b = momentum b + (1 - dampening) g`` (dampened from the first step, unlike torch.optim.SGD);
  the step ``s = b``, with nesterov ``g + momentum b``; for arrays of 2 or more dimensions
  :func:`projection` (which gives the decay's factor ``r``: wd_ratio or 1), else caution as
  :func:`_common.cautious` (``r = 1``); ``p *= 1 - lr * wd * r / (1 - momentum)``;
  ``p += -lr * s``.
  """

  def init_fn(params):
    return sgd.MomentumState(jnp.zeros([], jnp.int32), _common.zeros_like(params))

  def update_fn(updates, state, params):
    take = 1 - dampening
    buffer = jax.tree.map(lambda b, g: b * _common.cast(momentum, b) + _common.cast(take, g) * g, state.buffer, updates)
    lr = jnp.asarray(learning_rate)
    decay = None if weight_decay is None else lr * weight_decay

    def leaf(g, b, p):
      perturb = g + _common.cast(momentum, b) * b if nesterov else b
      step, factor = _projected_step(p, g, perturb, delta, wd_ratio, eps, caution)
      return _with_decay(p, step, -lr, decay, factor / (1 - momentum) if decay is not None else factor)

    out = jax.tree.map(leaf, updates, buffer, params)
    return out, sgd.MomentumState(optax.safe_increment(state.count), buffer)

  return optax.GradientTransformation(init_fn, update_fn)


_FLAG = _checks.Boolean()
_WEIGHT_DECAY = (0.0, adam.WEIGHT_DECAY)  # create_optimizer_v2 passes weight_decay=0
_REAL = _checks.Schedulable(_checks.Real())


def _adamp_spec(name: str, caution: bool) -> OptimizerSpec:
  return OptimizerSpec(
    name=f'timm.{name}',
    factory=adamp,
    class_name='AdamP',
    lr=1e-3,
    kwargs={
      'betas': ((0.9, 0.999), adam.BETAS),
      'eps': (1e-8, _checks.NON_NEGATIVE),
      'weight_decay': _WEIGHT_DECAY,
      'delta': (0.1, _REAL),
      'wd_ratio': (0.01, _REAL),  # the registry entry's; the class's is 0.1
      'nesterov': (True, _FLAG),
      'caution': (caution, _FLAG),
    },
    switchable=('weight_decay',),
    complex_params=False,
    lr_linear=True,
  )


def _sgdp_spec(name: str, caution: bool) -> OptimizerSpec:
  return OptimizerSpec(
    name=f'timm.{name}',
    factory=sgdp,
    class_name='SGDP',
    lr=1e-3,  # timm's SGDP requires an lr; torch.optim.SGD's default
    kwargs={
      'momentum': (0.9, _checks.Schedulable(_checks.NON_NEGATIVE)),  # create_optimizer_v2's; the class's is 0
      'dampening': (0.0, _REAL),
      'weight_decay': _WEIGHT_DECAY,
      'nesterov': (True, _FLAG),
      'eps': (1e-8, _checks.NON_NEGATIVE),
      'delta': (0.1, _REAL),
      'wd_ratio': (0.1, _REAL),
      'caution': (caution, _FLAG),
    },
    switchable=('weight_decay',),
    complex_params=False,
    lr_linear=True,
    torch_step=None,
  )


SPECS = (
  _adamp_spec('adamp', caution=False),
  _adamp_spec('cadamp', caution=True),
  _sgdp_spec('sgdp', caution=False),
  _sgdp_spec('csgdp', caution=True),
)
