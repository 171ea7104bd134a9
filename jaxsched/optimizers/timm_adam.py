"""timm's Adam variants that torch.optim lacks: ``timm.optim.Adopt``, ``timm.optim.LaProp`` and
``timm.optim.NAdamW``, by the IDs ``timm.adopt``, ``timm.adoptw``, ``timm.adoptc``, ``timm.cadopt``,
``timm.cadoptw``, ``timm.cadoptc``, ``timm.laprop``, ``timm.lapropc``, ``timm.claprop``, ``timm.nadamw``,
``timm.nadamc``, ``timm.cnadamw`` and ``timm.cnadamc`` (a leading ``c``: ``caution``; a trailing ``c``:
``corrected_weight_decay``, :func:`jaxsched.optimizers._registry.with_corrected_decay`).

Each ID is timm's class with the defaults ``timm.optim.create_optimizer_v2(..., opt=<name>)``
passes (the class's own, then ``weight_decay=0`` and the registry entry's own); the
numbers are those of timm's single-tensor implementations, the ones it runs on CPU. There is no
torch.optim counterpart, so no torch state conversion (``torch_state`` is empty). All three
optimize complex parameters as their real view (``torch.view_as_real``), as timm does.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched.optimizers import _common, adam
from jaxsched.optimizers._registry import OptimizerSpec, with_corrected_decay


class AdoptState(NamedTuple):
  """timm's per-parameter ``step``, ``exp_avg``, ``exp_avg_sq``."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  mu: Any
  nu: Any


