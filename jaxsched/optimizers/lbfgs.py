"""LBFGS: ``torch.optim.LBFGS``, one whole ``step(closure)`` per update, inside jit.

torch's L-BFGS runs up to ``max_iter`` inner iterations per ``step`` and calls the
closure for the loss and gradient at trial points. Here the closure is
``value_fn``, passed to ``update`` as an extra argument, and the inner loop,
the history and torch's strong Wolfe line search are ``lax.while_loop``s over
the flattened parameter vector (``jax.flatten_util.ravel_pytree``), with the
history in fixed-size ring buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxsched import _checks
from jaxsched._errors import ConfigError
from jaxsched.optimizers import _common
from jaxsched.optimizers._registry import OptimizerSpec

# torch's _strong_wolfe constants. LBFGS.step never passes tolerance_change to
# it, so the line search always uses its own default 1e-9.
_C1, _C2, _LS_TOLERANCE_CHANGE = 1e-4, 0.9, 1e-9
# torch keeps a curvature pair only when y.s exceeds this.
_CURVATURE_EPS = 1e-10


class LBFGSState(NamedTuple):
  """torch's LBFGS state, over the flattened parameters (length n).

  ``old_dirs`` (the y's), ``old_stps`` (the s's) and ``ro`` (1 / y.s) hold
  torch's history lists in rings of ``history_size`` rows: ``num_old`` pairs,
  the oldest at row ``head``. ``n_iter`` and ``func_evals`` count over all
  updates, as torch's ``state['n_iter']`` and ``state['func_evals']``.
  """

  func_evals: jax.Array
  n_iter: jax.Array
  d: jax.Array
  t: jax.Array
  old_dirs: jax.Array
  old_stps: jax.Array
  ro: jax.Array
  head: jax.Array
  num_old: jax.Array
  h_diag: jax.Array
  prev_flat_grad: jax.Array
  prev_loss: jax.Array


class _Point(NamedTuple):
  """A line-search point: step ``t``, loss ``f``, gradient ``g``, ``gtd = g.d``.

  A bracket is a _Point whose fields are stacked pairs.
  """

  t: jax.Array
  f: jax.Array
  g: jax.Array
  gtd: jax.Array


def _py_max(a, b):
  """Python's ``max(a, b)``: ``a`` unless ``b > a`` (NaN-faithful)."""
  return jnp.where(b > a, b, a)


def _py_min(a, b):
  """Python's ``min(a, b)``: ``a`` unless ``b < a``."""
  return jnp.where(b < a, b, a)


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
  """torch's ``_cubic_interpolate``: the minimiser of the cubic through two points
  with their derivatives, clamped to ``bounds`` (default: between the points); the
  middle of the bounds when the cubic has no real minimiser."""
  if bounds is None:
    ordered = x1 <= x2
    xmin_bound, xmax_bound = jnp.where(ordered, x1, x2), jnp.where(ordered, x2, x1)
  else:
    xmin_bound, xmax_bound = bounds
  d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
  d2_square = d1**2 - g1 * g2
  real = d2_square >= 0
  d2 = jnp.sqrt(jnp.where(real, d2_square, 0))
  min_pos = jnp.where(
    x1 <= x2,
    x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)),
    x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)),
  )
  return jnp.where(real, _py_min(_py_max(min_pos, xmin_bound), xmax_bound), (xmin_bound + xmax_bound) / 2.0)


def _low_pos(bracket: _Point) -> jax.Array:
  """torch's ``(0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)``: the lower end."""
  return jnp.where(bracket.f[0] <= bracket.f[1], 0, 1).astype(jnp.int32)


def _pick(cond, a: _Point, b: _Point) -> _Point:
  return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def _set(bracket: _Point, i, point: _Point) -> _Point:
  return jax.tree.map(lambda b, p: b.at[i].set(p), bracket, point)


def _get(bracket: _Point, i) -> _Point:
  return jax.tree.map(lambda b: b[i], bracket)


