"""timm's Muon: ``timm.optim.Muon``, by the IDs ``timm.muon``, ``timm.nmuon``, ``timm.adamuon`` and
``timm.nadamuon`` (``algo='adamuon'`` and/or ``nesterov=True``, as timm's registry sets them).

timm's class is its own implementation, not ``torch.optim.Muon`` (:mod:`jaxsched.optimizers.muon`):
Newton–Schulz with a coefficient per iteration (presets or a list), a safety factor and an
optional damped eps, other LR adjustments, conv kernels (3-D and up) flattened or batched over
their spatial positions, AdaMuon's second moment, and an AdamW (NAdamW with nesterov) fallback for
the parameters its shape rules leave out (:func:`suitable`). The Newton–Schulz iteration is
:func:`jaxsched.optimizers.muon.newton_schulz` in bfloat16, the precision timm always runs it in
(``zeropower_via_newtonschulz``'s default ``dtype=torch.bfloat16``, which its steps never change),
whatever the parameters' dtype; the rest of the step is in the parameters' dtype, as timm's.

Every parameter here takes the route timm's shape rules give it. timm's explicit routes, a param
group's ``use_fallback``/``use_muon`` flags and ``create_optimizer_v2``'s ``fallback_list`` /
``fallback_no_weight_decay`` (parameter names matched against a torch model), have no keyword here:
they are refused as unknown keywords (ConfigError); route such parameters to another optimizer with
``optax.multi_transform``. Complex parameters are refused (ConfigError at init): timm casts a
complex matrix to bfloat16 for Newton–Schulz, dropping its imaginary part.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.optimizers import _common, adam, muon, timm_adam
from jaxsched.optimizers._registry import OptimizerSpec

# timm.optim.muon._COEFFICIENTS: (a, b, c) per Newton–Schulz iteration
COEFFICIENTS: dict[str, tuple[tuple[float, float, float], ...]] = {
  'original': ((3.4445, -4.7750, 2.0315),),
  'quintic': (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
  ),
  'polar_express': (
    (8.237312490495555, -23.157747414558198, 16.680568411445915),
    (4.082441999064835, -2.893047735332586, 0.5252849256975648),
    (3.9263479922546582, -2.8547468034765298, 0.5318022422894988),
    (3.2982187133085143, -2.424541981026706, 0.48632008358844075),
    (2.2970369434552573, -1.63662558125903, 0.4002628455953627),
    (1.8763805351440397, -1.2347896577722228, 0.35891887501668385),
    (1.8564423485617974, -1.2132449880935525, 0.3568003487825883),
    (1.8749994008682747, -1.2499988017229169, 0.3749994008546422),
  ),
  'polar_express_safer': (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.0429299351667245, -2.808917465908704, 0.5000178451051299),
    (3.8916678022926563, -2.7724841532176825, 0.5060648178503389),
    (3.285753657755658, -2.3681294933425394, 0.46449024233003117),
    (2.3005307116270983, -1.6111665557258408, 0.3833374427545273),
    (1.8631210546382593, -1.2042160621002727, 0.3421879560523383),
    (1.8382572152247512, -1.1779263289537742, 0.3396513038637379),
    (1.8749999923301852, -1.2499999836060613, 0.374999991275876),
  ),
}
# the precision of timm's Newton–Schulz: ``zeropower_via_newtonschulz``'s default, which timm's steps
# never change (the tests set both sides to the parameters' dtype to compare the rest of the step tightly)
NS_DTYPE = 'bfloat16'
# timm's get_lr_scale (Muon) and get_adamuon_lr_scale (AdaMuon) names; another name fails timm's assert
ADJUST_LR_FNS = {
  'muon': ('original', 'match_rms_adamw', 'rms_to_rms'),
  'adamuon': ('match_rms_adamw', 'rms_to_rms', 'rsqrt_in'),
}


@dataclasses.dataclass(frozen=True)
class Coefficients:
  """timm's ``ns_coefficients`` (``resolve_ns_coefficients``): a preset's name, one (a, b, c), or
  a non-empty list of them; checked to a tuple of triples."""

  def __call__(self, key: str, value: Any) -> tuple[tuple[float, ...], ...]:
    if isinstance(value, str):
      return COEFFICIENTS[_checks.Choice(tuple(COEFFICIENTS))(key, value)]
    triple = _checks.Sequence(_checks.Real(), 3)
    try:
      return (triple(key, value),)
    except ConfigError:
      pass
    items = _checks.Sequence(triple)(key, value)
    if not items:
      raise ConfigError(f'{key}={_checks.shown(value)} is not allowed: expected {self}.')
    return items

  def __str__(self) -> str:
    return f'one of {", ".join(map(repr, COEFFICIENTS))}, a list of 3 reals (a, b, c), or a non-empty list of them'


class AdaMuonState(NamedTuple):
  """timm's per-parameter ``step``, ``momentum_buffer`` and ``exp_avg_sq`` (of AdaMuon's parameters)."""

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  buffer: Any
  nu: Any


def suitable(shape: tuple[int, ...]) -> bool:
  """timm's ``_is_suitable_for_muon``: at least 2 axes longer than 1, neither of the first two of
  length 1 (position embeddings, depthwise convs), and the matrix Newton–Schulz sees, (out, in)
  or (out, prod(rest)) for 3-D and up, with both sides >= 4 and an aspect ratio <= 128."""
  if len(shape) < 2 or sum(n > 1 for n in shape) < 2 or shape[0] == 1 or shape[1] == 1:
    return False
  dims = (shape[0], math.prod(shape[1:]))
  return min(dims) >= 4 and max(dims) / min(dims) <= 128.0


def _as_matrices(u: jax.Array, conv_mode: str) -> jax.Array:
  """timm's ``reshape_for_muon``: (out, in * spatial) ('flatten') or (spatial, out, in) ('batched')."""
  if u.ndim == 2:
    return u
  if conv_mode == 'flatten':
    return u.reshape(u.shape[0], -1)
  return jnp.moveaxis(u.reshape(*u.shape[:2], -1), -1, 0)


