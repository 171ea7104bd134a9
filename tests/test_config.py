"""load_config: YAML files, mappings, DynVision files with unrelated keys, overrides, errors."""

import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsched
from helpers import assert_config_error
from jaxsched import load_config
from jaxsched.config import Config, parse_value


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


LISTED = {
  'optimizer': 'SGD',
  'schedulers': [
    {'scheduler': 'StepLR', 'scheduler_kwargs': {'step_size': 2}},
    {
      'scheduler': 'SequentialLR',
      'scheduler_kwargs': {
        'milestones': [3],
        'schedulers': [
          {'scheduler': 'LinearLR', 'scheduler_kwargs': {'start_factor': 0.2}},
          {'scheduler': 'ExponentialLR', 'scheduler_kwargs': {'gamma': 0.9}},
        ],
      },
      'scheduler_configs': {'interval': 'step'},
    },
  ],
}


def test_dotted_overrides_index_lists():
  c = load_config(
    LISTED,
    [
      'schedulers.0.scheduler_kwargs.gamma=0.5',
      'schedulers.1.scheduler_kwargs.schedulers.1.scheduler_kwargs.gamma=1e-1',  # a string in YAML 1.1, read as 0.1
      'schedulers.1.scheduler_kwargs.milestones.0=4',
      'schedulers.1.scheduler_configs.frequency=2',
    ],
  )
  assert c.schedulers[0]['scheduler_kwargs'] == {'step_size': 2, 'gamma': 0.5}
  sequential = c.schedulers[1]['scheduler_kwargs']
  assert sequential['milestones'] == [4] and sequential['schedulers'][1]['scheduler_kwargs'] == {'gamma': 0.1}
  assert c.schedulers[1]['scheduler_configs']['frequency'] == 2
  assert LISTED['schedulers'][0]['scheduler_kwargs'] == {'step_size': 2}  # the source is not modified
  replaced = load_config(LISTED, ['schedulers.0={scheduler:ExponentialLR,scheduler_kwargs:{gamma:0.9}}'])
  assert replaced.schedulers[0]['scheduler'] == 'ExponentialLR'
  members = [{k: e[k] for k in ('scheduler', 'scheduler_kwargs')} for e in LISTED['schedulers']]
  single = {'scheduler': 'ChainedScheduler', 'scheduler_kwargs': {'schedulers': members}}
  c = load_config(single, ['scheduler_kwargs.schedulers.0.scheduler_kwargs.step_size=5'])
  assert c.scheduler_kwargs['schedulers'][0]['scheduler_kwargs'] == {'step_size': 5}


def test_an_override_changing_an_entrys_scheduler_drops_the_files_keywords_it_does_not_take():
  with pytest.warns(
    jaxsched.ConfigWarning, match=r'schedulers\.0\.scheduler_kwargs step_size=2 dropped.*ExponentialLR'
  ):
    c = load_config(LISTED, ['schedulers.0.scheduler=ExponentialLR', 'schedulers.0.scheduler_kwargs.gamma=0.5'])
  assert c.schedulers[0]['scheduler'] == 'ExponentialLR' and c.schedulers[0]['scheduler_kwargs'] == {'gamma': 0.5}
  assert_config_error(  # keywords the overrides set are kept, so a wrong one is still an error
    lambda: load_config(LISTED, ['schedulers.0.scheduler=ExponentialLR', 'schedulers.0.scheduler_kwargs.step_size=3']),
    ['schedulers[0]', "'step_size'"],
  )


@pytest.mark.parametrize(
  'override, words',
  [
    (
      'schedulers.2.scheduler_kwargs.gamma=0.5',
      ['override schedulers.2.scheduler_kwargs.gamma', '2 entries', '0 to 1'],
    ),
    ('schedulers.first.scheduler_kwargs.gamma=0.5', ['schedulers is a list of 2', '0 to 1', "not 'first'"]),
    ('schedulers.-1.scheduler_kwargs.gamma=0.5', ['schedulers is a list of 2', "not '-1'"]),
    (
      'schedulers.1.scheduler_kwargs.schedulers.7.scheduler=StepLR',
      ['schedulers.1.scheduler_kwargs.schedulers has 2 entries', '7 is out of range', '0 to 1'],
    ),
    ('scheduler_kwargs.schedulers.0.scheduler=StepLR', ['scheduler_kwargs.schedulers is not a list', 'not set']),
    ('schedulers.0.scheduler_kwargs.step_size.0=1', ['schedulers.0.scheduler_kwargs.step_size is not a list', '2']),
    # the override's value is checked as a file's value
    ('schedulers.0.scheduler_kwargs.gamma=abc', ['schedulers[0]', 'StepLR', "gamma='abc'"]),
    ('schedulers.1.scheduler_configs.interval=hourly', ['schedulers[1].scheduler_configs.interval']),
    ('schedulers.1.scheduler_kwargs.schedulers.0.scheduler_kwargs.start_factor=2', ['schedulers[1]', 'start_factor']),
  ],
)
def test_bad_list_overrides_are_config_errors(override, words):
  assert_config_error(lambda: load_config(LISTED, [override]), words)


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
