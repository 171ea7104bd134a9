"""load_config: YAML files, mappings, DynVision files with unrelated keys, overrides, errors."""

import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsched
from jaxsched import load_config
from jaxsched.config import Config, parse_value
from oracle import assert_config_error


def write(tmp_path, text, name='config.yaml'):
  path = tmp_path / name
  path.write_text(textwrap.dedent(text))
  return path


def test_defaults_are_the_reference_pages():
  c = load_config()
  assert c.optimizer == 'Adam' and c.learning_rate is None
  assert c.scheduler == 'CosineAnnealingLR'
  assert c.scheduler_configs == {
    'interval': 'epoch',
    'frequency': 1,
    'monitor': 'train_loss',
    'name': None,
    'strict': True,
  }
  assert c.recurrent_learning_rate_multiplier == 1.0 and c.accumulate_grad_batches == 1


def test_dynvision_file_with_unrelated_keys(tmp_path):
  path = write(
    tmp_path,
    """
      model_name: DyRCNNx4
      data_name: cifar100
      trainer: {max_epochs: 100, precision: 16}
      optimizer: AdamW
      learning_rate: 0.0005
      optimizer_kwargs:
        betas: [0.9, 0.999]
        weight_decay: 0.01
        eps: 1e-8
        fused: False
      scheduler: LinearWarmupCosineAnnealingLR
      scheduler_kwargs: {warmup_epochs: 10, max_epochs: 100, eta_min: 1.0e-6}
      scheduler_configs: {interval: epoch, frequency: 1, monitor: val_loss}
      recurrent_learning_rate_multiplier: 0.1
      seed: 42
      """,
  )
  c = load_config(path)
  assert c.optimizer == 'AdamW' and c.learning_rate == 0.0005
  assert c.optimizer_kwargs['eps'] == 1e-8  # YAML 1.1 reads a string; the Config keeps the number torch gets
  assert c.monitor == 'val_loss' and c.recurrent_learning_rate_multiplier == 0.1


@pytest.mark.parametrize(
  'key, suggestion',
  [
    ('optimzer', 'optimizer'),
    ('learning_rat', 'learning_rate'),
    ('scheduler_kwarg', 'scheduler_kwargs'),
    ('recurrent_learning_rate_multiplyer', 'recurrent_learning_rate_multiplier'),
  ],
)
def test_near_miss_keys_are_errors(key, suggestion):
  with pytest.raises(jaxsched.ConfigError, match=f"'{key}'.*did you mean '{suggestion}'"):
    load_config({key: 1})


def test_snakemake_overrides():
  c = load_config(
    {'optimizer': 'Adam'},
    [
      'optimizer=SGD',
      'learning_rate=0.01',
      'optimizer_kwargs={momentum:0.9,weight_decay:0.0001}',
      'scheduler_kwargs.T_max=100',
      'scheduler_configs.interval=step',
    ],
  )
  assert c.optimizer == 'SGD' and c.learning_rate == 0.01
  assert c.optimizer_kwargs == {'momentum': 0.9, 'weight_decay': 0.0001}
  assert c.scheduler_kwargs == {'T_max': 100}
  assert c.scheduler_configs['interval'] == 'step'


def test_override_string_and_lr_alias():
  c = load_config(None, 'lr=0.3 scheduler=none')
  assert c.learning_rate == 0.3 and c.scheduler is None


@pytest.mark.parametrize(
  'text, value',
  [
    ('{momentum:0.9,weight_decay:0.0001}', {'momentum': 0.9, 'weight_decay': 0.0001}),
    ('{betas:[0.9,0.99],eps:1.0e-8}', {'betas': [0.9, 0.99], 'eps': 1e-8}),
    ('{a: 1, b: x}', {'a': 1, 'b': 'x'}),
    ('[30, 60, 90]', [30, 60, 90]),
    ('0.1', 0.1),
    ('true', True),
    ('null', None),
    ('SGD', 'SGD'),
  ],
)
def test_parse_value(text, value):
  assert parse_value(text) == value


def test_malformed_yaml_names_file_and_line(tmp_path):
  path = write(
    tmp_path,
    """
      optimizer: Adam
      optimizer_kwargs: {betas: [0.9, 0.999}
      """,
  )
  with pytest.raises(jaxsched.ConfigError, match=r'config.yaml:.*line 3'):
    load_config(path)


def test_yaml_is_read_safely(tmp_path):
  path = write(tmp_path, 'optimizer: !!python/object/apply:os.system ["echo hacked"]\n')
  with pytest.raises(jaxsched.ConfigError, match='malformed YAML'):
    load_config(path)


