"""timm's layer-wise adaptive optimizers: ``timm.optim.Lamb`` and ``timm.optim.Lars``, by the
IDs ``timm.lamb``, ``timm.lambc``, ``timm.lambw``, ``timm.lambcw``, ``timm.lambcd``
(``corrected_weight_decay``), ``timm.clamb``, ``timm.clambw`` (``caution``), ``timm.lars``,
``timm.larc``, ``timm.nlars`` and ``timm.nlarc``.

Each ID is timm's class with the defaults ``timm.optim.create_optimizer_v2(..., opt=<name>)``
passes: the class's own, then ``weight_decay=0`` and (LARS) ``momentum=0.9`` from the factory,
then the registry entry's (``trust_clip``, ``decoupled_decay``, ``nesterov``, ``caution``,
``corrected_weight_decay``). The numbers
are those of timm's single-tensor implementation (``_single_tensor_lamb``,
``_single_tensor_lars``), the one it runs on CPU. There is no torch.optim counterpart, so no
torch state conversion (``torch_state`` is empty). timm does not take the real view of complex
parameters in either class: complex parameters are refused.

The trust ratio ``|p| / |u|`` is taken per parameter array, as timm takes it per tensor.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.optimizers import _common, adam
from jaxsched.optimizers._registry import OptimizerSpec, with_corrected_decay
from jaxsched.optimizers.sgd import torch_momentum


class LambState(NamedTuple):
  """timm's per-group ``step`` and per-parameter ``exp_avg``, ``exp_avg_sq``."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  mu: Any
  nu: Any


def _unit_if_degenerate(ratio: jax.Array, w_norm: jax.Array, g_norm: jax.Array) -> jax.Array:
  """timm's ``where(w_norm > 0, where(g_norm > 0, ratio, 1), 1)``."""
  return jnp.where((w_norm > 0) & (g_norm > 0), ratio, jnp.ones_like(ratio))


def global_clip(updates: Any, max_grad_norm: Any) -> Any:
  """``g / max(|G| / max_grad_norm, 1)`` with ``|G|`` the norm of all gradients together, as
  ``timm.optim.Lamb._get_clip_grad_norm``: the norm of the per-tensor norms."""
  leaves = jax.tree.leaves(updates)
  norms = jnp.stack([_common.norm(g).astype(jnp.result_type(*leaves)) for g in leaves])
  clip = jnp.maximum(_common.norm(norms) / _common.cast(max_grad_norm, norms), jnp.ones([], norms.dtype))
  return jax.tree.map(lambda g: g / clip.astype(g.dtype), updates)


def clip_all(max_grad_norm: Any) -> optax.GradientTransformation:
  """:func:`global_clip` as a transformation of every parameter group's gradients together
  (``timm.optim.Lamb`` takes the norm over all its param groups); none for a null max_grad_norm."""
  if max_grad_norm is None:
    return optax.identity()
  return optax.stateless(lambda updates, params: global_clip(updates, max_grad_norm))


