"""torch interop: the config's torch objects, and a run's parameters and state both ways.

- :mod:`jaxsched.interop.objects`: the ``torch.optim`` optimizer and LR schedulers a config builds
  (:func:`torch_optimizer`, :func:`torch_scheduler`), a LightningModule's
  :func:`configure_optimizers`, the Lightning ``Trainer``'s :func:`trainer_kwargs`.
- :mod:`jaxsched.interop.layouts`: torch names and layouts to a JAX tree and back
  (:func:`torch_params`, :func:`torch_state_dict`, the rules).
- :mod:`jaxsched.interop.state`: the optimizer and scheduler state both ways (:func:`from_torch`,
  :func:`to_torch`), each optimizer's state converted by its spec's facts
  (:mod:`jaxsched.interop.converters`), its parameters matched by
  :mod:`jaxsched.interop.correspondence`.
- :mod:`jaxsched.interop.lightning`: Lightning checkpoints (:func:`load_lightning_checkpoint`).

torch (and Lightning) is imported only here, and only when a function needs it
(``pip install 'jaxsched[torch]'``): importing jaxsched does not import torch.
"""

from jaxsched.interop.layouts import torch_params, torch_state_dict
from jaxsched.interop.lightning import LightningCheckpoint, load_lightning_checkpoint
from jaxsched.interop.objects import configure_optimizers, torch_optimizer, torch_scheduler, trainer_kwargs
from jaxsched.interop.state import from_torch, to_torch

__all__ = [
  'LightningCheckpoint',
  'configure_optimizers',
  'from_torch',
  'load_lightning_checkpoint',
  'to_torch',
  'torch_optimizer',
  'torch_params',
  'torch_scheduler',
  'torch_state_dict',
  'trainer_kwargs',
]
