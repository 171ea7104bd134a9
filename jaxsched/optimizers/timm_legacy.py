"""timm's own versions of optimizers torch.optim also has: ``timm.optim.SGDW``,
``timm.optim.RMSpropTF``, ``timm.optim.AdamWLegacy``, ``timm.optim.NAdamLegacy`` and
``timm.optim.RAdamLegacy``, by the IDs ``timm.sgdw``, ``timm.nesterovw``, ``timm.csgdw``,
``timm.rmsproptf``, ``timm.rmsproptfw``, ``timm.crmsproptf``, ``timm.adamwlegacy``, ``timm.cadamw``,
``timm.nadamlegacy`` and ``timm.radamlegacy``.

Each ID is timm's class with the defaults ``timm.optim.create_optimizer_v2(..., opt=<name>)``
passes (the class's own, then ``weight_decay=0``, ``momentum=0.9`` where the class has momentum,
and the registry entry's ``nesterov``, ``alpha``, ``decoupled_decay`` or ``caution``); the numbers
are those of timm's single-tensor implementations, the ones it runs on CPU. There is no torch.optim
counterpart, so no torch state conversion (``torch_state`` is empty). SGDW, RMSpropTF (with
decoupled_decay) and AdamWLegacy take timm's ``corrected_weight_decay`` (and ``max_lr``,
:func:`jaxsched.optimizers._registry.with_corrected_decay`), by the IDs ``timm.sgdc``,
``timm.csgdc``, ``timm.rmsproptfc``, ``timm.adamc`` and ``timm.cadamc`` too.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched.optimizers import _common, adam, sgd, timm_adam
from jaxsched.optimizers._registry import OptimizerSpec, with_corrected_decay


class RMSpropTFState(NamedTuple):
  """timm's per-parameter ``step``, ``square_avg`` (ones at first), and ``grad_avg`` (centered)
  and ``momentum_buffer`` (momentum > 0) where timm keeps them."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  nu: Any
  grad_avg: Any = None
  buffer: Any = None


