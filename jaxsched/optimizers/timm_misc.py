"""timm's other optimizers that torch.optim lacks: ``timm.optim.MADGRAD``,
``timm.optim.NvNovoGrad`` and ``timm.optim.Mars``, by the IDs ``timm.madgrad``,
``timm.madgradw``, ``timm.novograd``, ``timm.novogradw``, ``timm.novogradc``
(``corrected_weight_decay``), ``timm.mars`` and ``timm.cmars`` (``caution``).

Each ID is timm's class with the defaults ``timm.optim.create_optimizer_v2(..., opt=<name>)``
passes (the class's own, then ``weight_decay=0``, MADGRAD's ``momentum=0.9`` and the registry
entry's own); the numbers are those of timm's implementations. There is no
torch.optim counterpart, so no torch state conversion (``torch_state`` is empty). None of the
three takes the real view of complex parameters: complex parameters are refused.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched.optimizers import _common, adam
from jaxsched.optimizers._registry import OptimizerSpec, with_corrected_decay


class MadgradState(NamedTuple):
  """timm's per-parameter ``step``, ``grad_sum_sq``, ``s`` and, with momentum, ``x0`` (the
  parameters before the first step)."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  grad_sum_sq: Any
  s: Any
  x0: Any = None


class NovogradState(NamedTuple):
  """timm's per-parameter ``step``, ``exp_avg``, and the one-number ``exp_avg_sq`` (and
  ``max_exp_avg_sq`` with amsgrad) per parameter array, float32 whatever its dtype, as timm's."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  mu: Any
  nu: Any
  nu_max: Any = None


class MarsState(NamedTuple):
  """timm's per-parameter ``step``, ``exp_avg``, ``exp_avg_sq`` and ``last_grad``."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  mu: Any
  nu: Any
  last_grad: Any


def madgrad(learning_rate, momentum, weight_decay, eps, decoupled_decay: bool) -> optax.GradientTransformation:
  """MADGRAD, as ``timm.optim.MADGRAD`` (dual averaging with a cube-root second moment).

  With ``l = (lr + eps) sqrt(t)``: decay ``p *= 1 - lr * wd`` (decoupled_decay) or
  ``g += wd * p``; ``x0 = p + s / (S**(1/3) + eps)`` without momentum, else the parameters before
  the first step; ``S += l g²``, ``s += l g``; ``z = x0 - s / (S**(1/3) + eps)``; ``p = z``
  without momentum, else ``p = momentum p + (1 - momentum) z``.
  """

  def init_fn(params):
    zeros = _common.zeros_like
    x0 = jax.tree.map(jnp.array, params) if momentum is not None else None
    return MadgradState(jnp.zeros([], jnp.int32), zeros(params), zeros(params), x0)

  def update_fn(updates, state, params):
    count = optax.safe_increment(state.count)
    lr = jnp.asarray(learning_rate)
    lamb = (lr + eps) * jnp.sqrt(count.astype(lr.dtype))
    decayed = params
    if weight_decay is not None and decoupled_decay:
      decayed = jax.tree.map(lambda p: p * _common.cast(1.0 - lr * weight_decay, p), params)
    elif weight_decay is not None:
      updates = jax.tree.map(lambda g, p: g + _common.cast(weight_decay, p) * p, updates, params)
    ck = None if momentum is None else 1 - momentum
    third = 1 / 3

    def rms(total):
      return total ** _common.cast(third, total) + _common.cast(eps, total)

    def leaf(g, total, s, x0, p):
      if x0 is None:
        x0 = p + s / rms(total)
      total = total + _common.cast(lamb, g) * g * g
      s = s + _common.cast(lamb, g) * g
      z = x0 - s / rms(total)
      new = z if ck is None else p * _common.cast(1 - ck, p) + _common.cast(ck, z) * z
      return new, total, s

    x0s = state.x0 if momentum is not None else jax.tree.map(lambda _: None, params)
    out = jax.tree.map(leaf, updates, state.grad_sum_sq, state.s, x0s, decayed, is_leaf=lambda x: x is None)
    tree = jax.tree.structure(params)
    new, total, s = (jax.tree.unflatten(tree, list(x)) for x in zip(*tree.flatten_up_to(out)))
    return jax.tree.map(jnp.subtract, new, params), MadgradState(count, total, s, state.x0)

  return optax.GradientTransformation(init_fn, update_fn)


