"""The optimizer table as a whole: coverage of torch.optim, errors, jit behaviour, dtypes."""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jaxsched
from jaxsched.optimizers import _complex
from jaxsched.optimizers._registry import IMPLEMENTATION_FLAGS
from oracle import TOLERANCE, assert_config_error, max_rel_diff, x64

TORCH_OPTIMIZERS = sorted(
  name
  for name, obj in vars(torch.optim).items()
  if isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer
)
# jaxsched's own keywords beyond torch's.
EXTRA_KWARGS = {'Muon': {'ns_dtype', 'layout'}}


def _params():
  return {'w': jnp.linspace(-1.0, 1.0, 12).reshape(4, 3), 'v': jnp.linspace(0.5, 1.5, 12).reshape(3, 4)}


def _loss(p):
  return sum(jnp.sum(jnp.sin(x) + x**2) for x in jax.tree.leaves(p))


def test_every_torch_optimizer_is_registered():
  assert sorted(jaxsched.OPTIMIZERS) == TORCH_OPTIMIZERS


@pytest.mark.parametrize('name', TORCH_OPTIMIZERS)
def test_keywords_are_torchs(name):
  torch_kwargs = set(inspect.signature(getattr(torch.optim, name)).parameters) - {'params', 'lr', *IMPLEMENTATION_FLAGS}
  assert set(jaxsched.OPTIMIZERS[name].kwargs) == torch_kwargs | EXTRA_KWARGS.get(name, set())


@pytest.mark.parametrize('name', TORCH_OPTIMIZERS)
def test_no_retrace_when_the_learning_rate_changes(name):
  tx = jaxsched.optimizer(name, fused=False, foreach=None)
  params = _params()
  traces = []

  @jax.jit
  def step(params, state):
    traces.append(1)
    grads = jax.grad(_loss)(params)
    updates, state = tx.update(grads, state, params, value_fn=_loss)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  params, state = step(params, state)
  for lr in (0.5, 1e-4, 0.0):
    state = state._replace(hyperparams={**state.hyperparams, 'learning_rate': jnp.asarray(lr, jnp.float32)})
    params, state = step(params, state)
  assert len(traces) == 1
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))


@pytest.mark.parametrize('name', TORCH_OPTIMIZERS)
def test_bfloat16_params_keep_float32_hyperparameters(name):
  tx = jaxsched.optimizer(name, lr=1e-3)
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params())
  state = tx.init(params)
  assert state.hyperparams['learning_rate'].dtype == jnp.float32
  assert state.hyperparams['learning_rate'] == np.float32(1e-3)
  grads = jax.grad(_loss)(params)
  updates, _ = jax.jit(lambda g, s, p: tx.update(g, s, p, value_fn=_loss))(grads, state, params)
  assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))


def test_learning_rate_may_be_a_schedule():
  tx = jaxsched.optimizer('SGD', learning_rate=lambda count: 0.1 * 0.5**count, momentum=0.0)
  params = {'w': jnp.ones(2)}
  state = tx.init(params)
  step = jax.jit(tx.update)
  for expected in (0.1, 0.05, 0.025):
    updates, state = step({'w': jnp.ones(2)}, state, params)
    np.testing.assert_allclose(updates['w'], -expected, rtol=1e-6)


def test_lr_alias_and_implementation_flags():
  state = jaxsched.optimizer('Adam', lr=0.003, fused=False, foreach=True, capturable=False, differentiable=False).init(
    {'w': jnp.ones(1)}
  )
  assert float(state.hyperparams['learning_rate']) == pytest.approx(0.003)


