"""jaxsched: DynVision's torch optimizers and LR schedulers, by string ID, for JAX/Optax."""

from jaxsched._errors import ConfigError
from jaxsched.build import build, current_lr, lr_log_names, set_lr, skipped_steps
from jaxsched.compat import check_compatible
from jaxsched.config import Config, load_config, patterns
from jaxsched.optimizers import OPTIMIZERS, optimizer
from jaxsched.plateau import Plateau, PlateauState, reduce_on_plateau, report
from jaxsched.schedules import SCHEDULES, Schedule, schedule
from jaxsched.layouts import torch_params, torch_state_dict
from jaxsched.torch_build import configure_optimizers, torch_optimizer, torch_scheduler
from jaxsched.torch_state import LightningCheckpoint, from_torch, load_lightning_checkpoint, to_torch

__all__ = [
    'Config', 'ConfigError', 'LightningCheckpoint', 'OPTIMIZERS', 'Plateau', 'PlateauState', 'SCHEDULES', 'Schedule',
    'build', 'check_compatible', 'configure_optimizers', 'current_lr', 'from_torch', 'load_config',
    'load_lightning_checkpoint', 'lr_log_names', 'optimizer', 'patterns', 'reduce_on_plateau', 'report', 'schedule',
    'set_lr', 'skipped_steps', 'to_torch', 'torch_optimizer', 'torch_params', 'torch_scheduler', 'torch_state_dict',
]
__version__ = '0.1.0'
