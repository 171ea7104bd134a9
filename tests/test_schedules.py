"""jaxsched.schedule against torch.optim.lr_scheduler, stepped for real.

The oracle: ``torch.optim.SGD`` (or Adam for beta1) on one parameter with
lr=learning_rate, the torch scheduler built on it (members first, in order, for
the composites), ``get_last_lr()[0]`` and the group's momentum after 0..K
``step()`` calls. jaxsched's curve is evaluated through ``jit(vmap(sched))`` in
float64 (x64 on) and float32 (x64 off).
"""

from __future__ import annotations

import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import jaxsched
from oracle import PY_MATH, assert_config_error

TOLERANCE = {'float64': 1e-9, 'float32': 1e-6}
DTYPES = ('float64', 'float32')
FLOOR = 1e-6  # values below FLOOR * the curve's peak are compared at that floor


def py_lambda(expr, variable='epoch'):
  """The torch side of an expression string (the test's own strings)."""
  if not isinstance(expr, str):
    return lambda e: expr
  code = compile(expr, '<lambda>', 'eval')
  return lambda e: eval(code, dict(PY_MATH), {variable: e})  # noqa: S307 (test oracle only)


class LinearWarmupCosineAnnealingLR(torch.optim.lr_scheduler.LRScheduler):
  """pl_bolts' LinearWarmupCosineAnnealingLR (the DynVision reference), verbatim logic."""

  def __init__(self, optimizer, warmup_epochs, max_epochs, warmup_start_lr=0.0, eta_min=0.0, last_epoch=-1):
    self.warmup_epochs = warmup_epochs
    self.max_epochs = max_epochs
    self.warmup_start_lr = warmup_start_lr
    self.eta_min = eta_min
    super().__init__(optimizer, last_epoch)

  def get_lr(self):
    if self.last_epoch == 0:
      return [self.warmup_start_lr] * len(self.base_lrs)
    if self.last_epoch < self.warmup_epochs:
      return [
        group['lr'] + (base_lr - self.warmup_start_lr) / (self.warmup_epochs - 1)
        for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups)
      ]
    if self.last_epoch == self.warmup_epochs:
      return self.base_lrs
    if (self.last_epoch - 1 - self.max_epochs) % (2 * (self.max_epochs - self.warmup_epochs)) == 0:
      return [
        group['lr'] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / (self.max_epochs - self.warmup_epochs))) / 2
        for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups)
      ]
    return [
      (1 + math.cos(math.pi * (self.last_epoch - self.warmup_epochs) / (self.max_epochs - self.warmup_epochs)))
      / (1 + math.cos(math.pi * (self.last_epoch - self.warmup_epochs - 1) / (self.max_epochs - self.warmup_epochs)))
      * (group['lr'] - self.eta_min)
      + self.eta_min
      for group in self.optimizer.param_groups
    ]

  def _get_closed_form_lr(self):
    if self.last_epoch < self.warmup_epochs:
      return [
        self.warmup_start_lr + self.last_epoch * (base_lr - self.warmup_start_lr) / max(1, self.warmup_epochs - 1)
        for base_lr in self.base_lrs
      ]
    return [
      self.eta_min
      + 0.5
      * (base_lr - self.eta_min)
      * (1 + math.cos(math.pi * (self.last_epoch - self.warmup_epochs) / (self.max_epochs - self.warmup_epochs)))
      for base_lr in self.base_lrs
    ]


def _torch_kwargs(name, kwargs):
  kw = dict(kwargs)
  if name == 'CosineAnnealingLR':
    kw.setdefault('T_max', 250)  # the reference page's default; torch requires it
  if name in ('LambdaLR', 'MultiplicativeLR'):
    kw['lr_lambda'] = py_lambda(kw['lr_lambda'])
  if name == 'CyclicLR' and isinstance(kw.get('scale_fn'), str):
    kw['scale_fn'] = py_lambda(kw['scale_fn'], 'x')
  if name == 'OneCycleLR' and 'pct_start' in kw:
    kw['pct_start'] = float(kw['pct_start'])
  return kw


def torch_scheduler(name, opt, kwargs):
  if name in ('SequentialLR', 'ChainedScheduler'):
    members = [torch_scheduler(m['scheduler'], opt, m.get('scheduler_kwargs', {})) for m in kwargs['schedulers']]
    if name == 'SequentialLR':
      return torch.optim.lr_scheduler.SequentialLR(opt, members, milestones=list(kwargs['milestones']))
    return torch.optim.lr_scheduler.ChainedScheduler(members)
  if name == 'LinearWarmupCosineAnnealingLR':
    return LinearWarmupCosineAnnealingLR(opt, **kwargs)
  if name == 'SWALR':
    return torch.optim.swa_utils.SWALR(opt, **kwargs)
  return getattr(torch.optim.lr_scheduler, name)(opt, **_torch_kwargs(name, kwargs))


