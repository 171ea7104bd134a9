"""The torch side of a config: the ``torch.optim`` optimizer and LR scheduler DynVision builds from it.

:func:`torch_optimizer` puts a torch model's parameters into the same parameter
groups, in the same order, with the same keywords as :func:`jaxsched.build`
(jaxsched's defaults where they differ from torch's, e.g. SGD's momentum 0.9);
:func:`torch_scheduler` builds the scheduler on it; :func:`configure_optimizers`
returns both as a LightningModule's ``configure_optimizers`` does. torch is
imported when one of them is called (``pip install 'jaxsched[torch]'``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Iterable, Mapping

from jaxsched._errors import ConfigError
from jaxsched.build import load_config
from jaxsched.config import Config
from jaxsched.groups import PER_GROUP, PLATEAU, _ends_in_plateau, groups
from jaxsched.layouts import Rule, as_numpy, as_rule
from jaxsched.optimizers import OPTIMIZERS, resolve
from jaxsched.plateau import KWARGS as PLATEAU_KWARGS
from jaxsched.schedules import SCHEDULES
from jaxsched.schedules._expr import lambda_function

# Scheduler keywords that hold a function of the step (and the function's variable).
FUNCTIONS = {'lr_lambda': 'epoch', 'scale_fn': 'x'}


def import_torch():
  """torch, or a ConfigError that says how to install it."""
  try:
    import torch
  except ImportError:
    raise ConfigError("this needs torch: pip install 'jaxsched[torch]'.") from None
  return torch


def as_config(config: Any) -> Config:
  return config if isinstance(config, Config) else load_config(config)


def torch_kwargs(config: Config, group_kwargs: Mapping[str, Any], lr: float) -> dict[str, Any]:
  """A group's keywords for ``torch.optim.<config.optimizer>``: jaxsched's checked values
  (its defaults filled in), without jaxsched's own keywords."""
  spec = OPTIMIZERS.get(config.optimizer)
  if spec is None:
    raise ConfigError(f'optimizer={config.optimizer!r} has no torch.optim counterpart.')
  lr, checked = resolve(spec, lr, dict(group_kwargs))
  return {'lr': lr, **{k: v for k, v in checked.items() if k not in spec.jax_only}}


def jax_path(rule: Rule, name: str, ndim: int) -> str:
  """The '/'-joined JAX path of torch's ``name`` under ``rule`` (which names the groups)."""
  target = rule(name, ndim)
  return name.replace('.', '/') if target is None else target[0]


def group_names(config: Config, named_shapes: Mapping[str, int], rule: Rule) -> list[tuple[Any, list[str]]]:
  """``[(Group, [torch names])]`` in torch's param_groups order, each group's names in
  the given (``named_parameters``) order, grouped by their JAX paths as :func:`jaxsched.build`
  groups them. ``named_shapes`` maps names to their number of dimensions."""
  from jaxsched.groups import _labeller

  paths = {name: jax_path(rule, name, ndim) for name, ndim in named_shapes.items()}
  label = _labeller(config)
  found = groups(config, {path: 0 for path in paths.values()})
  return [(g, [n for n in named_shapes if label(paths[n]) == g.name]) for g in found]


def torch_optimizer(config: Any, named_parameters: Iterable[tuple[str, Any]], rule: Rule | Mapping | None = None):
  """``torch.optim.<optimizer>`` over a torch model's parameters, grouped as :func:`jaxsched.build` groups
  the JAX parameters the rule maps them to (regular, recurrent, then ``lr_parameter_groups``).

  Args:
    config: a :class:`jaxsched.Config` or anything :func:`jaxsched.load_config` accepts.
    named_parameters: ``model.named_parameters()``.
    rule: torch name -> (JAX path, layout), as in :mod:`jaxsched.layouts` (default:
      Flax's names); the JAX path decides the group.

  Raises:
    ConfigError: an ``optax.<alias>`` optimizer, or what :func:`jaxsched.build` refuses.
  """
  torch = import_torch()
  config = as_config(config)
  named = dict(named_parameters)
  placed = group_names(config, {n: p.ndim for n, p in named.items()}, as_rule(rule))
  if config.optimizer in OPTIMIZERS:
    OPTIMIZERS[config.optimizer].check_groups(len(placed))
  defaults = torch_kwargs(config, config.optimizer_kwargs, placed[0][0].learning_rate)
  # a group states what differs from the constructor's keywords (torch fills in the rest, e.g. LBFGS's max_eval)
  param_groups = [
    {
      'params': [named[n] for n in names],
      **{k: v for k, v in torch_kwargs(config, g.optimizer_kwargs, g.learning_rate).items() if v != defaults[k]},
    }
    for g, names in placed
  ]
  return getattr(torch.optim, config.optimizer)(param_groups, **defaults)


def torch_scheduler(config: Any, optimizer: Any):
  """The config's ``torch.optim.lr_scheduler`` (DynVision's LinearWarmupCosineAnnealingLR
  included) on ``optimizer``, or None without a scheduler.

  ``lr_lambda`` and ``scale_fn`` expression strings become Python functions that
  evaluate jaxsched's compiled expression.

  Raises:
    ConfigError: SequentialLR ending in ReduceLROnPlateau (torch rejects it), or what
      the scheduler's checks refuse.
  """
  config = as_config(config)
  if config.scheduler is None:
    return None
  return _scheduler(config.scheduler, optimizer, dict(config.scheduler_kwargs))


