"""Generates the scheduler gallery when the docs build (mkdocs-gen-files): every scheduler ID's learning rate
drawn by jaxsched next to torch 2.13's, stepped the same way, in float64.

jaxsched's curve is ``jaxsched.schedule(ID, lr, **kwargs)`` evaluated at every step in one jitted vmap;
ReduceLROnPlateau (not a function of the step) is ``jaxsched.lr_curve`` fed a made-up validation loss. torch's is
the optimizer's ``param_groups[0]['lr']`` read before each ``scheduler.step()``. A scheduler ID without an
example here fails the build, so a new scheduler gets its picture.
"""

import io
import sys

import jax
import jax.numpy as jnp
import matplotlib
import mkdocs_gen_files
import numpy as np
import torch
import transformers
import yaml

import jaxsched

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

jax.config.update('jax_enable_x64', True)
torch.set_default_dtype(torch.float64)

LR = 0.1
STEPS = 100
# A validation loss that improves, then stalls twice: what ReduceLROnPlateau is fed, once per epoch.
LOSS = [1.0 / (1 + e) if e < 30 else (0.04 if e < 60 else 0.03) for e in range(STEPS)]

# Each scheduler ID with the config keys of one example (scheduler_kwargs, and the optimizer where it matters).
EXAMPLES = {
  'LambdaLR': {'lr_lambda': '0.95 ** epoch'},
  'MultiplicativeLR': {'lr_lambda': '0.97'},
  'StepLR': {'step_size': 30, 'gamma': 0.5},
  'MultiStepLR': {'milestones': [30, 60, 80], 'gamma': 0.5},
  'ConstantLR': {'factor': 0.5, 'total_iters': 20},
  'LinearLR': {'start_factor': 0.1, 'total_iters': 30},
  'ExponentialLR': {'gamma': 0.97},
  'PolynomialLR': {'total_iters': 80, 'power': 2.0},
  'CosineAnnealingLR': {'T_max': 40, 'eta_min': 0.01},
  'CosineAnnealingWarmRestarts': {'T_0': 10, 'T_mult': 2, 'eta_min': 0.001},
  'LinearWarmupCosineAnnealingLR': {'warmup_epochs': 10, 'max_epochs': 100, 'warmup_start_lr': 0.01},
  'CyclicLR': {'base_lr': 0.01, 'max_lr': 0.1, 'step_size_up': 10, 'mode': 'triangular2'},
  'OneCycleLR': {'max_lr': 0.1, 'total_steps': STEPS},
  'SequentialLR': {
    'schedulers': [
      {'scheduler': 'LinearLR', 'scheduler_kwargs': {'start_factor': 0.1, 'total_iters': 10}},
      {'scheduler': 'CosineAnnealingLR', 'scheduler_kwargs': {'T_max': 90}},
    ],
    'milestones': [10],
  },
  'ChainedScheduler': {
    'schedulers': [
      {'scheduler': 'ConstantLR', 'scheduler_kwargs': {'factor': 0.5, 'total_iters': 20}},
      {'scheduler': 'ExponentialLR', 'scheduler_kwargs': {'gamma': 0.98}},
    ]
  },
  'SWALR': {'swa_lr': 0.02, 'anneal_epochs': 30},
  'ReduceLROnPlateau': {'mode': 'min', 'factor': 0.5, 'patience': 5},
  'timm.cosine': {
    't_initial': 30,
    'lr_min': 0.005,
    'cycle_mul': 1.5,
    'cycle_decay': 0.6,
    'cycle_limit': 3,
    'warmup_t': 5,
    'warmup_lr_init': 0.01,
  },
  'timm.tanh': {'t_initial': 90, 'lr_min': 0.001, 'warmup_t': 10, 'warmup_lr_init': 0.01, 'warmup_prefix': True},
  'timm.step': {'decay_t': 30, 'decay_rate': 0.5, 'warmup_t': 5, 'warmup_lr_init': 0.01},
  'timm.multistep': {'decay_t': [30, 60, 80], 'decay_rate': 0.5, 'warmup_t': 5, 'warmup_lr_init': 0.01},
  'timm.poly': {'t_initial': 40, 'power': 2.0, 'lr_min': 0.001, 'cycle_decay': 0.5, 'cycle_limit': 2},
  # Hugging Face transformers' schedules, drawn over transformers.get_scheduler's
  'hf.linear': {'num_warmup_steps': 10, 'num_training_steps': 90},
  'hf.cosine': {'num_warmup_steps': 10, 'num_training_steps': 90},
  'hf.cosine_with_restarts': {'num_warmup_steps': 10, 'num_training_steps': 90, 'num_cycles': 3},
  'hf.polynomial': {'num_warmup_steps': 10, 'num_training_steps': 90, 'lr_end': 0.01, 'power': 2.0},
  'hf.constant': {},
  'hf.constant_with_warmup': {'num_warmup_steps': 10},
  'hf.inverse_sqrt': {'num_warmup_steps': 10},
  'hf.cosine_with_min_lr': {'num_warmup_steps': 10, 'num_training_steps': 90, 'min_lr': 0.01},
  'hf.cosine_warmup_with_min_lr': {'num_warmup_steps': 10, 'num_training_steps': 90, 'min_lr_rate': 0.1},
  'hf.warmup_stable_decay': {'num_warmup_steps': 10, 'num_decay_steps': 30, 'num_stable_steps': 40},
}
PYTHON_LAMBDAS = {'LambdaLR': lambda epoch: 0.95**epoch, 'MultiplicativeLR': lambda epoch: 0.97}

