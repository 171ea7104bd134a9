"""Lightning's training-loop rules computed by hand, without torch (the fast lane; tests/interop/test_lightning.py
and tests/test_stepping.py hold the comparison with a real Trainer).

The loop written out here is Lightning 2.x's ``_TrainingEpochLoop``: the optimizer steps after every N-th
micro-batch and after the epoch's last one (``_should_accumulate``); a scheduler with interval "step"
steps after an optimizer step whose micro-batch has ``(batch_idx + 1) % frequency == 0``, one with
interval "epoch" after an epoch with ``(current_epoch + 1) % frequency == 0`` (``_update_learning_rates``).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsched
from jaxsched.averaging import ema_avg_fn, ema_multi_avg_fn, swa_avg_fn
from jaxsched.stepping import optimizer_steps_per_epoch, reports_before, scheduler_steps, steps_after


def lightning_loop(batches: int, accumulate: int, interval: str, frequency: int, epochs: int = 3):
  """For each optimizer step: (scheduler steps before it, micro-batches seen before its last one)."""
  out, scheduler, seen = [], 0, 0
  for epoch in range(epochs):
    for batch_idx in range(batches):
      if (batch_idx + 1) % accumulate == 0 or batch_idx + 1 == batches:
        out.append((scheduler, seen))
        if interval == 'step' and (batch_idx + 1) % frequency == 0:
          scheduler += 1
      seen += 1
    if interval == 'epoch' and (epoch + 1) % frequency == 0:
      scheduler += 1
  return out


CASES = list(itertools.product([1, 5, 6, 7], [1, 2, 3], ['step', 'epoch'], [1, 2, 3]))


@pytest.mark.parametrize('interval', ['step', 'epoch'])
def test_scheduler_steps_and_reports_follow_lightnings_loop(interval):
  for batches, accumulate, _, frequency in [c for c in CASES if c[2] == interval]:
    config = jaxsched.load_config(
      {
        'scheduler': 'ExponentialLR',
        'scheduler_kwargs': {'gamma': 0.5},
        'scheduler_configs': {'interval': interval, 'frequency': frequency},
        'accumulate_grad_batches': accumulate,
      }
    )
    expected = lightning_loop(batches, accumulate, interval, frequency)
    k = np.arange(len(expected))
    steps = scheduler_steps(config, batches)
    where = (batches, accumulate, interval, frequency)
    assert [int(steps(i)) for i in k] == [s for s, _ in expected], where
    assert list(np.asarray(reports_before(k, 'step', batches, accumulate))) == [r for _, r in expected], where
    per_epoch = optimizer_steps_per_epoch(batches, accumulate)
    assert len(expected) == 3 * per_epoch, where
    assert list(np.asarray(reports_before(k, 'epoch', batches, accumulate))) == list(k // per_epoch), where


def test_steps_after_is_every_nth_micro_batch_and_the_epochs_last():
  emitted = [int(b) for b in range(7) if steps_after(b, 3, 7)]
  assert emitted == [2, 5, 6]
  # no epoch length: groups of N run on across epochs
  assert [int(b) for b in range(7) if steps_after(b, 3, None)] == [2, 5]


def test_swa_average_is_the_running_mean():
  xs = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)))
  avg = xs[0]
  for n, x in enumerate(xs[1:], start=1):
    avg = swa_avg_fn(avg, x, jnp.asarray(n))
  np.testing.assert_allclose(avg, np.mean(np.asarray(xs), axis=0), rtol=1e-6)


def test_ema_averages_are_the_geometric_weights():
  """After n steps from x0, an EMA of decay d is d^n x0 + sum_i (1 - d) d^(n - i) x_i, in both of torch's forms
  (``get_ema_avg_fn``, and ``get_ema_multi_avg_fn``'s lerp, on either side of w = 0.5)."""
  with jax.enable_x64(True):
    xs = jnp.asarray(np.random.default_rng(1).normal(size=(5, 3)))
    for fn, decay in ((ema_avg_fn(0.7), 0.7), (ema_multi_avg_fn(0.7), 0.7), (ema_multi_avg_fn(0.2), 0.2)):
      avg = xs[0]
      for x in xs[1:]:
        avg = fn(avg, x, jnp.asarray(0))
      want = decay**4 * xs[0] + sum((1 - decay) * decay ** (4 - i) * xs[i] for i in range(1, 5))
      np.testing.assert_allclose(avg, want, rtol=1e-12)
