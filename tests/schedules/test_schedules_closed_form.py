"""Schedules against their closed forms, without torch (the fast lane; tests/test_schedules.py holds the
torch comparison): each curve is the formula of torch's docs for the class (or, for
LinearWarmupCosineAnnealingLR, Lightning-Bolts' source), written out by hand for a few steps."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsched


def cos_anneal(start: float, end: float, t: float, span: float) -> float:
  """torch's cosine annealing from ``start`` to ``end``, ``t`` of ``span`` steps in."""
  return end + (start - end) * (1 + math.cos(math.pi * t / span)) / 2


CURVES = {
  'StepLR': ({'step_size': 3, 'gamma': 0.5}, [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]),
  'MultiStepLR': ({'milestones': [2, 5], 'gamma': 0.1}, [1, 1, 0.1, 0.1, 0.1, 0.01, 0.01]),
  'ExponentialLR': ({'gamma': 0.9}, [0.9**t for t in range(6)]),
  'ConstantLR': ({'factor': 0.25, 'total_iters': 3}, [0.25, 0.25, 0.25, 1, 1]),
  'LinearLR': ({'start_factor': 0.25, 'total_iters': 3}, [0.25, 0.5, 0.75, 1, 1]),
  'PolynomialLR': ({'total_iters': 4, 'power': 2.0}, [(1 - min(t, 4) / 4) ** 2 for t in range(7)]),
  # torch's recursive form: past T_max the curve rises again, a cosine of period 2 * T_max
  'CosineAnnealingLR': ({'T_max': 4, 'eta_min': 0.1}, [cos_anneal(1, 0.1, t, 4) for t in range(9)]),
  # restarts after 2, then 4 steps (T_mult=2)
  'CosineAnnealingWarmRestarts': (
    {'T_0': 2, 'T_mult': 2},
    [cos_anneal(1, 0, t, 2) for t in range(2)] + [cos_anneal(1, 0, t, 4) for t in range(4)] + [1.0],
  ),
  # triangular: up from base_lr to max_lr in step_size_up steps, down as fast
  'CyclicLR': (
    {'base_lr': 0.1, 'max_lr': 1.0, 'step_size_up': 2, 'cycle_momentum': False},
    [0.1, 0.55, 1, 0.55, 0.1, 0.55, 1, 0.55, 0.1],
  ),
  # Bolts: linear from warmup_start_lr to the base LR over warmup_epochs - 1 steps, the base LR again at
  # warmup_epochs, then cosine to eta_min at max_epochs
  'LinearWarmupCosineAnnealingLR': (
    {'warmup_epochs': 3, 'max_epochs': 7, 'warmup_start_lr': 0.2},
    [0.2, 0.6, 1] + [cos_anneal(1, 0, t, 4) for t in range(5)],
  ),
  # max_lr / div_factor, up by cosine to max_lr at pct_start * total_steps - 1, down to initial / 1e4
  'OneCycleLR': (
    {'max_lr': 1.0, 'total_steps': 10},
    [0.04, cos_anneal(0.04, 1, 1, 2), 1] + [cos_anneal(1, 0.04 / 1e4, t, 7) for t in range(1, 8)],
  ),
  # at the milestone the second scheduler starts from the base LR (torch calls its step(0))
  'SequentialLR': (
    {
      'schedulers': [
        {'scheduler': 'ConstantLR', 'scheduler_kwargs': {'factor': 0.5, 'total_iters': 9}},
        {'scheduler': 'ExponentialLR', 'scheduler_kwargs': {'gamma': 0.5}},
      ],
      'milestones': [2],
    },
    [0.5, 0.5, 1, 0.5, 0.25, 0.125],
  ),
  # the product of its members' factors
  'ChainedScheduler': (
    {
      'schedulers': [
        {'scheduler': 'ConstantLR', 'scheduler_kwargs': {'factor': 0.5, 'total_iters': 2}},
        {'scheduler': 'StepLR', 'scheduler_kwargs': {'step_size': 2, 'gamma': 0.1}},
      ]
    },
    [0.5, 0.5, 0.1, 0.1, 0.01],
  ),
  'LambdaLR': ({'lr_lambda': '1 / (epoch + 1)'}, [1 / (t + 1) for t in range(5)]),
  'MultiplicativeLR': ({'lr_lambda': '0.5'}, [0.5**t for t in range(5)]),
}


def curve(name: str, kwargs: dict, n: int, lr: float = 1.0) -> np.ndarray:
  with jax.enable_x64(True):
    return np.asarray(jax.jit(jax.vmap(jaxsched.schedule(name, lr, **kwargs)))(jnp.arange(n)))


@pytest.mark.parametrize('name', sorted(CURVES))
def test_curve_is_the_closed_form(name):
  kwargs, expected = CURVES[name]
  np.testing.assert_allclose(curve(name, kwargs, len(expected)), expected, rtol=1e-12, atol=1e-15)


def test_every_torch_schedule_has_a_closed_form_here():
  # SWALR: tests/test_training_rules.py; hf.* and timm.*: their own files, against transformers and timm
  torch_ids = {name for name in jaxsched.SCHEDULES if not name.startswith(('hf.', 'timm.'))}
  assert torch_ids - set(CURVES) <= {'SWALR'}


def test_one_cycle_momentum_is_the_mirror_of_its_lr():
  """cycle_momentum: max_momentum where the LR is lowest, base_momentum at the LR's peak."""
  with jax.enable_x64(True):
    sched = jaxsched.schedule('OneCycleLR', 1.0, max_lr=1.0, total_steps=10)
    momentum = np.asarray(jax.vmap(sched.momentum)(jnp.arange(10)))
  lr = curve('OneCycleLR', {'max_lr': 1.0, 'total_steps': 10}, 10)
  np.testing.assert_allclose(momentum[[0, 2, 9]], [0.95, 0.85, 0.95], rtol=1e-12)
  # both are the same cosine: momentum = 0.95 - 0.1 * (lr - initial) / (max - initial) in the first phase
  np.testing.assert_allclose(momentum[:3], 0.95 - 0.1 * (lr[:3] - 0.04) / 0.96, rtol=1e-12)
