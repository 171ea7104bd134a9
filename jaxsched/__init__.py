"""jaxsched: DynVision's torch optimizers and LR schedulers, by string ID, for JAX/Optax."""

from jaxsched._errors import ConfigError, ConfigWarning
from jaxsched.averaging import averaged_params, final_params
from jaxsched.batchnorm import update_bn
from jaxsched.build import build, current_lr, current_momentum, load_config, lr_log_names, set_lr, skipped_steps
from jaxsched.compat import carry_over, check_compatible
from jaxsched.config import Config, patterns
from jaxsched.interop import (
  LightningCheckpoint,
  configure_optimizers,
  from_torch,
  load_lightning_checkpoint,
  to_torch,
  torch_optimizer,
  torch_params,
  torch_scheduler,
  torch_state_dict,
  trainer_kwargs,
)
from jaxsched.lr_find import LRFinderResult, lr_find
from jaxsched.optimizers import OPTIMIZERS, optimizer
from jaxsched.plan import Plan, plan_of
from jaxsched.plateau import Plateau, PlateauState, reduce_on_plateau, report
from jaxsched.schedules import SCHEDULES, Schedule, schedule
from jaxsched.simulate import lr_curve

__all__ = [
  'Config',
  'ConfigError',
  'ConfigWarning',
  'LRFinderResult',
  'LightningCheckpoint',
  'OPTIMIZERS',
  'Plateau',
  'PlateauState',
  'Plan',
  'SCHEDULES',
  'Schedule',
  'averaged_params',
  'build',
  'carry_over',
  'check_compatible',
  'configure_optimizers',
  'current_lr',
  'current_momentum',
  'final_params',
  'from_torch',
  'load_config',
  'load_lightning_checkpoint',
  'lr_curve',
  'lr_find',
  'lr_log_names',
  'optimizer',
  'patterns',
  'plan_of',
  'reduce_on_plateau',
  'report',
  'schedule',
  'set_lr',
  'skipped_steps',
  'to_torch',
  'torch_optimizer',
  'torch_params',
  'torch_scheduler',
  'torch_state_dict',
  'trainer_kwargs',
  'update_bn',
]
__version__ = '0.1.0'