def lamb(
  learning_rate,
  bias_correction: bool,
  b1,
  b2,
  eps,
  weight_decay,
  grad_averaging: bool,
  max_grad_norm,
  trust_clip: bool,
  always_adapt: bool,
  caution: bool,
  decoupled_decay: bool,
  corrected_weight_decay: bool,
  max_lr,
) -> optax.GradientTransformation:
  """LAMB, as ``timm.optim.Lamb`` (NVIDIA's NvLamb variant, apex's FusedLAMB).

  Gradients divided by ``max(|G| / max_grad_norm, 1)`` (``|G|`` over all parameters; none if
  max_grad_norm is null); ``m = lerp(m, g, 1 - b1)`` (``b1 m + g`` without grad_averaging),
  ``v = b2 v + (1 - b2) g²``; ``u = (m / (1 - b1**t)) / (sqrt(v) / sqrt(1 - b2**t) + eps)``
  (no bias correction if bias_correction is false); caution as :func:`_common.cautious`;
  ``u += wd * p`` or, with decoupled_decay, ``p += -lr * wd * p`` (``lr**2 / max_lr`` for lr with
  corrected_weight_decay, :func:`_common.decay_learning_rate`); if wd != 0 or always_adapt,
  ``u *= |p| / |u|`` (1 if either norm is 0; at most 1 with trust_clip, LAMBC), ``|p|`` after
  the decoupled decay; ``p += -lr * u``.
  """

  def init_fn(params):
    return LambState(jnp.zeros([], jnp.int32), _common.zeros_like(params), _common.zeros_like(params))

  def update_fn(updates, state, params):
    count = optax.safe_increment(state.count)
    grads = updates if max_grad_norm is None else global_clip(updates, max_grad_norm)
    if grad_averaging:
      mu = jax.tree.map(_common.lerp(1 - b1), state.mu, grads)
    else:
      mu = jax.tree.map(lambda m, g: m * _common.cast(b1, m) + g, state.mu, grads)
    nu = jax.tree.map(_common.square_average(b2), state.nu, grads)
    one = jnp.ones([], jnp.asarray(b1).dtype)
    bc1, bc2_sqrt = (
      (adam.bias_correction(b1, count), jnp.sqrt(adam.bias_correction(b2, count))) if bias_correction else (one, one)
    )
    step = -jnp.asarray(learning_rate)
    rate = _common.decay_learning_rate(learning_rate, corrected_weight_decay, max_lr)
    decay = -rate * weight_decay if weight_decay is not None and decoupled_decay else None

    def leaf(g, m, v, p):
      u = (m / _common.cast(bc1, m)) / (jnp.sqrt(v) / _common.cast(bc2_sqrt, v) + _common.cast(eps, v))
      if caution:
        u = _common.cautious(u, g)
      decayed = p
      if decay is not None:
        decayed = p + _common.cast(decay, p) * p
      elif weight_decay is not None:
        u = u + _common.cast(weight_decay, p) * p
      if weight_decay is not None or always_adapt:
        w_norm, u_norm = _common.norm(decayed), _common.norm(u)
        ratio = _unit_if_degenerate(w_norm / u_norm, w_norm, u_norm)
        u = u * (jnp.minimum(ratio, 1) if trust_clip else ratio)
      u = _common.cast(step, u) * u
      return u if decay is None else (decayed - p) + u

    return jax.tree.map(leaf, grads, mu, nu, params), LambState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def lars(
  learning_rate,
  momentum,
  dampening,
  weight_decay,
  nesterov: bool,
  trust_coeff,
  eps,
  trust_clip: bool,
  always_adapt: bool,
) -> optax.GradientTransformation:
  """LARS (LARC with trust_clip), as ``timm.optim.Lars``.

  If wd != 0 or always_adapt: ``g = (g + wd * p) * r`` with the trust ratio
  ``r = trust_coeff |p| / (|g| + wd |p| + eps)`` (1 if either norm is 0; with trust_clip,
  ``min(r / lr, 1)``); then torch.optim.SGD's momentum, dampening and nesterov
  (:func:`jaxsched.optimizers.sgd.torch_momentum`); ``p += -lr * g``.
  """
  adapt = weight_decay is not None or always_adapt
  decay = 0.0 if weight_decay is None else weight_decay

  def adapted(updates, params):
    def leaf(g, p):
      w_norm, g_norm = _common.norm(p), _common.norm(g)
      ratio = _common.cast(trust_coeff, p) * w_norm / (g_norm + w_norm * _common.cast(decay, p) + _common.cast(eps, p))
      ratio = _unit_if_degenerate(ratio, w_norm, g_norm)
      if trust_clip:
        ratio = jnp.minimum(ratio / _common.cast(learning_rate, p), 1)
      return (g + _common.cast(decay, p) * p) * ratio

    return jax.tree.map(leaf, updates, params)

  return _common.chain(
    optax.stateless(adapted) if adapt else None,
    torch_momentum(momentum, dampening, nesterov) if momentum is not None else None,
    _common.descend(learning_rate),
  )


