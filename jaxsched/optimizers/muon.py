"""Muon: ``torch.optim.Muon``, momentum orthogonalized by a Newton–Schulz iteration."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.optimizers import _common
from jaxsched.optimizers._registry import OptimizerSpec

if TYPE_CHECKING:  # jaxsched.interop imports the optimizers
  from jaxsched.interop.layouts import Layout

NS_DTYPES = ('bfloat16', 'float32', 'float64')
# How a 2-D parameter's axes are laid out: torch's Linear weight is (out, in), Flax's Dense kernel (in, out).
LAYOUTS = ('out_in', 'in_out')


class MuonState(NamedTuple):
  """torch's ``momentum_buffer`` per parameter."""

  buffer: Any


def newton_schulz(
  x: jax.Array,
  coefficients: Sequence[tuple[float, float, float]],
  steps: int,
  eps: Any,
  dtype: str,
  safety_factor: Any = None,
  damped: bool = False,
) -> jax.Array:
  """torch's ``_zeropower_via_newtonschulz`` run in ``dtype``, returned in ``x``'s dtype.

  ``X = x / max(||x||_F, eps)`` on the wide orientation (transposed when rows >
  cols), then ``steps`` times ``X = a X + (b A + c A A) X`` with ``A = X X^T``.
  In bfloat16 each matmul accumulates in float32 and its ``alpha``/``beta``
  combination is rounded to bfloat16 once, as torch's ``addmm`` does; float64
  inputs pass through float32 on the way to bfloat16, as torch converts them.

  ``coefficients`` holds an (a, b, c) per iteration, the last one repeating for the
  iterations beyond them (torch's one triple is a sequence of one); with timm's
  ``timm.optim.muon.zeropower_via_newtonschulz`` also a leading batch axis of
  matrices (each its own norm), the norm times ``safety_factor`` (rounded to
  ``dtype``), and with ``damped`` ``eps`` added to it instead of being its floor.
  """
  schedule = [*coefficients[:steps], *[coefficients[-1]] * max(0, steps - len(coefficients))]
  work = jnp.dtype(dtype)
  acc = jnp.promote_types(work, jnp.float32)

  def mm(p, q):
    return jnp.matmul(p, q, precision=jax.lax.Precision.HIGHEST, preferred_element_type=acc)

  def flip(m):
    return jnp.swapaxes(m, -1, -2)

  y = x.astype(acc).astype(work)
  tall = y.shape[-2] > y.shape[-1]
  if tall:
    y = flip(y)
  norm = jnp.sqrt(jnp.sum(jnp.square(y.astype(acc)), axis=(-2, -1), keepdims=True)).astype(work)
  if safety_factor is not None:
    norm = (norm.astype(acc) * jnp.asarray(safety_factor, acc)).astype(work)
  if damped:
    norm = (norm.astype(acc) + jnp.asarray(eps, acc)).astype(work)
  else:
    norm = jnp.maximum(norm, jnp.asarray(eps, work))
  y = (y.astype(acc) / norm.astype(acc)).astype(work)

  def iterate(i, y):
    a, b, c = jnp.asarray(schedule, acc)[i]
    gram = mm(y, flip(y)).astype(work)
    poly = (b * gram.astype(acc) + c * mm(gram, gram)).astype(work)
    return (a * y.astype(acc) + mm(poly, y)).astype(work)

  if steps:
    y = jax.lax.fori_loop(0, steps, iterate, y)
  return (flip(y) if tall else y).astype(x.dtype)


def lr_ratio(shape: tuple[int, ...], adjust_lr_fn: str | None) -> float:
  """torch's ``_adjust_lr`` factor for a parameter of shape (rows, cols) = (out, in):
  ``sqrt(max(1, rows / cols))`` ("original", the default) or
  ``0.2 * sqrt(max(rows, cols))`` ("match_rms_adamw")."""
  rows, cols = shape[:2]
  if adjust_lr_fn == 'match_rms_adamw':
    return 0.2 * math.sqrt(max(rows, cols))
  return math.sqrt(max(1, rows / cols))


def _check_params(params: Any, ns_dtype: str) -> None:
  """Python-side checks at init (shapes are static, so this is legal under jit)."""
  for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
    if jnp.ndim(p) != 2:
      raise ConfigError(
        f'Muon: the parameter at {jax.tree_util.keystr(path) or "<root>"} has shape '
        f'{tuple(jnp.shape(p))}; Muon only supports 2-D parameters (as torch.optim.Muon). '
        f'Optimize the others with another optimizer (optax.multi_transform).'
      )
  if jnp.dtype(ns_dtype) != jax.dtypes.canonicalize_dtype(ns_dtype):
    raise ConfigError(f"Muon: ns_dtype={ns_dtype!r} needs jax_enable_x64; use 'float32' or enable x64.")


