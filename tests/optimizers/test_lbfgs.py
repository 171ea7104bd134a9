"""LBFGS against torch.optim.LBFGS with a closure, step() call for step() call.

tests/oracle.py's assert_matches_torch feeds fixed gradients and does not fit
L-BFGS, which evaluates the loss itself: here both sides minimise the same
function of parameters split across two leaves, and after every step() the
parameters are compared (float64: 1e-9, float32: 1e-5, oracle.TOLERANCE), and
so are torch's state counters ``func_evals`` and ``n_iter``.

float32 runs are kept short (FLOAT32_RUN): L-BFGS amplifies rounding, so a long
float32 run drifts from torch by as much as torch drifts from itself when its
start point moves by one ulp (1e-3 after 20 iterations from Rosenbrock's classic
start), and near a float32 optimum both wander on rounding noise.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxsched
from oracle import DTYPES, TOLERANCE, assert_rejected, max_rel_diff, x64

_rng = np.random.default_rng(0)
_Q, _ = np.linalg.qr(_rng.normal(size=(6, 6)))
# A random SPD matrix with eigenvalues 1..10, its minimiser and a start point.
QUAD_A = _Q @ np.diag(np.geomspace(1.0, 10.0, 6)) @ _Q.T
QUAD_C = _rng.normal(size=6)
QUAD_START = _rng.normal(size=6)


def quadratic(v, const):
  """``(v - c)^T A (v - c) / 2``: minimum 0 at c, so float32 keeps relative precision."""
  r = v - const(QUAD_C)
  return 0.5 * (r @ (const(QUAD_A) @ r))


def rosenbrock(v, const):
  del const
  return (100 * (v[1:] - v[:-1] ** 2) ** 2 + (1 - v[:-1]) ** 2).sum()


def kinked(v, const):
  """``|v - c|_1 + |v|^2 / 10``: line searches zoom onto kinks. ``|r|`` is written
  ``r * sign(r)`` with a piecewise-constant sign, so its gradient is 0 at 0 in both
  frameworks (``jnp.abs``'s is 1 there, torch's 0)."""
  r = v - const(QUAD_C)
  sign = (r > 0) * 1.0 - (r < 0) * 1.0
  return (r * sign).sum() + 0.1 * (v * v).sum()


# name: (loss of the flat vector, start). The vector is split as w (2, 2) and b (2,).
PROBLEMS = {
  'quadratic': (quadratic, QUAD_START),
  'rosenbrock': (rosenbrock, np.array([0.7, 0.5, 1.2, 1.3, 0.9, 0.8])),
  # Far out: long line searches. (The classic (-1.2, 1, ...) start amplifies
  # rounding so much that torch drifts by 4e-9 from itself if the start moves by an ulp.)
  'rosenbrock_far': (rosenbrock, np.array([-0.5, 0.3, 1.5, 2.0, -1.0, 0.5])),
  'kinked': (kinked, QUAD_START),
}

# float32: at most 3 iterations per step() and 3 step() calls (see the module doc).
FLOAT32_RUN = dict(max_iter=3, steps=3)


def _split(v):
  return {'w': v[:4].reshape(2, 2), 'b': v[4:]}


def torch_run(problem: str, kwargs, dtype: str, steps: int, lrs=None):
  """Parameters and (func_evals, n_iter) after each torch LBFGS.step(closure); with
  ``lrs``, the group's lr is set to ``lrs[k]`` before step k."""
  loss, start = PROBLEMS[problem]
  tdtype = getattr(torch, dtype)
  leaves = {k: torch.tensor(v, dtype=tdtype, requires_grad=True) for k, v in _split(start).items()}
  opt = torch.optim.LBFGS(list(leaves.values()), **kwargs)

  def closure():
    opt.zero_grad()
    value = loss(torch.cat([leaves['w'].reshape(-1), leaves['b']]), lambda a: torch.tensor(a, dtype=tdtype))
    value.backward()
    return value

  out = []
  for k in range(steps):
    if lrs is not None:
      opt.param_groups[0]['lr'] = lrs[k]
    opt.step(closure)
    state = opt.state[leaves['w']]
    out.append(({k: t.detach().numpy().copy() for k, t in leaves.items()}, (state['func_evals'], state['n_iter'])))
  return out


# Keywords that shape the computation: one compilation per combination, shared by
# tests (the float hyperparameters live in the state).
STATIC = ('max_iter', 'max_eval', 'history_size', 'line_search_fn')
DEFAULTS = {k: default for k, (default, _) in jaxsched.OPTIMIZERS['LBFGS'].kwargs.items()}


