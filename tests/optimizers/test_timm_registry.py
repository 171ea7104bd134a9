"""Every name in timm's optimizer registry is a ``timm.<name>`` ID or a ConfigError that says why
not and what to use."""

import jax.numpy as jnp
import pytest

import jaxsched
from jaxsched.optimizers import TIMM_OPTIMIZERS
from jaxsched.optimizers.timm_unported import UNPORTED
from oracle import assert_config_error
from timm_runs import TIMM_OPTIM


def test_every_registry_name_is_an_id_or_says_why_not():
  listed = {f'timm.{name}' for name in TIMM_OPTIM.list_optimizers()}
  assert listed - set(TIMM_OPTIMIZERS) - set(UNPORTED) == set()
  assert set(UNPORTED) <= listed  # no reason for a name timm does not have
  assert set(UNPORTED).isdisjoint(TIMM_OPTIMIZERS)


@pytest.mark.parametrize(
  'name, words',
  [
    ('timm.kron', ['timm.kron', 'timm.optim.Kron', 'not ported']),
    ('timm.kronc', ['timm.kronc', 'timm.optim.Kron', 'not ported']),
    ('timm.sgd', ['torch.optim.SGD', 'nesterov: true, momentum: 0.9']),
    ('timm.rmsprop', ['optimizer RMSprop', 'alpha: 0.9']),
    ('timm.fusedlamb', ["apex's CUDA kernel", 'use timm.lamb']),
  ],
)
def test_unported_names_are_config_errors_that_say_why(name, words):
  assert_config_error(lambda: jaxsched.optimizer(name), [repr(name), *words])
  assert_config_error(lambda: jaxsched.load_config({'optimizer': name}), words)


def test_each_id_logs_under_its_timm_class_name_as_lightnings_monitor():
  # LearningRateMonitor names an optimizer's LR 'lr-' + optimizer.__class__.__name__
  registry = TIMM_OPTIM._optim_factory.default_registry
  for name, spec in TIMM_OPTIMIZERS.items():
    assert spec.logged_name == registry.get_optimizer_info(name[len('timm.') :]).opt_class.__name__, name
  config = {'optimizer': 'timm.lamb', 'learning_rate': 0.01, 'scheduler': None}
  params = {'w': jnp.ones(3)}
  assert list(jaxsched.lr_log_names(config, jaxsched.build(config, params).init(params))) == ['lr-Lamb']
