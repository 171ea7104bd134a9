"""The torch side of a config: the ``torch.optim`` optimizer and LR schedulers DynVision builds from it,
and the Lightning ``Trainer`` arguments for the rest.

:func:`torch_optimizer` puts a torch model's parameters into the same parameter
groups, in the same order, with the same keywords as :func:`jaxsched.build`
(jaxsched's defaults where they differ from torch's, e.g. SGD's momentum 0.9);
:func:`torch_scheduler` builds the scheduler (or a ``schedulers:`` list's, in list
order) on it; :func:`configure_optimizers` returns both as a LightningModule's
``configure_optimizers`` does; :func:`trainer_kwargs` gives clipping, accumulation,
``skip_nonfinite`` and ``ema``/``swa`` as ``Trainer`` keyword arguments and callbacks.
torch (and Lightning, for :func:`trainer_kwargs`) is imported when one of them is
called (``pip install 'jaxsched[torch]'``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Iterable, Mapping

import numpy as np

from jaxsched import _checks, averaging
from jaxsched._errors import ConfigError
from jaxsched.config import Config
from jaxsched.groups import configured_groups, group_paths, groups, uses_timm
from jaxsched.interop.layouts import Rule, as_numpy, as_rule
from jaxsched.learning_rates import PER_GROUP, PLATEAU, ends_in_plateau
from jaxsched.optimizers import OPTIMIZERS, resolve
from jaxsched.plan import plan_of
from jaxsched.plateau import GREEDY_KWARGS
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
  groups them. ``named_shapes`` maps names to their number of dimensions.

  With timm's keys (:func:`jaxsched.groups.uses_timm`), timm's groups of the model: a tree of
  the JAX paths in ``named_parameters`` order, each leaf with its parameter's dimensions, is what
  timm's ``param_groups_weight_decay`` / ``param_groups_layer_decay`` read (names, ``ndim`` and
  order); the parameters ``layer_decay_no_opt_scale`` leaves out are in no group."""
  paths = {name: jax_path(rule, name, ndim) for name, ndim in named_shapes.items()}
  tree = {paths[name]: np.zeros((1,) * ndim) for name, ndim in named_shapes.items()}
  members = {path: group for group, taken in group_paths(config, tree).items() for path in taken}
  return [(g, [n for n in named_shapes if members[paths[n]] == g.name]) for g in groups(config, tree)]


def torch_optimizer(config: Any, named_parameters: Iterable[tuple[str, Any]], rule: Rule | Mapping | None = None):
  """``torch.optim.<optimizer>`` over a torch model's parameters, grouped as :func:`jaxsched.build` groups
  the JAX parameters the rule maps them to (regular, recurrent, then ``lr_parameter_groups``).

  With timm's keys, the groups ``timm.optim.create_optimizer_v2`` makes of the model, in its
  order (:func:`group_names`): the optimizer gets the base LR and ``weight_decay=0``, each group
  its ``weight_decay`` and its LR, the base LR times timm's ``lr_scale`` (what timm's schedulers set;
  the groups carry no ``lr_scale``, which a timm scheduler would apply again). The parameters
  ``layer_decay_no_opt_scale`` leaves out are in no group (timm also sets their ``requires_grad``
  to False; this leaves the model as it is).

  Args:
    config: a :class:`jaxsched.Config` or anything :func:`jaxsched.load_config` accepts.
    named_parameters: ``model.named_parameters()``.
    rule: torch name -> (JAX path, layout), as in :mod:`jaxsched.interop.layouts` (default:
      Flax's names); the JAX path decides the group.

  Raises:
    ConfigError: an ``optax.<alias>`` optimizer, or what :func:`jaxsched.build` refuses.
  """
  torch = import_torch()
  config = plan_of(config).config
  named = dict(named_parameters)
  placed = group_names(config, {n: p.ndim for n, p in named.items()}, as_rule(rule))
  if config.optimizer in OPTIMIZERS:
    OPTIMIZERS[config.optimizer].check_groups(len(placed))
  # timm's factory gives the optimizer the base LR and weight_decay=0, each group its own: timm_groups' first
  first = configured_groups(config)[0] if uses_timm(config) else placed[0][0]
  defaults = torch_kwargs(config, first.optimizer_kwargs, first.learning_rate)
  # a group states what differs from the constructor's keywords (torch fills in the rest, e.g. LBFGS's max_eval)
  # several groups carry their names, which Lightning's LearningRateMonitor logs (lr-Adam/recurrent, as lr_log_names)
  param_groups = [
    {
      'params': [named[n] for n in names],
      **({'name': g.name} if len(placed) > 1 else {}),
      **{k: v for k, v in torch_kwargs(config, g.optimizer_kwargs, g.learning_rate).items() if v != defaults[k]},
    }
    for g, names in placed
  ]
  return getattr(torch.optim, config.optimizer)(param_groups, **defaults)


