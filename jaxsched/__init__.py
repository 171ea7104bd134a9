"""jaxsched: DynVision's torch optimizers and LR schedulers, by string ID, for JAX/Optax."""

from jaxsched._errors import ConfigError
from jaxsched.optimizers import OPTIMIZERS, optimizer
from jaxsched.plateau import Plateau, PlateauState, reduce_on_plateau, report
from jaxsched.schedules import SCHEDULES, Schedule, schedule

__all__ = [
    'ConfigError', 'OPTIMIZERS', 'Plateau', 'PlateauState', 'SCHEDULES', 'Schedule', 'optimizer', 'reduce_on_plateau',
    'report', 'schedule',
]
__version__ = '0.1.0'