def _jitted_step(tx, loss, dtype: str):
  """A jit-compiled ``params, state -> params, updates, state``."""

  def value_fn(p):
    return loss(jnp.concatenate([p['w'].reshape(-1), p['b']]), lambda a: jnp.asarray(a, dtype))

  @jax.jit
  def step(p, state):
    updates, state = tx.update(jax.grad(value_fn)(p), state, p, value_fn=value_fn)
    return optax.apply_updates(p, updates), updates, state

  return step


@functools.cache
def _shared_step(loss, dtype: str, static: tuple):
  """:func:`_jitted_step` for one static setup, shared by tests: its float
  hyperparameters come from the state."""
  return _jitted_step(jaxsched.optimizer('LBFGS', **dict(static)), loss, dtype)


def jax_run(problem: str, kwargs, dtype: str, steps: int, lrs=None):
  """The same with jaxsched's LBFGS, jit-compiled, ``value_fn`` as the closure;
  with ``lrs``, the learning rate is the schedule ``count -> lrs[count]``."""
  loss, start = PROBLEMS[problem]
  with x64(dtype):
    if lrs is None:
      tx = jaxsched.optimizer('LBFGS', **kwargs)
      step = _shared_step(loss, dtype, tuple((k, kwargs.get(k, DEFAULTS[k])) for k in STATIC))
    else:
      tx = jaxsched.optimizer('LBFGS', lr=lambda count: jnp.asarray(lrs)[count], **kwargs)
      step = _jitted_step(tx, loss, dtype)
    params = {k: jnp.asarray(v, dtype) for k, v in _split(start).items()}
    state = tx.init(params)
    out = []
    for _ in range(steps):
      params, updates, state = step(params, state)
      assert all(u.dtype == jnp.dtype(dtype) for u in jax.tree.leaves(updates))
      inner = state.inner_state
      out.append(({k: np.asarray(v) for k, v in params.items()}, (int(inner.func_evals), int(inner.n_iter))))
  return out


def assert_matches_torch(problem: str, kwargs, dtype: str, steps: int = 4, lrs=None) -> None:
  """jaxsched's LBFGS(**kwargs) follows torch's step() for step(): parameters within
  oracle.TOLERANCE and the same evaluation and iteration counts."""
  expected = torch_run(problem, kwargs, dtype, steps, lrs)
  actual = jax_run(problem, kwargs, dtype, steps, lrs)
  for k, ((p, counts), (p_ref, counts_ref)) in enumerate(zip(actual, expected, strict=True)):
    d = max_rel_diff(p, p_ref)
    assert d <= TOLERANCE[dtype], f'step {k}: max relative difference {d:.3g} > {TOLERANCE[dtype]:g}'
    assert counts == counts_ref, f'step {k}: (func_evals, n_iter) {counts} != torch {counts_ref}'


def _run(dtype: str, kwargs, steps: int = 4):
  """kwargs and step count for a dtype: float32 runs are FLOAT32_RUN long."""
  if dtype == 'float32':
    return {**kwargs, 'max_iter': min(kwargs.get('max_iter', 20), FLOAT32_RUN['max_iter'])}, min(
      steps, FLOAT32_RUN['steps']
    )
  return kwargs, steps


STRONG_WOLFE = dict(line_search_fn='strong_wolfe')


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize(
  'problem, kwargs',
  [
    *itertools.product(('quadratic', 'rosenbrock', 'rosenbrock_far'), ({}, STRONG_WOLFE)),
    # Long zooms onto kinks: bracket flips, interpolation from the far end, steps
    # pushed off an end, the bracket-width break; then the max|t d| break.
    ('kinked', dict(max_eval=200, **STRONG_WOLFE)),
  ],
  ids=str,
)
def test_matches_torch(problem, kwargs, dtype):
  kwargs, steps = _run(dtype, kwargs)
  assert_matches_torch(problem, kwargs, dtype, steps)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('line_search_fn', [None, 'strong_wolfe'])
def test_history_ring_wraps(line_search_fn, dtype):
  # history_size 2 over up to 40 iterations: the ring drops its oldest pair again and again.
  kwargs, steps = _run(dtype, dict(line_search_fn=line_search_fn, history_size=2, max_iter=10))
  assert_matches_torch('rosenbrock', kwargs, dtype, steps)