def scale_by_muon(
  momentum: Any,
  nesterov: bool,
  ns_coefficients: tuple[float, float, float],
  eps: Any,
  ns_steps: int,
  adjust_lr_fn: str | None,
  ns_dtype: str,
  layout: str = 'out_in',
) -> optax.GradientTransformation:
  """Muon's direction, as ``torch.optim.Muon`` computes it (before ``-lr``).

  ``buf = buf.lerp(g, 1 - momentum)`` (torch's code keeps an EMA, not the
  ``mu B + g`` of its docstring); the direction is ``g.lerp(buf, momentum)`` with
  nesterov, else ``buf``; then :func:`newton_schulz` in ``ns_dtype``, scaled by
  :func:`lr_ratio`. The parameter's shape is read as (out, in) = (rows, cols),
  torch's Linear weight; with ``layout='in_out'`` (Flax's Dense kernel) the
  update is computed on the transpose and transposed back, so a Flax layer takes
  torch's step for the same layer.
  """
  flip = (lambda u: u.T) if layout == 'in_out' else (lambda u: u)  # noqa: E731

  def init_fn(params):
    _check_params(params, ns_dtype)
    return MuonState(_common.zeros_like(params))

  def update_fn(updates, state, params=None):
    del params
    buffer = jax.tree.map(_common.lerp(1 - momentum), state.buffer, updates)
    updates = jax.tree.map(_common.lerp(momentum), updates, buffer) if nesterov else buffer
    updates = jax.tree.map(
      lambda u: flip(
        _common.cast(lr_ratio(flip(u).shape, adjust_lr_fn), u)
        * newton_schulz(flip(u), (ns_coefficients,), ns_steps, eps, ns_dtype)
      ),
      updates,
    )
    return updates, MuonState(buffer)

  return optax.GradientTransformation(init_fn, update_fn)


def muon(
  learning_rate, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, ns_dtype, layout
):
  """Muon, as ``torch.optim.Muon``, for 2-D parameters only.

  The direction of :func:`scale_by_muon`; decoupled decay
  ``p *= 1 - lr * weight_decay`` (dropped when exactly 0, where torch's is a
  no-op); ``p -= lr * ratio * O``. ``ns_dtype`` (jaxsched's own keyword) is the
  Newton–Schulz precision: 'bfloat16' as torch, or 'float32'/'float64'.
  ``layout`` (jaxsched's own keyword) says how the parameters are laid out:
  'out_in' as torch's Linear weight, or 'in_out' as Flax's Dense kernel.
  A parameter that is not 2-D raises ConfigError at init, naming its path.
  """
  return _common.chain(
    scale_by_muon(momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, ns_dtype, layout),
    _common.descend(learning_rate),
    _common.decoupled_decay(learning_rate, weight_decay) if weight_decay is not None else None,
  )


def check_layout(layout: Layout, name: str, path: str, shape: tuple[int, ...], kwargs: Mapping[str, Any]) -> None:
  """ConfigError where torch's parameter ``name`` reaches the JAX parameter ``path`` (of ``shape``)
  through a ``layout`` change that its group's ``layout`` keyword does not state: Muon reads a
  parameter's shape as (out, in) for its LR ratio (:func:`lr_ratio`), so the JAX run would scale
  its steps differently from torch.optim.Muon's (unless the ratio is 1 either way)."""
  transposed, in_out = not layout.keeps_axes(len(shape)), kwargs.get('layout') == 'in_out'
  symmetric = kwargs.get('adjust_lr_fn') == 'match_rms_adamw' or shape[0] == shape[1]
  if transposed != in_out and not symmetric:
    raise ConfigError(
      f"Muon reads a parameter's shape as given by its layout keyword ({kwargs.get('layout', 'out_in')!r}) for "
      f'its LR ratio sqrt(max(1, out / in)), and the {layout.name!r} layout change of {name!r} -> '
      f"{path!r} gives {shape}: the JAX run would scale its steps differently. Set Muon's layout: "
      f'{"in_out" if transposed else "out_in"} (or adjust_lr_fn: match_rms_adamw).'
    )


SPECS = (
  OptimizerSpec(
    name='Muon',
    factory=muon,
    lr=1e-3,
    kwargs={
      'weight_decay': (0.1, _checks.Schedulable(_checks.NON_NEGATIVE)),
      'momentum': (0.95, _checks.Schedulable(_checks.NON_NEGATIVE)),
      'nesterov': (True, _checks.Boolean()),
      'ns_coefficients': ((3.4445, -4.775, 2.0315), _checks.Sequence(_checks.Real(), 3)),
      'eps': (1e-7, _checks.Real()),  # torch puts no bound on eps
      'ns_steps': (5, _checks.Integer(0, 99)),  # torch raises for >= 100 at its first step
      'adjust_lr_fn': (None, _checks.Optional(_checks.Choice(('original', 'match_rms_adamw')))),
      'ns_dtype': ('bfloat16', _checks.Choice(NS_DTYPES)),
      'layout': ('out_in', _checks.Choice(LAYOUTS)),
    },
    switchable=('weight_decay',),
    complex_params=False,  # torch raises at the first step
    lr_linear=True,
    jax_only=('ns_dtype', 'layout'),
    torch_state={MuonState: {'buffer': 'momentum_buffer'}},
    torch_step=None,
    check_layout=check_layout,
  ),
)