@pytest.mark.parametrize(
  'call, words',
  [
    (lambda: jaxsched.optimizer('Adamm'), ["'Adamm'", "Did you mean 'Adam'?", 'AdamW']),
    (lambda: jaxsched.optimizer('sgd'), ["Did you mean 'SGD'?"]),
    (lambda: jaxsched.optimizer('Adam', betas=(0.9, 0.999), beta=1), ["'beta'", "Did you mean 'betas'?"]),
    (lambda: jaxsched.optimizer('Adam', learning_rate=0.1, lr=0.1), ['learning_rate', 'lr']),
    (lambda: jaxsched.optimizer('Adam', lr='fast'), ['lr', "'fast'"]),
    (lambda: jaxsched.optimizer('Adam', betas=(0.9, 1.0)), ['betas[1]', '1.0', 'in [0, 1)']),
    (lambda: jaxsched.optimizer('Adam', betas=0.9), ['betas', '0.9']),
    (lambda: jaxsched.optimizer('Adam', eps=-1e-8), ['eps', '-1e-08']),
    (lambda: jaxsched.optimizer('Adam', fused='yes'), ['fused']),
    (lambda: jaxsched.optimizer(3), ['optimizer', '3']),
    (lambda: jaxsched.optimizer('optax.lionn'), ["Did you mean 'optax.lion'?"]),
    (lambda: jaxsched.optimizer('optax.lion', b3=0.1), ["'b3'", 'b1']),
  ],
)
def test_errors_name_the_problem(call, words):
  assert_config_error(call, words)


def test_config_error_is_a_value_error():
  assert issubclass(jaxsched.ConfigError, ValueError)


def test_yaml_style_values():
  # YAML 1.1 reads 1e-8 as a string and pairs as lists.
  tx = jaxsched.optimizer('Adam', eps='1e-8', betas=[0.9, 0.99])
  state = tx.init({'w': jnp.ones(1)})
  assert float(state.hyperparams['b2']) == pytest.approx(0.99)


@pytest.mark.parametrize('alias, kwargs', [('lion', dict(b1=0.8)), ('lamb', {}), ('adabelief', {})])
def test_optax_aliases_are_optax(alias, kwargs):
  params = _params()
  grads = jax.grad(_loss)(params)
  ours = jaxsched.optimizer(f'optax.{alias}', learning_rate=0.01, **kwargs)
  # Optax's alias with its hyperparameters in the state, as optax.inject_hyperparams keeps them.
  theirs = optax.inject_hyperparams(getattr(optax, alias))(learning_rate=0.01, **kwargs)
  u1, _ = jax.jit(ours.update)(grads, ours.init(params), params)
  u2, _ = jax.jit(theirs.update)(grads, theirs.init(params), params)
  for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize('name', TORCH_OPTIMIZERS)
def test_an_eagerly_initialised_state_can_be_donated(name):
  # A state built outside jit must not hold one buffer in two places.
  tx = jaxsched.optimizer(name)
  params = _params()

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, state):
    updates, state = tx.update(jax.grad(_loss)(params), state, params, value_fn=_loss)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for _ in range(2):
    params, state = step(params, state)


def test_a_built_plateau_state_can_be_donated():
  params = _params()
  tx = jaxsched.build(
    {'lr_parameter_groups': {'v': {'lr_factor': 0.5}}, 'scheduler': 'ReduceLROnPlateau', 'skip_nonfinite': True}, params
  )
  step = jax.jit(lambda p, s: tx.update(jax.grad(_loss)(p), s, p), donate_argnums=(1,))
  state = tx.init(params)
  for _ in range(2):
    _, state = step(params, state)
    state = jaxsched.report(state, 1.0)


