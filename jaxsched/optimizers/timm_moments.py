"""timm's moment-based optimizers that torch.optim lacks: ``timm.optim.Lion``,
``timm.optim.AdaBelief`` and ``timm.optim.Adan``, by the IDs ``timm.lion``, ``timm.lionc``
(``corrected_weight_decay``), ``timm.clion``, ``timm.clionc`` (``caution``), ``timm.adabelief``,
``timm.radabelief``, ``timm.adan``, ``timm.adanw``, ``timm.cadan`` and ``timm.cadanw``.

Each ID is timm's class with the defaults ``timm.optim.create_optimizer_v2(..., opt=<name>)`` passes
(the class's own, then ``weight_decay=0`` and the registry entry's ``rectify``, ``no_prox``,
``caution`` or ``corrected_weight_decay``); the numbers are those of timm's single-tensor
implementations, the ones it runs on CPU. There is no torch.optim counterpart, so no torch state
conversion (``torch_state`` is empty). Lion optimizes complex parameters as their real view
(``torch.view_as_real``, as ``timm.optim.Lion`` does); AdaBelief and Adan do not take the real view,
and complex parameters are refused."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched.optimizers import _common, adam
from jaxsched.optimizers._registry import OptimizerSpec, with_corrected_decay


class LionState(NamedTuple):
  """timm's per-parameter ``exp_avg`` (Lion keeps no step)."""

  mu: Any


class AdaBeliefState(NamedTuple):
  """timm's ``step``, ``exp_avg``, ``exp_avg_var`` and, with amsgrad, ``max_exp_avg_var``."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  mu: Any
  nu: Any
  nu_max: Any = None


class AdanState(NamedTuple):
  """timm's group ``step`` and per-parameter ``exp_avg``, ``exp_avg_diff``, ``exp_avg_sq``, and the previous
  gradient (timm keeps its negation, ``neg_pre_grad``; ``g + (-g_prev)`` and ``g - g_prev`` are the same
  float, and keeping the gradient as it is costs no kernel)."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  mu: Any
  diff: Any
  nu: Any
  prev_grad: Any


def lion(
  learning_rate, b1, b2, weight_decay, caution: bool, maximize: bool, corrected_weight_decay: bool, max_lr
) -> optax.GradientTransformation:
  """Lion, as ``timm.optim.Lion``.

  ``g = -g`` if maximize; ``p *= 1 - lr * wd`` (``lr**2 / max_lr`` for lr with corrected_weight_decay,
  :func:`_common.decay_learning_rate`); ``u = sign(lerp(m, g, 1 - b1))`` (caution as
  :func:`_common.cautious`); ``p += -lr * u``; then ``m = lerp(m, g, 1 - b2)``.
  """

  def update_fn(updates, state, params):
    grads = jax.tree.map(jnp.negative, updates) if maximize else updates
    step = -jnp.asarray(learning_rate)
    rate = _common.decay_learning_rate(learning_rate, corrected_weight_decay, max_lr)
    decay = None if weight_decay is None else -rate * weight_decay
    interpolate = _common.lerp(1 - b1)

    def leaf(g, m, p):
      u = jnp.sign(interpolate(m, g))
      if caution:
        u = _common.cautious(u, g)
      u = _common.cast(step, u) * u
      return u if decay is None else _common.cast(decay, p) * p + u

    out = jax.tree.map(leaf, grads, state.mu, params)
    return out, LionState(jax.tree.map(_common.lerp(1 - b2), state.mu, grads))

  return optax.GradientTransformation(lambda p: LionState(_common.zeros_like(p)), update_fn)


