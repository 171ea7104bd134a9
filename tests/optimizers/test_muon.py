import contextlib
import itertools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.optim._muon as torch_muon
from hypothesis import given
from hypothesis import strategies as st

import jaxsched
from oracle import (
  DTYPES,
  assert_matches_torch,
  assert_rejected,
  jax_trajectory,
  max_rel_diff,
  problem,
  torch_trajectory,
)

# torch.optim.Muon takes 2-D parameters only: non-square both ways, read as (out, in).
SHAPES = {'tall': (4, 3), 'wide': (3, 5)}
LR = 0.05  # large steps, so that comparing parameters is a sharp comparison of the updates


def torch_newton_schulz_in(dtype):
  """``torch.optim._muon._zeropower_via_newtonschulz`` with its ``grad.bfloat16()`` replaced
  by ``grad.to(dtype)``: torch's code otherwise, line for line."""

  def zeropower(grad, ns_coefficients, ns_steps, eps):
    a, b, c = ns_coefficients
    ortho_grad = grad.to(dtype)
    if grad.size(0) > grad.size(1):
      ortho_grad = ortho_grad.T
    ortho_grad = ortho_grad / ortho_grad.norm().clamp(min=eps)
    for _ in range(ns_steps):
      gram_matrix = ortho_grad @ ortho_grad.T
      gram_update = torch.addmm(gram_matrix, gram_matrix, gram_matrix, beta=b, alpha=c)
      ortho_grad = torch.addmm(ortho_grad, gram_update, ortho_grad, beta=a)
    if grad.size(0) > grad.size(1):
      ortho_grad = ortho_grad.T
    return ortho_grad

  return zeropower


@contextlib.contextmanager
def torch_newton_schulz(dtype):
  """torch.optim.Muon with its Newton–Schulz run in ``dtype`` (it always runs bfloat16)."""
  with mock.patch.object(torch_muon, '_zeropower_via_newtonschulz', torch_newton_schulz_in(getattr(torch, dtype))):
    yield


def assert_matches_patched_torch(kwargs, dtype, shapes=SHAPES, **kw):
  """jaxsched's Muon with ns_dtype=dtype tracks torch's with its Newton–Schulz in dtype."""
  with torch_newton_schulz(dtype):
    assert_matches_torch('Muon', kwargs, dtype, jax_kwargs=dict(kwargs, ns_dtype=dtype), shapes=shapes, **kw)


OPTIONS = [
  dict(nesterov=n, weight_decay=wd, adjust_lr_fn=fn)
  for n, wd, fn in itertools.product((True, False), (0.0, 0.1), (None, 'match_rms_adamw'))
]


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_options_match_torch(options, dtype):
  assert_matches_patched_torch(dict(lr=LR, **options), dtype)


@pytest.mark.parametrize('dtype', DTYPES)
def test_original_adjust_lr_and_a_square_matrix(dtype):
  shapes = {**SHAPES, 'square': (4, 4)}
  assert_matches_patched_torch(dict(lr=LR, adjust_lr_fn='original', momentum=0.0), dtype, shapes=shapes)


@pytest.mark.parametrize('dtype', DTYPES)
def test_eps_clamps_the_norm(dtype):
  # Gradients of 1e-9: the Frobenius norm (~3e-9) is below eps=1e-7, so torch divides by eps.
  assert_matches_patched_torch(dict(lr=LR, eps=1e-7), dtype, scale=1e-9)


@pytest.mark.parametrize('dtype', DTYPES)
@given(
  lr=st.floats(1e-4, 0.1),
  weight_decay=st.floats(0.0, 0.5),
  momentum=st.floats(0.0, 0.99),
  nesterov=st.booleans(),
  ns_coefficients=st.sampled_from([(3.4445, -4.775, 2.0315), (1.5, -0.5, 0.0)]),
  eps=st.floats(0.0, 1e-3),
  ns_steps=st.integers(0, 8),
  adjust_lr_fn=st.sampled_from([None, 'original', 'match_rms_adamw']),
  shape=st.sampled_from([(4, 3), (3, 5), (4, 4)]),
)
def test_random_hyperparameters_match_torch(
  dtype, lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, shape
):
  assert_matches_patched_torch(
    dict(
      lr=lr,
      weight_decay=weight_decay,
      momentum=momentum,
      nesterov=nesterov,
      ns_coefficients=ns_coefficients,
      eps=eps,
      ns_steps=ns_steps,
      adjust_lr_fn=adjust_lr_fn,
    ),
    dtype,
    shapes={'p': shape},
  )