def _strong_wolfe(obj_func, t, d, f, g, gtd, max_ls):
  """torch's ``_strong_wolfe``: bracket a step satisfying the strong Wolfe
  conditions, then zoom in by cubic interpolation, within ``max_ls`` iterations.

  Returns ``(f_new, g_new, t, ls_func_evals)`` as torch does.
  """
  c1, c2, tol = (_common.cast(c, d) for c in (_C1, _C2, _LS_TOLERANCE_CHANGE))
  d_norm = jnp.max(jnp.abs(d))

  def evaluate(t):
    f_new, g_new = obj_func(t)
    return _Point(t, f_new, g_new, g_new @ d)

  start = _Point(jnp.zeros_like(t), f, g, gtd)

  # Bracketing. The loop condition holds torch's three break tests, so the loop
  # stops exactly where torch breaks or runs out of iterations.
  def armijo_fails(prev, new, ls_iter):
    return (new.f > f + c1 * new.t * gtd) | ((ls_iter > 1) & (new.f >= prev.f))

  def wolfe_holds(new):
    return jnp.abs(new.gtd) <= -c2 * gtd

  def bracketing(carry):
    prev, new, ls_iter, _ = carry
    found = armijo_fails(prev, new, ls_iter) | wolfe_holds(new) | (new.gtd >= 0)
    return (ls_iter < max_ls) & ~found

  def extrapolate(carry):
    prev, new, ls_iter, evals = carry
    min_step = new.t + 0.01 * (new.t - prev.t)
    max_step = new.t * 10
    t = _cubic_interpolate(prev.t, prev.f, prev.gtd, new.t, new.f, new.gtd, bounds=(min_step, max_step))
    return new, evaluate(t), ls_iter + 1, evals + 1

  prev, new, ls_iter, evals = lax.while_loop(
    bracketing, extrapolate, (start, evaluate(t), jnp.zeros([], jnp.int32), jnp.ones([], jnp.int32))
  )
  exhausted = ls_iter == max_ls
  done = ~exhausted & ~armijo_fails(prev, new, ls_iter) & wolfe_holds(new)
  lower = _pick(exhausted, start, _pick(done, new, prev))
  bracket = jax.tree.map(lambda lo, hi: jnp.stack([lo, hi]), lower, new)
  low_pos = _low_pos(bracket)

  # Zoom. The bracket-width break, torch's first test in the loop, is in the condition.
  def zooming(carry):
    bracket, _, _, done, ls_iter, _ = carry
    wide = ~(jnp.abs(bracket.t[1] - bracket.t[0]) * d_norm < tol)
    return ~done & (ls_iter < max_ls) & wide

  def zoom(carry):
    bracket, low_pos, insuf_progress, done, ls_iter, evals = carry
    high_pos = 1 - low_pos
    b_max, b_min = _py_max(bracket.t[0], bracket.t[1]), _py_min(bracket.t[0], bracket.t[1])
    t = _cubic_interpolate(bracket.t[0], bracket.f[0], bracket.gtd[0], bracket.t[1], bracket.f[1], bracket.gtd[1])
    # Too close to an end of the bracket: move 0.1 of its width inside.
    eps = 0.1 * (b_max - b_min)
    near_end = _py_min(b_max - t, t - b_min) < eps
    at_end = insuf_progress | (t >= b_max) | (t <= b_min)
    moved = jnp.where(jnp.abs(t - b_max) < jnp.abs(t - b_min), b_max - eps, b_min + eps)
    t = jnp.where(near_end & at_end, moved, t)
    insuf_progress = near_end & ~at_end
    new = evaluate(t)
    # Armijo fails or no lower than the low end: the new point replaces the high end.
    # Otherwise it becomes the low end, the old low end moving to the high end if
    # the derivative points away from it; the strong Wolfe condition ends the search.
    armijo_fails = (new.f > f + c1 * t * gtd) | (new.f >= bracket.f[low_pos])
    low, high = _get(bracket, low_pos), _get(bracket, high_pos)
    done = ~armijo_fails & wolfe_holds(new)
    flip = ~done & (new.gtd * (high.t - low.t) >= 0)
    at_low = _pick(armijo_fails, low, new)
    at_high = _pick(armijo_fails, new, _pick(flip, low, high))
    bracket = _set(_set(bracket, low_pos, at_low), high_pos, at_high)
    low_pos = jnp.where(armijo_fails, _low_pos(bracket), low_pos)
    return bracket, low_pos, insuf_progress, done, ls_iter + 1, evals + 1

  bracket, low_pos, *_, evals = lax.while_loop(
    zooming, zoom, (bracket, low_pos, jnp.zeros([], bool), done, ls_iter, evals)
  )
  best = _get(bracket, low_pos)
  return best.f, best.g, best.t, evals


def _two_loop(flat_grad, state: LBFGSState):
  """torch's two-loop recursion: ``d = -H g`` from the ``num_old`` stored pairs
  (oldest first in torch's lists, here ring rows ``head, head + 1, ...``)."""
  history = state.old_dirs.shape[0]

  def row(i):
    return (state.head + i) % history

  def backward(k, carry):
    q, al = carry
    i = row(state.num_old - 1 - k)
    a = (state.old_stps[i] @ q) * state.ro[i]
    return q - a * state.old_dirs[i], al.at[i].set(a)

  q, al = lax.fori_loop(0, state.num_old, backward, (-flat_grad, jnp.zeros_like(state.ro)))

  def forward(k, r):
    i = row(k)
    be_i = (state.old_dirs[i] @ r) * state.ro[i]
    return r + (al[i] - be_i) * state.old_stps[i]

  return lax.fori_loop(0, state.num_old, forward, q * state.h_diag)