def torch_scheduler(config: Any, optimizer: Any):
  """The config's ``torch.optim.lr_scheduler`` (DynVision's LinearWarmupCosineAnnealingLR
  included) on ``optimizer``; with ``schedulers:``, a list of them in list order;
  None without a scheduler.

  A list's schedulers are constructed one after the other on the one optimizer, in
  list order, as :func:`jaxsched.build` assumes (each torch constructor sets
  ``initial_lr`` where it is missing and takes its initial step on the LR the ones
  before it left), and as a LightningModule that builds them in its
  ``configure_optimizers`` does. Step them as Lightning does, or return them with
  :func:`configure_optimizers`.

  ``lr_lambda`` and ``scale_fn`` expression strings become Python functions that
  evaluate jaxsched's compiled expression.

  Raises:
    ConfigError: SequentialLR ending in ReduceLROnPlateau (torch rejects it), or what
      the scheduler's checks refuse.
  """
  entries = plan_of(config).schedulers
  built = [_scheduler(e.scheduler, optimizer, dict(e.kwargs)) for e in entries]
  return built if len(built) > 1 else (built[0] if built else None)


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
    if ends_in_plateau(kwargs):
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
  if name == 'hf.greedy':  # min_lr and max_lr may be lists, one per group
    checked = {k: v if isinstance(v, (list, tuple)) else GREEDY_KWARGS[k][1](k, v) for k, v in kwargs.items()}
    return _hf_scheduler(name, optimizer, checked)
  if name.startswith('hf.'):
    return _hf_scheduler(name, optimizer, SCHEDULES[name].resolve(kwargs))
  if not hasattr(lr_scheduler, name) and name not in ('LinearWarmupCosineAnnealingLR', 'SWALR'):
    raise ConfigError(
      f"{name} has no torch scheduler that Lightning steps: timm's schedulers are not "
      'torch.optim.lr_scheduler classes (timm steps them with step(epoch) / step_update(num_updates); a '
      'LightningModule that uses one overrides lr_scheduler_step).'
    )
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


def _hf_scheduler(name: str, optimizer: Any, checked: dict[str, Any]):
  """Hugging Face's ``transformers.get_scheduler`` for ``hf.<name>``: a ``torch.optim.lr_scheduler.LambdaLR``
  that Lightning steps (interval "step", as HF's Trainer steps it after every optimizer step); for
  ``hf.greedy``, ``transformers.optimization.GreedyLR`` (see :func:`configure_optimizers`)."""
  try:
    from transformers import get_scheduler
  except ImportError:
    raise ConfigError(
      f"{name} on the torch side needs Hugging Face transformers: pip install 'transformers'."
    ) from None
  counts = {k: checked.pop(k) for k in ('num_warmup_steps', 'num_training_steps') if k in checked}
  return get_scheduler(name[len('hf.') :], optimizer, **counts, scheduler_specific_kwargs=checked)


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


LIGHTNING_KEYS = ('interval', 'frequency', 'monitor', 'strict', 'name')