def novograd(
  learning_rate,
  b1,
  b2,
  eps,
  weight_decay,
  grad_averaging: bool,
  amsgrad: bool,
  decoupled_decay: bool,
  corrected_weight_decay: bool,
  max_lr,
) -> optax.GradientTransformation:
  """NovoGrad, as ``timm.optim.NvNovoGrad``: a second moment per parameter array.

  ``n = |g|²`` (the sum of squares) at the first step (and whenever ``v`` is 0), else
  ``v = b2 v + (1 - b2) n``, ``v`` a float32 number (with amsgrad, its running max is used);
  ``u = g / (sqrt(v) + eps)``; ``u += wd * p``, or with decoupled_decay ``p *= 1 - lr * wd``
  (``lr**2 / max_lr`` for lr with corrected_weight_decay, :func:`_common.decay_learning_rate`);
  ``u *= 1 - b1`` with grad_averaging; ``m = b1 m + u``; ``p += -lr * m``.
  """
  f32 = _common.float32_rounded

  def init_fn(params):
    scalars = jax.tree.map(lambda _: jnp.zeros([], jnp.float32), params)
    nu_max = jax.tree.map(lambda _: jnp.zeros([], jnp.float32), params) if amsgrad else None
    return NovogradState(jnp.zeros([], jnp.int32), _common.zeros_like(params), scalars, nu_max)

  def update_fn(updates, state, params):
    lr = jnp.asarray(learning_rate)
    wide = jnp.result_type(lr, jnp.float32)
    b2_f32, keep, eps_f32 = f32(jnp.asarray(b2, wide)), jnp.asarray(1 - b2, wide), f32(jnp.asarray(eps, wide))

    def second(g, v):
      # torch: a float32 0-d tensor times b2 (float32), plus (1 - b2) times the sum in g's dtype
      total = jnp.sum(g * g).astype(jnp.promote_types(g.dtype, wide))
      v = v.astype(total.dtype)
      mixed = f32(f32(v * b2_f32.astype(v.dtype)) + keep.astype(v.dtype) * total)
      return jnp.where(v == 0, f32(total), mixed).astype(jnp.float32)

    nu = jax.tree.map(second, updates, state.nu)
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else None
    step = -lr
    rate = _common.decay_learning_rate(lr, corrected_weight_decay, max_lr)
    decay = 1.0 - rate * weight_decay if weight_decay is not None and decoupled_decay else None

    def leaf(g, v, m, p):
      wide_v = v.astype(wide)
      denom = f32(f32(jnp.sqrt(wide_v)) + eps_f32)
      u = g / denom.astype(g.dtype)
      if weight_decay is not None and not decoupled_decay:
        u = u + _common.cast(weight_decay, p) * p
      if grad_averaging:
        u = u * _common.cast(1 - b1, u)
      m = m * _common.cast(b1, m) + u
      new = p if decay is None else p * _common.cast(decay, p)
      return (new + _common.cast(step, m) * m) - p, m

    out = jax.tree.map(leaf, updates, nu_max if amsgrad else nu, state.mu, params)
    tree = jax.tree.structure(params)
    u, mu = (jax.tree.unflatten(tree, list(x)) for x in zip(*tree.flatten_up_to(out)))
    return u, NovogradState(optax.safe_increment(state.count), mu, nu, nu_max)

  return optax.GradientTransformation(init_fn, update_fn)


def mars(
  learning_rate, b1, b2, eps, weight_decay, gamma, mars_type: str, optimize_1d: bool, lr_1d_factor, betas_1d, caution
) -> optax.GradientTransformation:
  """MARS, as ``timm.optim.Mars`` (variance-reduced momentum).

  For arrays of 2 or more dimensions (all with optimize_1d):
  ``c = g + gamma b1 / (1 - b1) (g - g_prev)`` (``c = g`` at the first step), ``c /= max(|c|, 1)``;
  ``m = b1 m + (1 - b1) c`` (caution on ``m`` as :func:`_common.cautious`); 'adamw':
  ``v = b2 v + (1 - b2) c²``, ``u = (m / (1 - b1**t)) / (sqrt(v) / sqrt(1 - b2**t) + eps)``;
  'lion': ``u = sign(m)``; ``p += -lr (u + wd p)``. Other arrays: AdamW with betas_1d (betas if
  null) on ``g`` and ``p += -lr lr_1d_factor (u + wd p)``.
  """
  b1_1d, b2_1d = (b1, b2) if betas_1d is None else betas_1d

  def init_fn(params):
    zeros = _common.zeros_like
    return MarsState(jnp.zeros([], jnp.int32), zeros(params), zeros(params), zeros(params))

  def update_fn(updates, state, params):
    count = optax.safe_increment(state.count)
    first = state.count == 0
    lr = jnp.asarray(learning_rate)
    correction = jnp.where(first, 0, gamma * (b1 / (1 - b1)))
    bc1, bc2_sqrt = adam.bias_correction(b1, count), jnp.sqrt(adam.bias_correction(b2, count))
    bc1_1d, bc2_sqrt_1d = adam.bias_correction(b1_1d, count), jnp.sqrt(adam.bias_correction(b2_1d, count))
    step_1d = -(lr * lr_1d_factor)

    def adamw(m, v, g, p, c1, c2_sqrt):
      denom = jnp.sqrt(v) / _common.cast(c2_sqrt, v) + _common.cast(eps, v)
      return (m / _common.cast(c1, m)) / denom

    def leaf(g, last, m, v, p):
      if optimize_1d or g.ndim >= 2:
        c = (g - last) * _common.cast(correction, g) + g
        c = c / jnp.maximum(_common.norm(c), 1)
        m = m * _common.cast(b1, m) + _common.cast(1 - b1, c) * c
        shown = _common.cautious(m, g) if caution else m
        if mars_type == 'adamw':
          v = _common.square_average(b2)(v, c)
          u = adamw(shown, v, g, p, bc1, bc2_sqrt)
        else:
          u = jnp.sign(shown)
        size = -lr
      else:
        m = m * _common.cast(b1_1d, m) + _common.cast(1 - b1_1d, g) * g
        v = _common.square_average(b2_1d)(v, g)
        u = adamw(_common.cautious(m, g) if caution else m, v, g, p, bc1_1d, bc2_sqrt_1d)
        size = step_1d
      if weight_decay is not None:
        u = p * _common.cast(weight_decay, p) + u
      return _common.cast(size, u) * u, m, v

    out = jax.tree.map(leaf, updates, state.last_grad, state.mu, state.nu, params)
    tree = jax.tree.structure(params)
    u, mu, nu = (jax.tree.unflatten(tree, list(x)) for x in zip(*tree.flatten_up_to(out)))
    return u, MarsState(count, mu, nu, updates)

  return optax.GradientTransformation(init_fn, update_fn)