def adabelief(
  learning_rate,
  b1,
  b2,
  eps,
  weight_decay,
  amsgrad: bool,
  decoupled_decay: bool,
  fixed_decay: bool,
  rectify: bool,
  degenerated_to_sgd: bool,
) -> optax.GradientTransformation:
  """AdaBelief (RAdaBelief with rectify), as ``timm.optim.AdaBelief``.

  Decay first: ``p *= 1 - lr * wd`` (decoupled_decay; ``1 - wd`` with fixed_decay), or
  ``g += wd * p``. ``m = lerp(m, g, 1 - b1)``, ``s = b2 s + (1 - b2) (g - m)²`` and then
  ``s += eps`` in the state (timm adds eps in place, so it accumulates); with amsgrad
  ``s_max = max(s_max, s)``. Without rectify:
  ``p += -lr / (1 - b1**t) * m / (sqrt(s or s_max) / sqrt(1 - b2**t) + eps)``. With rectify,
  RAdam's ``rho_t`` (:func:`jaxsched.optimizers.adam.sma_lengths`): if ``rho_t >= 5``,
  ``p += -lr * r_t * m / (sqrt(s) + eps)`` with
  ``r_t = sqrt((1 - b2**t) (rho_t - 4) / (rho_inf - 4) (rho_t - 2) / rho_t rho_inf / (rho_inf - 2)) / (1 - b1**t)``;
  else ``p += -lr / (1 - b1**t) * m`` with degenerated_to_sgd, no step without.
  """

  def init_fn(params):
    zeros = _common.zeros_like
    return AdaBeliefState(jnp.zeros([], jnp.int32), zeros(params), zeros(params), zeros(params) if amsgrad else None)

  def update_fn(updates, state, params):
    count = optax.safe_increment(state.count)
    step = -jnp.asarray(learning_rate)
    coupled = weight_decay is not None and not decoupled_decay
    if coupled:
      updates = jax.tree.map(lambda g, p: g + _common.cast(weight_decay, p) * p, updates, params)
    decay = None
    if weight_decay is not None and decoupled_decay:
      decay = -jnp.asarray(weight_decay) if fixed_decay else step * weight_decay
    mu = jax.tree.map(_common.lerp(1 - b1), state.mu, updates)
    average = _common.square_average(b2)
    nu = jax.tree.map(lambda s, g, m: average(s, g - m) + _common.cast(eps, s), state.nu, updates, mu)
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else None
    bc1, bc2 = adam.bias_correction(b1, count), adam.bias_correction(b2, count)
    if rectify:
      rho_inf, rho_t = adam.sma_lengths(b2, count.astype(bc2.dtype))
      rectified = rho_t >= 5
      ratio = (rho_t - 4) / (rho_inf - 4) * (rho_t - 2) / rho_t * rho_inf / (rho_inf - 2)
      size = jnp.where(rectified, jnp.sqrt(bc2 * ratio) / bc1, 1 / bc1 if degenerated_to_sgd else 0.0)
      scale = step * size

      def direction(m, s, s_max):
        del s_max
        return jax.lax.select(rectified, m / (jnp.sqrt(s) + _common.cast(eps, s)), m)
    else:
      scale = step / bc1
      bc2_sqrt = jnp.sqrt(bc2)

      def direction(m, s, s_max):
        s = s if s_max is None else s_max
        return m / (jnp.sqrt(s) / _common.cast(bc2_sqrt, s) + _common.cast(eps, s))

    def leaf(m, s, s_max, p):
      u = _common.cast(scale, m) * direction(m, s, s_max)
      return u if decay is None else _common.cast(decay, p) * p + u

    out = jax.tree.map(leaf, mu, nu, nu_max if amsgrad else nu, params)
    return out, AdaBeliefState(count, mu, nu, nu_max)

  return optax.GradientTransformation(init_fn, update_fn)


