"""Train a small recurrent CNN on scikit-learn's digits from a jaxsched config.

The model is DynVision-shaped: a feedforward convolution whose output drives a
lateral recurrent convolution unrolled over a few time steps, so
``recurrent_learning_rate_multiplier`` has real recurrent weights to act on.
Everything the optimizer does comes from the config: optimizer, parameter
groups, schedule (stepped as Lightning steps it), clipping, ReduceLROnPlateau.

    python examples/train_digits.py                              # the default config
    python examples/train_digits.py --config jaxsched/patterns/adaptive_plateau.yaml --epochs 30
    python examples/train_digits.py --epochs 20 optimizer=SGD learning_rate=0.05 scheduler=none
    python examples/train_digits.py accumulate_grad_batches=3   # 22 batches: 7 groups of 3 and one of 1
    python examples/train_digits.py --resume                     # continue from --out's checkpoint
    python examples/train_digits.py --lr-find                    # Lightning's LR range test, no training

The last line printed is ``final val_accuracy=<float>`` (with ``--lr-find``, ``suggested learning_rate=<float>``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxsched
from jaxsched import averaging
from jaxsched.groups import path_name

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / 'configs' / 'digits.yaml'
BATCH = 64


class RecurrentCNN(nnx.Module):
  """conv -> (relu, lateral recurrent conv) x steps -> 2x2 average pool -> linear."""

  def __init__(self, rngs: nnx.Rngs, channels: int = 32, steps: int = 3):
    self.steps = steps
    self.conv = nnx.Conv(1, channels, (3, 3), rngs=rngs)
    self.recurrent = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
    self.head = nnx.Linear(4 * 4 * channels, 10, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    drive = self.conv(x)
    h = jax.nn.relu(drive)
    for _ in range(self.steps):
      h = jax.nn.relu(drive + self.recurrent(h))
    h = nnx.avg_pool(h, (2, 2), strides=(2, 2))
    return self.head(h.reshape(h.shape[0], -1))


def load_digits(seed: int = 0):
  """scikit-learn's bundled 8x8 digits (nothing is downloaded): 80/20 split."""
  from sklearn.datasets import load_digits as sk_digits

  data = sk_digits()
  x = (data.images / 16.0).astype(np.float32)[..., None]
  y = data.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(x))
  cut = int(0.8 * len(x))
  return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def make_model(seed: int = 0):
  """The model's graph and its parameters as a plain nested dict ('recurrent/kernel', ...)."""
  graphdef, state = nnx.split(RecurrentCNN(nnx.Rngs(seed)))
  return graphdef, nnx.to_pure_dict(state)


def loss_and_accuracy(graphdef, params, x, y):
  model = nnx.merge(graphdef, params)
  logits = model(x)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return loss, (jnp.argmax(logits, -1) == y).mean()


def make_steps(graphdef, tx):
  @jax.jit
  def train_step(params, opt_state, x, y):
    (loss, acc), grads = jax.value_and_grad(lambda p: loss_and_accuracy(graphdef, p, x, y), has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, acc

  @jax.jit
  def evaluate(params, x, y):
    return loss_and_accuracy(graphdef, params, x, y)

  return train_step, evaluate


def batches(x, y, epoch: int, seed: int = 0):
  """Full batches of a per-epoch permutation (deterministic, so resuming is exact)."""
  order = np.random.default_rng([seed, epoch]).permutation(len(x))
  for i in range(len(x) // BATCH):
    idx = order[i * BATCH : (i + 1) * BATCH]
    yield x[idx], y[idx]


class Checkpoints:
  """An Orbax checkpoint per epoch of params, optimizer state and history."""

  def __init__(self, directory: Path):
    import orbax.checkpoint as ocp

    self.manager = ocp.CheckpointManager(
      directory.resolve() / 'checkpoints',
      options=ocp.CheckpointManagerOptions(max_to_keep=2),
      item_handlers={'state': ocp.StandardCheckpointHandler(), 'history': ocp.JsonCheckpointHandler()},
    )

  def save(self, epoch: int, params, opt_state, history):
    import orbax.checkpoint as ocp

    self.manager.save(
      epoch,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave({'params': params, 'opt_state': opt_state}), history=ocp.args.JsonSave(history)
      ),
    )
    self.manager.wait_until_finished()

  def restore(self, params, opt_state, config):
    import orbax.checkpoint as ocp

    epoch = self.manager.latest_step()
    if epoch is None:
      return None
    saved = self.manager.item_metadata(epoch)['state']
    saved_config = self.manager.restore(epoch, args=ocp.args.Composite(history=ocp.args.JsonRestore())).history
    # names the config change ("optimizer 'AdamW' -> 'SGD'") behind a state that no longer fits
    jaxsched.check_compatible(
      {'params': params, 'opt_state': opt_state}, saved.tree, config=config, saved_config=saved_config.get('config')
    )
    got = self.manager.restore(
      epoch,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore({'params': params, 'opt_state': opt_state}), history=ocp.args.JsonRestore()
      ),
    )
    return epoch, got.state['params'], got.state['opt_state'], got.history

  def close(self):
    self.manager.close()