def test_float64_is_far_from_a_wrong_orientation():
  # The float64 check (1e-9) can tell the orientation apart: torch on the transposed
  # problem is Muon reading shapes as (in, out), and it lands far from torch.
  params, grads = problem(SHAPES)
  kwargs = dict(lr=LR)
  with torch_newton_schulz('float64'):
    expected = torch_trajectory('Muon', kwargs, params, grads, 'float64')
    wrong = _transposed(torch_trajectory('Muon', kwargs, *_transpose_problem(params, grads), 'float64'))
  actual = jax_trajectory(lambda: jaxsched.optimizer('Muon', ns_dtype='float64', **kwargs), params, grads, 'float64')
  assert max(max_rel_diff(a, e) for a, e in zip(actual, expected)) <= 1e-9
  assert max(max_rel_diff(w, e) for w, e in zip(wrong, expected)) > 1e-2


# --- torch's own bfloat16 Newton–Schulz (unpatched) -------------------------------------------
#
# bfloat16 results cannot be bit-equal across XLA and torch in general: the float32
# accumulation order of the matmuls differs (XLA/Eigen vs oneDNN, and by CPU), and one
# flipped bfloat16 rounding (2**-8) grows to a few ulps through the 5 iterations.
# Measured on the project's CPU machine (lr 0.05, weight_decay 0, 10 steps, per-step
# updates, seeds 0-5, nesterov on/off, momentum 0.95/0.6):
#   - 4x3, 3x5, 24x16: every update entry equals torch's (>= 99.7% for 24x16 in one seed);
#     the parameters then agree to 0 (float64) / 7.5e-8 (float32);
#   - 40x24: >= 97% equal; 64x128: 53%-98% equal, largest difference 3.1e-2 of the
#     leaf's largest update.
# A wrong implementation is far from that: Newton–Schulz in float32 makes <= 0.3% of the
# entries equal (largest difference 4.0e-2 .. 8.4e-2), the wrong orientation <= 0.05%
# (0.29). So the test (shapes up to 24x16, where this machine is bit-equal) asks for
# >= 50% equal entries (to 1e-5 of the leaf's largest update: slack for other CPUs'
# accumulation orders) and a largest difference <= 5e-2, and checks that both wrong
# variants fail it.
BF16_SHAPES = {**SHAPES, 'big': (24, 16)}
BF16_MIN_EQUAL = 0.5
BF16_MAX_DIFF = 5e-2


def _transpose_problem(params, grads):
  return _transposed([params])[0], _transposed(grads)


def _transposed(trajectory):
  return [{k: v.T.copy() for k, v in p.items()} for p in trajectory]


def update_agreement(actual, expected, params):
  """(fraction of per-step update entries within 1e-5 of the leaf's largest |update|,
  largest per-step difference relative to the leaf's largest |update|)."""
  equal, worst, prev_a, prev_e = [], 0.0, params, params
  for a, e in zip(actual, expected, strict=True):
    for k in e:
      da, de = a[k].astype(np.float64) - prev_a[k], e[k].astype(np.float64) - prev_e[k]
      scale = np.max(np.abs(de))
      equal.append((np.abs(da - de) <= 1e-5 * scale).ravel())
      worst = max(worst, float(np.max(np.abs(da - de)) / scale))
    prev_a, prev_e = a, e
  return float(np.mean(np.concatenate(equal))), worst


def _bf16_close(agreement):
  return agreement[0] >= BF16_MIN_EQUAL and agreement[1] <= BF16_MAX_DIFF


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('seed', (0, 1))
def test_bfloat16_tracks_unpatched_torch(dtype, seed):
  params, grads = problem(BF16_SHAPES, seed=seed)
  params = {k: v.astype(dtype) for k, v in params.items()}
  kwargs = dict(lr=LR, weight_decay=0.0)
  expected = torch_trajectory('Muon', kwargs, params, grads, dtype)
  actual = jax_trajectory(lambda: jaxsched.optimizer('Muon', **kwargs), params, grads, dtype)
  agreement = update_agreement(actual, expected, params)
  assert _bf16_close(agreement), agreement
  # The criterion rejects wrong implementations, built from torch itself.
  wrong = _transposed(torch_trajectory('Muon', kwargs, *_transpose_problem(params, grads), dtype))
  assert not _bf16_close(update_agreement(wrong, expected, params))
  with torch_newton_schulz('float32'):
    in_float32 = torch_trajectory('Muon', kwargs, params, grads, dtype)
  assert not _bf16_close(update_agreement(in_float32, expected, params))


@pytest.mark.parametrize('dtype', DTYPES)
def test_momentum_and_weight_decay_are_schedulable(dtype):
  momentum = lambda count: 0.5 + 0.4 / (1.0 + count)
  weight_decay = lambda count: 0.1 * count
  params, grads = problem(SHAPES)
  tdtype = getattr(torch, dtype)
  tensors = [torch.tensor(params[k], dtype=tdtype, requires_grad=True) for k in SHAPES]
  with torch_newton_schulz(dtype):
    opt = torch.optim.Muon(tensors, lr=LR)
    expected = []
    for step, g in enumerate(grads):
      opt.param_groups[0].update(momentum=momentum(step), weight_decay=weight_decay(step))
      for t, k in zip(tensors, SHAPES):
        t.grad = torch.tensor(g[k], dtype=tdtype)
      opt.step()
      expected.append({k: t.detach().numpy().copy() for t, k in zip(tensors, SHAPES)})
  actual = jax_trajectory(
    lambda: jaxsched.optimizer('Muon', lr=LR, momentum=momentum, weight_decay=weight_decay, ns_dtype=dtype),
    params,
    grads,
    dtype,
  )
  tol = {'float64': 1e-9, 'float32': 1e-5}[dtype]
  assert max(max_rel_diff(a, e) for a, e in zip(actual, expected)) <= tol


