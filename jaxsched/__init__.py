"""jaxsched: DynVision's torch optimizers and LR schedulers, by string ID, for JAX/Optax."""

from jaxsched._errors import ConfigError
from jaxsched.optimizers import OPTIMIZERS, optimizer

__all__ = ['ConfigError', 'OPTIMIZERS', 'optimizer']
__version__ = '0.1.0'