def plot(history, path: Path):
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  epochs = np.arange(len(history['train_loss']))
  fig, axes = plt.subplots(1, 3, figsize=(14, 4))
  axes[0].plot(epochs, history['train_loss'], label='train')
  axes[0].plot(epochs, history['val_loss'], label='validation')
  axes[0].set(title='loss', xlabel='epoch', yscale='log')
  axes[1].plot(epochs, history['train_accuracy'], label='train')
  axes[1].plot(epochs, history['val_accuracy'], label='validation')
  if 'val_accuracy_averaged' in history:  # ema or swa
    axes[1].plot(epochs, history['val_accuracy_raw'], linestyle=':', label='validation, raw weights')
    axes[1].plot(epochs, history['val_accuracy_averaged'], linestyle='--', label='validation, averaged weights')
  axes[1].set(title='accuracy', xlabel='epoch')
  for group, lrs in history['lr'].items():
    axes[2].plot(epochs, lrs, label=group)
  axes[2].set(title='learning rate per group (used in the epoch)', xlabel='epoch', yscale='log')
  if history.get('momentum'):  # a scheduler that cycles momentum: on its own axis, never on the LR's
    twin = axes[2].twinx()
    for group, values in history['momentum'].items():
      twin.plot(epochs, values, linestyle='--', label=f'momentum ({group})')
    twin.set(ylabel='momentum / beta1')
    twin.legend(loc='lower right')
  for ax in axes:
    ax.legend()
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def find_lr(config, graphdef, params, x, y, out: Path, seed: int, console) -> float:
  """Lightning's ``Tuner.lr_find`` on the model and the config: writes lr_find.png, prints
  and returns the suggested learning rate (NaN without one)."""
  train_loader = list(batches(x, y, 0, seed))  # an epoch's batches, iterated again for each epoch of the test
  finder = jaxsched.lr_find(lambda p, batch: loss_and_accuracy(graphdef, p, *batch)[0], params, train_loader, config)
  finder.plot(suggest=True).savefig(out / 'lr_find.png', dpi=100)
  lr = finder.suggestion()
  steps = len(finder.results['lr'])
  console.print(f'lr_find: {steps} steps from {finder.lr_min:g} to {finder.lr_max:g}: {out / "lr_find.png"}')
  print(f'suggested learning_rate={lr}', flush=True)
  return math.nan if lr is None else lr


def announce_reductions(epoch: int, before: dict, after: dict, console) -> None:
  """torch's verbose ReduceLROnPlateau message, for each group whose LR dropped."""
  for group, old in before.items():
    new = after[group]
    if new < old:
      console.print(f'Epoch {epoch}: reducing learning rate of group {group!r} from {old:.4e} to {new:.4e}.')


def lrs_of(opt_state) -> dict[str, float]:
  return {k: float(v) for k, v in jaxsched.current_lr(opt_state).items()}


def momenta_of(opt_state) -> dict[str, float]:
  return {k: float(v) for k, v in jaxsched.current_momentum(opt_state).items()}