def torch_curve(name, lr, kwargs, steps, optimizer='SGD'):
  """(lrs, momentums) after 0..steps scheduler steps; momentums is beta1 for Adam."""
  p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
  if optimizer == 'SGD':
    opt = torch.optim.SGD([p], lr=lr, momentum=0.9)
    mom = lambda: opt.param_groups[0]['momentum']
  else:
    opt = torch.optim.Adam([p], lr=lr)
    mom = lambda: opt.param_groups[0]['betas'][0]
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    sched = torch_scheduler(name, opt, kwargs)
    lrs, moms = [sched.get_last_lr()[0]], [mom()]
    for _ in range(steps):
      opt.step()
      sched.step()
      lrs.append(sched.get_last_lr()[0])
      moms.append(mom())
  return np.array(lrs, np.float64), np.array(moms, np.float64)


def jax_curve(name, lr, kwargs, steps, dtype):
  """(lrs, momentums or None) from one ``jit(vmap(...))`` over counts 0..steps."""
  with jax.enable_x64(dtype == 'float64'):
    sched = jaxsched.schedule(name, lr, **kwargs)
    mom = sched.momentum
    fn = (lambda n: (sched(n), mom(n))) if mom is not None else (lambda n: (sched(n), sched(n)))
    out, m = jax.jit(jax.vmap(fn))(jnp.arange(steps + 1))
    assert out.dtype == jnp.dtype(dtype) and m.dtype == jnp.dtype(dtype), (out.dtype, m.dtype)
    return np.asarray(out, np.float64), (None if mom is None else np.asarray(m, np.float64))


def rel_diff(actual, expected):
  """max |a - e| / max(|e|, FLOOR * max|e|)."""
  scale = np.maximum(np.abs(expected), FLOOR * max(np.max(np.abs(expected)), 1e-300))
  return float(np.max(np.abs(actual - expected) / scale))


MEASURED: dict = {}


def assert_matches_torch(name, lr, kwargs, steps, dtypes=DTYPES, tol=None, momentum=None):
  expected, moms = torch_curve(name, lr, kwargs, steps)
  for dtype in dtypes:
    actual, actual_m = jax_curve(name, lr, kwargs, steps, dtype)
    d = rel_diff(actual, expected)
    MEASURED[(name, dtype)] = max(MEASURED.get((name, dtype), 0.0), d)
    limit = (tol or TOLERANCE)[dtype]
    assert d <= limit, f'{name} {kwargs} {dtype}: lr max rel diff {d:.3g} > {limit:g}\n{actual}\n{expected}'
    if momentum:
      dm = rel_diff(actual_m, moms)
      MEASURED[(name + '.momentum', dtype)] = max(MEASURED.get((name + '.momentum', dtype), 0.0), dm)
      assert dm <= limit, f'{name} {kwargs} {dtype}: momentum max rel diff {dm:.3g}'
    else:
      assert actual_m is None or name not in ('CyclicLR', 'OneCycleLR') or kwargs.get('cycle_momentum') is False


# ---------------------------------------------------------------------------
# Random kwargs for every scheduler (hypothesis), against torch.


def _ints(lo, hi):
  return st.integers(lo, hi)


def _reals(lo, hi):
  return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


LAMBDAS = st.one_of(
  _reals(0.8, 1.0).map(lambda a: f'{a!r} ** epoch'),
  _ints(1, 12).map(lambda w: f'min(1.0, (epoch + 1) / {w})'),
  _reals(0.01, 0.5).map(lambda a: f'1 / (1 + {a!r} * epoch)'),
  _ints(1, 9).map(lambda p: f'0.5 ** (epoch // {p}) * (1 + 0.1 * (epoch % 3))'),
  _ints(2, 40).map(lambda t: f'0.5 * (1 + cos(pi * min(epoch, {t}) / {t})) + 0.01'),
  _reals(0.5, 2.0),
)
FACTORS = st.one_of(
  _reals(0.8, 1.05),
  _reals(0.8, 1.0).map(repr),
  _ints(2, 9).map(lambda p: f'0.9 + 0.01 * (epoch % {p})'),
  _reals(0.001, 0.05).map(lambda a: f'max(0.5, 1 - {a!r} * sqrt(epoch))'),
)