def test_defaults_are_torchs():
  state = jaxsched.optimizer('Muon').init({'w': jnp.zeros((3, 2))})
  hp = state.hyperparams
  assert float(hp['learning_rate']) == pytest.approx(1e-3)
  assert float(hp['weight_decay']) == pytest.approx(0.1)
  assert float(hp['momentum']) == pytest.approx(0.95)
  assert float(hp['eps']) == pytest.approx(1e-7)
  with torch_newton_schulz('float64'):
    assert_matches_torch('Muon', {}, 'float64', jax_kwargs=dict(ns_dtype='float64'), shapes=SHAPES)


@pytest.mark.parametrize(
  'params, path',
  [
    ({'w': jnp.zeros((3, 4)), 'b': jnp.zeros(3)}, "['b']"),
    ({'layer': {'kernel': jnp.zeros((2, 3, 4))}}, "['layer']['kernel']"),
    ([jnp.zeros((2, 2)), jnp.zeros(())], '[1]'),
  ],
)
def test_non_2d_parameters_are_rejected_at_init(params, path):
  tx = jaxsched.optimizer('Muon')
  for init in (tx.init, jax.jit(tx.init)):
    with pytest.raises(jaxsched.ConfigError) as e:
      init(params)
    assert path in str(e.value) and '2-D' in str(e.value)


def test_float64_newton_schulz_needs_x64():
  with jax.enable_x64(False), pytest.raises(jaxsched.ConfigError, match="ns_dtype='float64'"):
    jaxsched.optimizer('Muon', ns_dtype='float64').init({'w': jnp.zeros((2, 3))})


@pytest.mark.parametrize(
  'kwargs, words',
  [
    (dict(momentum=-0.1), ['momentum', '-0.1']),
    (dict(weight_decay=-1.0), ['weight_decay', '-1.0']),
    (dict(lr=-1.0), ['lr', '-1.0']),
    (dict(nesterov='yes'), ['nesterov', "'yes'"]),
    (dict(adjust_lr_fn='orig'), ['adjust_lr_fn', "'orig'", "Did you mean 'original'?"]),
    (dict(ns_steps=100), ['ns_steps', '100']),
    (dict(ns_steps=2.5), ['ns_steps', '2.5']),
    (dict(ns_coefficients=(1.0, 2.0)), ['ns_coefficients', '(1.0, 2.0)']),
    (dict(ns_dtype='float16'), ['ns_dtype', "'float16'", 'bfloat16']),
  ],
)
def test_bad_input(kwargs, words):
  assert_rejected('Muon', kwargs, words)


@pytest.mark.parametrize('adjust_lr_fn', [None, 'match_rms_adamw'])
def test_flax_dense_kernels_take_torchs_step_with_layout_in_out(adjust_lr_fn):
  """A Flax Dense kernel is torch's Linear weight transposed: with layout 'in_out' its
  Muon step is torch's step on the same layer, transposed."""
  rng = np.random.default_rng(0)
  weight = rng.normal(size=(3, 5))  # torch: (out, in); Flax kernel: (in, out) = (5, 3)
  grads = [{'w': rng.normal(size=(3, 5))} for _ in range(4)]
  kwargs = dict(lr=LR, adjust_lr_fn=adjust_lr_fn)
  with torch_newton_schulz('float64'):
    expected = torch_trajectory('Muon', kwargs, {'w': weight}, grads, 'float64')
  kernel_grads = [{'w': g['w'].T} for g in grads]

  def kernel_trajectory(**extra):
    tx = lambda: jaxsched.optimizer('Muon', **kwargs, ns_dtype='float64', **extra)  # noqa: E731
    return [{'w': p['w'].T} for p in jax_trajectory(tx, {'w': weight.T}, kernel_grads, 'float64')]

  assert max(max_rel_diff(a, e) for a, e in zip(kernel_trajectory(layout='in_out'), expected)) < 1e-9
  # read as (out, in), the kernel takes another step: 'original' scales by sqrt(max(1, rows / cols));
  # 'match_rms_adamw' scales by 0.2 sqrt(max(rows, cols)), the same both ways
  wrong = max(max_rel_diff(a, e) for a, e in zip(kernel_trajectory(), expected))
  assert wrong > 1e-3 if adjust_lr_fn is None else wrong < 1e-9
