"""Complex parameters as torch.optim treats them: trained as their real view, or refused.

Most torch optimizers run their math on ``torch.view_as_real(p)`` for a complex
``p`` (and on the real views of its gradient and state, e.g.
``torch.optim.Adam``'s ``_single_tensor_adam``): a real tensor with a trailing
axis of 2 (real, imaginary part), so every element is optimized as two
independent reals. ``torch.optim.LBFGS`` flattens that view.
``torch.optim.SGD`` never takes it but is elementwise-linear with real
hyperparameters, so the real view gives its numbers (to an ulp: torch's complex
``add(..., alpha=)`` rounds the product and the sum apart, its real one fuses
them). ``torch.optim.Adafactor``, ``torch.optim.Muon`` and
``torch.optim.SparseAdam`` raise for complex parameters.

The gradient of a complex leaf is taken as ``jax.grad`` returns it for a real loss,
``dL/dRe - i dL/dIm``: the conjugate of torch's ``p.grad`` (``dL/dRe + i dL/dIm``),
which the optimizer then sees, so a training loop passes ``jax.grad``'s output as it is.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxsched._errors import ConfigError


def _is_complex(x: Any) -> bool:
  return jnp.iscomplexobj(x)


def _has_complex(tree: Any) -> bool:
  """Whether any leaf is complex: decided from dtypes, at trace time."""
  return any(_is_complex(x) for x in jax.tree.leaves(tree))


def complex_paths(tree: Any) -> list[str]:
  """The paths (``jax.tree_util.keystr``) of the complex leaves of ``tree``."""
  return [
    jax.tree_util.keystr(path) or '<root>'
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    if _is_complex(x)
  ]


def real_view(tree: Any) -> Any:
  """``torch.view_as_real`` of every complex leaf: ``stack([re, im], -1)``, float32 for
  complex64 and float64 for complex128; real leaves as they are."""
  return jax.tree.map(lambda x: jnp.stack([x.real, x.imag], -1) if _is_complex(x) else x, tree)


def from_real_view(tree: Any, like: Any) -> Any:
  """``torch.view_as_complex`` of the leaves of ``tree`` whose counterparts in ``like``
  are complex: ``re + i im`` from the trailing axis, exactly (``lax.complex``)."""
  return jax.tree.map(lambda x, ref: jax.lax.complex(x[..., 0], x[..., 1]) if _is_complex(ref) else x, tree, like)


def as_real_view(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """``inner`` run on the real view of every complex leaf, as torch.optim runs its
  optimizers on ``torch.view_as_real(p)``.

  Parameters, gradients (conjugated first: ``jax.grad``'s convention in, torch's
  ``p.grad`` to ``inner``) and ``value_fn`` (LBFGS's closure, called with
  parameters) are presented to ``inner`` as real views, and its updates turned back
  into complex. The state is ``inner``'s own, built from the real views: where
  torch keeps a complex ``exp_avg``, it holds that tensor's real view (a float
  array with a trailing axis of 2; ``lax.complex(s[..., 0], s[..., 1])`` is
  torch's tensor). A tree without complex leaves goes to ``inner`` untouched.
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return inner.init(real_view(params)) if _has_complex(params) else inner.init(params)

  def update_fn(updates, state, params=None, **extra_args):
    if not (_has_complex(updates) or _has_complex(params)):
      return inner.update(updates, state, params, **extra_args)
    if extra_args.get('value_fn') is not None:
      value_fn = extra_args['value_fn']
      extra_args['value_fn'] = lambda real: value_fn(from_real_view(real, params))
    grads = real_view(jax.tree.map(lambda g: jnp.conj(g) if _is_complex(g) else g, updates))  # torch's p.grad
    new, state = inner.update(grads, state, real_view(params), **extra_args)
    return from_real_view(new, updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def refusing_complex(name: str, inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """``inner``, whose ``init`` raises ConfigError for complex parameters, naming their
  paths, as ``torch.optim.<name>`` raises for them (Adafactor and Muon at their
  first step, SparseAdam in its constructor)."""
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    paths = complex_paths(params)
    if paths:
      raise ConfigError(
        f'{name}: complex parameter at {", ".join(paths)}; {name} does not support complex '
        f'parameters (as torch.optim.{name}). Optimize them with another optimizer '
        f'(optax.multi_transform), or as separate real and imaginary parts.'
      )
    return inner.init(params)

  return optax.GradientTransformationExtraArgs(init_fn, inner.update)


def complex_support(
  name: str, accepted: bool, inner: optax.GradientTransformation
) -> optax.GradientTransformationExtraArgs:
  """``inner`` with torch's treatment of complex parameters: :func:`as_real_view` if
  ``torch.optim.<name>`` accepts them, else :func:`refusing_complex`."""
  return as_real_view(inner) if accepted else refusing_complex(name, inner)