KWARGS = {
  'LambdaLR': st.fixed_dictionaries({'lr_lambda': LAMBDAS}),
  'MultiplicativeLR': st.fixed_dictionaries({'lr_lambda': FACTORS}),
  'StepLR': st.fixed_dictionaries({'step_size': _ints(1, 20)}, optional={'gamma': _reals(0.05, 1.5)}),
  'MultiStepLR': st.fixed_dictionaries(
    {'milestones': st.lists(_ints(-3, 70), max_size=5)}, optional={'gamma': _reals(0.05, 1.5)}
  ),
  'ConstantLR': st.fixed_dictionaries({}, optional={'factor': _reals(0.01, 1.0), 'total_iters': _ints(0, 30)}),
  'LinearLR': st.fixed_dictionaries(
    {}, optional={'start_factor': _reals(0.01, 1.0), 'end_factor': _reals(0.0, 1.0), 'total_iters': _ints(0, 40)}
  ),
  'ExponentialLR': st.fixed_dictionaries({'gamma': _reals(0.5, 1.05)}),
  'PolynomialLR': st.fixed_dictionaries({}, optional={'total_iters': _ints(0, 50), 'power': _reals(0.0, 4.0)}),
  'CosineAnnealingLR': st.fixed_dictionaries({}, optional={'T_max': _ints(1, 60), 'eta_min': _reals(0.0, 0.05)}),
  'CosineAnnealingWarmRestarts': st.fixed_dictionaries(
    {'T_0': _ints(1, 25)}, optional={'T_mult': _ints(1, 3), 'eta_min': _reals(0.0, 0.05)}
  ),
  'LinearWarmupCosineAnnealingLR': _ints(1, 20).flatmap(
    lambda w: st.fixed_dictionaries(
      {'warmup_epochs': st.just(w), 'max_epochs': _ints(w + 1, w + 60)},
      optional={'warmup_start_lr': _reals(0.0, 0.2), 'eta_min': _reals(0.0, 0.05)},
    )
  ),
  'CyclicLR': st.fixed_dictionaries(
    {'base_lr': _reals(1e-4, 0.05), 'max_lr': _reals(0.05, 1.0)},
    optional={
      'step_size_up': _ints(1, 30),
      'step_size_down': st.none() | _ints(0, 30),
      'mode': st.sampled_from(['triangular', 'triangular2', 'exp_range']),
      'gamma': _reals(0.9, 1.0),
      'cycle_momentum': st.booleans(),
      'base_momentum': _reals(0.5, 0.85),
      'max_momentum': _reals(0.85, 0.99),
    },
  ),
  'OneCycleLR': st.fixed_dictionaries(
    {'max_lr': _reals(0.01, 1.0), 'total_steps': _ints(1, 300)},
    optional={
      'pct_start': _reals(0.0, 1.0),
      'anneal_strategy': st.sampled_from(['cos', 'linear']),
      'div_factor': _reals(1.0, 100.0),
      'final_div_factor': _reals(1.0, 1e5),
      'three_phase': st.booleans(),
      'base_momentum': _reals(0.5, 0.85),
      'max_momentum': _reals(0.85, 0.99),
    },
  ),
}
_MEMBER_NAMES = [n for n in KWARGS if n not in ('CyclicLR', 'OneCycleLR')]
MEMBER = st.sampled_from(_MEMBER_NAMES).flatmap(
  lambda n: KWARGS[n].map(lambda kw: {'scheduler': n, 'scheduler_kwargs': kw})
)
KWARGS['SequentialLR'] = st.lists(MEMBER, min_size=1, max_size=3).flatmap(
  lambda ms: st.lists(_ints(0, 40), min_size=len(ms) - 1, max_size=len(ms) - 1).map(
    lambda mi: {'schedulers': ms, 'milestones': sorted(mi)}
  )
)
KWARGS['ChainedScheduler'] = st.lists(MEMBER, min_size=1, max_size=3).map(lambda ms: {'schedulers': ms})

ALL_NAMES = sorted(KWARGS)
EXAMPLES = min(__import__('hypothesis').settings().max_examples, 6)  # the profile caps it; compiles dominate


def _steps(name, kwargs):
  if name == 'OneCycleLR':
    return kwargs['total_steps']
  return 100


def _torch_raises(name, lr, kwargs, steps) -> bool:
  try:
    torch_curve(name, lr, kwargs, steps)
  except (ZeroDivisionError, ValueError, OverflowError):
    return True
  return False


@pytest.mark.parametrize('name', ALL_NAMES)
@__import__('hypothesis').settings(max_examples=EXAMPLES)
@given(data=st.data(), lr=_reals(1e-4, 1.0))
def test_random_kwargs_match_torch(name, data, lr):
  kwargs = data.draw(KWARGS[name], label='kwargs')
  steps = _steps(name, kwargs)
  try:
    jaxsched.schedule(name, lr, **kwargs)
  except jaxsched.ConfigError:
    # jaxsched refuses exactly what torch cannot run.
    assert _torch_raises(name, lr, kwargs, steps), f'{name} {kwargs}: ConfigError but torch runs'
    return
  # An epoch-dependent MultiplicativeLR factor is a product of n float32
  # factors: about n * 2**-24 relative in float32.
  loose = 'MultiplicativeLR' in str(kwargs) or name == 'MultiplicativeLR'
  loose = loose and 'epoch' in str(kwargs)
  tol = {'float64': 1e-9, 'float32': 1e-5} if loose else None
  momentum = name in ('CyclicLR', 'OneCycleLR') and kwargs.get('cycle_momentum', True)
  assert_matches_torch(name, lr, kwargs, steps, tol=tol, momentum=momentum)


# ---------------------------------------------------------------------------
# Fixed cases: torch's quirks, each against torch.


def M(name, **kw):
  return {'scheduler': name, 'scheduler_kwargs': kw}


