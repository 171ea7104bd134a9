"""Runs of a ``timm.<name>`` optimizer on both sides, for the tests that compare jaxsched with
timm: ``timm.optim.create_optimizer_v2(params, opt=<name>, lr=..., **kwargs)`` (timm's class with
its factory's defaults) and jaxsched's ID with the same keywords, compared after every step of a
run compiled once per case."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import jaxsched
from oracle import assert_trajectories_close, import_timm, problem, x64

TIMM_OPTIM, _ = import_timm()
SHAPES = {'w': (4, 3), 'b': (3,)}  # a matrix and a vector: MARS and the layer-wise norms treat them apart
STEPS = 20


def timm_trajectory(name, kwargs, params, grads, dtype, complex_=False, lrs=None):
  """Parameters after each step of ``create_optimizer_v2(opt=name, **kwargs)``; with ``lrs``, the
  group's lr set to ``lrs[i]`` before step i (the constructor's lr is kept as timm's max_lr)."""
  tdtype = getattr(torch, dtype)
  tensors = {k: torch.tensor(v, dtype=tdtype, requires_grad=True) for k, v in params.items()}
  if complex_:
    tensors = {k: torch.view_as_complex(t.detach()).requires_grad_() for k, t in tensors.items()}
  opt = TIMM_OPTIM.create_optimizer_v2(list(tensors.values()), opt=name, **kwargs)
  out = []
  for i, g in enumerate(grads):
    if lrs is not None:
      opt.param_groups[0]['lr'] = lrs[i]
    for k, t in tensors.items():
      grad = torch.tensor(g[k], dtype=tdtype)
      t.grad = torch.view_as_complex(grad) if complex_ else grad
    opt.step()
    out.append({k: (torch.view_as_real(t) if complex_ else t).detach().numpy().copy() for k, t in tensors.items()})
  return out


@functools.cache
def _runner(name, static, dtype):
  """One compiled run of ``timm.<name>`` (built with the keywords ``static``) over stacked
  gradients, the float hyperparameters given as a second argument (they live in the state)."""
  with x64(dtype):
    tx = jaxsched.optimizer(f'timm.{name}', **dict(static))

  def run(params, hyperparams, grads):
    state = tx.init(params)
    state = state._replace(hyperparams={**state.hyperparams, **hyperparams})

    def body(carry, g):
      p, s = carry
      u, s = tx.update(g, s, p)
      p = optax.apply_updates(p, u)
      return (p, s), p

    return jax.lax.scan(body, (params, state), grads)[1]

  return jax.jit(run)


def _freeze(kwargs):
  return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))


def jax_trajectory(name, kwargs, params, grads, dtype, hyperparams=None):
  with x64(dtype):
    run = _runner(name, _freeze(kwargs), dtype)
    cast = functools.partial(jnp.asarray, dtype=dtype)
    stacked = {k: cast(np.stack([g[k] for g in grads])) for k in params}
    wide = jnp.float64 if dtype == 'float64' else jnp.float32
    out = run(jax.tree.map(cast, params), {k: jnp.asarray(v, wide) for k, v in (hyperparams or {}).items()}, stacked)
    return [{k: np.asarray(v[i]) for k, v in out.items()} for i in range(len(grads))]


def check_against_timm(
  name, kwargs, dtype, lr=0.05, hyperparams=None, jax_kwargs=None, steps=STEPS, rtol=None, shapes=SHAPES
):
  """Asserts that ``timm.<name>`` with ``kwargs`` (jaxsched's side: ``jax_kwargs`` where given, the
  float hyperparameters ``hyperparams`` set in its state) follows timm's trajectory for ``steps`` steps."""
  params, grads = problem(shapes, steps)
  expected = timm_trajectory(name, {'lr': lr, **kwargs}, params, grads, dtype)
  actual = jax_trajectory(
    name, {'lr': lr, **(kwargs if jax_kwargs is None else jax_kwargs)}, params, grads, dtype, hyperparams
  )
  assert_trajectories_close(actual, expected, dtype, rtol)


def check_complex_against_timm(name, kwargs, lr=0.05, steps=8):
  """Asserts that ``timm.<name>`` steps complex parameters as timm does (its ``torch.view_as_real``
  view, or complex arithmetic with the same numbers), float64; jax.grad's gradient is the conjugate
  of torch's ``p.grad``."""
  params, grads = problem({'z': (3, 2, 2)}, steps)
  expected = timm_trajectory(name, {'lr': lr, **kwargs}, params, grads, 'float64', complex_=True)
  with x64('float64'):
    tx = jaxsched.optimizer(f'timm.{name}', lr=lr, **kwargs)

    def to_complex(tree):
      return {k: jax.lax.complex(jnp.asarray(v[..., 0]), jnp.asarray(v[..., 1])) for k, v in tree.items()}

    @jax.jit
    def step(p, state, g):
      u, state = tx.update(g, state, p)
      return optax.apply_updates(p, u), state

    p = to_complex(params)
    state, actual = tx.init(p), []
    for g in grads:
      p, state = step(p, state, jax.tree.map(jnp.conj, to_complex(g)))
      actual.append({k: np.stack([np.real(v), np.imag(v)], -1) for k, v in p.items()})
  assert_trajectories_close(actual, expected, 'float64')
