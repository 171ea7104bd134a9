"""The lr_lambda expression parser and the schedules' error messages."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsched
from helpers import PY_MATH, assert_config_error
from jaxsched.schedules import compile_expression

EXPRESSIONS = [
  '0.95 ** epoch',
  '2 ** -epoch',
  'epoch // 30',
  '(epoch + 1) % 7 - 3',
  '-epoch % 4',
  'min(1.0, (epoch + 1) / 10)',
  'max(0.1, 1 - epoch / 50, 0.2)',
  'abs(epoch - 20) / 20',
  'exp(-0.01 * epoch) * sqrt(epoch + 1)',
  'log(epoch + 2) / log(2)',
  '0.5 * (1 + cos(pi * epoch / 40)) + sin(epoch) ** 2',
  '+epoch * 2.5e-2',
  '1e-3',
  '0.9 ** (epoch // 3) * min(1, (epoch + 1) / 5)',
]


@pytest.mark.parametrize('x64', [True, False])
@pytest.mark.parametrize('source', EXPRESSIONS)
def test_expression_values(source, x64):
  counts = list(range(0, 100, 7))
  expected = np.array([eval(source, dict(PY_MATH), {'epoch': n}) for n in counts], np.float64)  # noqa: S307
  with jax.enable_x64(x64):
    fn = compile_expression(source, 'lr_lambda').fn
    actual = np.asarray(jax.jit(jax.vmap(fn))(jnp.asarray(counts)), np.float64)
    assert fn(jnp.asarray(3)).dtype == (jnp.float64 if x64 else jnp.float32)
  np.testing.assert_allclose(actual, expected, rtol=1e-12 if x64 else 1e-6, atol=1e-12 if x64 else 1e-7)


def test_constant_expressions_are_known():
  assert compile_expression('0.5 * 2 ** 2', 'k').constant == 2.0
  assert compile_expression('0.95 ** epoch', 'k').constant is None


@pytest.mark.parametrize(
  'source, message, column',
  [
    ('epoch ** ', 'not a valid expression', None),
    ('__import__("os")', "unknown function '__import__'", 0),
    ('epoch.real', 'Attribute is not allowed', 0),
    ('0.9 if epoch < 3 else 1', 'IfExp is not allowed', 0),
    ('step * 0.9', "unknown name 'step'", 0),
    ('1 + (lambda: 2)()', 'unknown function', 4),
    ('1 + [2]', 'List is not allowed', 4),
    ('min(epoch)', 'min() takes at least 2 argument(s), got 1', 0),
    ('cos(epoch, 2)', 'cos() takes 1 argument(s), got 2', 0),
    ('exp(x=epoch)', 'takes no keyword arguments', 6),
    ("'a' * epoch", "'a' is not a number", 0),
    ('True * epoch', 'True is not a number', 0),
    ('epoch << 2', 'LShift is not allowed', None),
    ('[epoch][0]', 'is not allowed', 0),
    ('1 / 0', 'cannot evaluate', 0),
  ],
)
def test_expression_errors_point_at_the_problem(source, message, column):
  with pytest.raises(jaxsched.ConfigError) as e:
    jaxsched.schedule('LambdaLR', 0.1, lr_lambda=source)
  text = str(e.value)
  assert message in text and 'lr_lambda' in text, text
  if column is not None:
    caret = text.splitlines()[-1]
    assert caret.index('^') - 2 == column, text


def test_no_eval_of_user_text():
  import inspect

  import jaxsched.schedules._expr as mod

  src = inspect.getsource(mod)
  for word in ('eval(', 'exec(', 'compile('):
    assert word not in src.replace('compile_expression(', '').replace('ast.parse', '')


def test_callables_and_numbers():
  with jax.enable_x64(True):
    s = jaxsched.schedule('LambdaLR', 0.1, lr_lambda=lambda n: jnp.minimum(1.0, (n + 1) / 10))
    assert float(s(4)) == pytest.approx(0.05)
    s = jaxsched.schedule('MultiplicativeLR', 0.1, lr_lambda=0.5)
    assert float(s(3)) == pytest.approx(0.0125)
    s = jaxsched.schedule(
      'CyclicLR', 0.1, base_lr=0.0, max_lr=1.0, step_size_up=2, scale_fn=lambda x: 1.0 / x, cycle_momentum=False
    )
    assert float(s(6)) == pytest.approx(0.5)  # cycle 2, top of the ramp


@pytest.mark.parametrize(
  'name, kwargs, words',
  [
    ('StepLR', {}, ["missing required keyword 'step_size'"]),
    ('ExponentialLR', {}, ["'gamma'"]),
    ('MultiStepLR', {}, ["'milestones'"]),
    ('LambdaLR', {}, ["'lr_lambda'"]),
    ('OneCycleLR', dict(total_steps=10), ["'max_lr'"]),
    ('OneCycleLR', dict(max_lr=0.1), ['total_steps', 'epochs', 'steps_per_epoch']),
    ('OneCycleLR', dict(max_lr=0.1, epochs=3), ['steps_per_epoch']),
    ('OneCycleLR', dict(max_lr=0.1, total_steps=0), ['total_steps=0']),
    ('CyclicLR', dict(max_lr=0.1), ["'base_lr'"]),
    ('CosineAnnealingWarmRestarts', {}, ["'T_0'"]),
    ('LinearWarmupCosineAnnealingLR', dict(warmup_epochs=3), ["'max_epochs'"]),
    ('SequentialLR', dict(milestones=[]), ["'schedulers'"]),
    ('StepLR', dict(step_size=3, gama=0.5), ["'gama'", "Did you mean 'gamma'"]),
    ('CosineAnnealingLR', dict(T_max=10, eta_mn=0.0), ["Did you mean 'eta_min'"]),
    ('StepLR', dict(step_size=0), ['step_size=0']),
    ('CyclicLR', dict(base_lr=0.1, max_lr=1, mode='triangle'), ["Did you mean 'triangular'"]),
  ],
)
def test_config_errors(name, kwargs, words):
  assert_config_error(lambda: jaxsched.schedule(name, 0.1, **kwargs), words)


def test_unknown_scheduler_names_the_nearest():
  with pytest.raises(jaxsched.ConfigError, match="Did you mean 'CosineAnnealingLR'"):
    jaxsched.schedule('CosineAnealingLR', 0.1)
  with pytest.raises(jaxsched.ConfigError, match='metric'):
    jaxsched.schedule('ReduceLROnPlateau', 0.1)


def M(name, **kw):
  return {'scheduler': name, 'scheduler_kwargs': kw}


# Inputs torch cannot run: ConfigError at construction (the torch error in the comment).
@pytest.mark.parametrize(
  'name, kwargs, words',
  [
    ('LinearWarmupCosineAnnealingLR', dict(warmup_epochs=5, max_epochs=5), ['max_epochs=5', 'warmup_epochs=5']),
    ('ConstantLR', dict(factor=0.0, total_iters=3), ['factor=0']),  # ZeroDivisionError at step 3
    ('OneCycleLR', dict(max_lr=0.1, total_steps=10, pct_start=0.1), ['zero steps']),  # 0/0 at step 0
    ('OneCycleLR', dict(max_lr=0.1, total_steps=10, pct_start=1.0), ['zero steps']),  # x/0 at step 10
    (
      'SequentialLR',
      dict(schedulers=[M('StepLR', step_size=2), M('LinearLR', total_iters=0)], milestones=[3]),
      ['schedulers[1]', 'LinearLR with total_iters=0'],
    ),
    ('SequentialLR', dict(schedulers=[M('StepLR', step_size=2)], milestones=[3]), ['expected 0 milestone(s)']),
    (
      'SequentialLR',
      dict(
        schedulers=[M('StepLR', step_size=2), M('StepLR', step_size=2), M('StepLR', step_size=2)], milestones=[5, 3]
      ),
      ['non-decreasing'],
    ),
    ('SequentialLR', dict(schedulers=[M('StepLR')], milestones=[]), ['schedulers[0]', "'step_size'"]),
    ('ChainedScheduler', dict(schedulers=[M('StepLR', step_size=2, gama=1)]), ['schedulers[0]', "'gamma'"]),
    ('ChainedScheduler', dict(schedulers=[M('OneCycleLR', max_lr=1, total_steps=5)]), ['not supported']),
    ('ChainedScheduler', dict(schedulers=[M('StepLr', step_size=2)]), ["Did you mean 'StepLR'"]),
    ('ChainedScheduler', dict(schedulers=[{'schedular': 'StepLR'}]), ["Did you mean 'scheduler'"]),
    ('ChainedScheduler', dict(schedulers=[]), ['non-empty']),
    ('PolynomialLR', dict(power=-1.0), ['power=-1.0']),
  ],
)
def test_inputs_torch_cannot_run(name, kwargs, words):
  assert_config_error(lambda: jaxsched.schedule(name, 0.1, **kwargs), words)


def test_degenerate_inputs_stay_finite():
  with jax.enable_x64(True):
    w = jaxsched.schedule('LinearWarmupCosineAnnealingLR', 0.1, warmup_epochs=1, max_epochs=2, warmup_start_lr=0.01)
    vals = np.asarray(jax.vmap(w)(jnp.arange(10)))
    assert np.all(np.isfinite(vals)) and vals[0] == pytest.approx(0.01) and vals[1] == pytest.approx(0.1)
    for name, kw in [
      ('LinearLR', dict(total_iters=0)),
      ('PolynomialLR', dict(total_iters=0)),
      ('ConstantLR', dict(factor=0.0, total_iters=0)),
      ('OneCycleLR', dict(max_lr=0.1, total_steps=1, pct_start=0.0)),
      ('CyclicLR', dict(base_lr=0.0, max_lr=1.0, step_size_up=1, step_size_down=0)),
    ]:
      vals = np.asarray(jax.vmap(jaxsched.schedule(name, 0.1, **kw))(jnp.arange(5)))
      assert np.all(np.isfinite(vals)), (name, vals)


@pytest.mark.parametrize(
  'lr_lambda, words',
  [
    (float('nan'), ['lr_lambda=nan', 'must be finite']),
    (float('inf'), ['lr_lambda=inf', 'must be finite']),
    (10**400, ['must be finite']),
    ('1e999 * epoch', ['not finite']),
    ('1e308 * 10 * epoch', ['the result is inf, not a finite number']),
    ('(1e308 + 1e308) ** epoch', ['not a finite number']),
  ],
)
def test_lr_lambda_numbers_must_be_finite(lr_lambda, words):
  for name in ('LambdaLR', 'MultiplicativeLR'):  # MultiplicativeLR: a constant factor's power
    assert_config_error(lambda: jaxsched.schedule(name, 0.1, lr_lambda=lr_lambda), [f'{name}: lr_lambda', *words])  # noqa: B023


@pytest.mark.parametrize(
  'fn, error',
  [
    (lambda n: math.exp(-n), 'ConcretizationTypeError'),
    (lambda n: 0.9 if n < 3 else 0.1, 'TracerBoolConversionError'),
    (lambda n: np.exp(-n), 'TracerArrayConversionError'),
    (lambda: 1.0, 'TypeError'),
  ],
)
def test_lr_lambda_callables_must_trace(fn, error):
  assert_config_error(
    lambda: jaxsched.schedule('LambdaLR', 0.1, lr_lambda=fn),
    ['LambdaLR: lr_lambda=<function', f'fails at step 0 ({error}', 'jnp-traceable'],
  )
  assert_config_error(
    lambda: jaxsched.schedule('MultiplicativeLR', 0.1, lr_lambda=fn),  # traced on blocks of steps
    ['MultiplicativeLR: lr_lambda=<function', 'fails at step 0', 'jnp-traceable'],
  )
  assert_config_error(
    lambda: jaxsched.schedule('ChainedScheduler', 0.1, schedulers=[M('LambdaLR', lr_lambda=fn)]),
    ['schedulers[0].lr_lambda=<function', error],
  )


@pytest.mark.filterwarnings('ignore:overflow encountered in cast')  # 1e39 as a float32
def test_first_lr_must_be_finite():
  assert_config_error(
    lambda: jaxsched.schedule('LambdaLR', 0.1, lr_lambda=lambda n: 1.0 / n),
    ['LambdaLR: lr_lambda=<function', 'learning rate of inf at step 0'],
  )
  assert_config_error(
    lambda: jaxsched.schedule('StepLR', 1e39, step_size=2),  # beyond float32
    ['learning_rate=1e+39, step_size=2', 'learning rate of inf at step 0 (float32, finite up to'],
  )
  with jax.enable_x64(True):
    assert float(jaxsched.schedule('StepLR', 1e39, step_size=2)(0)) == 1e39
    assert_config_error(
      lambda: jaxsched.schedule('OneCycleLR', 0.1, max_lr=0.1, total_steps=9, div_factor=1e-320),
      ['div_factor=1e-320', 'learning rate of inf at step 0 (float64'],
    )
  jaxsched.schedule('MultiplicativeLR', 0.1, lr_lambda='1 / epoch')  # torch never calls lr_lambda(0) there


def test_first_lr_is_checked_under_jit_too():
  f = jax.jit(lambda n: jaxsched.schedule('StepLR', 0.1, step_size=2)(n))
  assert float(f(4)) == pytest.approx(1e-3)
  with pytest.raises(jaxsched.ConfigError, match='step 0'):
    jax.jit(lambda n: jaxsched.schedule('LambdaLR', 0.1, lr_lambda='1/epoch')(n))(3)


@pytest.mark.torch
def test_table_lists_torch_keywords():
  import inspect

  import torch

  for name, spec in jaxsched.SCHEDULES.items():
    assert spec.doc, name
    cls = getattr(torch.optim.lr_scheduler, name, None)
    if cls is None:
      continue
    params = [
      p for p in inspect.signature(cls.__init__).parameters if p not in ('self', 'optimizer', 'last_epoch', 'verbose')
    ]
    assert list(spec.kwargs) == params, name