QUIRKS = [
  # CosineAnnealingLR rises again after T_max (period 2 * T_max).
  ('CosineAnnealingLR', dict(T_max=20, eta_min=0.001), 130),
  ('CosineAnnealingLR', {}, 600),  # reference default T_max=250
  ('ConstantLR', dict(factor=0.3, total_iters=0), 20),  # chainable: factor forever
  ('LinearLR', dict(total_iters=0, start_factor=0.5), 20),  # chainable: start forever
  ('MultiStepLR', dict(milestones=[3, 3, 10, 0, -2]), 30),  # repeats multiply, 0 at construction
  ('LinearWarmupCosineAnnealingLR', dict(warmup_epochs=10, max_epochs=100, eta_min=1e-6), 260),
  ('LinearWarmupCosineAnnealingLR', dict(warmup_epochs=1, max_epochs=10, warmup_start_lr=0.05), 40),
  ('LinearWarmupCosineAnnealingLR', dict(warmup_epochs=4, max_epochs=9, warmup_start_lr=0.5), 40),
  ('OneCycleLR', dict(max_lr=0.1, total_steps=300), 300),
  ('OneCycleLR', dict(max_lr=0.1, epochs=7, steps_per_epoch=13, three_phase=True, anneal_strategy='linear'), 91),
  ('CyclicLR', dict(base_lr=1e-3, max_lr=0.1, step_size_up=7, step_size_down=0), 40),
  ('CyclicLR', dict(base_lr=1e-3, max_lr=0.1, step_size_up=5, scale_fn='1 / (x + 1)', scale_mode='iterations'), 60),
  ('CyclicLR', dict(base_lr=1e-3, max_lr=0.1, step_size_up=5, scale_fn='0.5 ** x'), 60),
  # SequentialLR restarts the next scheduler at each milestone.
  (
    'SequentialLR',
    dict(schedulers=[M('LinearLR', start_factor=0.1, total_iters=5), M('CosineAnnealingLR', T_max=10)], milestones=[5]),
    40,
  ),
  (
    'SequentialLR',
    dict(
      schedulers=[M('ExponentialLR', gamma=0.9), M('MultiplicativeLR', lr_lambda='0.95 + 0.001 * epoch')],
      milestones=[7],
    ),
    30,
  ),
  (
    'SequentialLR',
    dict(
      schedulers=[
        M('ExponentialLR', gamma=0.9),
        M('ConstantLR', factor=0.5, total_iters=0),
        M('MultiStepLR', milestones=[-3, 2, 4]),
      ],
      milestones=[4, 9],
    ),
    30,
  ),
  (
    'SequentialLR',
    dict(
      schedulers=[
        M('ExponentialLR', gamma=0.9),
        M('CosineAnnealingLR', T_max=5, eta_min=0.01),
        M('LambdaLR', lr_lambda='1 / (1 + epoch)'),
      ],
      milestones=[0, 9],
    ),
    30,
  ),
  (
    'SequentialLR',
    dict(
      schedulers=[
        M('LinearLR', start_factor=0.1, total_iters=3),
        M('CosineAnnealingWarmRestarts', T_0=4, T_mult=2),
        M('StepLR', step_size=2),
      ],
      milestones=[5, 5],
    ),
    30,
  ),
  # ChainedScheduler composes the members' chainable steps.
  (
    'ChainedScheduler',
    dict(schedulers=[M('ConstantLR', factor=0.1, total_iters=2), M('ExponentialLR', gamma=0.9)]),
    40,
  ),
  (
    'ChainedScheduler',
    dict(schedulers=[M('CosineAnnealingLR', T_max=5, eta_min=0.01), M('ExponentialLR', gamma=0.9)]),
    40,
  ),
  (
    'ChainedScheduler',
    dict(
      schedulers=[M('StepLR', step_size=3), M('LambdaLR', lr_lambda='1 / (epoch + 1)'), M('ExponentialLR', gamma=0.9)]
    ),
    40,
  ),
  (
    'ChainedScheduler',
    dict(
      schedulers=[
        M('LinearWarmupCosineAnnealingLR', warmup_epochs=3, max_epochs=9, eta_min=0.01),
        M('StepLR', step_size=4, gamma=0.5),
      ]
    ),
    40,
  ),
]


@pytest.mark.parametrize('name, kwargs, steps', QUIRKS, ids=lambda v: v if isinstance(v, str) else '')
def test_quirks_match_torch(name, kwargs, steps):
  assert_matches_torch(name, 0.1, kwargs, steps, momentum=name in ('CyclicLR', 'OneCycleLR'))


@pytest.mark.parametrize(
  'name, kwargs, words',
  [
    ('LambdaLR', dict(lr_lambda='1/epoch'), ["lr_lambda='1/epoch'", 'learning rate of inf']),
    ('LambdaLR', dict(lr_lambda='log(epoch-5)'), ["lr_lambda='log(epoch-5)'", 'learning rate of nan']),
    (
      'CyclicLR',
      dict(base_lr=0.0, max_lr=1.0, step_size_up=5, scale_fn='1 / x', scale_mode='iterations'),
      ["scale_fn='1 / x'", 'learning rate of nan'],
    ),
    (
      'ChainedScheduler',
      dict(schedulers=[M('StepLR', step_size=3), M('LambdaLR', lr_lambda='log(epoch)')]),
      ["schedulers[1].lr_lambda='log(epoch)'", 'learning rate of -inf'],
    ),
  ],
  ids=lambda v: v if isinstance(v, str) else '',
)
def test_first_lr_torch_cannot_compute_is_a_config_error(name, kwargs, words):
  """torch computes the lr of step 0 in Python when it builds the scheduler, and raises."""
  assert _torch_raises(name, 0.1, kwargs, 0)
  for dtype in DTYPES:
    with jax.enable_x64(dtype == 'float64'):
      assert_config_error(lambda: jaxsched.schedule(name, 0.1, **kwargs), [f'{name}:', *words, f'step 0 ({dtype}'])


