"""Optimizers against their first steps written out by hand, without torch (the fast lane; the files named
after each torch family compare whole trajectories with torch). The formulas are torch's docs for each
class: after one or two steps from zero state, each update has a closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsched

P = np.array([1.0, -2.0, 0.5])
G1 = np.array([0.3, -0.1, 2.0])
G2 = np.array([-0.2, -0.4, 1.0])


def updates(name: str, grads, params=P, **kwargs) -> list[np.ndarray]:
  """The updates of ``jaxsched.optimizer(name, **kwargs)`` for each gradient, in float64, parameters moving."""
  with jax.enable_x64(True):
    tx = jaxsched.optimizer(name, **kwargs)
    p = jnp.asarray(params)
    state = tx.init(p)
    out = []
    for g in grads:
      u, state = jax.jit(tx.update)(jnp.asarray(g), state, p)
      p = optax.apply_updates(p, u)
      out.append(np.asarray(u))
  return out


def first(name: str, **kwargs) -> np.ndarray:
  return updates(name, [G1], **kwargs)[0]


# (name, kwargs, the first update of G1 at P); torch's defaults where not given
FIRST_STEPS = {
  'SGD': ({'lr': 0.1}, -0.1 * G1),
  'SGD, L2': ({'lr': 0.1, 'weight_decay': 0.5}, -0.1 * (G1 + 0.5 * P)),
  'SGD, maximize': ({'lr': 0.1, 'maximize': True}, 0.1 * G1),
  # m = (1 - b1) g, v = (1 - b2) g^2: bias-corrected, m / sqrt(v) = sign(g)
  'Adam': ({'lr': 0.1}, -0.1 * G1 / (np.abs(G1) + 1e-8)),
  'AdamW': ({'lr': 0.1, 'weight_decay': 0.5}, -0.1 * 0.5 * P - 0.1 * G1 / (np.abs(G1) + 1e-8)),
  # u = max(b2 * 0, |g| + eps)
  'Adamax': ({'lr': 0.1}, -0.1 * G1 / (np.abs(G1) + 1e-8)),
  # sum = g^2
  'Adagrad': ({'lr': 0.1}, -0.1 * G1 / (np.abs(G1) + 1e-10)),
  # v = (1 - alpha) g^2 with alpha=0.99
  'RMSprop': ({'lr': 0.1}, -0.1 * G1 / (0.1 * np.abs(G1) + 1e-8)),
  # v = (1 - rho) g^2; delta = sqrt(0 + eps) / sqrt(v + eps) * g
  'Adadelta': ({'lr': 1.0, 'rho': 0.9}, -np.sqrt(1e-6) / np.sqrt(0.1 * G1**2 + 1e-6) * G1),
  # every step size starts at lr
  'Rprop': ({'lr': 0.01}, -0.01 * np.sign(G1)),
  # ASGD: p *= 1 - lambd * eta, then p -= eta * g, eta = lr at step one (held in float32, as torch's
  # _get_scalar_dtype() holds it: hence the tolerance below)
  'ASGD': ({'lr': 0.1, 'lambd': 0.5}, -0.1 * 0.5 * P - 0.1 * G1),
}


@pytest.mark.parametrize('case', sorted(FIRST_STEPS))
def test_first_update_is_the_closed_form(case):
  kwargs, expected = FIRST_STEPS[case]
  np.testing.assert_allclose(first(case.split(',')[0], **kwargs), expected, rtol=1e-7 if case == 'ASGD' else 1e-12)


def test_sgd_momentum_and_nesterov_two_steps():
  """buf = g1, then buf = m * buf + (1 - dampening) * g2; Nesterov steps along g + m * buf."""
  u1, u2 = updates('SGD', [G1, G2], lr=0.1, momentum=0.9, dampening=0.5)
  np.testing.assert_allclose([u1, u2], [-0.1 * G1, -0.1 * (0.9 * G1 + 0.5 * G2)], rtol=1e-12)
  u1, u2 = updates('SGD', [G1, G2], lr=0.1, momentum=0.9, nesterov=True)
  buf2 = 0.9 * G1 + G2
  np.testing.assert_allclose([u1, u2], [-0.1 * (G1 + 0.9 * G1), -0.1 * (G2 + 0.9 * buf2)], rtol=1e-12)


def test_adam_second_step_by_hand():
  b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.1
  m = (1 - b1) * (b1 * G1 + G2)
  v = (1 - b2) * (b2 * G1**2 + G2**2)
  expected = -lr * (m / (1 - b1**2)) / (np.sqrt(v / (1 - b2**2)) + eps)
  np.testing.assert_allclose(updates('Adam', [G1, G2], lr=lr)[1], expected, rtol=1e-12)


def test_rprop_grows_steps_that_keep_their_sign_and_cuts_those_that_flip():
  """etas=(0.5, 1.2): a sign kept multiplies the step size by 1.2; a flipped sign halves it and skips
  the element for that step (torch zeroes its gradient)."""
  u1, u2, u3 = updates('Rprop', [G1, G2, G2], lr=0.01)
  kept = np.sign(G1) == np.sign(G2)
  np.testing.assert_allclose(u2, np.where(kept, -0.012 * np.sign(G2), 0.0), rtol=1e-12)
  # after a flip the previous gradient counts as 0: the halved step is taken as it is
  np.testing.assert_allclose(u3, np.where(kept, -0.0144 * np.sign(G2), -0.005 * np.sign(G2)), rtol=1e-12)


def test_sparse_adam_leaves_zero_gradients_and_their_moments_alone():
  """SparseAdam updates only the entries with a gradient (a zero entry neither moves nor decays its moments),
  by -lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), t the tensor's step count."""

  def step(t, m, v):
    return -0.1 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-8)

  g = G1 * np.array([1.0, 0.0, 1.0])
  u1, u2 = updates('SparseAdam', [g, G2], lr=0.1)
  np.testing.assert_allclose(u1, step(1, 0.1 * g, 0.001 * g**2), rtol=1e-12)
  # the middle entry's moments start at its first gradient, G2's
  np.testing.assert_allclose(u2[1], step(2, 0.1 * G2[1], 0.001 * G2[1] ** 2), rtol=1e-12)


