"""torch as the oracle: run a torch.optim optimizer and jaxsched's port on the
same parameters and gradients, and compare the parameters after every step.

float64 runs with jax_enable_x64 on; float32 runs with it off (the usual setup),
so hyperparameters are float32 there.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jaxsched

TOLERANCE = {'float64': 1e-9, 'float32': 1e-5}
# The names an lr_lambda expression may use, as Python's math has them: expressions are
# evaluated with these as the oracle for jaxsched's compiled ones.
PY_MATH = {
  'min': min,
  'max': max,
  'abs': abs,
  'exp': math.exp,
  'log': math.log,
  'sqrt': math.sqrt,
  'cos': math.cos,
  'sin': math.sin,
  'pi': math.pi,
}
SHAPES = {'w': (4, 3), 'b': (3,), 'k': (2, 3, 5)}


def x64(dtype: str):
  """The JAX precision mode a dtype's run uses."""
  return jax.enable_x64(dtype == 'float64')


def problem(
  shapes: Mapping[str, tuple[int, ...]] = SHAPES, steps: int = 10, seed: int = 0, scale: float = 1.0
) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
  """Seeded float64 initial parameters and a gradient sequence."""
  rng = np.random.default_rng(seed)
  params = {k: rng.normal(size=s) for k, s in shapes.items()}
  grads = [{k: scale * rng.normal(size=s) for k, s in shapes.items()} for _ in range(steps)]
  return params, grads


def torch_trajectory(
  name: str,
  kwargs: Mapping[str, Any],
  params,
  grads,
  dtype: str,
  grad_hook: Callable[[torch.Tensor], torch.Tensor] = lambda g: g,
):
  """Parameters after each ``torch.optim.<name>(**kwargs).step()``."""
  tdtype = getattr(torch, dtype)
  tensors = {k: torch.tensor(v, dtype=tdtype, requires_grad=True) for k, v in params.items()}
  opt = getattr(torch.optim, name)(list(tensors.values()), **kwargs)
  out = []
  for g in grads:
    for k, t in tensors.items():
      t.grad = grad_hook(torch.tensor(g[k], dtype=tdtype))
    opt.step()
    out.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
  return out


def jax_trajectory(tx_fn: Callable[[], optax.GradientTransformation], params, grads, dtype: str, **extra_args):
  """Parameters after each jit-compiled update of ``tx_fn()``, built in ``dtype``'s mode.

  Also checks that updates and the moments keep the parameters' dtype.
  """
  with x64(dtype):
    tx = tx_fn()
    p = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    state = jax.jit(tx.init)(p)
    state_dtypes = jax.tree.map(lambda x: x.dtype, state)

    @jax.jit
    def step(p, state, g):
      u, state = tx.update(g, state, p, **extra_args)
      return optax.apply_updates(p, u), u, state

    out = []
    for g in grads:
      gj = {k: jnp.asarray(v, dtype) for k, v in g.items()}
      p, u, state = step(p, state, gj)
      for leaf in jax.tree.leaves(u):
        assert leaf.dtype == jnp.dtype(dtype), f'update dtype {leaf.dtype} != {dtype}'
      assert jax.tree.map(lambda x: x.dtype, state) == state_dtypes, 'state dtypes changed'
      out.append({k: np.asarray(v) for k, v in p.items()})
  return out


