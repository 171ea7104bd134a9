"""The Adam family: ``torch.optim`` Adam, AdamW, Adamax, NAdam and RAdam.

All five share torch's first moment (:func:`first_moment`), the bias corrections
(:func:`bias_correction`) and, all but Adamax, the second moment
(``_common.square_average``); SparseAdam (``sparse_adam.py``) shares the bias
corrections. They are computed each step from the *current* betas, so a scheduled beta1 (OneCycleLR and
CyclicLR cycle it) enters ``1 - beta1**t`` as it does in torch.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched.optimizers import _common
from jaxsched.optimizers._registry import OptimizerSpec


class AdamState(NamedTuple):
  """torch's per-parameter state: ``step``, ``exp_avg``, ``exp_avg_sq`` (Adamax:
  ``exp_inf``) and, with amsgrad only, ``max_exp_avg_sq``."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  mu: Any
  nu: Any
  nu_max: Any = None


class NAdamState(NamedTuple):
  """NAdam's state: :class:`AdamState`'s plus torch's running ``mu_product``."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  mu_product: jax.Array
  mu: Any
  nu: Any


def first_moment(updates: Any, mu: Any, b1: Any) -> Any:
  """``exp_avg.lerp_(g, 1 - beta1)`` for every parameter."""
  return jax.tree.map(_common.lerp(1 - b1), mu, updates)


def bias_correction(beta: Any, step: jax.Array) -> jax.Array:
  """``1 - beta**step`` in the hyperparameter's precision (torch: Python floats).

  Written as ``-expm1(step * log(beta))``: the same number, but without the
  cancellation of ``1 - 0.999**t`` where hyperparameters are float32
  (``beta = 0`` gives ``log = -inf`` and the correct 1).
  """
  beta = jnp.asarray(beta)
  return -jnp.expm1(step.astype(beta.dtype) * jnp.log(beta))


def _init(params, amsgrad: bool = False) -> AdamState:
  # one array per field: a state may be donated, and a buffer cannot be donated twice
  return AdamState(
    jnp.zeros([], jnp.int32),
    _common.zeros_like(params),
    _common.zeros_like(params),
    _common.zeros_like(params) if amsgrad else None,
  )


def _moments(updates, state, b1, b2):
  """One step of torch's shared bookkeeping: ``step += 1`` and both moments."""
  mu = first_moment(updates, state.mu, b1)
  nu = jax.tree.map(_common.square_average(b2), state.nu, updates)
  return optax.safe_increment(state.count), mu, nu


def scale_by_adam(b1: Any, b2: Any, eps: Any, amsgrad: bool) -> optax.GradientTransformation:
  """Adam's direction as ``torch.optim.Adam`` computes it (before ``-lr``).

  ``m̂ / (sqrt(v) / sqrt(1 - b2**t) + eps)`` with ``m̂ = m / (1 - b1**t)``; with
  amsgrad, ``v`` is replaced by the running max of the raw ``v`` (not of the
  bias-corrected one, as ``optax.amsgrad`` does).
  """

  def update_fn(updates, state, params=None):
    del params
    count, mu, nu = _moments(updates, state, b1, b2)
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else None
    inv_bc1, bc2_sqrt = 1 / bias_correction(b1, count), jnp.sqrt(bias_correction(b2, count))

    def direction(m, v):
      denom = jnp.sqrt(v) / _common.cast(bc2_sqrt, v) + _common.cast(eps, v)
      return _common.cast(inv_bc1, m) * (m / denom)

    updates = jax.tree.map(direction, mu, nu_max if amsgrad else nu)
    return updates, AdamState(count, mu, nu, nu_max)

  return optax.GradientTransformation(lambda p: _init(p, amsgrad), update_fn)


def scale_by_adamax(b1: Any, b2: Any, eps: Any) -> optax.GradientTransformation:
  """Adamax's direction as ``torch.optim.Adamax`` computes it (before ``-lr``).

  ``u = max(b2 * u, |g| + eps)`` (eps inside the max, not in the division) and
  ``m / ((1 - b1**t) * u)``.
  """

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    mu = first_moment(updates, state.mu, b1)
    nu = jax.tree.map(
      lambda g, u: jnp.maximum(u * _common.cast(b2, u), jnp.abs(g) + _common.cast(eps, g)), updates, state.nu
    )
    inv_bc1 = 1 / bias_correction(b1, count)
    updates = jax.tree.map(lambda m, u: _common.cast(inv_bc1, m) * (m / u), mu, nu)
    return updates, AdamState(count, mu, nu)

  return optax.GradientTransformation(_init, update_fn)