def cautious_against_input(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """``inner``'s direction with timm's caution (:func:`_common.cautious`) against the gradient
  ``inner`` was given."""

  def update_fn(updates, state, params=None):
    out, state = inner.update(updates, state, params)
    return jax.tree.map(_common.cautious, out, updates), state

  return optax.GradientTransformation(inner.init, update_fn)


def sgdw(
  learning_rate,
  momentum,
  dampening,
  weight_decay,
  nesterov: bool,
  caution: bool,
  maximize: bool,
  corrected_weight_decay: bool,
  max_lr,
):
  """SGD with decoupled weight decay, as ``timm.optim.SGDW``.

  ``g = -g`` if maximize; ``p *= 1 - lr * wd`` (``lr**2 / max_lr`` for ``lr`` with corrected_weight_decay,
  :func:`_common.decay_learning_rate`); with momentum, torch.optim.SGD's buffer, dampening
  and nesterov (:func:`jaxsched.optimizers.sgd.torch_momentum`), then caution against ``g`` as
  :func:`_common.cautious` (timm cautions only with momentum); ``p += -lr * u``.
  """
  buffer = None
  if momentum is not None:
    buffer = sgd.torch_momentum(momentum, dampening, nesterov)
    buffer = cautious_against_input(buffer) if caution else buffer
  return _common.chain(
    _common.negate() if maximize else None,
    buffer,
    _common.descend(learning_rate),
    None
    if weight_decay is None
    else _common.decoupled_decay(
      _common.decay_learning_rate(learning_rate, corrected_weight_decay, max_lr), weight_decay
    ),
  )


def rmsprop_tf(
  learning_rate,
  alpha,
  eps,
  weight_decay,
  momentum,
  centered: bool,
  decoupled_decay: bool,
  lr_in_momentum: bool,
  caution: bool,
  corrected_weight_decay: bool,
  max_lr,
) -> optax.GradientTransformation:
  """RMSprop in TensorFlow's form, as ``timm.optim.RMSpropTF``.

  ``p *= 1 - lr * wd`` with decoupled_decay (``lr**2 / max_lr`` for ``lr`` with
  corrected_weight_decay), else ``g += wd * p``; ``v += (1 - alpha) (g² - v)``
  with ``v`` starting at 1; centered: ``a += (1 - alpha) (g - a)``, ``d = sqrt(v - a² + eps)``, else
  ``d = sqrt(v + eps)`` (eps inside the root). With momentum: ``b = momentum b + lr g / d`` and
  ``p -= b`` (lr_in_momentum, TensorFlow's), or ``b = momentum b + g / d`` and ``p += -lr b``;
  caution on ``b`` against ``g`` as :func:`_common.cautious` (the kept buffer is not masked).
  Without momentum ``p += -lr g / d``.
  """

  def init_fn(params):
    zeros = _common.zeros_like
    return RMSpropTFState(
      jnp.zeros([], jnp.int32),
      jax.tree.map(jnp.ones_like, params),
      zeros(params) if centered else None,
      zeros(params) if momentum is not None else None,
    )

  def update_fn(updates, state, params):
    lr = jnp.asarray(learning_rate)
    step = -lr
    decay = None
    if weight_decay is not None and decoupled_decay:
      decay = -_common.decay_learning_rate(lr, corrected_weight_decay, max_lr) * weight_decay
    elif weight_decay is not None:
      updates = jax.tree.map(lambda g, p: g + _common.cast(weight_decay, p) * p, updates, params)
    rest = 1 - alpha
    nu = jax.tree.map(lambda v, g: v + _common.cast(rest, v) * (g * g - v), state.nu, updates)
    if centered:
      grad_avg = jax.tree.map(lambda a, g: a + _common.cast(rest, a) * (g - a), state.grad_avg, updates)
      denom = jax.tree.map(lambda v, a: jnp.sqrt(v - a * a + _common.cast(eps, v)), nu, grad_avg)
    else:
      grad_avg = None
      denom = jax.tree.map(lambda v: jnp.sqrt(v + _common.cast(eps, v)), nu)
    buffer = None
    if momentum is None:
      out = jax.tree.map(lambda g, d: _common.cast(step, g) * (g / d), updates, denom)
    else:
      scale = lr if lr_in_momentum else jnp.ones_like(lr)
      size = -jnp.ones_like(lr) if lr_in_momentum else step
      buffer = jax.tree.map(
        lambda b, g, d: b * _common.cast(momentum, b) + _common.cast(scale, g) * (g / d), state.buffer, updates, denom
      )
      shown = jax.tree.map(_common.cautious, buffer, updates) if caution else buffer
      out = jax.tree.map(lambda b: _common.cast(size, b) * b, shown)
    if decay is not None:
      out = jax.tree.map(lambda u, p: _common.cast(decay, p) * p + u, out, params)
    return out, RMSpropTFState(optax.safe_increment(state.count), nu, grad_avg, buffer)

  return optax.GradientTransformation(init_fn, update_fn)


def adamw_legacy(
  learning_rate,
  b1,
  b2,
  eps,
  weight_decay,
  amsgrad: bool,
  caution: bool,
  maximize: bool,
  clipping_threshold,
  corrected_weight_decay: bool,
  max_lr,
) -> optax.GradientTransformation:
  """AdamW, as ``timm.optim.AdamWLegacy``.

  ``g = -g`` if maximize; ``p *= 1 - lr * wd`` (``lr**2 / max_lr`` for ``lr`` with
  corrected_weight_decay); ``m = lerp(m, g, 1 - b1)``, ``v = b2 v + (1 - b2) g²`` (with amsgrad
  its running max ``v_max`` in the denominator);
  ``d = sqrt(v) / sqrt(1 - b2**t) + eps``, times ``max(1, rms(g / d) / clipping_threshold)`` if
  clipping_threshold is set (StableAdamW); caution on ``m`` as :func:`_common.cautious`;
  ``p += -lr / (1 - b1**t) * m / d``.
  """

  def init_fn(params):
    zeros = _common.zeros_like
    return adam.AdamState(jnp.zeros([], jnp.int32), zeros(params), zeros(params), zeros(params) if amsgrad else None)

  def update_fn(updates, state, params):
    grads = jax.tree.map(jnp.negative, updates) if maximize else updates
    count = optax.safe_increment(state.count)
    mu = adam.first_moment(grads, state.mu, b1)
    nu = jax.tree.map(_common.square_average(b2), state.nu, grads)
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else None
    lr = jnp.asarray(learning_rate)
    size = -(lr / adam.bias_correction(b1, count))
    bc2_sqrt = jnp.sqrt(adam.bias_correction(b2, count))
    decay = None
    if weight_decay is not None:
      decay = -_common.decay_learning_rate(lr, corrected_weight_decay, max_lr) * weight_decay

    def leaf(g, m, v, p):
      denom = timm_adam.stable_denominator(g, v, bc2_sqrt, eps, clipping_threshold)
      if caution:
        m = _common.cautious(m, g)
      u = _common.cast(size, m) * (m / denom)
      return u if decay is None else _common.cast(decay, p) * p + u

    out = jax.tree.map(leaf, grads, mu, nu_max if amsgrad else nu, params)
    return out, adam.AdamState(count, mu, nu, nu_max)

  return optax.GradientTransformation(init_fn, update_fn)


def momentum_average(decay: Any) -> Any:
  """``(m, g) -> decay * m + (1 - decay) * g`` as ``m.mul_(decay).add_(g, alpha=1 - decay)`` (not
  torch.optim.Adam's lerp), ``1 - decay`` computed once."""
  rest = 1 - decay
  return lambda m, g: m * _common.cast(decay, m) + _common.cast(rest, g) * g


def nadam_legacy(learning_rate, b1, b2, eps, weight_decay, schedule_decay) -> optax.GradientTransformation:
  """NAdam with Dozat's warming momentum schedule, as ``timm.optim.NAdamLegacy``.

  ``g += wd * p``; ``mu_t = b1 (1 - 0.5 * 0.96**(t * schedule_decay))``, the product
  ``P_t = P_{t-1} mu_t`` (``m_schedule``, a Python float in timm: here in the hyperparameters'
  precision); ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g²``,
  ``d = sqrt(v) / sqrt(1 - b2**t) + eps``;
  ``p += -lr (1 - mu_t) / (1 - P_t) * g / d - lr mu_{t+1} / (1 - P_t mu_{t+1}) * m / d``.
  """

  def init_fn(params):
    zeros = _common.zeros_like
    schedule = jnp.ones([], jnp.asarray(b1).dtype)
    return adam.NAdamState(jnp.zeros([], jnp.int32), schedule, zeros(params), zeros(params))

  def update_fn(updates, state, params):
    if weight_decay is not None:
      updates = jax.tree.map(lambda g, p: g + _common.cast(weight_decay, p) * p, updates, params)
    count = optax.safe_increment(state.count)
    t = count.astype(state.mu_product.dtype)
    mu_t = b1 * (1.0 - 0.5 * 0.96 ** (t * schedule_decay))
    mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * schedule_decay))
    product = state.mu_product * mu_t
    lr = jnp.asarray(learning_rate)
    c_grad = -lr * (1.0 - mu_t) / (1.0 - product)
    c_avg = -lr * mu_next / (1.0 - product * mu_next)
    bc2_sqrt = jnp.sqrt(adam.bias_correction(b2, count))
    mu = jax.tree.map(momentum_average(b1), state.mu, updates)
    nu = jax.tree.map(_common.square_average(b2), state.nu, updates)

    def leaf(g, m, v):
      denom = jnp.sqrt(v) / _common.cast(bc2_sqrt, v) + _common.cast(eps, v)
      return _common.cast(c_grad, g) * (g / denom) + _common.cast(c_avg, m) * (m / denom)

    return jax.tree.map(leaf, updates, mu, nu), adam.NAdamState(count, product, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def radam_legacy(learning_rate, b1, b2, eps, weight_decay) -> optax.GradientTransformation:
  """RAdam, as ``timm.optim.RAdamLegacy``: computed in float32 whatever the parameters' dtype
  (timm steps ``p.float()`` with ``grad.float()`` and float32 moments, then copies back).

  ``v = b2 v + (1 - b2) g²``, ``m = b1 m + (1 - b1) g``; RAdam's ``rho_t``
  (:func:`jaxsched.optimizers.adam.sma_lengths`); ``p += -lr * wd * p``; if ``rho_t >= 5``,
  ``p += -lr r_t m / (sqrt(v) + eps)`` with
  ``r_t = sqrt((1 - b2**t) (rho_t - 4) / (rho_inf - 4) (rho_t - 2) / rho_t rho_inf / (rho_inf - 2)) / (1 - b1**t)``,
  else ``p += -lr / (1 - b1**t) * m``.
  """

  def init_fn(params):
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    return adam.AdamState(jnp.zeros([], jnp.int32), zeros, jax.tree.map(jnp.copy, zeros))

  def update_fn(updates, state, params):
    grads = jax.tree.map(lambda g: g.astype(jnp.float32), updates)
    nu = jax.tree.map(_common.square_average(b2), state.nu, grads)
    mu = jax.tree.map(momentum_average(b1), state.mu, grads)
    count = optax.safe_increment(state.count)
    bc1, bc2 = adam.bias_correction(b1, count), adam.bias_correction(b2, count)
    rho_inf, rho_t = adam.sma_lengths(b2, count.astype(bc2.dtype))
    rectified = rho_t >= 5
    ratio = (rho_t - 4) / (rho_inf - 4) * (rho_t - 2) / rho_t * rho_inf / (rho_inf - 2)
    lr = jnp.asarray(learning_rate)
    step = -jnp.where(rectified, lr * jnp.sqrt(bc2 * ratio), lr) / bc1
    decay = None if weight_decay is None else -weight_decay * lr

    def leaf(m, v, p):
      p32 = p.astype(jnp.float32)
      new = p32 if decay is None else p32 + _common.cast(decay, p32) * p32
      direction = jax.lax.select(rectified, m / (jnp.sqrt(v) + _common.cast(eps, v)), m)
      new = new + _common.cast(step, direction) * direction
      return new.astype(p.dtype) - p

    return jax.tree.map(leaf, mu, nu, params), adam.AdamState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


_FLAG = _checks.Boolean()
_WEIGHT_DECAY = (0.0, adam.WEIGHT_DECAY)  # create_optimizer_v2 passes weight_decay=0
_MOMENTUM = (0.9, _checks.Schedulable(_checks.NON_NEGATIVE))  # create_optimizer_v2's; the classes' is 0


def _sgdw_spec(name: str, caution: bool, corrected: bool = False) -> OptimizerSpec:
  spec = OptimizerSpec(
    name=f'timm.{name}',
    factory=sgdw,
    class_name='SGDW',
    lr=1e-3,
    kwargs={
      'momentum': _MOMENTUM,
      'dampening': (0.0, _checks.Real()),
      'weight_decay': _WEIGHT_DECAY,
      'nesterov': (True, _FLAG),
      'caution': (caution, _FLAG),
      'maximize': (False, _FLAG),
    },
    switchable=('momentum', 'weight_decay'),
    cross_check=sgd.nesterov_check('timm.optim.SGDW'),
    # timm's SGDW steps a complex p with complex arithmetic, elementwise-linear with real
    # hyperparameters: the real view's numbers (caution: timm raises, here the real view's mask)
    lr_linear=True,
    torch_step=None,
  )
  return with_corrected_decay(spec, corrected)


def _rmsprop_tf_spec(name: str, decoupled_decay: bool, caution: bool, corrected: bool = False) -> OptimizerSpec:
  spec = OptimizerSpec(
    name=f'timm.{name}',
    factory=rmsprop_tf,
    class_name='RMSpropTF',
    lr=1e-2,
    kwargs={
      'alpha': (0.9, _checks.Schedulable(_checks.NON_NEGATIVE)),
      'eps': (1e-10, _checks.NON_NEGATIVE),
      'weight_decay': _WEIGHT_DECAY,
      'momentum': _MOMENTUM,
      'centered': (False, _FLAG),
      'decoupled_decay': (decoupled_decay, _FLAG),
      'lr_in_momentum': (True, _FLAG),
      'caution': (caution, _FLAG),
    },
    switchable=('momentum', 'weight_decay'),
    # timm squares a complex gradient as a complex number (g * g, not |g|²): no real view
    complex_params=False,
    lr_linear=False,  # lr_in_momentum: the buffer sums lr-weighted steps
  )
  return with_corrected_decay(spec, corrected)


def _adamw_legacy_spec(name: str, caution: bool, corrected: bool = False) -> OptimizerSpec:
  spec = OptimizerSpec(
    name=f'timm.{name}',
    factory=adamw_legacy,
    class_name='AdamWLegacy',
    lr=1e-3,
    kwargs={
      'betas': ((0.9, 0.999), adam.BETAS),
      'eps': (1e-8, _checks.NON_NEGATIVE),
      'weight_decay': _WEIGHT_DECAY,  # the class's default is 0.01
      'amsgrad': (False, _FLAG),
      'caution': (caution, _FLAG),
      'maximize': (False, _FLAG),
      'clipping_threshold': (None, _checks.Optional(_checks.POSITIVE)),
    },
    switchable=('weight_decay',),
    lr_linear=True,
  )
  return with_corrected_decay(spec, corrected)


SPECS = (
  _sgdw_spec('sgdw', caution=False),
  _sgdw_spec('nesterovw', caution=False),
  _sgdw_spec('csgdw', caution=True),
  _sgdw_spec('sgdc', caution=False, corrected=True),
  _sgdw_spec('csgdc', caution=True, corrected=True),
  _rmsprop_tf_spec('rmsproptf', decoupled_decay=False, caution=False),
  _rmsprop_tf_spec('rmsproptfw', decoupled_decay=True, caution=False),
  _rmsprop_tf_spec('crmsproptf', decoupled_decay=False, caution=True),
  _rmsprop_tf_spec('rmsproptfc', decoupled_decay=True, caution=False, corrected=True),
  _adamw_legacy_spec('adamwlegacy', caution=False),
  _adamw_legacy_spec('cadamw', caution=True),
  _adamw_legacy_spec('adamc', caution=False, corrected=True),
  _adamw_legacy_spec('cadamc', caution=True, corrected=True),
  OptimizerSpec(
    name='timm.nadamlegacy',
    factory=nadam_legacy,
    class_name='NAdamLegacy',
    lr=2e-3,
    kwargs={
      'betas': ((0.9, 0.999), adam.BETAS),
      'eps': (1e-8, _checks.NON_NEGATIVE),
      'weight_decay': _WEIGHT_DECAY,
      'schedule_decay': (4e-3, _checks.Schedulable(_checks.Real())),
    },
    switchable=('weight_decay',),
    complex_params=False,  # timm squares a complex gradient as a complex number: no real view
    lr_linear=True,
  ),
  OptimizerSpec(
    name='timm.radamlegacy',
    factory=radam_legacy,
    class_name='RAdamLegacy',
    lr=1e-3,
    kwargs={
      'betas': ((0.9, 0.999), adam.BETAS),
      'eps': (1e-8, _checks.NON_NEGATIVE),
      'weight_decay': _WEIGHT_DECAY,
    },
    switchable=('weight_decay',),
    complex_params=False,  # timm's p.float() drops a complex parameter's imaginary part
    lr_linear=False,  # the new parameters are rounded to float32: a group's own lr is not a scale of lr = 1's step
  ),
)