missing = (set(jaxsched.SCHEDULES) | {'ReduceLROnPlateau'}) ^ set(EXAMPLES)
if missing:
  raise RuntimeError(f'docs/scripts/gallery.py: scheduler IDs without (or with a stale) gallery example: {missing}')


def config(name):
  configs = {'interval': 'epoch', 'monitor': 'val_loss'} if name == 'ReduceLROnPlateau' else {'interval': 'epoch'}
  return {
    'optimizer': 'SGD',
    'learning_rate': LR,
    'scheduler': name,
    'scheduler_kwargs': EXAMPLES[name],
    'scheduler_configs': configs,
  }


def jaxsched_curve(name):
  if name == 'ReduceLROnPlateau':
    curve = jaxsched.lr_curve(config(name), epochs=STEPS, batches_per_epoch=1, metrics=LOSS)
    return np.asarray(curve.lrs['regular'])
  sched = jaxsched.schedule(name, LR, **EXAMPLES[name])
  steps = jnp.arange(STEPS if sched.max_count is None else min(STEPS, sched.max_count))
  return np.asarray(jax.jit(jax.vmap(sched))(steps))


def timm_curve(name, n):
  """timm's class on a torch SGD, stepped as timm's train.py steps it: ``step(epoch + 1)`` after each epoch.
  timm is imported as the tests import it (tests/oracle.py: without torchvision)."""
  sys.path.insert(0, 'tests')
  from oracle import import_timm

  _, timm_scheduler = import_timm()
  classes = {
    'timm.cosine': timm_scheduler.CosineLRScheduler,
    'timm.tanh': timm_scheduler.TanhLRScheduler,
    'timm.step': timm_scheduler.StepLRScheduler,
    'timm.multistep': timm_scheduler.MultiStepLRScheduler,
    'timm.poly': timm_scheduler.PolyLRScheduler,
  }
  optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
  scheduler = classes[name](optimizer, **EXAMPLES[name])
  lrs = []
  for epoch in range(n):
    lrs.append(optimizer.param_groups[0]['lr'])
    scheduler.step(epoch + 1)
  return np.asarray(lrs)