def _direction(flat_grad, state: LBFGSState) -> LBFGSState:
  """torch's direction update, returning the state with the new ``d``, history and
  ``h_diag``: store the pair ``y = g - g_prev``, ``s = t d`` when ``y.s > 1e-10``
  (over the oldest pair when the history is full), then ``H_diag = y.s / y.y``,
  and run the two-loop recursion.

  On the very first iteration torch sets ``d = -g`` and ``H_diag = 1`` with an
  empty history: the state is then still :func:`lbfgs`'s initial one (empty
  history, ``h_diag`` 1), so the recursion gives exactly ``-g``.
  """
  history = state.old_dirs.shape[0]
  y = flat_grad - state.prev_flat_grad
  s = state.d * state.t
  ys = y @ s
  accept = (state.n_iter > 1) & (ys > _CURVATURE_EPS)
  pos = (state.head + state.num_old) % history

  def put(ring, row):
    return ring.at[pos].set(jnp.where(accept, row, ring[pos]))

  state = state._replace(
    old_dirs=put(state.old_dirs, y),
    old_stps=put(state.old_stps, s),
    ro=put(state.ro, 1.0 / ys),
    head=jnp.where(accept & (state.num_old == history), (state.head + 1) % history, state.head),
    num_old=jnp.where(accept, jnp.minimum(state.num_old + 1, history), state.num_old),
    h_diag=jnp.where(accept, ys / (y @ y), state.h_diag),
  )
  return state._replace(d=_two_loop(flat_grad, state))


class _Carry(NamedTuple):
  """The inner loop's variables: torch's locals plus the state being built."""

  state: LBFGSState
  x: jax.Array
  loss: jax.Array
  flat_grad: jax.Array
  n_iter: jax.Array
  current_evals: jax.Array
  stop: jax.Array