# Complex parameters. torch.optim runs these optimizers on torch.view_as_real(p);
# Adafactor, Muon and SparseAdam raise. Options reach each one's state (amsgrad's
# max, Adagrad's and Rprop's initial fills, centered RMSprop), parameter-dependent
# terms (weight decay) and maximize; SGD's lr and momentum are given, as jaxsched's
# defaults are the reference page's.
COMPLEX_REFUSED = ('Adafactor', 'Muon', 'SparseAdam')
COMPLEX_OPTIONS = {
  'SGD': {'lr': 0.1, 'momentum': 0.9, 'nesterov': True, 'weight_decay': 0.1, 'maximize': True},
  'Adam': {'amsgrad': True, 'weight_decay': 0.1, 'maximize': True},
  'AdamW': {'amsgrad': True, 'weight_decay': 0.1},
  'Adamax': {'weight_decay': 0.1, 'maximize': True},
  'NAdam': {'decoupled_weight_decay': True, 'weight_decay': 0.1},
  'RAdam': {'betas': (0.9, 0.9), 'weight_decay': 0.1},  # beta2 0.9: rectified from step 6
  'RMSprop': {'centered': True, 'momentum': 0.9, 'weight_decay': 0.1, 'maximize': True},
  'Adagrad': {'lr_decay': 0.1, 'weight_decay': 0.1, 'initial_accumulator_value': 0.3},
  'Adadelta': {'weight_decay': 0.1, 'maximize': True},
  'Rprop': {'lr': 0.05, 'maximize': True},
  'ASGD': {'weight_decay': 0.1, 't0': 2.0, 'lambd': 0.01},
  'LBFGS': {'lr': 0.5, 'max_iter': 3, 'history_size': 3},
}
# float32 (complex64) for a few, to keep compile time small: the wrapper is the same
# for every dtype, and each optimizer's float32 math has its own tests.
COMPLEX_FLOAT32 = ('Adam', 'RMSprop', 'Adagrad', 'Rprop')
COMPLEX_STEPS = 6
COMPLEX_DTYPES = {'float64': 'complex128', 'float32': 'complex64'}


def _complex_problem():
  """A complex leaf (nested) and a real one, and a gradient sequence, in float64/complex128."""
  rng = np.random.default_rng(0)
  cplx = lambda *shape: rng.normal(size=shape) + 1j * rng.normal(size=shape)  # noqa: E731
  params = {'layer': {'z': cplx(3, 4)}, 'w': rng.normal(size=(4,))}
  grads = [{'layer': {'z': cplx(3, 4)}, 'w': rng.normal(size=(4,))} for _ in range(COMPLEX_STEPS)]
  return params, grads


def _complex_loss(p, m):
  """LBFGS's loss of both leaves, in torch (m=torch) or JAX (m=jnp)."""
  z, w = p['layer']['z'], p['w']
  return (
    m.sum(m.sin(z.real) * z.imag + 0.25 * (z.real**2 + 2 * z.imag**2) ** 2) + m.sum(w**4) + m.sum(w) * m.sum(z.imag)
  )


def _torch_complex_run(name, kwargs, params, grads, dtype):
  """torch's parameters after each step; LBFGS minimises :func:`_complex_loss` instead of
  taking the gradients."""

  def tensor(x):
    return torch.tensor(x, dtype=getattr(torch, dtype if np.isrealobj(x) else COMPLEX_DTYPES[dtype]))

  tensors = jax.tree.map(lambda x: tensor(x).requires_grad_(True), params)
  opt = getattr(torch.optim, name)(jax.tree.leaves(tensors), **kwargs)

  def closure():
    opt.zero_grad()
    loss = _complex_loss(tensors, torch)
    loss.backward()
    return loss

  out = []
  for g in grads:
    if name == 'LBFGS':
      opt.step(closure)
    else:
      for t, gi in zip(jax.tree.leaves(tensors), jax.tree.leaves(g)):
        t.grad = tensor(gi)
      opt.step()
    out.append(jax.tree.map(lambda t: t.detach().numpy().copy(), tensors))
  return out