@pytest.mark.parametrize(
  'data, words',
  [
    ({'learning_rate': -1}, ['learning_rate', '-1']),
    ({'optimizer': 3}, ['optimizer', '3']),
    ({'optimizer_kwargs': [1, 2]}, ['optimizer_kwargs', 'mapping']),
    ({'scheduler_configs': {'interval': 'epochs'}}, ['interval', "'epochs'", "Did you mean 'epoch'"]),
    ({'scheduler_configs': {'frequncy': 2}}, ['frequncy', "Did you mean 'frequency'"]),
    ({'gradient_clip_algorithm': 'norms'}, ['gradient_clip_algorithm', "'norms'"]),
    ({'accumulate_grad_batches': 0}, ['accumulate_grad_batches', '0']),
    ({'learning_rate': 0.1, 'lr': 0.1}, ['twice']),
    ({'gradient_clip_val': -0.5}, ['gradient_clip_val', '-0.5']),
    ({'lr_parameter_groups': {'': {'lr_factor': 2}}}, ['lr_parameter_groups', 'non-empty', 'every parameter']),
    (
      {'optimizer': 'optax.adam', 'learning_rate': 1e-3, 'optimizer_kwargs': {'eps': 'tiny'}},
      ['optax.adam', "eps='tiny'", 'not a number'],
    ),
    (
      {'optimizer': 'optax.adam', 'learning_rate': 1e-3, 'optimizer_kwargs': {'eps': 'nan'}},
      ['optax.adam', "eps='nan'", 'NaN'],
    ),
    ({'optimizer': 'optax.adam', 'learning_rate': 'nan'}, ['learning_rate=nan', 'real number']),
    ({'learning_rate': 10**400}, ['learning_rate=1000', 'real number']),
  ],
)
def test_bad_values(data, words):
  assert_config_error(lambda: load_config(data), words)


def test_bad_override():
  with pytest.raises(jaxsched.ConfigError, match='KEY=VALUE'):
    load_config(None, ['learning_rate'])


def test_missing_file():
  with pytest.raises(jaxsched.ConfigError, match='cannot read'):
    load_config('/nonexistent/config.yaml')


def test_optimizer_configs_monitor_is_honoured():
  assert load_config({'optimizer_configs': {'monitor': 'val_acc'}}).monitor == 'val_acc'
  assert (
    load_config({'optimizer_configs': {'monitor': 'val_acc'}, 'scheduler_configs': {'monitor': 'val_loss'}}).monitor
    == 'val_loss'
  )


def test_config_round_trips():
  c = load_config({'optimizer': 'SGD', 'lr_parameter_groups': {'bias': {'lr_factor': 2}}})
  assert load_config(c) == c and isinstance(c, Config)


@pytest.mark.parametrize(
  'data, words',
  [
    ({'optimizer': 'Adamm'}, ["'Adamm'", "Did you mean 'Adam'?"]),
    ({'optimizer': 'SGD', 'optimizer_kwargs': {'momentun': 0.9}}, ["'momentun'", "Did you mean 'momentum'?"]),
    ({'scheduler': 'StepLR'}, ['StepLR', 'step_size']),
    ({'scheduler': 'CosineAnealingLR'}, ["Did you mean 'CosineAnnealingLR'?"]),
    ({'scheduler_kwargs': {'T_max': 0}}, ['T_max', '0']),
    ({'scheduler': 'ReduceLROnPlateau', 'scheduler_kwargs': {'factor': 2}}, ['factor', '2']),
    ({'lr_parameter_groups': {'bias': {'lr_factor': 2, 'weight_decy': 0}}}, ["'weight_decy'"]),
    (
      {'optimizer': 'Adagrad', 'scheduler': 'CyclicLR', 'scheduler_kwargs': {'base_lr': 0.01, 'max_lr': 0.1}},
      ['cycle_momentum'],
    ),
  ],
)
def test_optimizer_and_scheduler_are_checked_at_load(data, words):
  assert_config_error(lambda: load_config(data), words)


def test_numbers_given_as_strings_are_numbers_in_the_config():
  # YAML 1.1 reads 1e-4 (no dot) as a string; torch would get a float, and so does every consumer of the Config
  c = load_config(
    {
      'optimizer': 'SGD',
      'optimizer_kwargs': {'weight_decay': '1e-4', 'nesterov': False},
      'lr_parameter_groups': {'bias': {'lr_factor': '2', 'weight_decay': '0'}},
      'scheduler': 'StepLR',
      'scheduler_kwargs': {'step_size': '30', 'gamma': '5e-1'},
    }
  )
  assert c.optimizer_kwargs == {'weight_decay': 1e-4, 'nesterov': False}
  assert c.lr_parameter_groups == {'bias': {'lr_factor': 2.0, 'weight_decay': 0.0}}
  assert c.scheduler_kwargs == {'step_size': 30, 'gamma': 0.5}
  alias = load_config({'optimizer': 'optax.adam', 'learning_rate': '1e-3', 'optimizer_kwargs': {'eps': '1e-8'}})
  assert alias.learning_rate == 1e-3 and alias.optimizer_kwargs == {'eps': 1e-8}
  tx = jaxsched.optimizer('optax.adam', learning_rate='1e-3', eps='1e-8')
  params = {'w': jnp.ones(2)}
  updates, _ = tx.update({'w': jnp.ones(2)}, tx.init(params), params)  # no TypeError at the first update
  np.testing.assert_allclose(updates['w'], -1e-3, rtol=1e-5)


def test_an_optax_alias_given_nan_is_an_error():
  assert_config_error(
    lambda: jaxsched.optimizer('optax.adam', learning_rate=float('nan')), ['optax.adam', 'learning_rate=nan', 'NaN']
  )
  assert_config_error(
    lambda: jaxsched.optimizer('optax.sgd', learning_rate=0.1, momentum=float('nan')),
    ['optax.sgd', 'momentum=nan', 'NaN'],
  )