def lbfgs(
  learning_rate: Any,
  max_iter: int,
  max_eval: int | None,
  tolerance_grad: Any,
  tolerance_change: Any,
  history_size: int,
  line_search_fn: str | None,
) -> optax.GradientTransformationExtraArgs:
  """Limited-memory BFGS, as ``torch.optim.LBFGS``: one update is one ``step(closure)``.

  Call ``tx.update(grads, state, params, value_fn=f)`` with ``f(params)`` the
  scalar loss (torch's closure) and ``grads`` its gradient at ``params``; the
  update is ``new_params - params``.

  torch's step: stop at once if ``max|g| <= tolerance_grad``. Otherwise, up to
  ``max_iter`` times: the direction is ``d = -g`` on the very first iteration
  (ever), else the two-loop recursion ``d = -H g`` over the last
  ``history_size`` pairs ``y = g - g_prev``, ``s = t d`` kept when
  ``y.s > 1e-10``, with ``H_0 = y.s / y.y``; the step is
  ``t = min(1, 1/|g|_1) lr`` on the first iteration, else ``lr``; stop if
  ``g.d > -tolerance_change``; move ``x += t d`` (no line search: then
  re-evaluate, except on the last iteration) or by torch's strong Wolfe line
  search (``c1=1e-4``, ``c2=0.9``, its own ``tolerance_change=1e-9``, at most
  ``max_eval - evals`` iterations); stop after ``max_iter`` iterations, at
  ``max_eval`` evaluations, when ``max|g| <= tolerance_grad``, when
  ``max|t d| <= tolerance_change`` or when the loss changed by less than
  ``tolerance_change``. ``max_eval=None`` means ``max_iter * 5 // 4``. The
  direction, step, history and counters persist across updates, as in torch.
  """
  if max_eval is None:
    max_eval = max_iter * 5 // 4

  def init_fn(params):
    flat, _ = ravel_pytree(params)
    n = flat.shape[0]
    # one array per field: a state may be donated, and a buffer cannot be donated twice
    zero = lambda: jnp.zeros([], flat.dtype)  # noqa: E731
    count = lambda: jnp.zeros([], jnp.int32)  # noqa: E731
    return LBFGSState(
      func_evals=count(),
      n_iter=count(),
      d=jnp.zeros_like(flat),
      t=zero(),
      old_dirs=jnp.zeros((history_size, n), flat.dtype),
      old_stps=jnp.zeros((history_size, n), flat.dtype),
      ro=jnp.zeros(history_size, flat.dtype),
      head=count(),
      num_old=count(),
      h_diag=jnp.ones([], flat.dtype),
      prev_flat_grad=jnp.zeros_like(flat),
      prev_loss=zero(),
    )

  def update_fn(updates, state, params=None, *, value_fn: Callable[[Any], Any] | None = None, **extra_args):
    del extra_args
    if value_fn is None or params is None:
      raise TypeError(
        'LBFGS needs the loss function, as torch.optim.LBFGS.step needs its closure: call '
        'tx.update(grads, state, params, value_fn=f) with f(params) -> scalar loss.'
      )
    x0, unravel = ravel_pytree(params)
    flat_grad, _ = ravel_pytree(updates)
    lr, tol_grad, tol_change = (_common.cast(h, x0) for h in (learning_rate, tolerance_grad, tolerance_change))

    def loss_at(x):
      return jnp.asarray(value_fn(unravel(x)), x0.dtype)

    value_and_grad = jax.value_and_grad(loss_at)

    def iteration(c: _Carry) -> _Carry:
      n_iter = c.n_iter + 1
      state = c.state._replace(n_iter=c.state.n_iter + 1)
      state = _direction(c.flat_grad, state)
      d = state.d
      t = jnp.where(state.n_iter == 1, _py_min(1.0, 1.0 / jnp.sum(jnp.abs(c.flat_grad))) * lr, lr)
      state = state._replace(prev_flat_grad=c.flat_grad, prev_loss=c.loss, t=t)
      gtd = c.flat_grad @ d

      def move():
        if line_search_fn == 'strong_wolfe':
          loss, flat_grad, t_ls, evals = _strong_wolfe(
            lambda t: value_and_grad(c.x + t * d), t, d, c.loss, c.flat_grad, gtd, max_eval - c.current_evals
          )
          x = c.x + t_ls * d
        else:
          t_ls, x = t, c.x + t * d
          loss, flat_grad, evals = lax.cond(
            n_iter != max_iter,
            lambda: (*value_and_grad(x), jnp.ones([], jnp.int32)),
            lambda: (c.loss, c.flat_grad, jnp.zeros([], jnp.int32)),
          )
        current_evals = c.current_evals + evals
        stop = (
          (n_iter == max_iter)
          | (current_evals >= max_eval)
          | (jnp.max(jnp.abs(flat_grad)) <= tol_grad)
          | (jnp.max(jnp.abs(d * t_ls)) <= tol_change)
          | (jnp.abs(loss - c.loss) < tol_change)
        )
        new_state = state._replace(t=t_ls, func_evals=state.func_evals + evals)
        return _Carry(new_state, x, loss, flat_grad, n_iter, current_evals, stop)

      return lax.cond(gtd > -tol_change, lambda: c._replace(state=state, n_iter=n_iter, stop=jnp.ones([], bool)), move)

    loss = loss_at(x0)
    state = state._replace(func_evals=state.func_evals + 1)
    start = _Carry(
      state,
      x0,
      loss,
      flat_grad,
      jnp.zeros([], jnp.int32),
      jnp.ones([], jnp.int32),
      jnp.max(jnp.abs(flat_grad)) <= tol_grad,
    )
    final = lax.while_loop(lambda c: ~c.stop & (c.n_iter < max_iter), iteration, start)
    new_params = unravel(final.x)
    return jax.tree.map(jnp.subtract, new_params, params), final.state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_max_eval(kw: dict[str, Any]) -> None:
  # The line search gets max_eval - 1 iterations on the first iteration; torch
  # fails (UnboundLocalError) when that is negative.
  if kw['line_search_fn'] == 'strong_wolfe' and kw['max_iter'] > 0 and kw['max_eval'] == 0:
    raise ConfigError(
      f"LBFGS: max_eval={kw['max_eval']!r} is not allowed with line_search_fn='strong_wolfe': "
      'expected an integer >= 1 (torch fails at its first step).'
    )


SPECS = (
  OptimizerSpec(
    name='LBFGS',
    factory=lbfgs,
    lr=1.0,
    kwargs={
      # torch runs no iteration for max_iter <= 0 and treats max_eval <= 0
      # as 1 (without line search); negative counts are rejected here.
      'max_iter': (20, _checks.Integer(0)),
      'max_eval': (None, _checks.Optional(_checks.Integer(0))),
      'tolerance_grad': (1e-7, _checks.Real()),
      'tolerance_change': (1e-9, _checks.Real()),
      # torch fails at the first stored pair with history_size 0.
      'history_size': (100, _checks.Integer(1)),
      'line_search_fn': (None, _checks.Optional(_checks.Choice(('strong_wolfe',)))),
    },
    cross_check=_check_max_eval,
    groups=False,
    torch_state={LBFGSState: {}},  # one state for all parameters: converted by its own code
    torch_step=None,
    closure=True,
  ),
)