class LaPropState(NamedTuple):
  """timm's per-parameter ``step``, ``exp_avg``, ``exp_avg_sq``, and its running averages of the
  LR (``exp_avg_lr_1``, a Python float in timm) and of 1 (``exp_avg_lr_2``, a float32 tensor in
  timm whatever the parameters' dtype, and so here)."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  lr_average: jax.Array
  one_average: jax.Array
  mu: Any
  nu: Any


def _maximized(updates: Any, maximize: bool) -> Any:
  return jax.tree.map(jnp.negative, updates) if maximize else updates


def adopt(
  learning_rate,
  b1,
  b2,
  eps,
  clip_exp,
  weight_decay,
  decoupled: bool,
  caution: bool,
  maximize: bool,
  corrected_weight_decay: bool,
  max_lr,
) -> optax.GradientTransformation:
  """ADOPT, as ``timm.optim.Adopt``.

  ``g = -g`` if maximize; ``g += wd * p`` unless decoupled. The first step only sets
  ``v = g²``. Later steps: ``p += -lr * wd * p`` if decoupled (``lr**2 / max_lr`` for lr with
  corrected_weight_decay, :func:`_common.decay_learning_rate`);
  ``n = g / max(sqrt(v), eps)``, clamped to ``±(t - 1)**clip_exp`` unless clip_exp is null;
  ``m = lerp(m, n, 1 - b1)`` (caution as :func:`_common.cautious`); ``p += -lr * m``; then
  ``v = b2 v + (1 - b2) g²``.
  """

  def update_fn(updates, state, params):
    grads = _maximized(updates, maximize)
    if weight_decay is not None and not decoupled:
      grads = jax.tree.map(lambda g, p: g + _common.cast(weight_decay, p) * p, grads, params)
    count = optax.safe_increment(state.count)
    first = state.count == 0
    dtype = jnp.asarray(b1).dtype
    zero = jnp.zeros([], dtype)
    # the first step: weight 0 keeps m, decay 0 keeps v's 0 before adding 1 * g², step 0 keeps p
    weight = jnp.where(first, zero, 1 - b1)
    step = jnp.where(first, zero, -jnp.asarray(learning_rate))
    rate = _common.decay_learning_rate(learning_rate, corrected_weight_decay, max_lr)
    decay = None if weight_decay is None or not decoupled else jnp.where(first, zero, -rate) * weight_decay
    clip = None if clip_exp is None else (count.astype(dtype) - 1) ** clip_exp
    interpolate = _common.lerp(weight)

    def moment(g, m, v):
      normed = g / jnp.maximum(jnp.sqrt(v), _common.cast(eps, v))
      if clip is not None:
        normed = jnp.clip(normed, -_common.cast(clip, normed), _common.cast(clip, normed))
      return interpolate(m, normed)

    mu = jax.tree.map(moment, grads, state.mu, state.nu)

    def leaf(g, m, p):
      if caution:
        m = _common.cautious(m, g)
      u = _common.cast(step, m) * m
      return u if decay is None else _common.cast(decay, p) * p + u

    out = jax.tree.map(leaf, grads, mu, params)
    nu = jax.tree.map(_common.square_average(jnp.where(first, zero, b2)), state.nu, grads)
    return out, AdoptState(count, mu, nu)

  def init_fn(params):
    return AdoptState(jnp.zeros([], jnp.int32), _common.zeros_like(params), _common.zeros_like(params))

  return optax.GradientTransformation(init_fn, update_fn)


def laprop(
  learning_rate, b1, b2, eps, weight_decay, caution: bool, corrected_weight_decay: bool, max_lr
) -> optax.GradientTransformation:
  """LaProp, as ``timm.optim.LaProp``: momentum over the normalized gradient.

  ``v = b2 v + (1 - b2) g²``; ``m = b1 m + lr (1 - b1) g / (sqrt(v / c2) + eps)`` with
  ``c2 = b2 c2 + (1 - b2)`` (``1 - b2**t``, rounded to float32 as timm's tensor) and
  ``c1 = b1 c1 + (1 - b1) lr``; caution as :func:`_common.cautious`; ``p += -(lr / c1) m``
  (0 while ``c1 = 0``); then ``p += -lr * wd * p`` (``lr**2 / max_lr`` for lr with
  corrected_weight_decay, :func:`_common.decay_learning_rate`).
  """

  def init_fn(params):
    dtype = jnp.asarray(b1).dtype
    zeros = _common.zeros_like
    return LaPropState(
      jnp.zeros([], jnp.int32), jnp.zeros([], dtype), jnp.zeros([], jnp.float32), zeros(params), zeros(params)
    )

  def update_fn(updates, state, params):
    lr = jnp.asarray(learning_rate)
    lr_average = state.lr_average * b1 + (1 - b1) * lr
    # timm's float32 tensor times, then plus, a Python float (float32 arithmetic), worked out in the
    # hyperparameters' dtype
    f32 = _common.float32_rounded
    b2_wide = jnp.asarray(b2)
    one_average = f32(f32(state.one_average.astype(b2_wide.dtype) * f32(b2_wide)) + f32(1 - b2_wide))
    one_average = one_average.astype(jnp.float32)
    size = -jnp.where(lr_average != 0, lr / jnp.where(lr_average != 0, lr_average, 1), 0)
    push = lr * (1 - b1)
    nu = jax.tree.map(_common.square_average(b2), state.nu, updates)
    decay = (
      None if weight_decay is None else -_common.decay_learning_rate(lr, corrected_weight_decay, max_lr) * weight_decay
    )

    def moment(g, m, v):
      denom = jnp.sqrt(v / one_average.astype(v.dtype)) + _common.cast(eps, v)
      return m * _common.cast(b1, m) + _common.cast(push, g) * (g / denom)

    mu = jax.tree.map(moment, updates, state.mu, nu)

    def leaf(g, m, p):
      if caution:
        m = _common.cautious(m, g)
      new = p + _common.cast(size, m) * m
      if decay is not None:
        new = new + _common.cast(decay, p) * new
      return new - p

    out = jax.tree.map(leaf, updates, mu, params)
    return out, LaPropState(optax.safe_increment(state.count), lr_average, one_average, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def stable_denominator(g: jax.Array, v: jax.Array, bc2_sqrt: Any, eps: Any, clipping_threshold: Any) -> jax.Array:
  """timm's Adam denominator ``sqrt(v) / sqrt(1 - b2**t) + eps``, times ``max(1, rms(g / d) /
  clipping_threshold)`` where clipping_threshold is set (StableAdamW's update clipping, as
  ``timm.optim.NAdamW`` and ``AdamWLegacy`` write it)."""
  denom = jnp.sqrt(v) / _common.cast(bc2_sqrt, v) + _common.cast(eps, v)
  if clipping_threshold is not None:
    rms = _common.norm(g / denom) / jnp.sqrt(jnp.asarray(g.size, g.dtype))
    denom = denom * jnp.maximum(rms / _common.cast(clipping_threshold, rms), 1)
  return denom


def nadamw(
  learning_rate,
  b1,
  b2,
  eps,
  weight_decay,
  caution: bool,
  maximize: bool,
  clipping_threshold,
  corrected_weight_decay: bool,
  max_lr,
):
  """NAdamW, as ``timm.optim.NAdamW`` (the MLCommons algorithmic-efficiency NAdam with decoupled decay).

  ``g = -g`` if maximize; ``p *= 1 - lr * wd`` (``lr**2 / max_lr`` for lr with
  corrected_weight_decay, :func:`_common.decay_learning_rate`); ``m = lerp(m, g, 1 - b1)``,
  ``v = b2 v + (1 - b2) g²``; the Nesterov look-ahead ``n = lerp(m, g, 1 - b1)``;
  ``d = sqrt(v) / sqrt(1 - b2**t) + eps``, times ``max(1, rms(g / d) / clipping_threshold)``
  if clipping_threshold is set (StableAdamW); caution on ``n`` as :func:`_common.cautious`;
  ``p += -lr / (1 - b1**t) * n / d``.
  """

  def update_fn(updates, state, params):
    grads = _maximized(updates, maximize)
    count = optax.safe_increment(state.count)
    interpolate = _common.lerp(1 - b1)
    mu = jax.tree.map(interpolate, state.mu, grads)
    nu = jax.tree.map(_common.square_average(b2), state.nu, grads)
    lr = jnp.asarray(learning_rate)
    size = -(lr / adam.bias_correction(b1, count))
    bc2_sqrt = jnp.sqrt(adam.bias_correction(b2, count))
    decay = (
      None if weight_decay is None else -_common.decay_learning_rate(lr, corrected_weight_decay, max_lr) * weight_decay
    )

    def leaf(g, m, v, p):
      ahead = interpolate(m, g)
      denom = stable_denominator(g, v, bc2_sqrt, eps, clipping_threshold)
      if caution:
        ahead = _common.cautious(ahead, g)
      u = _common.cast(size, ahead) * (ahead / denom)
      return u if decay is None else _common.cast(decay, p) * p + u

    out = jax.tree.map(leaf, grads, mu, nu, params)
    return out, AdoptState(count, mu, nu)

  def init_fn(params):
    return AdoptState(jnp.zeros([], jnp.int32), _common.zeros_like(params), _common.zeros_like(params))

  return optax.GradientTransformation(init_fn, update_fn)


_FLAG = _checks.Boolean()
_WEIGHT_DECAY = (0.0, adam.WEIGHT_DECAY)  # create_optimizer_v2 passes weight_decay=0


def _adopt_spec(name: str, decoupled: bool = False, caution: bool = False, corrected: bool = False) -> OptimizerSpec:
  spec = OptimizerSpec(
    name=f'timm.{name}',
    factory=adopt,
    class_name='Adopt',
    lr=1e-3,
    kwargs={
      'betas': ((0.9, 0.9999), adam.BETAS),
      'eps': (1e-6, _checks.NON_NEGATIVE),
      'clip_exp': (0.333, _checks.Optional(_checks.Real())),
      'weight_decay': _WEIGHT_DECAY,
      'decoupled': (decoupled, _FLAG),
      'caution': (caution, _FLAG),
      'maximize': (False, _FLAG),
    },
    switchable=('weight_decay',),
    lr_linear=True,
  )
  return with_corrected_decay(spec, corrected)


def _laprop_spec(name: str, caution: bool = False, corrected: bool = False) -> OptimizerSpec:
  spec = OptimizerSpec(
    name=f'timm.{name}',
    factory=laprop,
    class_name='LaProp',
    lr=4e-4,
    kwargs={
      'betas': ((0.9, 0.999), adam.BETAS),
      'eps': (1e-15, _checks.NON_NEGATIVE),
      'weight_decay': _WEIGHT_DECAY,
      'caution': (caution, _FLAG),
    },
    switchable=('weight_decay',),
    lr_linear=False,  # the momentum sums lr-weighted steps: a changing lr is not a scale of one direction
  )
  return with_corrected_decay(spec, corrected)


def _nadamw_spec(name: str, caution: bool = False, corrected: bool = False) -> OptimizerSpec:
  spec = OptimizerSpec(
    name=f'timm.{name}',
    factory=nadamw,
    class_name='NAdamW',
    lr=1e-3,
    kwargs={
      'betas': ((0.9, 0.999), adam.BETAS),
      'eps': (1e-8, _checks.NON_NEGATIVE),
      'weight_decay': _WEIGHT_DECAY,
      'caution': (caution, _FLAG),
      'maximize': (False, _FLAG),
      'clipping_threshold': (None, _checks.Optional(_checks.POSITIVE)),
    },
    switchable=('weight_decay',),
    lr_linear=True,
  )
  return with_corrected_decay(spec, corrected)


SPECS = (
  _adopt_spec('adopt'),
  _adopt_spec('adoptw', decoupled=True),
  _adopt_spec('adoptc', decoupled=True, corrected=True),
  _adopt_spec('cadopt', caution=True),
  _adopt_spec('cadoptw', decoupled=True, caution=True),
  _adopt_spec('cadoptc', decoupled=True, caution=True, corrected=True),
  _laprop_spec('laprop'),
  _laprop_spec('lapropc', corrected=True),
  _laprop_spec('claprop', caution=True),
  _nadamw_spec('nadamw'),
  _nadamw_spec('nadamc', corrected=True),
  _nadamw_spec('cnadamw', caution=True),
  _nadamw_spec('cnadamc', caution=True, corrected=True),
)
