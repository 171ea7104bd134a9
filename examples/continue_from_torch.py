"""Continue a PyTorch Lightning run in JAX, and hand it back to torch.

Lightning trains a torch twin of ``train_digits.py``'s recurrent CNN for a few
epochs from the same config (``examples/configs/digits.yaml``: AdamW, a recurrent
param group, a warm-up cosine stepped per epoch) and saves a ``.ckpt``. jaxsched
loads it (parameters in Flax's layouts, AdamW's moments, the scheduler's
position) and trains the next epoch in JAX; Lightning resumes from the same
``.ckpt`` for that epoch too, and the two are compared. Then the JAX state goes
back to a torch optimizer and scheduler for one more epoch, against JAX's own.
Both sides run in float64, so the distances show the state carried over, not
float32 rounding.

    pip install -e '.[examples,torch]' pytorch-lightning
    python examples/continue_from_torch.py [--epochs 3] [--out out/continue]
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytorch_lightning as pl
import torch

import jaxsched
from jaxsched.interop import layouts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_digits import DEFAULT_CONFIG, batches, load_digits, loss_and_accuracy, make_model  # noqa: E402


class Digits(pl.LightningModule):
  """train_digits.RecurrentCNN in torch: conv -> (relu, lateral recurrent conv) x steps -> pool -> linear,
  on NHWC input, flattening in JAX's (H, W, C) order."""

  def __init__(self, config, data, channels: int = 32, steps: int = 3):
    super().__init__()
    self.steps, self.config, self.data = steps, config, data
    self.conv = torch.nn.Conv2d(1, channels, 3, padding=1)
    self.recurrent = torch.nn.Conv2d(channels, channels, 3, padding=1)
    self.head = torch.nn.Linear(4 * 4 * channels, 10)

  def forward(self, x):
    drive = self.conv(x.permute(0, 3, 1, 2))
    h = torch.relu(drive)
    for _ in range(self.steps):
      h = torch.relu(drive + self.recurrent(h))
    h = torch.nn.functional.avg_pool2d(h, 2)
    return self.head(h.permute(0, 2, 3, 1).reshape(len(h), -1))

  def training_step(self, batch, batch_idx):
    x, y = batch
    return torch.nn.functional.cross_entropy(self(x), y)

  def train_dataloader(self):  # train_digits' batches of this epoch, in its order
    epoch_batches = [
      (torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.long))
      for x, y in batches(*self.data, self.current_epoch)
    ]
    return torch.utils.data.DataLoader(epoch_batches, batch_size=None)

  def configure_optimizers(self):
    return jaxsched.configure_optimizers(self.config, self)


def fit(model, epochs: int, out: Path, ckpt_path=None) -> pl.Trainer:
  trainer = pl.Trainer(
    max_epochs=epochs,
    accelerator='cpu',
    devices=1,
    precision='64-true',
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    reload_dataloaders_every_n_epochs=1,
    default_root_dir=out,
  )
  trainer.fit(model, ckpt_path=ckpt_path)
  return trainer


def distance(a: dict, b: dict) -> float:
  """max over parameters of max|a - b| / max|b|."""
  return max(float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(b[k]))) for k in b)


def lrs(opt_state) -> dict[str, float]:
  return {k: float(v) for k, v in jaxsched.current_lr(opt_state).items()}


def main(argv=None) -> float:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default=str(DEFAULT_CONFIG))
  parser.add_argument('--epochs', type=int, default=3, help='epochs Lightning trains before the switch')
  parser.add_argument('--out', default='out/continue')
  args = parser.parse_args(argv)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  warnings.simplefilter('ignore')
  logging.getLogger('pytorch_lightning').setLevel(logging.ERROR)
  jax.config.update('jax_enable_x64', True)
  torch.manual_seed(0)

  config = jaxsched.load_config(args.config)
  train, _ = load_digits()
  per_epoch = len(train[0]) // 64
  graphdef, params = make_model()
  params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)

  # Lightning trains from the JAX model's initial weights and saves a checkpoint
  model = Digits(config, train).double()
  names = [n for n, _ in model.named_parameters()]
  model.load_state_dict({k: torch.from_numpy(v) for k, v in layouts.torch_state_dict(params, names).items()})
  fit(model, args.epochs, out)
  ckpt_path = out / 'lightning.ckpt'
  model.trainer.save_checkpoint(ckpt_path)

  # Lightning's own next epoch, resumed from the file
  resumed = Digits(config, train).double()
  fit(resumed, args.epochs + 1, out, ckpt_path)
  lightning = {k: v.detach().numpy() for k, v in resumed.named_parameters()}

  # the same epoch in JAX, from the same file
  ckpt = jaxsched.load_lightning_checkpoint(ckpt_path, config, params, batches_per_epoch=per_epoch)
  tx = jaxsched.build(config, params, batches_per_epoch=per_epoch)

  @jax.jit
  def step(params, opt_state, x, y):
    grads = jax.grad(lambda p: loss_and_accuracy(graphdef, p, x, y)[0])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def jax_epoch(params, opt_state, epoch):
    for x, y in batches(*train, epoch):
      params, opt_state = step(params, opt_state, jnp.asarray(x, jnp.float64), jnp.asarray(y))
    return params, opt_state

  epoch = ckpt.global_step // per_epoch  # the epochs Lightning completed
  print(f'{ckpt_path}: epoch {ckpt.epoch}, global_step {ckpt.global_step}, LRs {lrs(ckpt.opt_state)}')
  params, opt_state = jax_epoch(ckpt.params, ckpt.opt_state, epoch)
  gap = distance(layouts.torch_state_dict(params, names), lightning)
  print(f'epoch {epoch}: JAX from the .ckpt vs Lightning resumed from it: max relative distance {gap:.2e}')

  # hand the JAX run back to torch for one more epoch
  optimizer_state, scheduler_state = jaxsched.to_torch(
    config, opt_state, params, torch_names=names, batches_per_epoch=per_epoch
  )
  twin = Digits(config, train).double()
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in layouts.torch_state_dict(params, names).items()})
  optimizer = jaxsched.torch_optimizer(config, twin.named_parameters())
  scheduler = jaxsched.torch_scheduler(config, optimizer)
  optimizer.load_state_dict(optimizer_state)
  scheduler.load_state_dict(scheduler_state)
  for x, y in batches(*train, epoch + 1):
    optimizer.zero_grad()
    twin.training_step((torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.long)), 0).backward()
    optimizer.step()
  scheduler.step()  # interval: epoch
  params, opt_state = jax_epoch(params, opt_state, epoch + 1)
  back = distance({k: v.detach().numpy() for k, v in twin.named_parameters()}, layouts.torch_state_dict(params, names))
  print(f'epoch {epoch + 1}: torch from the JAX state vs JAX: max relative distance {back:.2e}')
  print(f'LRs for the next epoch: torch {scheduler.get_last_lr()}, JAX {lrs(opt_state)}')
  return max(gap, back)


if __name__ == '__main__':
  main()