def _jax_complex_run(name, kwargs, params, grads, dtype):
  """jaxsched's parameters after each jit-compiled step, given gradients as jax.grad
  gives them: the conjugate of torch's ``.grad`` for a complex leaf."""
  cast = lambda x: jnp.asarray(x, dtype if np.isrealobj(x) else COMPLEX_DTYPES[dtype])  # noqa: E731
  with x64(dtype):
    tx = jaxsched.optimizer(name, **kwargs)
    loss = functools.partial(_complex_loss, m=jnp)

    @jax.jit
    def step(p, state, g):
      if name == 'LBFGS':
        g = jax.grad(loss)(p)
      updates, state = tx.update(g, state, p, value_fn=loss)
      assert jax.tree.map(jnp.result_type, updates) == jax.tree.map(jnp.result_type, p)
      return optax.apply_updates(p, updates), state

    p = jax.tree.map(cast, params)
    state = jax.jit(tx.init)(p)
    out = []
    for g in grads:
      p, state = step(p, state, jax.tree.map(lambda x: jnp.conj(cast(x)), g))
      out.append(jax.tree.map(np.asarray, p))
    return out


@pytest.mark.parametrize(
  'name, dtype', [*((n, 'float64') for n in COMPLEX_OPTIONS), *((n, 'float32') for n in COMPLEX_FLOAT32)]
)
def test_complex_parameters_train_as_torchs(name, dtype):
  params, grads = _complex_problem()
  expected = _torch_complex_run(name, COMPLEX_OPTIONS[name], params, grads, dtype)
  actual = _jax_complex_run(name, COMPLEX_OPTIONS[name], params, grads, dtype)
  for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
    d = max_rel_diff(dict(enumerate(jax.tree.leaves(a))), dict(enumerate(jax.tree.leaves(e))))
    assert d <= TOLERANCE[dtype], f'step {k}: max relative difference {d:.3g}'


def test_complex_support_is_torchs():
  assert set(COMPLEX_OPTIONS) | set(COMPLEX_REFUSED) == set(TORCH_OPTIMIZERS)
  assert {n for n, spec in jaxsched.OPTIMIZERS.items() if not spec.complex_params} == set(COMPLEX_REFUSED)
  for name in COMPLEX_REFUSED:
    p = torch.zeros(2, 2, dtype=torch.complex64, requires_grad=True)
    with pytest.raises((RuntimeError, ValueError), match='not support complex'):
      opt = getattr(torch.optim, name)([p])
      p.grad = torch.ones_like(p)
      opt.step()


@pytest.mark.parametrize('name', COMPLEX_REFUSED)
def test_complex_parameters_are_refused_where_torch_refuses_them(name):
  tx = jaxsched.optimizer(name)
  params = {'w': jnp.ones((2, 2)), 'layer': {'z': jnp.ones((2, 2), jnp.complex64)}}
  assert_config_error(lambda: jax.jit(tx.init)(params), [name, "['layer']['z']", 'complex'])
  tx.init({'w': jnp.ones((2, 2))})


def test_complex_state_holds_real_views():
  tx = jaxsched.optimizer('Adam', amsgrad=True)
  params = {'w': jnp.ones(3), 'z': jnp.ones((2, 3), jnp.complex64)}
  state = jax.jit(tx.init)(params)
  assert isinstance(state, optax.InjectStatefulHyperparamsState)  # no node of its own
  assert float(state.hyperparams['learning_rate']) == pytest.approx(1e-3)
  moments = [s for s in state.inner_state if hasattr(s, 'mu')][0]
  assert moments.mu['z'].shape == (2, 3, 2) and moments.mu['z'].dtype == jnp.float32
  assert moments.mu['w'].shape == (3,)


def test_the_complex_wrapper_adds_nothing_to_a_real_tree():
  tx = optax.adam(0.1)
  params = {'w': jnp.ones(3)}
  state = tx.init(params)
  wrapped = _complex.as_real_view(tx)
  assert jax.tree.structure(wrapped.init(params)) == jax.tree.structure(state)
  trace = lambda t: str(jax.make_jaxpr(t.update)(params, state, params))  # noqa: E731
  assert trace(wrapped) == trace(tx)
