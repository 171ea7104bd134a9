"""Adafactor: ``torch.optim.Adafactor``, with factored second moments and a relative step size."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.optimizers import _common
from jaxsched.optimizers._registry import OptimizerSpec

if TYPE_CHECKING:  # jaxsched.interop imports the optimizers
  from jaxsched.interop.layouts import Layout


class AdafactorState(NamedTuple):
  """The step count and, per parameter, torch's second moments: a ``(row_var,
  col_var)`` pair for a parameter of two or more dimensions, else ``variance``."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  moments: Any


def _init_moments(p: jax.Array) -> Any:
  if p.ndim > 1:
    return (jnp.zeros(p.shape[:-1] + (1,), p.dtype), jnp.zeros(p.shape[:-2] + (1, p.shape[-1]), p.dtype))
  return jnp.zeros_like(p)


def _rms(x: jax.Array, dtype: Any) -> jax.Array:
  """``x.norm(2) / sqrt(x.numel())``: the norm in ``x``'s precision (float32 at
  least, as torch accumulates), the ratio in ``dtype``, as torch's ``.item()``."""
  wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return jnp.linalg.norm(wide).astype(x.dtype).astype(dtype) / math.sqrt(x.size)


def _leaf_update(g, moments, mix, alpha, d, eps1):
  """One parameter's step ``-alpha * U / max(1, RMS(U) / d)`` and its new moments.

  ``mix`` lerps with weight ``t ** beta2_decay`` (:func:`_common.lerp`); ``alpha`` the step scale,
  computed from the parameter before weight decay.
  """
  eps1 = float(jnp.finfo(g.dtype).eps) if eps1 is None else eps1
  g2 = jnp.square(g)
  if g.ndim > 1:
    row, col = moments
    row = mix(row, jnp.mean(g2, axis=-1, keepdims=True))
    col = mix(col, jnp.mean(g2, axis=-2, keepdims=True))
    # row @ col is an outer product over the last two dims: one product per entry.
    v = row * col / jnp.maximum(jnp.mean(row, axis=-2, keepdims=True), _common.cast(eps1, g))
    moments = (row, col)
  else:
    v = moments = mix(moments, g2)
  u = g * jax.lax.rsqrt(jnp.maximum(v, _common.cast(eps1 * eps1, g)))
  hp = jnp.result_type(alpha)
  denom = jnp.maximum(1.0, _rms(u, hp) / d)
  return -_common.cast(alpha / denom, u) * u, moments


def scale_by_adafactor(
  learning_rate: Any, beta2_decay: Any, eps: tuple[float | None, float], d: Any
) -> optax.GradientTransformation:
  """torch's Adafactor step, ``-alpha_t * U_t / max(1, RMS(U_t) / d)``.

  With ``t`` the step, ``rho_t = min(lr, 1 / sqrt(t))`` (lr only caps it) and
  ``alpha_t = max(eps2, RMS(p)) * rho_t``. The variance estimate lerps towards
  ``g**2`` with weight ``t ** beta2_decay``: for a tensor of two or more
  dimensions it is factored on the last two, ``V = R C / max(mean(R), eps1)``
  from the row and column means of ``g**2``; a 0-D or 1-D tensor keeps the full
  ``g**2``. ``U = g / sqrt(max(V, eps1**2))``; ``eps1=None`` means the
  parameter dtype's machine epsilon. The scalars are computed in the
  hyperparameters' precision, as torch computes them in Python floats.
  """
  eps1, eps2 = eps

  def init_fn(params):
    return AdafactorState(jnp.zeros([], jnp.int32), jax.tree.map(_init_moments, params))

  def update_fn(updates, state, params):
    lr = jnp.asarray(learning_rate)
    t = (state.count + 1).astype(lr.dtype)
    mix = _common.lerp(jnp.power(t, beta2_decay))
    rho = jnp.minimum(lr, 1.0 / jnp.sqrt(t))
    leaves, treedef = jax.tree.flatten(updates)
    out = [
      _leaf_update(g, m, mix, jnp.maximum(eps2, _rms(p, lr.dtype)) * rho, d, eps1)
      for g, m, p in zip(leaves, treedef.flatten_up_to(state.moments), treedef.flatten_up_to(params))
    ]
    updates = treedef.unflatten([u for u, _ in out])
    moments = treedef.unflatten([m for _, m in out])
    return updates, AdafactorState(optax.safe_increment(state.count), moments)

  return optax.GradientTransformation(init_fn, update_fn)


def adafactor(learning_rate, beta2_decay, eps, d, weight_decay, maximize):
  """Adafactor, as ``torch.optim.Adafactor``.

  ``g = -g`` if maximize; the step of :func:`scale_by_adafactor`; decoupled
  decay ``p *= 1 - lr * weight_decay`` (dropped when weight_decay is exactly 0).
  Unlike ``optax.adafactor``, every tensor of two or more dimensions is
  factored on its last two dimensions, eps1 clamps rather than adds, lr caps the
  relative step size, and the decay is scaled by lr.
  """
  return _common.chain(
    _common.negate() if maximize else None,
    scale_by_adafactor(learning_rate, beta2_decay, eps, d),
    _common.decoupled_decay(learning_rate, weight_decay) if weight_decay is not None else None,
  )


def _check_eps(kw: dict[str, Any]) -> None:
  if kw['eps'][1] is None:
    raise ConfigError(f'Adafactor: eps={kw["eps"]!r} is not allowed: eps[1] (epsilon2) must be a number >= 0.')


def check_layout(layout: Layout, name: str, path: str, shape: tuple[int, ...], kwargs: Mapping[str, Any]) -> None:
  """ConfigError where torch's parameter ``name`` reaches the JAX parameter ``path`` (of ``shape``)
  through a ``layout`` change that moves its last two dimensions other than by swapping them:
  torch.optim.Adafactor factors the last two dimensions, so the JAX run would compute other
  second moments."""
  del kwargs
  ndim = len(shape)
  if ndim >= 2 and not layout.keeps_axes(ndim) and not layout.swaps_last_two(ndim):
    raise ConfigError(
      f'Adafactor factors the last two dimensions of each parameter, and the {layout.name!r} layout change '
      f'of {name!r} -> {path!r} moves them (torch factors {ndim - 2} and {ndim - 1} of its layout): the '
      f"JAX run would compute other second moments. Keep this parameter in torch's layout (a rule with "
      f'jaxsched.interop.layouts.SAME for it).'
    )


SPECS = (
  OptimizerSpec(
    name='Adafactor',
    factory=adafactor,
    lr=1e-2,
    kwargs={
      'beta2_decay': (-0.8, _checks.Real(hi=0.0)),
      'eps': ((None, 1e-3), _checks.Sequence(_checks.Optional(_checks.NON_NEGATIVE), 2)),
      'd': (1.0, _checks.Real(lo=1.0)),
      'weight_decay': (0.0, _checks.Schedulable(_checks.NON_NEGATIVE)),
      'maximize': (False, _checks.Boolean()),
    },
    switchable=('weight_decay',),
    cross_check=_check_eps,
    complex_params=False,  # torch raises at the first step
    torch_state={AdafactorState: {}},  # row_var/col_var or variance: converted by their own code
    check_layout=check_layout,
  ),
)
