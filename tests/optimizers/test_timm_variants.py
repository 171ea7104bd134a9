"""timm's caution (``c<name>``) and corrected-weight-decay (``<name>c``) variants of the classes jaxsched
ports, against ``timm.optim.create_optimizer_v2(opt=<name>)``: every ID with weight decay on, the corrected
decay ``lr**2 / max_lr`` with an LR below max_lr (a changing one), in a config's param groups, and its errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jaxsched
from jaxsched.optimizers import TIMM_OPTIMIZERS
from oracle import assert_config_error, assert_trajectories_close, problem, x64
from timm_runs import SHAPES, timm_trajectory
from timm_runs import TIMM_OPTIM as timm_optim

VARIANTS = [
  'adoptc',
  'cadopt',
  'cadoptc',
  'cadoptw',
  'cadan',
  'cadanw',
  'clamb',
  'clambw',
  'lambcd',
  'claprop',
  'lapropc',
  'clion',
  'clionc',
  'lionc',
  'cmars',
  'cnadamw',
  'cnadamc',
  'nadamc',
  'novogradc',
  'adafactorbvc',
  'cadafactorbvc',
]
CORRECTED = ['adoptc', 'lambcd', 'lapropc', 'lionc', 'nadamc', 'novogradc', 'adafactorbvc', 'cadafactorbvc']
# AdafactorBigVision's unscaled decay: 1 - wd becomes 1 - lr / max_lr * wd
UNSCALED = {'weight_decay': 0.1, 'unscaled_wd': True}
DECAY = {'weight_decay': 0.1}
# timm's NvNovoGrad takes its float32 second moment's sqrt with torch's CPU kernel, one float32 ulp off at
# times (see test_timm_optimizers.py)
RTOL = {'novogradc': 1e-7}


def test_every_variant_of_a_ported_class_is_an_id():
  # timm's registry names whose class jaxsched ports (a base ID of the same class) are all IDs
  registry = timm_optim._optim_factory.default_registry
  ported = {registry.get_optimizer_info(n[len('timm.') :]).opt_class for n in TIMM_OPTIMIZERS}
  names = {n for n in registry.list_optimizers() if registry.get_optimizer_info(n).opt_class in ported}
  assert names == {n[len('timm.') :] for n in TIMM_OPTIMIZERS}
  assert set(VARIANTS) <= names


STEPS = 12
MAX_LR = 0.05


def _descending(k):
  # the LR below max_lr, changing at every step
  return MAX_LR * (0.9 - 0.04 * jnp.asarray(k))


LRS = [MAX_LR * (0.9 - 0.04 * k) for k in range(STEPS)]  # as _descending computes them in float64


def _check_all_against_timm(cases, dtype):
  """Each ``(name, timm_kwargs, jax_kwargs, lrs)`` run by ``create_optimizer_v2(opt=name, lr=MAX_LR, **timm_kwargs)``
  (its group lr set to ``lrs[i]`` before step i where given) and by ``timm.<name>`` with ``jax_kwargs``, all of
  jaxsched's runs compiled as one: a compile per ID would be most of the file's time."""
  params, grads = problem(SHAPES, STEPS)
  with x64(dtype):
    txs = [jaxsched.optimizer(f'timm.{name}', **jax_kwargs) for name, _, jax_kwargs, _ in cases]
    cast = functools.partial(jnp.asarray, dtype=dtype)

    @jax.jit
    def run(params, grads):
      def trajectory(tx):
        def body(carry, g):
          p, s = carry
          u, s = tx.update(g, s, p)
          p = optax.apply_updates(p, u)
          return (p, s), p

        return jax.lax.scan(body, (params, tx.init(params)), grads)[1]

      return [trajectory(tx) for tx in txs]

    runs = run(jax.tree.map(cast, params), {k: cast(np.stack([g[k] for g in grads])) for k in params})
  for (name, timm_kwargs, _, lrs), out in zip(cases, runs, strict=True):
    expected = timm_trajectory(name, {'lr': MAX_LR, **timm_kwargs}, params, grads, dtype, lrs=lrs)
    actual = [{k: np.asarray(v[i]) for k, v in out.items()} for i in range(STEPS)]
    try:
      assert_trajectories_close(actual, expected, dtype, RTOL.get(name) if dtype == 'float64' else None)
    except AssertionError as e:
      raise AssertionError(f'timm.{name}: {e}') from None


@pytest.mark.parametrize('dtype', ['float64', 'float32'])
def test_variants_match_timm(dtype):
  # float64: every new ID with weight decay, the corrected ones with a changing LR below max_lr (the
  # constructor's lr) so that lr**2 / max_lr is not lr; float32: a few at timm's constructor lr
  if dtype == 'float64':
    cases = [
      (n, DECAY, {'lr': _descending, 'max_lr': MAX_LR, **DECAY}, LRS)
      if n in CORRECTED
      else (n, DECAY, {'lr': MAX_LR, **DECAY}, None)
      for n in VARIANTS
    ]
    cases.append(('adafactorbvc', UNSCALED, {'lr': _descending, 'max_lr': MAX_LR, **UNSCALED}, LRS))
  else:
    cases = [(n, DECAY, {'lr': MAX_LR, **DECAY}, None) for n in ('cadoptc', 'clionc', 'lambcd')]
  _check_all_against_timm(cases, dtype)


def test_corrected_decay_is_lr_squared_over_max_lr():
  # one Lion step from m = 0 with a zero gradient is the decay alone: p * (1 - lr**2 / max_lr * wd)
  with x64('float64'):
    tx = jaxsched.optimizer('timm.lionc', lr=0.02, max_lr=0.08, weight_decay=0.5)
    p = {'w': jnp.asarray([1.0, -2.0])}
    u, _ = jax.jit(tx.update)({'w': jnp.zeros(2)}, tx.init(p), p)
    np.testing.assert_allclose(u['w'], -p['w'] * 0.02**2 / 0.08 * 0.5, rtol=1e-15)


@pytest.mark.parametrize('name, config_max_lr', [('timm.lionc', None), ('timm.lambcd', 0.02)], ids=str)
def test_a_config_with_parameter_groups_trains_as_timm_does(name, config_max_lr):
  # timm's second param group at half the LR keeps the constructor's lr as its max_lr (or the max_lr_snapshot
  # a group is given, as the config's max_lr is); with corrected decay Lion's step is not linear in the LR, so
  # the groups do not share one direction. Lion: a StepLR stepped every optimizer step, as torch's StepLR
  with x64('float64'):
    rng = np.random.default_rng(0)
    shapes = {'conv': (3, 4), 'recurrent': (4,)}
    init = {k: rng.normal(size=s) for k, s in shapes.items()}
    grads = [{k: 3.0 * rng.normal(size=s) for k, s in shapes.items()} for _ in range(5)]
    kwargs = {'weight_decay': 0.5, **({} if config_max_lr is None else {'max_lr': config_max_lr})}
    config = {
      'optimizer': name,
      'learning_rate': 0.01,
      'optimizer_kwargs': kwargs,
      'recurrent_learning_rate_multiplier': 0.5,
      **(
        {
          'scheduler': 'StepLR',
          'scheduler_kwargs': {'step_size': 2, 'gamma': 0.5},
          'scheduler_configs': {'interval': 'step'},
        }
        if config_max_lr is None
        else {'scheduler': None}
      ),
    }
    plan = jaxsched.plan_of(config)
    assert not plan.shares_direction(list(plan.groups))
    params = {k: jnp.asarray(v) for k, v in init.items()}
    tx = jaxsched.build(plan, params)
    state, update = jax.jit(tx.init)(params), jax.jit(tx.update)
    for g in grads:
      updates, state = update({k: jnp.asarray(v) for k, v in g.items()}, state, params)
      params = optax.apply_updates(params, updates)
    torch_params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
    snapshot = {} if config_max_lr is None else {'max_lr_snapshot': config_max_lr}
    opt = timm_optim.create_optimizer_v2(
      [
        {'params': [torch_params['conv']], **snapshot},
        {'params': [torch_params['recurrent']], 'lr': 0.005, **snapshot},
      ],
      opt=name[len('timm.') :],
      lr=0.01,
      weight_decay=0.5,
    )
    assert all(g['max_lr_snapshot'] == (config_max_lr or 0.01) for g in opt.param_groups)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5) if config_max_lr is None else None
    for g in grads:
      for k, p in torch_params.items():
        p.grad = torch.tensor(g[k])
      opt.step()
      if scheduler is not None:
        scheduler.step()
    for k, p in torch_params.items():
      np.testing.assert_allclose(np.asarray(params[k]), p.detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
  'kwargs, words',
  [
    (
      {'lr': jaxsched.schedule('StepLR', 0.01, step_size=2)},
      ['timm.lionc', 'corrected_weight_decay', 'schedule', 'max_lr'],
    ),
    ({'lr': 0.0}, ['timm.lionc', 'max_lr=0.0', '> 0']),
    ({'lr': 0.01, 'max_lr': -1.0}, ['timm.lionc', 'max_lr=-1.0', '> 0']),
    ({'max_lr': 'big'}, ['timm.lionc: max_lr', "'big'"]),
    ({'corrected_weight_decay': 'yes'}, ['timm.lionc: corrected_weight_decay', 'true or false']),
  ],
  ids=str,
)
def test_bad_corrected_decay_is_a_config_error(kwargs, words):
  assert_config_error(lambda: jaxsched.optimizer('timm.lionc', **kwargs), words)


def test_without_corrected_decay_a_schedule_needs_no_max_lr():
  # timm.lion: the decay is lr * wd; max_lr is unused, and an lr of 0 is accepted as timm accepts it
  jaxsched.optimizer('timm.lion', lr=lambda k: 0.01)
  jaxsched.optimizer('timm.lion', lr=0.0)
  assert not TIMM_OPTIMIZERS['timm.lionc'].is_lr_linear({})
  assert TIMM_OPTIMIZERS['timm.lionc'].is_lr_linear({'corrected_weight_decay': False})