@pytest.mark.parametrize(
  'name, kwargs',
  [
    ('OneCycleLR', dict(max_lr=0.1, total_steps=300)),
    ('CyclicLR', dict(base_lr=1e-3, max_lr=0.1, step_size_up=20)),
  ],
)
def test_momentum_cycles_beta1_as_torch_adam(name, kwargs):
  _, betas = torch_curve(name, 1e-3, kwargs, 300, optimizer='Adam')
  for dtype in DTYPES:
    _, mom = jax_curve(name, 1e-3, kwargs, 300, dtype)
    assert rel_diff(mom, betas) <= TOLERANCE[dtype]
  if name == 'OneCycleLR':  # torch-vs-optax.md, Part C
    np.testing.assert_allclose(betas[[0, 1, 89, 299]], [0.95, 0.949969, 0.85, 0.95], atol=1e-6)
  else:
    np.testing.assert_allclose(betas[[0, 1, 2, 299]], [0.9, 0.895, 0.89, 0.805], atol=1e-9)


def test_momentum_is_none_without_cycling():
  assert jaxsched.schedule('StepLR', 0.1, step_size=3).momentum is None
  assert jaxsched.schedule('OneCycleLR', 0.1, max_lr=1, total_steps=9, cycle_momentum=False).momentum is None


def test_optimizer_uses_the_momentum_schedule():
  """SGD + OneCycleLR in torch (momentum cycled) == jaxsched SGD with both schedules."""
  kw = dict(max_lr=0.5, total_steps=20)
  rng = np.random.default_rng(0)
  grads = rng.normal(size=(20, 3))
  p = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
  opt = torch.optim.SGD([p], lr=0.1, momentum=0.0)  # momentum-free SGD becomes momentum SGD
  sched = torch.optim.lr_scheduler.OneCycleLR(opt, **kw)
  for g in grads:
    p.grad = torch.tensor(g)
    opt.step()
    sched.step()
  with jax.enable_x64(True):
    s = jaxsched.schedule('OneCycleLR', 0.1, **kw)
    tx = jaxsched.optimizer('SGD', learning_rate=s, momentum=s.momentum)
    x = jnp.array([1.0, -2.0, 0.5])
    state = tx.init(x)
    step = jax.jit(lambda x, st, g: (lambda u, st: (optax.apply_updates(x, u), st))(*tx.update(g, st, x)))
    for g in grads:
      x, state = step(x, state, jnp.asarray(g))
    np.testing.assert_allclose(np.asarray(x), p.detach().numpy(), rtol=1e-12)


def test_inject_hyperparams_int32_count_stays_float64():
  with jax.enable_x64(True):
    s = jaxsched.schedule('ExponentialLR', 0.1, gamma=0.95)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=s)
    state = tx.init(jnp.zeros(2))
    for _ in range(3):
      _, state = tx.update(jnp.ones(2), state)
    lr = state.hyperparams['learning_rate']
    assert lr.dtype == jnp.float64
    # inject_hyperparams stores the value used by the last update: count 2.
    assert float(lr) == pytest.approx(0.1 * 0.95**2, rel=1e-15)


def test_one_cycle_past_total_steps_holds_and_is_rejected_when_known():
  s = jaxsched.schedule('OneCycleLR', 0.1, max_lr=0.1, total_steps=50)
  assert s.max_count == 50
  vals = np.asarray(jax.jit(jax.vmap(s))(jnp.arange(45, 60)))
  assert np.all(vals[5:] == vals[5])  # n >= 50: the value torch computes at n = 50
  s.check_steps(50)
  with pytest.raises(jaxsched.ConfigError, match='total_steps=50'):
    s.check_steps(51)
  with pytest.raises(ValueError):  # torch raises past total_steps
    torch_curve('OneCycleLR', 0.1, dict(max_lr=0.1, total_steps=50), 51)


def test_reference_defaults():
  with jax.enable_x64(True):
    np.testing.assert_allclose(  # CosineAnnealingLR: T_max 250, eta_min 0
      jax.vmap(jaxsched.schedule('CosineAnnealingLR', 0.1))(jnp.arange(501)),
      torch_curve('CosineAnnealingLR', 0.1, dict(T_max=250, eta_min=0.0), 500)[0],
      rtol=1e-12,
      atol=1e-18,
    )
    assert float(jaxsched.schedule('StepLR', 1.0, step_size=2)(2)) == pytest.approx(0.1)
    assert float(jaxsched.schedule('MultiStepLR', 1.0, milestones=[1])(1)) == pytest.approx(0.1)
    oc = jaxsched.schedule('OneCycleLR', 123.0, max_lr=1.0, total_steps=100)
    assert float(oc(0)) == pytest.approx(1.0 / 25)  # div_factor 25, learning_rate ignored
    assert float(oc(29)) == pytest.approx(1.0)  # pct_start 0.3: peak at 0.3 * 100 - 1
    assert float(oc(99)) == pytest.approx(1.0 / 25 / 1e4)  # final_div_factor 1e4
    assert float(oc.momentum(0)) == pytest.approx(0.95)
    assert float(oc.momentum(29)) == pytest.approx(0.85)
    w = jaxsched.schedule('LinearWarmupCosineAnnealingLR', 0.1, warmup_epochs=10, max_epochs=100)
    assert float(w(0)) == 0.0 and float(w(9)) == pytest.approx(0.1) and float(w(100)) == pytest.approx(0.0)