def _check_nesterov(kw: dict[str, Any]) -> None:
  if kw['nesterov'] and (kw['momentum'] == 0 or kw['dampening'] != 0):
    raise ConfigError(
      f'nesterov=True requires momentum > 0 and dampening == 0 (as timm.optim.Lars); '
      f'got momentum={kw["momentum"]!r}, dampening={kw["dampening"]!r}.'
    )


_FLAG = _checks.Boolean()


def _lamb_spec(
  name: str, trust_clip: bool = False, decoupled_decay: bool = False, caution: bool = False, corrected: bool = False
) -> OptimizerSpec:
  spec = OptimizerSpec(
    name=f'timm.{name}',
    factory=lamb,
    class_name='Lamb',
    lr=1e-3,
    kwargs={
      'bias_correction': (True, _FLAG),
      'betas': ((0.9, 0.999), adam.BETAS),
      'eps': (1e-6, _checks.NON_NEGATIVE),
      # create_optimizer_v2 passes weight_decay=0 (the class's default is 0.01); it also decides
      # whether the trust ratio applies, so it is a number, not a schedule
      'weight_decay': (0.0, _checks.NON_NEGATIVE),
      'grad_averaging': (True, _FLAG),
      'max_grad_norm': (1.0, _checks.Optional(_checks.POSITIVE)),
      'trust_clip': (trust_clip, _FLAG),
      'always_adapt': (False, _FLAG),
      'caution': (caution, _FLAG),
      'decoupled_decay': (decoupled_decay, _FLAG),
    },
    switchable=('weight_decay',),
    # timm reads max_grad_norm from the constructor's defaults only, and clips by every group's norm
    constructor_only=('max_grad_norm',),
    across_groups={'max_grad_norm': clip_all},
    complex_params=False,
    # not linear with decoupled_decay: the trust ratio reads |p| after p -= lr * wd * p
    lr_linear=False,
  )
  return with_corrected_decay(spec, corrected)


def _lars_spec(name: str, trust_clip: bool = False, nesterov: bool = False) -> OptimizerSpec:
  return OptimizerSpec(
    name=f'timm.{name}',
    factory=lars,
    class_name='Lars',
    lr=1.0,
    kwargs={
      'momentum': (0.9, _checks.Schedulable(_checks.NON_NEGATIVE)),  # create_optimizer_v2's; the class's is 0
      'dampening': (0.0, _checks.Real()),
      'weight_decay': (0.0, _checks.NON_NEGATIVE),
      'nesterov': (nesterov, _FLAG),
      'trust_coeff': (0.001, _checks.Real()),
      'eps': (1e-8, _checks.Real()),
      'trust_clip': (trust_clip, _FLAG),
      'always_adapt': (False, _FLAG),
    },
    switchable=('momentum', 'weight_decay'),
    cross_check=_check_nesterov,
    complex_params=False,
    lr_linear=False,  # trust_clip divides the ratio by lr
    torch_step=None,
  )


SPECS = (
  _lamb_spec('lamb'),
  _lamb_spec('lambc', trust_clip=True),
  _lamb_spec('lambw', decoupled_decay=True),
  _lamb_spec('lambcw', trust_clip=True, decoupled_decay=True),
  _lamb_spec('lambcd', decoupled_decay=True, corrected=True),
  _lamb_spec('clamb', caution=True),
  _lamb_spec('clambw', decoupled_decay=True, caution=True),
  _lars_spec('lars'),
  _lars_spec('larc', trust_clip=True),
  _lars_spec('nlars', nesterov=True),
  _lars_spec('nlarc', trust_clip=True, nesterov=True),
)