def adan(learning_rate, b1, b2, b3, eps, weight_decay, no_prox: bool, caution: bool) -> optax.GradientTransformation:
  """Adan, as ``timm.optim.Adan``.

  With ``x = g - g_prev`` (0 at the first step): ``m = lerp(m, g, 1 - b1)``,
  ``d = b2 d + (1 - b2) x``, ``n = b3 n + (1 - b3) (g + b2 x)²``; with
  ``denom = sqrt(n) / sqrt(1 - b3**t) + eps`` (caution on ``m`` as :func:`_common.cautious`):
  ``p += -lr / (1 - b1**t) * m / denom - lr b2 / (1 - b2**t) * d / denom``, then the decay
  ``p /= 1 + lr * wd`` (proximal), or with no_prox ``p *= 1 - lr * wd`` first.
  """

  def init_fn(params):
    zeros = _common.zeros_like
    return AdanState(jnp.zeros([], jnp.int32), zeros(params), zeros(params), zeros(params), zeros(params))

  def update_fn(updates, state, params):
    count = optax.safe_increment(state.count)
    # timm sets neg_pre_grad = -g at the first step, so g - g_prev is exactly 0 there
    take = jnp.where(state.count == 0, 0, 1).astype(jnp.asarray(b1).dtype)
    diffs = jax.tree.map(lambda g, prev: _common.cast(take, g) * (g - prev), updates, state.prev_grad)
    mu = jax.tree.map(_common.lerp(1 - b1), state.mu, updates)
    keep = 1 - b2
    diff = jax.tree.map(lambda d, x: d * _common.cast(b2, d) + _common.cast(keep, x) * x, state.diff, diffs)
    average = _common.square_average(b3)
    nu = jax.tree.map(lambda n, x, g: average(n, x * _common.cast(b2, x) + g), state.nu, diffs, updates)
    lr = jnp.asarray(learning_rate)
    size = -(lr / adam.bias_correction(b1, count))
    size_diff = -(lr * b2 / adam.bias_correction(b2, count))
    bc3_sqrt = jnp.sqrt(adam.bias_correction(b3, count))

    def leaf(g, m, d, n, p):
      denom = jnp.sqrt(n) / _common.cast(bc3_sqrt, n) + _common.cast(eps, n)
      if caution:
        m = _common.cautious(m, g)
      new = p
      if weight_decay is not None and no_prox:
        new = new * _common.cast(1 - lr * weight_decay, p)
      new = new + _common.cast(size, p) * (m / denom)
      new = new + _common.cast(size_diff, p) * (d / denom)
      if weight_decay is not None and not no_prox:
        new = new / _common.cast(1 + lr * weight_decay, p)
      return new - p

    out = jax.tree.map(leaf, updates, mu, diff, nu, params)
    return out, AdanState(count, mu, diff, nu, updates)

  return optax.GradientTransformation(init_fn, update_fn)


_FLAG = _checks.Boolean()
_WEIGHT_DECAY = (0.0, adam.WEIGHT_DECAY)  # create_optimizer_v2 passes weight_decay=0


def _adabelief_spec(name: str, rectify: bool) -> OptimizerSpec:
  return OptimizerSpec(
    name=f'timm.{name}',
    factory=adabelief,
    class_name='AdaBelief',
    lr=1e-3,
    kwargs={
      'betas': ((0.9, 0.999), adam.BETAS),
      'eps': (1e-16, _checks.NON_NEGATIVE),
      'weight_decay': _WEIGHT_DECAY,
      'amsgrad': (False, _FLAG),
      'decoupled_decay': (True, _FLAG),
      'fixed_decay': (False, _FLAG),
      'rectify': (rectify, _FLAG),
      'degenerated_to_sgd': (True, _FLAG),
    },
    switchable=('weight_decay',),
    complex_params=False,
    lr_linear=False,  # fixed_decay: p *= 1 - wd whatever the lr
  )


def _adan_spec(name: str, no_prox: bool, caution: bool = False) -> OptimizerSpec:
  return OptimizerSpec(
    name=f'timm.{name}',
    factory=adan,
    class_name='Adan',
    lr=1e-3,
    kwargs={
      'betas': ((0.98, 0.92, 0.99), _checks.Sequence(_checks.Schedulable(_checks.PROBABILITY), 3)),
      'eps': (1e-8, _checks.NON_NEGATIVE),
      'weight_decay': _WEIGHT_DECAY,
      'no_prox': (no_prox, _FLAG),
      'caution': (caution, _FLAG),
    },
    switchable=('weight_decay',),
    complex_params=False,
    lr_linear=False,  # the proximal decay divides by 1 + lr * wd
  )


def _lion_spec(name: str, caution: bool = False, corrected: bool = False) -> OptimizerSpec:
  spec = OptimizerSpec(
    name=f'timm.{name}',
    factory=lion,
    class_name='Lion',
    lr=1e-4,
    kwargs={
      'betas': ((0.9, 0.99), adam.BETAS),
      'weight_decay': _WEIGHT_DECAY,
      'caution': (caution, _FLAG),
      'maximize': (False, _FLAG),
    },
    switchable=('weight_decay',),
    lr_linear=True,
    torch_step=None,
  )
  return with_corrected_decay(spec, corrected)


SPECS = (
  _lion_spec('lion'),
  _lion_spec('lionc', corrected=True),
  _lion_spec('clion', caution=True),
  _lion_spec('clionc', caution=True, corrected=True),
  _adabelief_spec('adabelief', rectify=False),
  _adabelief_spec('radabelief', rectify=True),
  _adan_spec('adan', no_prox=False),
  _adan_spec('adanw', no_prox=True),
  _adan_spec('cadan', no_prox=False, caution=True),
  _adan_spec('cadanw', no_prox=True, caution=True),
)
