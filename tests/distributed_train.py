"""A few train steps of a jaxsched.build optimizer, on one device, on a mesh, or
across processes; run as a script by tests/test_sharding.py (JAX's device count
and distributed runtime are fixed at start-up, so each setup is a process).

    python tests/distributed_train.py single
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/distributed_train.py mesh
    python tests/distributed_train.py process PORT ID   # two of these, ID 0 and 1

Prints one JSON line: the final parameters (and, for mesh, sharding checks).
"""

import json
import sys

import jax

jax.config.update('jax_enable_x64', True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxsched  # noqa: E402

CONFIG = {
  'optimizer': 'AdamW',
  'learning_rate': 0.01,
  'optimizer_kwargs': {'weight_decay': 0.05},
  'recurrent_learning_rate_multiplier': 0.1,
  'scheduler': 'SequentialLR',
  'scheduler_kwargs': {
    'schedulers': [
      {'scheduler': 'LinearLR', 'scheduler_kwargs': {'start_factor': 0.5, 'total_iters': 2}},
      {'scheduler': 'ReduceLROnPlateau', 'scheduler_kwargs': {'patience': 0, 'factor': 0.5}},
    ],
    'milestones': [2],
  },
  'scheduler_configs': {'monitor': 'val_loss'},
  'gradient_clip_val': 1.0,
}
STEPS, EPOCH = 12, 3


def problem():
  rng = np.random.default_rng(0)
  params = {
    'ff': {'kernel': rng.normal(size=(16, 8))},
    'recurrent': {'kernel': rng.normal(size=(8, 8))},
    'head': {'kernel': rng.normal(size=(8, 4)), 'bias': np.zeros(4)},
  }
  x, y = rng.normal(size=(STEPS, 32, 16)), rng.normal(size=(STEPS, 32, 4))
  return params, x, y


def loss_fn(params, x, y):
  h = jnp.tanh(x @ params['ff']['kernel'])
  h = jnp.tanh(h + h @ params['recurrent']['kernel'])
  return jnp.mean((h @ params['head']['kernel'] + params['head']['bias'] - y) ** 2)


def train(params, xs, ys, put_batch=lambda b: b):
  tx = jaxsched.build(CONFIG, params)
  state = tx.init(params)  # eagerly: zeros_like keeps each param's sharding (under jit it would not)
  init_state = state

  @jax.jit
  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  for i in range(STEPS):
    params, state, loss = step(params, state, put_batch(xs[i]), put_batch(ys[i]))
    if (i + 1) % EPOCH == 0:
      state = jax.jit(jaxsched.report)(state, {'val_loss': loss * 0 + 1.0})  # a plateau: cuts each epoch
  return params, state, tx, init_state


def as_lists(params):
  from jax.experimental import multihost_utils

  gathered = multihost_utils.process_allgather(params, tiled=True) if jax.process_count() > 1 else params
  return jax.tree.map(lambda a: np.asarray(a).tolist(), gathered)


def sharding_checks(tx, state, params):
  """For each state leaf: param-shaped leaves carry their param's sharding, the rest are replicated."""

  def param_leaf(leaf, p):
    return None if isinstance(leaf, optax.MaskedNode) else leaf.sharding.is_equivalent_to(p.sharding, leaf.ndim)

  checked = optax.tree_map_params(
    tx,
    param_leaf,
    state,
    params,
    transform_non_params=lambda leaf: leaf.sharding.is_fully_replicated,
    is_leaf=lambda x: isinstance(x, optax.MaskedNode),
  )
  return [bool(v) for v in jax.tree.leaves(checked)]


def lr_values(state):
  return {k: float(v) for k, v in jaxsched.current_lr(state).items()}


def main(argv):
  params, xs, ys = problem()
  mode = argv[0]
  if mode == 'single':
    final, state, _, _ = train(jax.tree.map(jnp.asarray, params), xs, ys)
    print(json.dumps({'params': as_lists(final), 'lr': lr_values(state)}))
  elif mode == 'mesh':
    out = {}
    mesh = Mesh(np.array(jax.devices()), ('data',))
    layouts = {'data_parallel': lambda p: P(), 'fsdp': lambda p: P('data') if p.shape[0] % 8 == 0 else P()}
    for name, spec in layouts.items():
      sharded = jax.tree.map(lambda p: jax.device_put(p, NamedSharding(mesh, spec(p))), params)  # noqa: B023
      put_batch = lambda b: jax.device_put(b, NamedSharding(mesh, P('data')))  # noqa: E731
      final, state, tx, init_state = train(sharded, xs, ys, put_batch)
      # every param-shaped state leaf carries its param's sharding; every other leaf is replicated
      checks = [*sharding_checks(tx, init_state, sharded), *sharding_checks(tx, state, sharded)]
      out[name] = {
        'params': as_lists(final),
        'lr': lr_values(state),
        'sharding_ok': all(checks),
        'leaves_checked': len(checks),
        'devices': jax.device_count(),
        'final_param_sharding': str(final['ff']['kernel'].sharding.spec),
      }
    print(json.dumps(out))
  elif mode == 'process':
    port, pid = argv[1], int(argv[2])
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'127.0.0.1:{port}', num_processes=2, process_id=pid)
    mesh = Mesh(np.array(jax.devices()), ('data',))
    sharded = jax.tree.map(lambda p: jax.device_put(p, NamedSharding(mesh, P())), params)

    def put_batch(b):  # each process holds its half of the batch
      half = b.shape[0] // 2
      local = b[pid * half : (pid + 1) * half]
      return jax.make_array_from_process_local_data(NamedSharding(mesh, P('data')), local, b.shape)

    final, state, _, _ = train(sharded, xs, ys, put_batch)
    print(
      json.dumps(
        {
          'params': as_lists(final),
          'lr': lr_values(state),
          'processes': jax.process_count(),
          'devices': jax.device_count(),
        }
      )
    )
    jax.distributed.shutdown()


if __name__ == '__main__':
  main(sys.argv[1:])
