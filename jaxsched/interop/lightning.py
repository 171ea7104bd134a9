"""PyTorch Lightning checkpoints read for a JAX run: :func:`load_lightning_checkpoint`.

Lightning's ``.ckpt`` (``pytorch_lightning.trainer.connectors.checkpoint_connector``'s
``dump_checkpoint``) holds the module's ``state_dict``, one ``optimizer_states`` and
``lr_schedulers`` entry per optimizer and scheduler, ``epoch`` and ``global_step``: the
weights (and BatchNorm statistics) convert by the layout rule, the optimizer and scheduler
states by :func:`jaxsched.from_torch`.
"""

from __future__ import annotations

import pickle
from typing import Any, Mapping, NamedTuple, Sequence

from jaxsched._errors import ConfigError
from jaxsched.interop.layouts import RUNNING_STATS, Rule, as_rule, leaf_paths, torch_params
from jaxsched.interop.objects import import_torch
from jaxsched.interop.state import from_torch


class LightningCheckpoint(NamedTuple):
  """A Lightning checkpoint in JAX's terms.

  Attributes:
    params: the model's parameters, converted (:func:`jaxsched.interop.layouts.torch_params`).
    opt_state: the state of :func:`jaxsched.build` that continues the run (:func:`jaxsched.from_torch`).
    epoch: the checkpoint's ``epoch`` (Lightning's ``current_epoch`` when it was saved).
    global_step: the checkpoint's ``global_step`` (optimizer steps taken).
    batch_stats: the model's BatchNorm statistics (torch's ``running_mean`` and
      ``running_var``) in the structure given as ``batch_stats=``; None without it. torch's
      ``num_batches_tracked`` has no Flax counterpart and is not read.
  """

  params: Any
  opt_state: Any
  epoch: int
  global_step: int
  batch_stats: Any = None


def load_lightning_checkpoint(
  path: Any,
  config: Any,
  params: Any,
  *,
  rule: Rule | Mapping | None = None,
  torch_names: Sequence[str] | None = None,
  batches_per_epoch: int | None = None,
  steps_per_epoch: int | None = None,
  batch_stats: Any = None,
) -> LightningCheckpoint:
  """Reads a PyTorch Lightning ``.ckpt`` (``state_dict``, ``optimizer_states``, ``lr_schedulers``,
  ``epoch``, ``global_step``) for a JAX run of the same config.

  The file is read with ``torch.load(path, weights_only=True)``: tensors and plain values only.

  Args:
    path: the ``.ckpt`` file.
    config: the run's config.
    params: a JAX parameter tree of the model's structure (its values are replaced).
    rule: torch name -> (JAX path, layout); default :func:`jaxsched.interop.layouts.flax_rule`.
    torch_names: the LightningModule's ``named_parameters()`` names in order; by default
      the ``state_dict`` entries the rule maps to a JAX parameter, in the file's order
      (which is ``named_parameters()``'s, buffers aside).
    batches_per_epoch: as for :func:`jaxsched.build`.
    steps_per_epoch: as for :func:`jaxsched.build`.
    batch_stats: a tree of the model's BatchNorm statistics (Linen's ``variables['batch_stats']``,
      or ``nnx.state(model, nnx.BatchStat)``; its values are replaced): the checkpoint's
      ``running_mean`` and ``running_var`` fill it. Without it a checkpoint that has them
      gives a :class:`jaxsched.ConfigWarning` naming them.

  Raises:
    ConfigError: a file ``weights_only`` cannot read (say why), several optimizers or
      schedulers, or what :func:`jaxsched.from_torch` refuses.
  """
  torch = import_torch()
  try:
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, AttributeError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(
      f'{path} cannot be loaded with torch.load(weights_only=True), which reads tensors and plain '
      f'values only: {first}. Save the checkpoint without such objects (e.g. hyperparameters that '
      f'are plain numbers and strings), or convert it once in a trusted session.'
    ) from None
  missing = [k for k in ('state_dict', 'optimizer_states') if k not in ckpt]
  if missing:
    raise ConfigError(
      f'{path} is not a Lightning training checkpoint: it has no {", ".join(missing)} '
      f'(keys: {", ".join(map(str, ckpt))}).'
    )
  optimizers, schedulers = ckpt['optimizer_states'], ckpt.get('lr_schedulers') or []
  if len(optimizers) != 1 or len(schedulers) > 1:
    raise ConfigError(
      f'{path} holds {len(optimizers)} optimizers and {len(schedulers)} LR schedulers; a config builds one of each.'
    )
  rule = as_rule(rule)
  weights = ckpt['state_dict']
  if torch_names is None:
    by_path = leaf_paths(params)
    torch_names = [
      name
      for name, tensor in weights.items()
      if (target := rule(name, tensor.ndim)) is not None and target[0] in by_path
    ]
  stats = {name: t for name, t in weights.items() if name.rpartition('.')[2] in RUNNING_STATS}
  converted = torch_params(
    {**{name: weights[name] for name in torch_names}, **stats}, rule, like=params, batch_stats=batch_stats
  )
  new_params, new_stats = converted if batch_stats is not None else (converted, None)
  opt_state = from_torch(
    config,
    params,
    optimizers[0],
    schedulers[0] if schedulers else None,
    torch_names=torch_names,
    batches_per_epoch=batches_per_epoch,
    steps_per_epoch=steps_per_epoch,
    rule=rule,
    step=ckpt.get('global_step'),
  )
  return LightningCheckpoint(
    new_params, opt_state, int(ckpt.get('epoch', 0)), int(ckpt.get('global_step', 0)), new_stats
  )