def max_rel_diff(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> float:
  """max over leaves of max|a - e| / max|e|."""
  return max(float(np.max(np.abs(actual[k] - expected[k])) / max(np.max(np.abs(expected[k])), 1e-30)) for k in expected)


def assert_trajectories_close(actual, expected, dtype: str, rtol: float | None = None) -> None:
  rtol = TOLERANCE[dtype] if rtol is None else rtol
  for step, (a, e) in enumerate(zip(actual, expected, strict=True)):
    d = max_rel_diff(a, e)
    assert d <= rtol, f'step {step}: max relative difference {d:.3g} > {rtol:g}'


def assert_matches_torch(
  name: str,
  kwargs: Mapping[str, Any],
  dtype: str,
  *,
  jax_kwargs: Mapping[str, Any] | None = None,
  shapes=SHAPES,
  steps: int = 10,
  seed: int = 0,
  scale: float = 1.0,
  rtol: float | None = None,
) -> None:
  """jaxsched.optimizer(name, **jax_kwargs) tracks torch.optim.<name>(**kwargs) step for step.

  ``jax_kwargs`` defaults to ``kwargs``; both sides get every keyword explicitly
  where the reference page's defaults differ from torch's.
  """
  params, grads = problem(shapes, steps, seed, scale)
  expected = torch_trajectory(name, kwargs, params, grads, dtype)
  jk = dict(kwargs if jax_kwargs is None else jax_kwargs)
  actual = jax_trajectory(lambda: jaxsched.optimizer(name, **jk), params, grads, dtype)
  assert_trajectories_close(actual, expected, dtype, rtol)


DTYPES = ('float64', 'float32')


def assert_config_error(call: Callable[[], Any], words) -> None:
  """``call()`` raises a ConfigError whose message holds every word."""
  with pytest.raises(jaxsched.ConfigError) as e:
    call()
  for w in words:
    assert w in str(e.value), str(e.value)


def assert_rejected(name: str, kwargs: Mapping[str, Any], words) -> None:
  """jaxsched.optimizer(name, **kwargs) raises a ConfigError whose message holds every word."""
  assert_config_error(lambda: jaxsched.optimizer(name, **kwargs), words)


def lightning_trainer(**trainer_kwargs: Any) -> Any:
  """A quiet float64 CPU Lightning Trainer: no logger, checkpoints, progress bar, summary
  or sanity check, unless ``trainer_kwargs`` set them."""
  import pytorch_lightning as pl

  quiet = {
    'precision': '64-true',
    'accelerator': 'cpu',
    'devices': 1,
    'logger': False,
    'enable_checkpointing': False,
    'enable_progress_bar': False,
    'enable_model_summary': False,
    'num_sanity_val_steps': 0,
  }
  return pl.Trainer(**{**quiet, **trainer_kwargs})


def lightning_fit(model: Any, ckpt_path: str | None = None, **trainer_kwargs: Any) -> Any:
  """Fits ``model`` with a :func:`lightning_trainer` of ``trainer_kwargs``, resuming from
  ``ckpt_path`` if given, and returns the trainer."""
  import logging
  import warnings

  trainer = lightning_trainer(**trainer_kwargs)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # "does not have many workers" and the like
    logging.getLogger('pytorch_lightning').setLevel(logging.ERROR)
    trainer.fit(model, ckpt_path=ckpt_path)
  return trainer


def import_timm() -> Any:
  """timm's ``optim`` and ``scheduler`` packages, the oracles of the ``timm.`` IDs, imported
  without ``timm/__init__.py`` (which imports torchvision: the registry's torchvision is a CUDA
  build that does not load beside the CPU torch). timm is installed without its dependencies
  (``pip install --no-deps timm``); ``timm.models`` is stood in for by a module whose
  ``group_parameters`` raises, so layer decay takes timm's fallback (``auto_group_layers``),
  the rule for a model without ``group_matcher``."""
  if 'timm.optim' not in sys.modules:
    spec = importlib.util.find_spec('timm')
    assert spec is not None and spec.submodule_search_locations, 'pip install --no-deps timm'
    root = types.ModuleType('timm')
    root.__path__ = list(spec.submodule_search_locations)
    sys.modules['timm'] = root
    models = types.ModuleType('timm.models')

    def group_parameters(*args: Any, **kwargs: Any) -> Any:
      raise NotImplementedError('timm.models is not imported here (it needs torchvision)')

    models.group_parameters = group_parameters  # type: ignore[attr-defined]
    sys.modules['timm.models'] = models
  return importlib.import_module('timm.optim'), importlib.import_module('timm.scheduler')