def test_lbfgs_solves_a_quadratic():
  """One step of LBFGS (20 inner iterations, strong Wolfe) finds the minimum of a 3-d quadratic."""
  a = np.diag([1.0, 3.0, 10.0]) + 0.1
  b = np.array([1.0, -1.0, 2.0])
  with jax.enable_x64(True):

    def value_fn(p):
      return 0.5 * p @ jnp.asarray(a) @ p - jnp.asarray(b) @ p

    tx = jaxsched.optimizer(
      'LBFGS', lr=1.0, line_search_fn='strong_wolfe', tolerance_grad=1e-12, tolerance_change=1e-15
    )
    p = jnp.zeros(3)
    u, _ = jax.jit(lambda p: tx.update(jax.grad(value_fn)(p), tx.init(p), p, value_fn=value_fn))(p)
    np.testing.assert_allclose(np.asarray(p + u), np.linalg.solve(a, b), rtol=1e-7)


def test_muon_steps_along_an_orthogonal_matrix():
  """Muon's update of a matrix is -lr * 0.2 * sqrt(max(rows, cols)) * ortho(g) with match_rms_adamw, ortho
  by Newton-Schulz: its singular values are all near one, whatever the gradient's."""
  g = np.random.default_rng(0).normal(size=(4, 6)) * np.array([[10.0], [1.0], [0.1], [0.01]])
  (u,) = updates('Muon', [g], params=np.zeros((4, 6)), lr=1.0, weight_decay=0.0, adjust_lr_fn='match_rms_adamw')
  s = np.linalg.svd(-u / (0.2 * 6**0.5), compute_uv=False)
  assert np.all((s > 0.6) & (s < 1.25)), s  # Newton-Schulz's five steps land each value in about [0.7, 1.2]