def configure_optimizers(config: Any, module: Any, rule: Rule | Mapping | None = None) -> Any:
  """What a LightningModule's ``configure_optimizers`` returns for the config, in a form
  Lightning 2.6's ``_configure_optimizers`` takes: the optimizer without a scheduler;
  ``{'optimizer': ..., 'lr_scheduler': {'scheduler': ..., 'interval', 'frequency', 'monitor',
  'strict', 'name'}}`` with the config's ``scheduler_configs`` for one scheduler (a nested
  composite is one torch scheduler); with ``schedulers:``, Lightning's two lists
  ``([optimizer], [{'scheduler': ..., 'interval', ...}, ...])``, one dict per entry with
  its own ``scheduler_configs``, the schedulers constructed in list order
  (:func:`torch_scheduler`).

  ``hf.greedy``: transformers' ``GreedyLR`` is not a ``torch.optim.lr_scheduler.LRScheduler``, so
  Lightning 2.6's ``_configure_schedulers_automatic_opt`` would not feed it the monitored metric
  (it sets ``reduce_on_plateau`` only for ReduceLROnPlateau) and ``_validate_scheduler_api``
  refuses it unless the LightningModule overrides ``lr_scheduler_step``. Its dict carries
  ``reduce_on_plateau: True`` (Lightning's key: the loop then reads ``monitor`` and calls
  ``lr_scheduler_step(scheduler, metric)``), and with automatic optimization a LightningModule
  that does not override ``lr_scheduler_step`` (e.g. ``scheduler.step(metric)``) is a ConfigError
  here rather than Lightning's MisconfigurationException at ``fit``."""
  plan = plan_of(config)
  config, entries = plan.config, plan.schedulers
  optimizer = torch_optimizer(config, module.named_parameters(), rule)
  scheduler = torch_scheduler(config, optimizer)
  if scheduler is None:
    return optimizer
  built = scheduler if len(entries) > 1 else [scheduler]
  configs = [
    {'scheduler': s, **{k: e.configs[k] for k in LIGHTNING_KEYS}, **_greedy_keys(e.scheduler, module)}
    for s, e in zip(built, entries, strict=True)
  ]
  return ([optimizer], configs) if len(entries) > 1 else {'optimizer': optimizer, 'lr_scheduler': configs[0]}


def _greedy_keys(name: str, module: Any) -> dict[str, Any]:
  """``{'reduce_on_plateau': True}`` for hf.greedy (see :func:`configure_optimizers`), else nothing."""
  if name != 'hf.greedy':
    return {}
  import pytorch_lightning as pl
  from pytorch_lightning.utilities.model_helpers import is_overridden

  lightning = isinstance(module, pl.LightningModule)
  if lightning and module.automatic_optimization and not is_overridden('lr_scheduler_step', module):
    raise ConfigError(
      f"hf.greedy: transformers' GreedyLR is not a torch LRScheduler, and Lightning 2.6 refuses such a scheduler "
      f'unless the LightningModule overrides lr_scheduler_step: give {type(module).__name__} '
      '"def lr_scheduler_step(self, scheduler, metric): scheduler.step(metric)".'
    )
  return {'reduce_on_plateau': True}