# ---------------------------------------------------------------------------
# Exact for every count up to 2**31 - 1 (references with exact integer reduction).


def _half_cos(r, t):  # (1 + cos(pi r / t)) / 2 without the cancellation near r = t
  return math.sin(math.pi * (t - r) / (2 * t)) ** 2


def _cawr(t0, mult, n):
  t, s = t0, 0
  while n >= s + t:
    s, t = s + t, t * mult
  return _half_cos(n - s, t)


def _cyclic(up, down, n, g=1.0):
  ts, r = up + down, n % (up + down)
  return 1e-3 + (0.1 - 1e-3) * (r / up if r <= up else (ts - r) / down) * g**n


def _one_cycle(t, n):
  init = 0.1 / 25
  e1 = float(0.3 * t) - 1
  s, e, a, b = (0.0, e1, init, 0.1) if n <= e1 else (e1, t - 1.0, 0.1, init / 1e4)
  return b + (a - b) * _half_cos(n - s, e - s)


_W, _MX = 10**6, 2**31 - 100
BIG = [
  ('StepLR', dict(step_size=7, gamma=1 - 1e-8), lambda n: 0.1 * (1 - 1e-8) ** (n // 7)),
  ('ExponentialLR', dict(gamma=1 - 1e-9), lambda n: 0.1 * (1 - 1e-9) ** n),
  (
    'MultiStepLR',
    dict(milestones=[2**31 - 2, 10**9 + 7, 5], gamma=0.5),
    lambda n: 0.1 * 0.5 ** sum(m <= n for m in (2**31 - 2, 10**9 + 7, 5)),
  ),
  ('CosineAnnealingLR', dict(T_max=1000, eta_min=1e-3), lambda n: 1e-3 + (0.1 - 1e-3) * _half_cos(n % 2000, 1000)),
  ('CosineAnnealingLR', dict(T_max=2**31 - 1), lambda n: 0.1 * _half_cos(n, 2**31 - 1)),
  ('CosineAnnealingWarmRestarts', dict(T_0=97), lambda n: 0.1 * _half_cos(n % 97, 97)),
  (
    'CosineAnnealingWarmRestarts',
    dict(T_0=10, T_mult=2, eta_min=1e-4),
    lambda n: 1e-4 + (0.1 - 1e-4) * _cawr(10, 2, n),
  ),
  ('CosineAnnealingWarmRestarts', dict(T_0=3, T_mult=3), lambda n: 0.1 * _cawr(3, 3, n)),
  ('CyclicLR', dict(base_lr=1e-3, max_lr=0.1, step_size_up=1000, step_size_down=777), lambda n: _cyclic(1000, 777, n)),
  (
    'CyclicLR',
    dict(base_lr=1e-3, max_lr=0.1, step_size_up=1000, mode='exp_range', gamma=1 - 1e-9),
    lambda n: _cyclic(1000, 1000, n, 1 - 1e-9),
  ),
  ('OneCycleLR', dict(max_lr=0.1, total_steps=2**31 - 1), lambda n: _one_cycle(2**31 - 1, n)),
  ('PolynomialLR', dict(total_iters=2**31 - 1, power=2.0), lambda n: 0.1 * ((2**31 - 1 - n) / (2**31 - 1)) ** 2),
  (
    'LinearWarmupCosineAnnealingLR',
    dict(warmup_epochs=_W, max_epochs=_MX, eta_min=1e-5),
    lambda n: n * 0.1 / (_W - 1) if n < _W else 1e-5 + (0.1 - 1e-5) * _half_cos((n - _W) % (2 * (_MX - _W)), _MX - _W),
  ),
  ('LambdaLR', dict(lr_lambda='(1 - 1e-9) ** epoch * (1 + epoch % 3)'), lambda n: 0.1 * (1 - 1e-9) ** n * (1 + n % 3)),
]
COUNTS = [0, 1, 2**24 + 1, 10**9 + 7, 2**30 + 12345, 2**31 - 2, 2**31 - 1]


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name, kwargs, ref', BIG, ids=lambda v: v if isinstance(v, str) else '')
def test_exact_up_to_int32_max(name, kwargs, ref, dtype):
  expected = np.array([ref(n) for n in COUNTS])
  with jax.enable_x64(dtype == 'float64'):
    sched = jaxsched.schedule(name, 0.1, **kwargs)
    actual = np.asarray(jax.jit(jax.vmap(sched))(jnp.asarray(COUNTS, jnp.int32)), np.float64)
  d = np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-300))
  assert d <= TOLERANCE[dtype], f'{name} {dtype}: {d:.3g}\n{actual}\n{expected}'


