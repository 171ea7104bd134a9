"""timm.adahessian against ``timm.optim.Adahessian`` (``create_optimizer_v2(opt='adahessian')``):
timm's loop ``loss.backward(create_graph=True); opt.step()`` and jaxsched's
``tx.update(grads, state, params, value_fn=loss)`` on the same loss, step by step; the probes drawn
inside the compiled step against ``torch.randint`` on timm's generator."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jaxsched
from jaxsched.optimizers import timm_adahessian
from oracle import assert_config_error, assert_trajectories_close, x64
from timm_runs import TIMM_OPTIM

# timm's loop calls backward(create_graph=True), about which torch warns
pytestmark = pytest.mark.filterwarnings('ignore:Using backward\\(\\) with create_graph=True')
STEPS = 8
_RNG = np.random.default_rng(0)
# a matrix, a vector and a conv kernel (avg_conv_kernel), in torch's parameter order (a tuple: the same order)
PARAMS = tuple(_RNG.normal(size=s) for s in ((4, 3), (3,), (2, 1, 3, 3)))
X, C = _RNG.normal(size=3), _RNG.normal(size=(2, 1, 3, 3))


def loss(params, xp):
  """sum(tanh(w (x + b))) + |b|^4 + sum(sin(k) c) + |k|^4 / 10: every Hessian block, b with w's included."""
  w, b, k = params
  x, c = (xp.asarray(a, dtype=w.dtype) for a in (X, C))
  return xp.sum(xp.tanh(w @ (x + b))) + xp.sum(b**2) ** 2 + xp.sum(xp.sin(k) * c) + xp.sum(k**2) ** 2 * 0.1


def timm_run(kwargs, dtype):
  tdtype = getattr(torch, dtype)
  params = [torch.tensor(p, dtype=tdtype, requires_grad=True) for p in PARAMS]
  opt = TIMM_OPTIM.create_optimizer_v2(params, opt='adahessian', **kwargs)
  out = []
  for _ in range(STEPS):
    opt.zero_grad()
    loss(params, torch).backward(create_graph=True)
    opt.step()
    out.append({i: p.detach().numpy().copy() for i, p in enumerate(params)})
  return out


def jax_run(kwargs, dtype):
  with x64(dtype):
    tx = jaxsched.optimizer('timm.adahessian', **kwargs)
    f = functools.partial(loss, xp=jnp)

    @jax.jit
    def run(params):
      def body(carry, _):
        p, state = carry
        u, state = tx.update(jax.grad(f)(p), state, p, value_fn=f)
        p = optax.apply_updates(p, u)
        return (p, state), p

      return jax.lax.scan(body, (params, tx.init(params)), None, length=STEPS)[1]

    out = run(tuple(jnp.asarray(p, dtype) for p in PARAMS))
    return [{i: np.asarray(p[s]) for i, p in enumerate(out)} for s in range(STEPS)]


ALL = {'update_each': 2, 'n_samples': 2, 'hessian_power': 0.5, 'weight_decay': 0.1, 'avg_conv_kernel': True}


@pytest.mark.parametrize(
  'kwargs, dtype',
  [
    ({}, 'float64'),
    ({}, 'float32'),
    (ALL, 'float64'),
    (ALL, 'float32'),
    ({'hessian_power': 0.0, 'update_each': 3, 'betas': (0.8, 0.9)}, 'float64'),
  ],
)
def test_follows_timm(kwargs, dtype):
  kwargs = {'lr': 0.05, **kwargs}
  assert_trajectories_close(jax_run(kwargs, dtype), timm_run(kwargs, dtype), dtype)


def test_probes_are_torch_randint_on_timms_generator():
  # torch.randint(0, 2**25) shows 25 bits of each word (and randint(0, 2) the parity the probes use), over
  # consecutive calls that start and end inside the 624-word blocks and cross several of them
  sizes = (12, 3, 700, 1, 1300, 624)
  g = torch.Generator().manual_seed(timm_adahessian.SEED)
  expected = [torch.randint(0, 2**25 if i % 2 else 2, (n,), generator=g).numpy() for i, n in enumerate(sizes)]

  @jax.jit
  def draws(generator):
    out = []
    for n in sizes:
      words, generator = timm_adahessian.mt19937_words(generator, n)
      out.append(words)
    return out

  actual = draws(timm_adahessian.seeded())
  for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
    np.testing.assert_array_equal(np.asarray(a) % (2**25 if i % 2 else 2), e)


def test_needs_the_loss():
  tx = jaxsched.optimizer('timm.adahessian')
  params = {'w': jnp.ones(3)}
  with pytest.raises(TypeError, match='value_fn'):
    tx.update(params, tx.init(params), params)


@pytest.mark.parametrize(
  'kwargs, words',
  [
    ({'hessian_power': 1.5}, ['hessian_power', '1.5']),
    ({'update_each': 0}, ['update_each', '0']),
    ({'n_samples': 0}, ['n_samples', '0']),
    ({'betas': (0.9, 1.0)}, ['betas']),
    ({'n_sample': 2}, ['n_sample', 'n_samples']),
  ],
)
def test_bad_keywords_are_config_errors(kwargs, words):
  assert_config_error(lambda: jaxsched.optimizer('timm.adahessian', **kwargs), words)


def test_several_groups_and_complex_parameters_are_refused():
  config = {'optimizer': 'timm.adahessian', 'lr_parameter_groups': {'bias': {'lr_factor': 2.0}}}
  params = {'kernel': jnp.ones(3), 'bias': jnp.ones(3)}
  assert_config_error(lambda: jaxsched.build(config, params, batches_per_epoch=4), ['timm.adahessian', 'groups'])
  tx = jaxsched.optimizer('timm.adahessian')
  assert_config_error(lambda: tx.init({'z': jnp.ones(3, jnp.complex64)}), ['timm.adahessian', 'complex'])