def _scheduler(name: str, optimizer: Any, kwargs: dict[str, Any]):
  torch = import_torch()
  lr_scheduler = torch.optim.lr_scheduler
  if name == PLATEAU:
    return lr_scheduler.ReduceLROnPlateau(
      optimizer,
      **{  # min_lr may be a list, one per group
        k: v if isinstance(v, (list, tuple)) else PLATEAU_KWARGS[k][1](k, v) for k, v in kwargs.items()
      },
    )
  if name in ('SequentialLR', 'ChainedScheduler'):
    if _ends_in_plateau(kwargs):
      raise ConfigError(
        "SequentialLR ending in ReduceLROnPlateau is jaxsched's own (torch raises for it, "
        'pytorch#68978): it has no torch scheduler.'
      )
    members = [
      _scheduler(m['scheduler'], optimizer, dict(m.get('scheduler_kwargs') or {})) for m in kwargs['schedulers']
    ]
    if name == 'SequentialLR':
      return lr_scheduler.SequentialLR(optimizer, members, milestones=list(kwargs['milestones']))
    return lr_scheduler.ChainedScheduler(members, optimizer=optimizer)
  lists = {k: v for k, v in kwargs.items() if k in PER_GROUP.get(name, ()) and isinstance(v, (list, tuple))}
  checked = {**SCHEDULES[name].resolve({**kwargs, **{k: v[0] for k, v in lists.items()}}), **lists}  # one per group
  for key, variable in FUNCTIONS.items():
    if checked.get(key) is not None:
      checked[key] = _python_function(checked[key], f'{name}: {key}', variable)
  if name == 'LinearWarmupCosineAnnealingLR':
    cls = linear_warmup_cosine_annealing()
  elif name == 'SWALR':
    cls = torch.optim.swa_utils.SWALR
  else:
    cls = getattr(lr_scheduler, name)
  return cls(optimizer, **checked)


def _python_function(value: Any, key: str, variable: str):
  """A Python function of the step for torch, computing what jaxsched's schedule computes."""
  fn, constant = lambda_function(value, key, variable)
  if constant is not None:
    return lambda _: constant
  import jax.numpy as jnp

  return lambda n: float(as_numpy(fn(jnp.asarray(n))))


@functools.cache
def linear_warmup_cosine_annealing():
  """DynVision's (pl_bolts') ``LinearWarmupCosineAnnealingLR`` as a torch scheduler class."""
  torch = import_torch()

  class LinearWarmupCosineAnnealingLR(torch.optim.lr_scheduler.LRScheduler):
    """pl_bolts' linear warm-up from ``warmup_start_lr`` over ``warmup_epochs``, then a
    cosine to ``eta_min`` at ``max_epochs`` (its chainable form, as pl_bolts steps it)."""

    def __init__(self, optimizer, warmup_epochs, max_epochs, warmup_start_lr=0.0, eta_min=0.0, last_epoch=-1):
      self.warmup_epochs = warmup_epochs
      self.max_epochs = max_epochs
      self.warmup_start_lr = warmup_start_lr
      self.eta_min = eta_min
      super().__init__(optimizer, last_epoch)

    def get_lr(self):
      span = self.max_epochs - self.warmup_epochs
      if self.last_epoch == 0:
        return [self.warmup_start_lr] * len(self.base_lrs)
      if self.last_epoch < self.warmup_epochs:
        return [
          group['lr'] + (base_lr - self.warmup_start_lr) / (self.warmup_epochs - 1)
          for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups)
        ]
      if self.last_epoch == self.warmup_epochs:
        return self.base_lrs
      if (self.last_epoch - 1 - self.max_epochs) % (2 * span) == 0:
        return [
          group['lr'] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / span)) / 2
          for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups)
        ]
      return [
        (1 + math.cos(math.pi * (self.last_epoch - self.warmup_epochs) / span))
        / (1 + math.cos(math.pi * (self.last_epoch - self.warmup_epochs - 1) / span))
        * (group['lr'] - self.eta_min)
        + self.eta_min
        for group in self.optimizer.param_groups
      ]

  return LinearWarmupCosineAnnealingLR


def configure_optimizers(config: Any, module: Any, rule: Rule | Mapping | None = None) -> Any:
  """What a LightningModule's ``configure_optimizers`` returns for the config: the optimizer,
  or ``{'optimizer': ..., 'lr_scheduler': {'scheduler': ..., 'interval', 'frequency', 'monitor',
  'strict', 'name'}}`` with the config's ``scheduler_configs``."""
  config = as_config(config)
  optimizer = torch_optimizer(config, module.named_parameters(), rule)
  scheduler = torch_scheduler(config, optimizer)
  if scheduler is None:
    return optimizer
  sc = config.scheduler_configs
  return {
    'optimizer': optimizer,
    'lr_scheduler': {
      'scheduler': scheduler,
      **{k: sc[k] for k in ('interval', 'frequency', 'monitor', 'strict', 'name')},
    },
  }