def test_million_step_curve_in_milliseconds():
  name, kw = 'OneCycleLR', dict(max_lr=0.1, total_steps=10**6)
  for x64 in (True, False):
    with jax.enable_x64(x64):
      f = jax.jit(jax.vmap(jaxsched.schedule(name, 0.1, **kw)))
      counts = jnp.arange(10**6)
      f(counts).block_until_ready()
      start = time.perf_counter()
      f(counts).block_until_ready()
      elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f'{elapsed:.3f} s'


def test_jit_scalar_and_python_int_counts():
  s = jaxsched.schedule('StepLR', 0.1, step_size=3)
  assert float(s(3)) == pytest.approx(0.01)
  assert float(jax.jit(s)(jnp.int32(6))) == pytest.approx(0.001)
  assert float(s(np.int64(3))) == pytest.approx(0.01)


# ---------------------------------------------------------------------------
# The same value eagerly, under vmap and under jit, for every scheduler and count.

_I = 2**31 - 1
EXTREMES = [  # (name, kwargs, horizons): powers out of range, huge periods, counts at every horizon
  ('LambdaLR', dict(lr_lambda='0.5 ** epoch * min(1, (epoch + 1) / 10) + (1 - 1e-9) ** -epoch'), [9]),
  ('MultiplicativeLR', dict(lr_lambda=1e-30), []),
  ('StepLR', dict(step_size=10, gamma=0.5), [10]),
  ('MultiStepLR', dict(milestones=[5, 5, 10**6, _I, -3], gamma=1e30), [5, 10**6]),
  ('ConstantLR', dict(factor=1e-30, total_iters=_I), [_I]),
  ('LinearLR', dict(start_factor=1e-3, total_iters=_I), [_I]),
  ('ExponentialLR', dict(gamma=-0.5), []),
  ('PolynomialLR', dict(total_iters=_I, power=1e4), [_I // 2]),
  ('CosineAnnealingLR', dict(T_max=_I, eta_min=1e-5), [_I]),
  ('CosineAnnealingWarmRestarts', dict(T_0=3, T_mult=1000, eta_min=1e-3), [3, 3003]),
  ('LinearWarmupCosineAnnealingLR', dict(warmup_epochs=10**6, max_epochs=_I, eta_min=1e-5), [10**6, _I]),
  ('CyclicLR', dict(base_lr=1e-3, max_lr=0.1, step_size_up=7, step_size_down=3, mode='exp_range', gamma=0.5), [7, 10]),
  ('OneCycleLR', dict(max_lr=0.1, total_steps=_I, three_phase=True), [644245093, 1288490186, _I]),
  ('SWALR', dict(swa_lr=1e-3, anneal_epochs=_I), [_I]),
  ('hf.linear', dict(num_warmup_steps=10**6, num_training_steps=_I), [10**6, _I]),
  ('hf.cosine', dict(num_warmup_steps=10, num_training_steps=_I, num_cycles=0.7), [10, _I]),
  ('hf.cosine_with_restarts', dict(num_warmup_steps=0, num_training_steps=_I, num_cycles=3), [_I // 3, _I]),
  ('hf.polynomial', dict(num_warmup_steps=5, num_training_steps=_I, lr_end=1e-7, power=1e4), [5, _I // 2, _I]),
  ('hf.constant', dict(), []),
  ('hf.constant_with_warmup', dict(num_warmup_steps=_I), [_I]),
  ('hf.inverse_sqrt', dict(num_warmup_steps=0), [10_000]),
  ('hf.cosine_with_min_lr', dict(num_warmup_steps=10, num_training_steps=_I, min_lr=1e-5), [10, _I]),
  ('hf.cosine_warmup_with_min_lr', dict(num_warmup_steps=0, num_training_steps=_I, min_lr_rate=0.1), [_I]),
  (
    'hf.warmup_stable_decay',
    dict(num_warmup_steps=_I, num_decay_steps=_I, num_stable_steps=_I, warmup_type='1-sqrt', decay_type='cosine'),
    [_I],
  ),
  (
    'timm.cosine',
    dict(t_initial=1000, lr_min=1e-5, cycle_mul=1.5, cycle_limit=30, warmup_t=10, k_decay=2.0),
    [10, 1010],
  ),
  ('timm.tanh', dict(t_initial=_I, warmup_t=10**6, warmup_lr_init=1e-3), [10**6]),
  ('timm.step', dict(decay_t=2.5, decay_rate=0.5, warmup_t=7), [7]),
  ('timm.multistep', dict(decay_t=[5, 10**6, _I], decay_rate=1e30), [4, 10**6 - 1]),
  ('timm.poly', dict(t_initial=3, cycle_limit=10**9, cycle_decay=0.5, power=3.0, warmup_t=5, warmup_prefix=True), [5]),
  (
    'SequentialLR',
    dict(
      schedulers=[
        M('LinearLR', start_factor=0.1, total_iters=5),
        M('StepLR', step_size=3, gamma=1e-30),
        M('CosineAnnealingWarmRestarts', T_0=_I),
      ],
      milestones=[5, 10**6],
    ),
    [5, 10**6],
  ),
  (
    'ChainedScheduler',
    dict(
      schedulers=[
        M('ExponentialLR', gamma=0.5),
        M('PolynomialLR', total_iters=100, power=100.0),
        M('LambdaLR', lr_lambda='1 / (epoch + 1)'),
      ]
    ),
    [50, 100],
  ),
]
_COUNTS = [0, 1, 2, 127, 128, 1075, 10**6, 2**24 + 1, _I - 1, _I]


def _extreme_counts(horizons):
  """Counts at, around and past every horizon, padded to one length (eager vmap
  compiles each operation once per shape)."""
  near = {h + d for h in horizons for d in (-1, 0, 1)} | {2 * h for h in horizons}
  counts = sorted(c for c in set(_COUNTS) | near if 0 <= c <= _I)
  return counts + counts[-1:] * (20 - len(counts))


def _assert_same(actual, expected, ulps, what):
  """Equal NaN and inf patterns; finite values within ``ulps`` ulps of the larger."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.dtype == expected.dtype, what
  np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=what)
  inf = np.isinf(actual) | np.isinf(expected)
  np.testing.assert_array_equal(actual[inf], expected[inf], err_msg=what)
  a, e = actual[np.isfinite(actual)], expected[np.isfinite(actual)]
  gap = np.abs(a - e) / np.spacing(np.maximum(np.abs(a), np.abs(e)))
  assert np.all(gap <= ulps), f'{what}: {gap.max()} ulps\n{actual}\n{expected}'


def test_extremes_cover_every_scheduler():
  assert {name for name, *_ in EXTREMES} == set(jaxsched.SCHEDULES)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name, kwargs, horizons', EXTREMES, ids=lambda v: v if isinstance(v, str) else '')
def test_eager_vmap_and_jit_agree(name, kwargs, horizons, dtype):
  """Bitwise but for XLA's fused ``a * b + c`` under jit (one rounding instead of
  two): 1 ulp. (MultiplicativeLR of the step and chains with a cosine loop over the
  steps, compiled even eagerly: not here.)"""
  counts = _extreme_counts(horizons)
  with jax.enable_x64(dtype == 'float64'):
    sched = jaxsched.schedule(name, 0.1, **kwargs)
    for what, fn in (('lr', sched), ('momentum', sched.momentum)):
      if fn is None:
        continue
      eager = np.array([fn(c) for c in counts])
      assert eager.dtype == jnp.dtype(dtype)
      batch = jnp.asarray(counts)
      # one compile for the batched code (vmap) and the scalar one (a loop over the counts)
      batched, looped = jax.jit(lambda b: (jax.vmap(fn)(b), jax.lax.map(fn, b)))(batch)  # noqa: B023
      _assert_same(jax.vmap(fn)(batch), eager, 0, f'{name} {what}: vmap')
      _assert_same(batched, eager, 1, f'{name} {what}: jit(vmap)')
      _assert_same(looped, eager, 1, f'{name} {what}: jit')


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize(
  'name, kwargs',
  [
    ('ExponentialLR', dict(gamma=-2.0)),
    ('StepLR', dict(step_size=1, gamma=1e-30)),
    ('MultiStepLR', dict(milestones=list(range(1, 30)), gamma=1e30)),
    ('CyclicLR', dict(base_lr=1e-3, max_lr=0.1, step_size_up=7, mode='exp_range', gamma=0.5)),
  ],
  ids=lambda v: v if isinstance(v, str) else '',
)
def test_powers_out_of_range_are_torch_zero_or_inf(name, kwargs, dtype):
  """Where torch's lr reaches 0 or +-inf, so does the schedule, at every larger count
  (of the same parity, for a negative gamma), eagerly and under jit."""
  lrs, _ = torch_curve(name, 0.1, kwargs, 1100)
  assert lrs[1098] == lrs[1100] and lrs[1097] == lrs[1099], lrs[-4:]  # settled (0, +-inf or base_lr)
  counts = [1099, 1100, 10**6 + 1, 10**6, _I, _I - 1]
  expected = np.array([lrs[1099], lrs[1100]] * 3).astype(dtype)
  with jax.enable_x64(dtype == 'float64'):
    sched = jaxsched.schedule(name, 0.1, **kwargs)
    np.testing.assert_array_equal(np.array([sched(c) for c in counts]), expected)
    np.testing.assert_array_equal(jax.jit(jax.vmap(sched))(jnp.asarray(counts)), expected)


@pytest.mark.parametrize('dtype', DTYPES)
def test_underflowed_powers_are_zero_eagerly_as_under_jit(dtype):
  # were NaN eagerly with x64 off (exp(s) = 0 times exp(rest) = inf), 0.0 under jit; torch gives 0.0
  cases = [
    (('StepLR', dict(step_size=10, gamma=0.5)), 10**6),
    (('StepLR', dict(step_size=10, gamma=0.5)), 2**31 - 1),
    (('ExponentialLR', dict(gamma=0.5)), 10**6),
  ]
  with jax.enable_x64(dtype == 'float64'):
    for (name, kwargs), n in cases:
      sched = jaxsched.schedule(name, 0.1, **kwargs)
      assert float(sched(n)) == float(jax.jit(sched)(n)) == 0.1 * 0.5 ** (n // kwargs.get('step_size', 1)) == 0.0