_FLAG = _checks.Boolean()
_WEIGHT_DECAY = (0.0, adam.WEIGHT_DECAY)  # create_optimizer_v2 passes weight_decay=0


def _madgrad_spec(name: str, decoupled_decay: bool) -> OptimizerSpec:
  return OptimizerSpec(
    name=f'timm.{name}',
    factory=madgrad,
    class_name='MADGRAD',
    lr=1e-2,
    kwargs={
      'momentum': (0.9, _checks.Schedulable(_checks.PROBABILITY)),  # create_optimizer_v2's
      'weight_decay': _WEIGHT_DECAY,
      'eps': (1e-6, _checks.NON_NEGATIVE),
      'decoupled_decay': (decoupled_decay, _FLAG),
    },
    switchable=('momentum', 'weight_decay'),
    lr_check=_checks.Schedulable(_checks.POSITIVE),  # timm: lr <= 0 raises
    complex_params=False,
    lr_linear=False,  # l = (lr + eps) sqrt(t), and a cube root
  )


def _novograd_spec(name: str, decoupled_decay: bool, corrected: bool = False) -> OptimizerSpec:
  spec = OptimizerSpec(
    name=f'timm.{name}',
    factory=novograd,
    class_name='NvNovoGrad',
    lr=1e-3,
    kwargs={
      'betas': ((0.95, 0.98), adam.BETAS),
      'eps': (1e-8, _checks.NON_NEGATIVE),
      'weight_decay': _WEIGHT_DECAY,
      'grad_averaging': (False, _FLAG),
      'amsgrad': (False, _FLAG),
      'decoupled_decay': (decoupled_decay, _FLAG),
    },
    switchable=('weight_decay',),
    complex_params=False,
    lr_linear=True,
  )
  return with_corrected_decay(spec, corrected)


def _mars_spec(name: str, caution: bool = False) -> OptimizerSpec:
  return OptimizerSpec(
    name=f'timm.{name}',
    factory=mars,
    class_name='Mars',
    lr=3e-3,
    kwargs={
      'betas': ((0.9, 0.99), adam.BETAS),
      'eps': (1e-8, _checks.NON_NEGATIVE),
      'weight_decay': _WEIGHT_DECAY,
      'gamma': (0.025, _checks.Real()),
      'mars_type': ('adamw', _checks.Choice(('adamw', 'lion'))),
      'optimize_1d': (False, _FLAG),
      'lr_1d_factor': (1.0, _checks.Real()),
      'betas_1d': (None, _checks.Optional(_checks.Sequence(_checks.PROBABILITY, 2))),
      'caution': (caution, _FLAG),
    },
    switchable=('weight_decay',),
    complex_params=False,
    lr_linear=True,
  )


SPECS = (
  _madgrad_spec('madgrad', decoupled_decay=False),
  _madgrad_spec('madgradw', decoupled_decay=True),
  _novograd_spec('novograd', decoupled_decay=False),
  _novograd_spec('novogradw', decoupled_decay=True),
  _novograd_spec('novogradc', decoupled_decay=True, corrected=True),
  _mars_spec('mars'),
  _mars_spec('cmars', caution=True),
)
