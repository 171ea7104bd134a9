"""torch as the oracle: run a torch.optim optimizer and jaxsched's port on the
same parameters and gradients, and compare the parameters after every step.

float64 runs with jax_enable_x64 on; float32 runs with it off (the usual setup),
so hyperparameters are float32 there.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any, Callable, Mapping

import torch

from helpers import (
  DTYPES,
  PY_MATH,
  SHAPES,
  TOLERANCE,
  assert_config_error,
  assert_rejected,
  assert_trajectories_close,
  jax_trajectory,
  max_rel_diff,
  optimizer_trajectory,
  problem,
  x64,
)

# the torch-free helpers (tests/helpers.py) are re-exported: the oracle tests import them from here
__all__ = [
  'DTYPES',
  'PY_MATH',
  'SHAPES',
  'TOLERANCE',
  'assert_config_error',
  'assert_matches_torch',
  'assert_rejected',
  'assert_trajectories_close',
  'import_timm',
  'jax_trajectory',
  'lightning_fit',
  'max_rel_diff',
  'problem',
  'torch_trajectory',
  'x64',
]

# One thread: CI has 2 cores and two xdist workers (set here, as every torch test imports this module).
torch.set_num_threads(1)


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
  actual = optimizer_trajectory(name, jk, params, grads, dtype)
  assert_trajectories_close(actual, expected, dtype, rtol)


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