def main(argv=None) -> float:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default=str(DEFAULT_CONFIG), help='a jaxsched/DynVision YAML config')
  parser.add_argument('--epochs', type=int, default=100)
  parser.add_argument('--out', default='out/digits', help='checkpoints, history.json and curves.png')
  parser.add_argument('--resume', action='store_true', help="continue from --out's last checkpoint")
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--quiet', action='store_true', help='no progress bar')
  parser.add_argument(
    '--lr-find', action='store_true', help="run Lightning's LR range test instead of training: lr_find.png in --out"
  )
  parser.add_argument('overrides', nargs='*', metavar='KEY=VALUE', help='snakemake-style config overrides')
  args = parser.parse_args(argv)

  from rich.console import Console
  from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

  console = Console(highlight=False, markup=False, soft_wrap=True)
  try:
    config = jaxsched.load_config(args.config, args.overrides)
  except jaxsched.ConfigError as e:
    console.print(f'error: {e}', style='red')
    raise SystemExit(1) from None

  (x_train, y_train), (x_val, y_val) = load_digits(args.seed)
  batches_per_epoch = len(x_train) // BATCH  # len(train_loader); one update() per batch
  # with accumulate_grad_batches N, Lightning steps every N batches and on each epoch's last one
  steps_per_epoch = -(-batches_per_epoch // config.accumulate_grad_batches)
  graphdef, params = make_model(args.seed)
  if args.lr_find:
    Path(args.out).mkdir(parents=True, exist_ok=True)
    try:
      return find_lr(config, graphdef, params, x_train, y_train, Path(args.out), args.seed, console)
    except jaxsched.ConfigError as e:
      console.print(f'error: {e}', style='red')
      raise SystemExit(1) from None
  try:
    tx = jaxsched.build(
      config,
      params,
      batches_per_epoch=batches_per_epoch,
      run_steps=args.epochs * steps_per_epoch,
      max_epochs=args.epochs,
    )
  except jaxsched.ConfigError as e:
    console.print(f'error: {e}', style='red')
    raise SystemExit(1) from None
  opt_state = tx.init(params)
  train_step, evaluate = make_steps(graphdef, tx)

  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  checkpoints = Checkpoints(out)
  history = {
    'train_loss': [],
    'train_accuracy': [],
    'val_loss': [],
    'val_accuracy': [],
    'lr': {},
    'momentum': {},
    'config': config.to_dict(),
  }
  start = 0
  if args.resume:
    try:
      restored = checkpoints.restore(params, opt_state, config)
    except jaxsched.ConfigError as e:
      console.print(f'error: cannot resume from {out}: {e}', style='red')
      raise SystemExit(1) from None
    if restored is None:
      console.print(f'no checkpoint in {out}: starting from scratch')
    else:
      last, params, opt_state, history = restored
      start = last + 1
      console.print(f'resumed from the checkpoint of epoch {last}')

  console.print(
    f'{config.optimizer} + {config.scheduler or "constant LR"}: '
    f'groups {", ".join(f"{k}={v:.3g}" for k, v in lrs_of(opt_state).items())}; '
    f'{batches_per_epoch} batches ({steps_per_epoch} optimizer steps) per epoch, '
    f'epochs {start}..{args.epochs - 1}'
  )
  columns = [
    TextColumn('epoch {task.completed:>3.0f}/{task.total:.0f}'),
    BarColumn(),
    TimeElapsedColumn(),
    TextColumn('{task.fields[status]}'),
  ]
  with Progress(*columns, console=console, disable=args.quiet, transient=True) as progress:
    task = progress.add_task('train', total=args.epochs, completed=start, status='')
    for epoch in range(start, args.epochs):
      lrs, momenta = lrs_of(opt_state), momenta_of(opt_state)
      losses, accs = [], []
      for xb, yb in batches(x_train, y_train, epoch, args.seed):
        params, opt_state, loss, acc = train_step(params, opt_state, xb, yb)
        losses.append(loss)
        accs.append(acc)
      # the weights Lightning validates with: the EMA average with ema, the current ones otherwise
      val_loss, val_acc = (float(v) for v in evaluate(jaxsched.averaged_params(opt_state, params), x_val, y_val))
      metrics = {
        'train_loss': float(np.mean(losses)),
        'train_accuracy': float(np.mean(accs)),
        'val_loss': val_loss,
        'val_accuracy': val_acc,
      }
      if (running := averaging.running_average(opt_state)) is not None:  # ema or swa: both models, side by side
        average, n_averaged = running
        history.setdefault('val_accuracy_raw', []).append(float(evaluate(params, x_val, y_val)[1]))
        history.setdefault('val_accuracy_averaged', []).append(
          float(evaluate(average, x_val, y_val)[1]) if n_averaged else math.nan
        )
      before = lrs_of(opt_state)
      opt_state = jaxsched.report(opt_state, metrics)
      announce_reductions(epoch, before, lrs_of(opt_state), console)

      for key, value in metrics.items():
        history[key].append(value)
      for group, lr in lrs.items():
        history['lr'].setdefault(group, []).append(lr)
      for group, momentum in momenta.items():
        history.setdefault('momentum', {}).setdefault(group, []).append(momentum)
      checkpoints.save(epoch, params, opt_state, history)
      lr_text = ' '.join(f'lr[{g}]={v:.3e}' for g, v in lrs.items())
      status = f'loss {metrics["train_loss"]:.4f} val_loss {val_loss:.4f} val_acc {val_acc:.4f} {lr_text}'
      progress.update(task, advance=1, status=status)
      console.print(
        f'epoch {epoch:3d}: train_loss={metrics["train_loss"]:.4f} '
        f'train_accuracy={metrics["train_accuracy"]:.4f} val_loss={val_loss:.4f} '
        f'val_accuracy={val_acc:.4f} {lr_text}'
        + (f' val_accuracy_averaged={history["val_accuracy_averaged"][-1]:.4f}' if running else '')
      )
  checkpoints.close()

  params = jaxsched.final_params(opt_state, params)  # what Lightning's model holds after training: SWA's average
  final = float(evaluate(params, x_val, y_val)[1]) if history['val_accuracy'] else math.nan
  (out / 'history.json').write_text(json.dumps(history, indent=1))
  np.savez(
    out / 'params.npz', **{path_name(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  )
  if history['train_loss']:
    plot(history, out / 'curves.png')
    console.print(f'curves: {out / "curves.png"}')
  print(f'final val_accuracy={final:.4f}', flush=True)
  return final


if __name__ == '__main__':
  main(sys.argv[1:])