def scale_by_nadam(b1: Any, b2: Any, eps: Any, momentum_decay: Any) -> optax.GradientTransformation:
  """NAdam's direction as ``torch.optim.NAdam`` computes it (before ``-lr``).

  Dozat's momentum schedule ``mu_t = b1 * (1 - 0.5 * 0.96**(t * momentum_decay))``,
  ``P_t = P_{t-1} * mu_t`` and, with ``d = sqrt(v / (1 - b2**t)) + eps``:
  ``(1 - mu_t) / (1 - P_t) * g / d + mu_{t+1} / (1 - P_t * mu_{t+1}) * m / d``.
  torch keeps ``P`` (``mu_product``) in float32 whatever the parameters' dtype
  (its default scalar dtype), rounding ``mu_t`` to float32 before multiplying;
  so does this state.
  """

  def mu_at(step):
    return b1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))

  def init_fn(params):
    base = _init(params)
    return NAdamState(base.count, jnp.ones([], jnp.float32), base.mu, base.nu)

  def update_fn(updates, state, params=None):
    del params
    count, mu, nu = _moments(updates, state, b1, b2)
    step = count.astype(jnp.asarray(b1).dtype)
    mu_t, mu_next = mu_at(step), mu_at(step + 1)
    mu_product = state.mu_product * mu_t.astype(jnp.float32)
    product = mu_product.astype(mu_t.dtype)
    c_grad = (1.0 - mu_t) / (1.0 - product)
    c_avg = mu_next / (1.0 - product * mu_next)
    bc2 = bias_correction(b2, count)

    def direction(g, m, v):
      denom = jnp.sqrt(v / _common.cast(bc2, v)) + _common.cast(eps, v)
      return _common.cast(c_grad, g) * (g / denom) + _common.cast(c_avg, m) * (m / denom)

    updates = jax.tree.map(direction, updates, mu, nu)
    return updates, NAdamState(count, mu_product, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def sma_lengths(b2: Any, step: jax.Array) -> tuple[jax.Array, jax.Array]:
  """RAdam's ``rho_inf = 2 / (1 - b2) - 1`` and ``rho_t = rho_inf - 2 t b2**t / (1 - b2**t)``.

  torch subtracts the two large terms in float64. Written as
  ``rho_t = 2 D / ((1 - b2)(1 - b2**t)) - 1`` with ``D = (1 - b2**t) - t (1 - b2) b2**t``,
  and ``D`` summed as the cancellation-free series
  ``b2**t * sum_{n>=2} ((t u)**n + t (-u)**n) / n!`` (``u = -log b2``) where
  ``t u < 0.5``, the result is as exact in float32 as torch's in float64.
  """
  q = 1 - b2
  u = -jnp.log(b2)
  x = step * u
  power = jnp.exp(-x)
  series: Any = 0.0
  term_x, term_u, factorial = x, -u, 1.0
  for n in range(2, 18):  # the first omitted term is < 1e-16 of the sum
    term_x, term_u, factorial = term_x * x, term_u * -u, factorial * n
    series = series + (term_x + step * term_u) / factorial
  bc2 = -jnp.expm1(-x)
  d = jnp.where(x < 0.5, power * series, bc2 - step * q * power)
  return 2 / q - 1, 2 * d / (q * bc2) - 1


def scale_by_radam(b1: Any, b2: Any, eps: Any) -> optax.GradientTransformation:
  """RAdam's direction as ``torch.optim.RAdam`` computes it (before ``-lr``).

  ``rho_t`` as :func:`sma_lengths`; if ``rho_t > 5`` (optax: ``>= 5``) the
  direction is ``m̂ * sqrt(1 - b2**t) / (sqrt(v) + eps) * r_t`` with the rectification
  ``r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))``
  (eps added to the raw ``sqrt(v)``, unlike optax), otherwise plain ``m̂``.
  """

  def update_fn(updates, state, params=None):
    del params
    count, mu, nu = _moments(updates, state, b1, b2)
    bc1, bc2 = bias_correction(b1, count), bias_correction(b2, count)
    rho_inf, rho_t = sma_lengths(b2, count.astype(bc2.dtype))
    rectified = rho_t > 5.0
    rect = jnp.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    scale = jnp.where(rectified, rect * jnp.sqrt(bc2), 1.0)

    def direction(m, v):
      m_hat = m / _common.cast(bc1, m)
      adaptive = jax.lax.select(rectified, 1 / (jnp.sqrt(v) + _common.cast(eps, v)), jnp.ones_like(v))
      return m_hat * _common.cast(scale, m) * adaptive

    updates = jax.tree.map(direction, mu, nu)
    return updates, AdamState(count, mu, nu)

  return optax.GradientTransformation(_init, update_fn)


def _wrap(scale, learning_rate, weight_decay, decoupled: bool, maximize: bool):
  """torch's shared frame: maximize, L2 or decoupled decay, ``p -= lr * direction``."""
  coupled = weight_decay is not None and not decoupled
  return _common.chain(
    *_common.gradient(maximize, weight_decay if coupled else None),
    scale,
    _common.descend(learning_rate),
    _common.decoupled_decay(learning_rate, weight_decay) if weight_decay is not None and decoupled else None,
  )


def adam(learning_rate, b1, b2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay):
  """Adam, as ``torch.optim.Adam``.

  ``g = -g`` if maximize; ``g += wd * p`` (L2), or with decoupled_weight_decay
  ``p *= 1 - lr * wd``; ``m = lerp(m, g, 1 - b1)``, ``v = b2 v + (1 - b2) g²``;
  ``p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)``, ``v`` being
  the running max of ``v`` with amsgrad. weight_decay of exactly 0 removes the term.
  """
  return _wrap(scale_by_adam(b1, b2, eps, amsgrad), learning_rate, weight_decay, decoupled_weight_decay, maximize)


def adamw(learning_rate, b1, b2, eps, weight_decay, amsgrad, maximize):
  """AdamW, as ``torch.optim.AdamW``: :func:`adam` with decoupled weight decay
  ``p *= 1 - lr * wd`` (torch's default wd 0.01, not optax's 1e-4)."""
  return adam(learning_rate, b1, b2, eps, weight_decay, amsgrad, maximize, True)


def adamax(learning_rate, b1, b2, eps, weight_decay, maximize):
  """Adamax, as ``torch.optim.Adamax``.

  ``g = -g`` if maximize; ``g += wd * p`` (L2); ``m = lerp(m, g, 1 - b1)``,
  ``u = max(b2 u, |g| + eps)``; ``p -= lr / (1 - b1**t) * m / u``.
  """
  return _wrap(scale_by_adamax(b1, b2, eps), learning_rate, weight_decay, False, maximize)


def nadam(learning_rate, b1, b2, eps, weight_decay, momentum_decay, decoupled_weight_decay, maximize):
  """NAdam, as ``torch.optim.NAdam``: Dozat's momentum schedule (:func:`scale_by_nadam`).

  ``g = -g`` if maximize; ``g += wd * p`` (L2), or with decoupled_weight_decay
  ``p *= 1 - lr * wd``; then ``p -= lr * direction``.
  """
  return _wrap(
    scale_by_nadam(b1, b2, eps, momentum_decay), learning_rate, weight_decay, decoupled_weight_decay, maximize
  )


def radam(learning_rate, b1, b2, eps, weight_decay, decoupled_weight_decay, maximize):
  """RAdam, as ``torch.optim.RAdam``: rectified once ``rho_t > 5`` (:func:`scale_by_radam`).

  ``g = -g`` if maximize; ``g += wd * p`` (L2), or with decoupled_weight_decay
  ``p *= 1 - lr * wd``; then ``p -= lr * direction``.
  """
  return _wrap(scale_by_radam(b1, b2, eps), learning_rate, weight_decay, decoupled_weight_decay, maximize)


BETAS = _checks.Sequence(_checks.Schedulable(_checks.PROBABILITY), 2)
WEIGHT_DECAY = _checks.Schedulable(_checks.NON_NEGATIVE)


def _kwargs(weight_decay: float = 0.0, **extra) -> dict[str, tuple[Any, _checks.Check]]:
  """The keywords the family shares (torch's defaults), plus ``extra``."""
  return {
    'betas': ((0.9, 0.999), BETAS),
    'eps': (1e-8, _checks.NON_NEGATIVE),
    'weight_decay': (weight_decay, WEIGHT_DECAY),
    'maximize': (False, _checks.Boolean()),
    **extra,
  }


_DECOUPLED = (False, _checks.Boolean())
_AMSGRAD = (False, _checks.Boolean())

# torch's per-parameter state keys of AdamState's fields (Adam, AdamW, RAdam, SparseAdam).
TORCH_STATE: Mapping[type, Mapping[str, str]] = {
  AdamState: {'mu': 'exp_avg', 'nu': 'exp_avg_sq', 'nu_max': 'max_exp_avg_sq'}
}

SPECS = (
  OptimizerSpec(
    name='Adam',
    factory=adam,
    lr=0.001,
    kwargs=_kwargs(amsgrad=_AMSGRAD, decoupled_weight_decay=_DECOUPLED),
    switchable=('weight_decay',),
    lr_linear=True,
    torch_state=TORCH_STATE,
  ),
  OptimizerSpec(
    name='AdamW',
    factory=adamw,
    lr=0.001,
    kwargs=_kwargs(0.01, amsgrad=_AMSGRAD),
    switchable=('weight_decay',),
    lr_linear=True,
    torch_state=TORCH_STATE,
  ),
  OptimizerSpec(
    name='Adamax',
    factory=adamax,
    lr=0.002,
    kwargs=_kwargs(),
    switchable=('weight_decay',),
    lr_linear=True,
    torch_state={AdamState: {'mu': 'exp_avg', 'nu': 'exp_inf'}},
  ),
  OptimizerSpec(
    name='NAdam',
    factory=nadam,
    lr=0.002,
    # momentum_decay=inf gives a constant beta1, as torch (and optax.nadam)
    kwargs=_kwargs(momentum_decay=(4e-3, _checks.Real(0.0, finite=False)), decoupled_weight_decay=_DECOUPLED),
    switchable=('weight_decay',),
    lr_linear=True,
    torch_state={NAdamState: {'mu_product': 'mu_product', 'mu': 'exp_avg', 'nu': 'exp_avg_sq'}},
    torch_scalars=frozenset({(NAdamState, 'mu_product')}),
  ),
  OptimizerSpec(
    name='RAdam',
    factory=radam,
    lr=0.001,
    kwargs=_kwargs(decoupled_weight_decay=_DECOUPLED),
    switchable=('weight_decay',),
    lr_linear=True,
    torch_state=TORCH_STATE,
  ),
)