# Full-length runs in float32 too: each stops on its tolerance, far above rounding.
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('line_search_fn', [None, 'strong_wolfe'])
@pytest.mark.parametrize(
  'tolerances',
  [
    dict(tolerance_grad=1e-2),  # stops on max|g|, then returns at once on later steps
    dict(tolerance_change=1e-3, lr=0.1),  # stops on the loss change
    dict(tolerance_change=1e-1, lr=0.1),  # stops on max|t d|
    dict(tolerance_change=1e-4),  # stops on the loss change, then on g.d > -tolerance_change
    dict(tolerance_grad=1e3),  # max|g| <= tolerance_grad at the start: nothing moves
  ],
  ids=str,
)
def test_tolerance_stopping(tolerances, line_search_fn, dtype):
  assert_matches_torch('quadratic', dict(line_search_fn=line_search_fn, **tolerances), dtype, steps=3)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize(
  'kwargs',
  [
    dict(max_eval=4),  # fewer evaluations than iterations
    dict(max_eval=7, line_search_fn='strong_wolfe'),  # the line search gets max_eval - evals tries
    dict(max_iter=1, line_search_fn='strong_wolfe'),  # max_eval 1: the line search gets none
  ],
  ids=str,
)
def test_max_eval_stopping(kwargs, dtype):
  assert_matches_torch('rosenbrock_far', kwargs, dtype, steps=3)


@pytest.mark.parametrize('dtype', DTYPES)
def test_learning_rate_schedule(dtype):
  # torch with the group's lr set before each step() = a schedule of the update count.
  kwargs, steps = _run(dtype, dict(max_iter=5))
  assert_matches_torch('quadratic', kwargs, dtype, steps, lrs=[0.5, 1.0, 0.25, 0.8][:steps])


# Each example compiles anew (max_iter and history_size are static): at most 3.
@pytest.mark.parametrize('dtype', DTYPES)
@settings(max_examples=min(3, settings().max_examples))
@given(
  lr=st.floats(0.05, 1.5),
  history_size=st.integers(1, 8),
  max_iter=st.integers(1, 12),
  line_search_fn=st.sampled_from([None, 'strong_wolfe']),
  problem=st.sampled_from(['quadratic', 'rosenbrock']),
)
def test_random_hyperparameters_match_torch(dtype, lr, history_size, max_iter, line_search_fn, problem):
  if dtype == 'float32' and line_search_fn:
    # A short first step barely bends the line search's cubic, and float32 rounding
    # of the loss decides between its minimiser and the midpoint of its bounds:
    # at lr=0.05 torch moves by 6e-2 when its start moves by one ulp.
    lr = max(lr, 0.2)
  kwargs, steps = _run(
    dtype, dict(lr=lr, history_size=history_size, max_iter=max_iter, line_search_fn=line_search_fn), steps=3
  )
  assert_matches_torch(problem, kwargs, dtype, steps)


def test_defaults_are_torchs():
  state = jaxsched.optimizer('LBFGS').init({'w': jnp.zeros(3)})
  assert float(state.hyperparams['learning_rate']) == 1.0
  assert float(state.hyperparams['tolerance_grad']) == pytest.approx(1e-7)
  assert float(state.hyperparams['tolerance_change']) == pytest.approx(1e-9)
  assert state.inner_state.old_dirs.shape == (100, 3)  # history_size 100
  assert_matches_torch('quadratic', {}, 'float64', steps=2)


def test_missing_value_fn_is_a_clear_error():
  tx = jaxsched.optimizer('LBFGS')
  params = {'w': jnp.ones(3)}
  with pytest.raises(TypeError, match='value_fn'):
    tx.update(params, tx.init(params), params)


@pytest.mark.parametrize(
  'kwargs, words',
  [
    (dict(line_search_fn='wolfe'), ['line_search_fn', "'wolfe'", "'strong_wolfe'"]),
    (dict(history_size=0), ['history_size', '0']),
    (dict(max_iter=-1), ['max_iter', '-1']),
    (dict(max_iter=2.5), ['max_iter', '2.5']),
    (dict(max_eval=0, line_search_fn='strong_wolfe'), ['max_eval', '0', 'strong_wolfe']),
    (dict(tolerance_grad='small'), ['tolerance_grad', "'small'"]),
    (dict(lr=-1.0), ['lr', '-1.0']),
  ],
)
def test_bad_input(kwargs, words):
  assert_rejected('LBFGS', kwargs, words)
