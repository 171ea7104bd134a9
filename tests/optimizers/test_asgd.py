import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import jaxsched
from jaxsched.optimizers.asgd import TorchASGDState
from oracle import DTYPES, SHAPES, TOLERANCE, assert_matches_torch, assert_rejected, max_rel_diff, problem, x64

OPTIONS = [
  dict(t0=t0, weight_decay=wd, maximize=mx) for t0, wd, mx in itertools.product((1e6, 3.0), (0.0, 0.01), (False, True))
]


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_options_match_torch(options, dtype):
  assert_matches_torch('ASGD', dict(lr=0.1, lambd=1e-3, **options), dtype)


@pytest.mark.parametrize('dtype', DTYPES)
@given(
  lr=st.floats(1e-4, 0.5),
  lambd=st.floats(0.0, 1e-2),
  alpha=st.floats(0.0, 1.0),
  t0=st.floats(0.0, 20.0),
  weight_decay=st.floats(0.0, 0.1),
  maximize=st.booleans(),
)
def test_random_hyperparameters_match_torch(dtype, lr, lambd, alpha, t0, weight_decay, maximize):
  assert_matches_torch(
    'ASGD', dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay, maximize=maximize), dtype
  )


def _lr(step):
  return 0.2 if step < 4 else 0.05


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('scheduled', (False, True))
def test_state_matches_torch(dtype, scheduled):
  """The Polyak average ax, eta, mu and step track torch's optimizer.state, with
  averaging from t0 = 2.5 on, and with an lr that changes mid-run."""
  kwargs = dict(lambd=0.01, alpha=0.6, t0=2.5, weight_decay=0.01)
  params, grads = problem(SHAPES, 10)
  tensors = {k: torch.tensor(v, dtype=getattr(torch, dtype), requires_grad=True) for k, v in params.items()}
  opt = torch.optim.ASGD(tensors.values(), lr=_lr(0), **kwargs)
  with x64(dtype):
    tx = jaxsched.optimizer(
      'ASGD', learning_rate=(lambda c: jnp.where(c < 4, 0.2, 0.05)) if scheduled else 0.2, **kwargs
    )
    p = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    state = tx.init(p)
    step = jax.jit(tx.update)
    for k, g in enumerate(grads):
      if scheduled:
        opt.param_groups[0]['lr'] = _lr(k)
      for name, t in tensors.items():
        t.grad = torch.tensor(g[name], dtype=t.dtype)
      opt.step()
      updates, state = step({n: jnp.asarray(v, dtype) for n, v in g.items()}, state, p)
      p = optax.apply_updates(p, updates)
      torch_state = {n: opt.state[t] for n, t in tensors.items()}
      ours = next(s for s in state.inner_state if isinstance(s, TorchASGDState))
      assert (
        max_rel_diff({n: np.asarray(v) for n, v in p.items()}, {n: t.detach().numpy() for n, t in tensors.items()})
        <= TOLERANCE[dtype]
      )
      assert (
        max_rel_diff(
          {n: np.asarray(v) for n, v in ours.ax.items()}, {n: s['ax'].numpy() for n, s in torch_state.items()}
        )
        <= TOLERANCE[dtype]
      )
      for key in ('eta', 'mu'):
        value = getattr(ours, key)
        assert value.dtype == torch_state['w'][key].numpy().dtype == np.float32
        # Computed in float64 then stored in float32, as torch does: bit-identical.
        # float32 runs compute it in float32 (torch: in Python floats).
        assert float(value) == pytest.approx(torch_state['w'][key].item(), rel=0 if dtype == 'float64' else 1e-6)
      assert int(ours.count) == int(torch_state['w']['step'].item()) == k + 1
  assert float(torch_state['w']['mu']) < 1.0  # averaging did start


def test_defaults_are_torchs():
  state = jaxsched.optimizer('ASGD').init({'w': jnp.zeros(2)})
  assert float(state.hyperparams['learning_rate']) == pytest.approx(0.01)
  assert float(state.hyperparams['t0']) == 1e6
  assert_matches_torch('ASGD', {}, 'float64')


@pytest.mark.parametrize(
  'kwargs, words',
  [
    (dict(weight_decay=-0.01), ['weight_decay', '-0.01']),
    (dict(lr=-1.0), ['lr', '-1.0']),
    (dict(t0='soon'), ['t0', "'soon'"]),
    (dict(lambd=float('nan')), ['lambd', 'nan']),
    (dict(maximize=None), ['maximize', 'None']),
    (dict(lambda_=1e-4), ['lambda_', 'lambd']),
  ],
)
def test_bad_input(kwargs, words):
  assert_rejected('ASGD', kwargs, words)