def trainer_kwargs(config: Any, *, max_epochs: int | None = None) -> dict[str, Any]:
  """The Lightning ``Trainer`` keyword arguments that make a run from the config train as
  :func:`jaxsched.build`'s transformation does, besides :func:`configure_optimizers`:
  ``gradient_clip_val``, ``gradient_clip_algorithm``, ``accumulate_grad_batches`` and
  ``callbacks``: ``EMAWeightAveraging`` for ``ema:``
  (``pytorch_lightning.callbacks.weight_averaging``), ``StochasticWeightAveraging`` for
  ``swa:``, each with the config's arguments, and :func:`skip_nonfinite_callback`'s
  callback for ``skip_nonfinite: true`` (Lightning has no Trainer argument for it).
  ``max_epochs``, where given, is passed on (give :func:`jaxsched.build` the same).

  Add your own callbacks to the list: ``pl.Trainer(**kw, callbacks=[*kw['callbacks'], ...])``.

  Raises:
    ConfigError: a bad config; ``max_epochs`` not an integer >= 1 (what :func:`jaxsched.build`
      takes); ``swa`` with a fractional ``swa_epoch_start`` and no ``max_epochs``, or a start after
      the run's last epoch (Lightning would fall back on its own default epochs, and train otherwise
      than jaxsched).
  """
  config = plan_of(config).config
  if max_epochs is not None:
    max_epochs = _checks.Integer(1, _checks.COUNT_MAX)('max_epochs', max_epochs)
  if config.swa is not None:
    averaging.swa_start_epoch(config.swa, max_epochs)
  try:
    from pytorch_lightning.callbacks import EMAWeightAveraging, StochasticWeightAveraging
  except ImportError:
    raise ConfigError("trainer_kwargs needs PyTorch Lightning: pip install 'pytorch-lightning>=2.6'.") from None
  callbacks: list[Any] = []
  if config.skip_nonfinite:
    callbacks.append(skip_nonfinite_callback()())
  if config.ema is not None:
    callbacks.append(EMAWeightAveraging(**config.ema))
  if config.swa is not None:
    callbacks.append(StochasticWeightAveraging(**config.swa))
  out = {
    'gradient_clip_val': config.gradient_clip_val,
    'gradient_clip_algorithm': config.gradient_clip_algorithm,
    'accumulate_grad_batches': config.accumulate_grad_batches,
    'callbacks': callbacks,
  }
  return out if max_epochs is None else {**out, 'max_epochs': max_epochs}


@functools.cache
def skip_nonfinite_callback():
  """The Lightning callback class for ``skip_nonfinite: true``: drops a micro-batch whose gradient
  holds a NaN or an Inf, as :mod:`jaxsched.accumulate` does.

  Lightning skips a batch whose ``training_step`` returns None (no backward; the optimizer still
  steps on what its accumulation group has, and torch's optimizers leave a parameter whose
  ``grad`` is None untouched, state included; the schedulers step as usual). Returning None for a
  non-finite loss drops the same batches where the loss tells; this callback looks at the
  gradient itself, as jaxsched does: it keeps the gradients before each backward and, when the
  micro-batch made one non-finite, puts them back (None at a group's start), counting the
  batch in ``skipped``. One difference remains: where finite micro-batches add up to an
  overflow, jaxsched skips the optimizer step and this callback drops the last micro-batch.
  """
  import pytorch_lightning as pl

  torch = import_torch()

  class SkipNonFinite(pl.Callback):
    """Drops each micro-batch whose gradient is not finite; ``skipped`` counts them."""

    def __init__(self) -> None:
      self.skipped = 0
      self._before: list[Any] = []
      self._clip: list[Any] = []

    def _params(self, trainer):
      return [p for opt in trainer.optimizers for g in opt.param_groups for p in g['params']]

    def on_before_backward(self, trainer, pl_module, loss) -> None:
      self._before = [None if p.grad is None else p.grad.clone() for p in self._params(trainer)]

    def on_after_backward(self, trainer, pl_module) -> None:
      params = self._params(trainer)
      if all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params):
        return
      self.skipped += 1
      for p, g in zip(params, self._before, strict=True):
        p.grad = g

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
      # every micro-batch of the group dropped: nothing to clip, and torch's clip_grad_value_ fails on no gradients
      if all(p.grad is None for p in self._params(trainer)):
        self._clip.append(trainer.gradient_clip_val)
        trainer.gradient_clip_val = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
      if self._clip:
        trainer.gradient_clip_val = self._clip.pop()

    def state_dict(self) -> dict[str, Any]:
      return {'skipped': self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
      self.skipped = state_dict['skipped']

  return SkipNonFinite