def torch_curve(name, n):
  if name.startswith('timm.'):
    return timm_curve(name, n)
  cfg = config(name)
  weight = torch.nn.Parameter(torch.zeros(1))
  optimizer = jaxsched.torch_optimizer(cfg, [('weight', weight)])
  if name.startswith('hf.'):  # transformers' own, with get_scheduler's arguments
    kwargs = dict(EXAMPLES[name])
    counts = [kwargs.pop(k, None) for k in ('num_warmup_steps', 'num_training_steps')]
    scheduler = transformers.get_scheduler(name[3:], optimizer, *counts, scheduler_specific_kwargs=kwargs)
  elif name in PYTHON_LAMBDAS:  # torch's own class with a Python function
    scheduler = getattr(torch.optim.lr_scheduler, name)(optimizer, PYTHON_LAMBDAS[name])
  else:
    scheduler = jaxsched.torch_scheduler(cfg, optimizer)
  lrs = []
  for epoch in range(n):
    lrs.append(optimizer.param_groups[0]['lr'])
    optimizer.step()
    if name == 'ReduceLROnPlateau':
      scheduler.step(LOSS[epoch])
    else:
      scheduler.step()
  return np.asarray(lrs)


def figure(name, ours, theirs):
  fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
  steps = np.arange(len(ours))
  oracle = 'timm 1.0' if name.startswith('timm.') else 'torch 2.13'
  ax.step(steps, theirs, where='post', color='#f0a030', linewidth=5, alpha=0.6, label=oracle)
  ax.step(steps, ours, where='post', color='#1f3f8f', linewidth=1.4, linestyle='--', label='jaxsched')
  ax.set_xlabel('scheduler steps (epochs)')
  ax.set_ylabel('learning rate')
  ax.set_title(name)
  ax.legend(loc='best')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  out = io.BytesIO()
  fig.savefig(out, format='png')
  plt.close(fig)
  return out.getvalue()


lines = [
  '# Scheduler gallery',
  '',
  "Every scheduler ID, drawn by jaxsched (dashed) over torch 2.13's curve (wide; timm 1.0's for the `timm.` IDs, "
  "stepped with `scheduler.step(epoch + 1)` as timm's train.py steps them), from the configs shown: "
  f'`optimizer: SGD`, `learning_rate: {LR}`, stepped once per epoch for {STEPS} epochs, in float64. '
  "torch's LR is `optimizer.param_groups[0]['lr']` read before each `scheduler.step()`; jaxsched's is "
  '`jaxsched.schedule(ID, lr, **scheduler_kwargs)` at each step count (ReduceLROnPlateau: `jaxsched.lr_curve` '
  'fed a made-up validation loss that stalls at epochs 30 and 60). These pictures are made when the docs '
  'build ([Building the docs](index.md#building-the-docs)); the tests compare the same numbers within 1e-9 '
  "([Parity](guides/parity.md)). The `hf.*` IDs are drawn over transformers' `get_scheduler`."
  '',
]
for name in EXAMPLES:
  ours = jaxsched_curve(name)
  theirs = torch_curve(name, len(ours))
  worst = float(np.max(np.abs(ours - theirs)))
  if worst > 1e-9:
    raise RuntimeError(f'gallery: {name} differs from torch by {worst:g}')
  with mkdocs_gen_files.open(f'gallery/{name}.png', 'wb') as f:
    f.write(figure(name, ours, theirs))
  snippet = yaml.safe_dump({k: v for k, v in config(name).items() if k != 'optimizer'}, sort_keys=False)
  lines += [
    f'## {name}',
    '',
    f'![{name}: jaxsched and torch](gallery/{name}.png)',
    '',
    f'Largest difference from torch over the {len(ours)} steps: {worst:.1e}.',
    '',
    '```yaml',
    snippet.rstrip(),
    '```',
    '',
  ]
with mkdocs_gen_files.open('gallery.md', 'w') as f:
  f.write('\n'.join(lines))
