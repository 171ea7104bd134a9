"""The plan: a config read once (jaxsched.plan), checked by what it resolves to."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import jaxsched
from jaxsched.config import read_config
from jaxsched.groups import groups
from jaxsched.plan import Clipping, Plan, SchedulerEntry, make_plan, plan_of

PARAMS = {'conv': {'kernel': jnp.zeros((3, 3))}, 'recurrent_conv': {'kernel': jnp.zeros((3, 3))}}


def test_one_scheduler_is_a_one_entry_tuple_as_a_one_entry_list_is():
  single = plan_of(jaxsched.load_config({'scheduler': 'StepLR', 'scheduler_kwargs': {'step_size': 3}}))
  listed = plan_of(
    jaxsched.load_config({'schedulers': [{'scheduler': 'StepLR', 'scheduler_kwargs': {'step_size': 3}}]})
  )
  assert single.schedulers == listed.schedulers
  (entry,) = single.schedulers
  assert entry == SchedulerEntry('StepLR', {'step_size': 3}, 'epoch', 1, 'train_loss', None, True)
  assert single.scheduler is entry


def test_a_list_keeps_its_order_configs_and_where_each_entry_came_from():
  plan = plan_of(
    jaxsched.load_config(
      {
        'schedulers': [
          {'scheduler': 'LinearLR', 'scheduler_configs': {'interval': 'step', 'name': 'warm'}},
          {'scheduler': 'ReduceLROnPlateau', 'scheduler_configs': {'monitor': 'val_loss', 'frequency': 2}},
        ]
      }
    )
  )
  assert [e.scheduler for e in plan.schedulers] == ['LinearLR', 'ReduceLROnPlateau']
  assert [e.interval for e in plan.schedulers] == ['step', 'epoch']
  assert [e.name for e in plan.schedulers] == ['warm', None]
  assert plan.schedulers[1].configs == {
    'interval': 'epoch',
    'frequency': 2,
    'monitor': 'val_loss',
    'name': None,
    'strict': True,
  }
  assert [e.where for e in plan.schedulers] == ['schedulers[0].scheduler_kwargs', 'schedulers[1].scheduler_kwargs']
  assert [e.is_plateau for e in plan.schedulers] == [False, True]
  assert plan.scheduler is None


def test_a_constant_lr_has_no_scheduler_entries():
  plan = plan_of(jaxsched.load_config({'scheduler': None}))
  assert plan.schedulers == () and plan.scheduler is None


def test_a_sequential_lr_ending_in_a_plateau_is_plateau_driven():
  plan = plan_of(
    jaxsched.load_config(
      {
        'scheduler': 'SequentialLR',
        'scheduler_kwargs': {
          'schedulers': [{'scheduler': 'LinearLR'}, {'scheduler': 'ReduceLROnPlateau'}],
          'milestones': [2],
        },
      }
    )
  )
  assert plan.schedulers[0].is_plateau


def test_making_the_plan_reads_numbers_given_as_strings():
  plan = make_plan(
    read_config(
      {
        'optimizer': 'AdamW',
        'optimizer_kwargs': {'weight_decay': '1e-4'},
        'scheduler': 'StepLR',
        'scheduler_kwargs': {'step_size': 2, 'gamma': '5e-1'},
      }
    )
  )
  assert plan.config.optimizer_kwargs['weight_decay'] == 1e-4
  assert plan.schedulers[0].kwargs['gamma'] == 0.5
  assert plan.spec is jaxsched.OPTIMIZERS['AdamW'] and plan.optimizer == 'AdamW'


def test_making_the_plan_is_validation():
  with pytest.raises(jaxsched.ConfigError, match='gama'):
    make_plan(read_config({'scheduler': 'StepLR', 'scheduler_kwargs': {'step_size': 2, 'gama': 0.5}}))


def test_plan_of_takes_a_plan_a_checked_config_or_a_source():
  plan = plan_of({'optimizer': 'SGD', 'learning_rate': 0.1})
  assert isinstance(plan, Plan) and plan_of(plan) is plan
  assert plan_of(plan.config) == plan


def test_groups_are_torch_param_groups_in_order_with_their_base_lrs():
  plan = plan_of(
    {
      'optimizer': 'SGD',
      'learning_rate': 0.1,
      'recurrent_learning_rate_multiplier': 0.5,
      'lr_parameter_groups': {'conv': {'lr_factor': 2.0, 'weight_decay': 0.01}},
    }
  )
  assert [(g.name, g.learning_rate, g.lr_factor) for g in plan.groups] == [
    ('regular', 0.1, 1.0),
    ('recurrent', 0.05, 0.5),
    ('conv', 0.2, 2.0),
  ]
  assert plan.groups[2].optimizer_kwargs['weight_decay'] == 0.01


@pytest.mark.parametrize(
  ('given', 'clipping'),
  [(None, None), (0.0, None), (1.5, Clipping(1.5, 'norm'))],
)
def test_clipping_is_none_where_lightning_does_not_clip(given, clipping):
  assert plan_of({'gradient_clip_val': given}).clipping == clipping


def test_groups_share_one_direction_only_where_the_optimizer_is_linear_in_the_lr():
  linear = plan_of({'optimizer': 'Adam', 'recurrent_learning_rate_multiplier': 0.5})
  assert linear.shares_direction(groups(linear.config, PARAMS))
  asgd = plan_of({'optimizer': 'ASGD', 'recurrent_learning_rate_multiplier': 0.5})
  assert not asgd.shares_direction(groups(asgd.config, PARAMS))
  own_keywords = plan_of(
    {'optimizer': 'Adam', 'lr_parameter_groups': {'recurrent': {'lr_factor': 0.5, 'weight_decay': 0.1}}}
  )
  assert not own_keywords.shares_direction(groups(own_keywords.config, PARAMS))
  one_group = plan_of({'optimizer': 'Adam'})
  assert not one_group.shares_direction(groups(one_group.config, {'conv': jnp.zeros(3)}))