def _from_matrices(o: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  return (jnp.moveaxis(o, 0, -1) if o.ndim == 3 else o).reshape(shape)


def lr_scale(
  shape: tuple[int, ...], matrices: tuple[int, ...], algo: str, adjust_lr_fn: str | None, normalize_spatial: bool
) -> tuple[float, bool]:
  """timm's LR scale of a parameter of ``shape`` whose Newton–Schulz input had shape ``matrices``
  (out and in its last two axes), and whether AdaMuon normalizes the update by its RMS.

  Muon (``get_lr_scale``): 'original' ``sqrt(max(1, out / in))``, 'match_rms_adamw'
  ``0.2 sqrt(max(out, in))``, 'rms_to_rms' ``sqrt(out / in)``. AdaMuon (``get_adamuon_lr_scale``):
  'match_rms_adamw' ``0.2 sqrt(numel)`` with the RMS normalization, 'rms_to_rms' ``sqrt(out / in)``,
  'rsqrt_in' ``1 / sqrt(in)``. None: 1. Batched matrices (``conv_mode='batched'``) with
  normalize_spatial: times ``1 / sqrt(spatial)``. Python floats, as timm's.
  """
  out_chs, in_chs = matrices[-2:]
  scale, rms = 1.0, False
  if adjust_lr_fn == 'original':
    scale = max(1, out_chs / in_chs) ** 0.5
  elif adjust_lr_fn == 'match_rms_adamw' and algo == 'muon':
    scale = 0.2 * max(out_chs, in_chs) ** 0.5
  elif adjust_lr_fn == 'match_rms_adamw':
    scale, rms = 0.2 * math.prod(matrices) ** 0.5, True
  elif adjust_lr_fn == 'rms_to_rms':
    scale = (out_chs / in_chs) ** 0.5
  elif adjust_lr_fn == 'rsqrt_in':
    scale = in_chs**-0.5
  if len(matrices) == 3 and normalize_spatial:
    scale *= math.prod(shape[2:]) ** -0.5
  return scale, rms


def scale_by_timm_muon(
  momentum, nesterov: bool, ns_steps: int, ns_coefficients, eps, safety_factor, adjust_lr_fn, conv_mode: str,
  normalize_spatial: bool, b2, algo: str, scale_eps: bool, learning_rate,
) -> optax.GradientTransformation:  # fmt: skip
  """The step of timm's Muon/AdaMuon parameters (``_single_tensor_muon``, ``_single_tensor_adamuon``),
  without weight decay: ``buf = lerp(buf, g, 1 - momentum)``, ``u = lerp(g, buf, momentum)`` with
  nesterov else ``buf``; ``O`` = Newton–Schulz of ``u``'s matrices in bfloat16 (eps scaled by
  ``sqrt(in / out)`` and added to the norm with scale_eps). Muon: ``-lr * scale * O``. AdaMuon:
  ``v = b2 v + (1 - b2) O²``; ``O / (sqrt(v) + eps)`` normalized to ``/ (||.|| + eps)`` for
  'match_rms_adamw', else ``O / (sqrt(v / (1 - b2**t)) + eps)``; times ``-lr * scale``
  (:func:`lr_scale`)."""
  ada = algo == 'adamuon'

  def init_fn(params):
    buffer = _common.zeros_like(params)
    return AdaMuonState(jnp.zeros([], jnp.int32), buffer, _common.zeros_like(params)) if ada else muon.MuonState(buffer)

  def update_fn(updates, state, params=None):
    del params
    buffer = jax.tree.map(_common.lerp(1 - momentum), state.buffer, updates)
    directions = jax.tree.map(_common.lerp(momentum), updates, buffer) if nesterov else buffer
    step = -jnp.asarray(learning_rate)

    def orthogonal(u):
      matrices = _as_matrices(u, conv_mode)
      dout, din = matrices.shape[-2:]
      scaled_eps = eps * (din / dout) ** 0.5 if scale_eps else eps
      o = muon.newton_schulz(matrices, ns_coefficients, ns_steps, scaled_eps, NS_DTYPE, safety_factor, scale_eps)
      return _from_matrices(o, u.shape), lr_scale(u.shape, matrices.shape, algo, adjust_lr_fn, normalize_spatial)

    if not ada:

      def leaf(u):
        o, (scale, _) = orthogonal(u)
        return _common.cast(step * scale, o) * o

      return jax.tree.map(leaf, directions), muon.MuonState(buffer)

    count = optax.safe_increment(state.count)
    correction = adam.bias_correction(b2, count)
    average = _common.square_average(b2)

    def ada_leaf(u, v):
      o, (scale, rms) = orthogonal(u)
      v = average(v, o)
      e = _common.cast(eps, v)
      adaptive = o / (jnp.sqrt(v if rms else v / _common.cast(correction, v)) + e)
      if rms:
        adaptive = adaptive / (_common.norm(adaptive) + e)
      return _common.cast(step * scale, adaptive) * adaptive, v

    out = jax.tree.map(ada_leaf, directions, state.nu)
    tree = jax.tree.structure(directions)
    u, nu = (jax.tree.unflatten(tree, list(x)) for x in zip(*tree.flatten_up_to(out)))
    return u, AdaMuonState(count, buffer, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def timm_muon(
  learning_rate, weight_decay, momentum, nesterov: bool, ns_steps: int, ns_coefficients, eps, safety_factor,
  adjust_lr_fn, conv_mode: str, normalize_spatial: bool, fallback_lr_scale, b1, b2, algo: str, scale_eps: bool,
) -> optax.GradientTransformation:  # fmt: skip
  """Muon, as ``timm.optim.Muon``: :func:`scale_by_timm_muon` for the parameters :func:`suitable`
  routes to it, AdamW (NAdamW with nesterov, as timm's ``nadamw``) with betas and
  ``lr * fallback_lr_scale`` for the others; decoupled decay ``p *= 1 - lr * wd`` for both
  (the fallback's with its LR)."""
  fallback_lr = learning_rate * fallback_lr_scale
  if nesterov:
    fallback = timm_adam.nadamw(fallback_lr, b1, b2, eps, weight_decay, False, False, None, False, None)
  else:
    fallback = adam.adamw(fallback_lr, b1, b2, eps, weight_decay, False, False)
  direction = scale_by_timm_muon(
    momentum, nesterov, ns_steps, ns_coefficients, eps, safety_factor, adjust_lr_fn, conv_mode, normalize_spatial,
    b2, algo, scale_eps, learning_rate,
  )  # fmt: skip
  decay = _common.decoupled_decay(learning_rate, weight_decay) if weight_decay is not None else None
  return optax.multi_transform(
    {'muon': _common.chain(direction, decay), 'fallback': fallback},
    lambda params: jax.tree.map(lambda p: 'muon' if suitable(jnp.shape(p)) else 'fallback', params),
  )


def _cross_check(kwargs: dict[str, Any]) -> None:
  allowed = ADJUST_LR_FNS[kwargs['algo']]
  if kwargs['adjust_lr_fn'] is not None and kwargs['adjust_lr_fn'] not in allowed:
    raise ConfigError(
      f"timm's Muon: adjust_lr_fn={kwargs['adjust_lr_fn']!r} is not allowed with algo={kwargs['algo']!r}: "
      f'expected null or one of {", ".join(map(repr, allowed))} (timm fails an assert at its first step).'
    )


def _spec(name: str, algo: str, nesterov: bool) -> OptimizerSpec:
  return OptimizerSpec(
    name=f'timm.{name}',
    factory=timm_muon,
    class_name='Muon',
    lr=0.02,
    kwargs={
      'weight_decay': (0.0, adam.WEIGHT_DECAY),  # create_optimizer_v2 passes weight_decay=0
      'momentum': (0.9, _checks.Schedulable(_checks.PROBABILITY)),  # create_optimizer_v2's, not the class's 0.95
      'nesterov': (nesterov, _checks.Boolean()),
      'ns_steps': (5, _checks.Integer(0, 99)),
      'ns_coefficients': ('quintic', Coefficients()),
      'eps': (1e-7, _checks.NON_NEGATIVE),
      'safety_factor': (1.0, _checks.Schedulable(_checks.POSITIVE)),
      'adjust_lr_fn': (
        'match_rms_adamw',
        _checks.Optional(_checks.Choice(('original', 'match_rms_adamw', 'rms_to_rms', 'rsqrt_in'))),
      ),
      'conv_mode': ('flatten', _checks.Choice(('flatten', 'batched'))),
      'normalize_spatial': (True, _checks.Boolean()),
      'fallback_lr_scale': (1.0, _checks.Schedulable(_checks.NON_NEGATIVE)),
      'betas': ((0.9, 0.95), adam.BETAS),
      'algo': (algo, _checks.Choice(('muon', 'adamuon'))),
      'scale_eps': (False, _checks.Boolean()),
    },
    switchable=('weight_decay',),
    cross_check=_cross_check,
    complex_params=False,  # timm casts a complex matrix to bfloat16, dropping its imaginary part
    lr_linear=True,  # -lr times a direction (decay and the fallback's lr * fallback_lr_scale included)
  )


SPECS = (
  _spec('muon', 'muon', nesterov=False),
  _spec('nmuon', 'muon', nesterov=True),
  _spec('adamuon', 'adamuon', nesterov=False),
  _spec('nadamuon', 'adamuon', nesterov=True),
)
