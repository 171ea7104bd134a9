"""The `jaxsched` command as a user runs it (subprocesses), and its lints (in-process).

Every subprocess starts JAX (~2 s), so the command tests are few and each checks
several things at once.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import jaxsched
from jaxsched import lints
from jaxsched.cli.metrics import read_metrics
from jaxsched.lints import LINTS, Run
from jaxsched.simulate import improving_metrics
from oracle import x64

PNG = b'\x89PNG\r\n\x1a\n'
SCRIPT = shutil.which('jaxsched', path=os.path.dirname(sys.executable))
COMMAND = [SCRIPT] if SCRIPT else [sys.executable, '-m', 'jaxsched.cli']
P = jaxsched.patterns()
PARALLEL = 4

# Every command the tests run, started together by the `ran` fixture (a JAX
# process spends ~2 s starting; two cores run them side by side).
PLATEAU_LIKE_LIGHTNING = [
  'check',
  P['adaptive_plateau'],
  'optimizer=SGD',
  'learning_rate=1.0',
  'scheduler_kwargs={factor:0.5,patience:1}',
  '--epochs',
  '10',
  '--steps-per-epoch',
  '5',
  '--metrics',
  'lightning.csv',
]
COMMANDS = {
  'list': ['list'],
  'list schedulers': ['list', 'schedulers'],
  'list typo': ['list', 'optimisers'],
  **{f'pattern {name}': ['check', path] for name, path in P.items()},
  # options after the overrides; snakemake syntax; a recurrent group at 0.1x
  'overrides': [
    'check',
    P['sgd_step_decay'],
    'learning_rate=0.1',
    'optimizer_kwargs={momentum:0.9,weight_decay:0.0001}',
    'recurrent_learning_rate_multiplier=0.1',
    '--epochs',
    '100',
    '--steps-per-epoch',
    '10',
  ],
  'plateau': PLATEAU_LIKE_LIGHTNING,
  'plot one_cycle': [
    'plot',
    'one_cycle',
    '--steps-per-epoch',
    '100',
    '--epochs',
    '100',
    '-o',
    'one_cycle.png',
    'recurrent_learning_rate_multiplier=0.1',
    'scheduler_kwargs.max_lr=[0.1,0.01]',
  ],
  'plot plateau': [
    'plot',
    'adaptive_plateau',
    '--steps-per-epoch',
    '5',
    '--epochs',
    '20',
    '-o',
    'plateau.png',
    '--metrics',
    'metrics.json',
    'scheduler_kwargs.patience=2',
  ],
  'plot no run': ['plot', 'one_cycle', '-o', 'x.png'],
  'plot no batches': ['plot', 'one_cycle', '--epochs', '1', '-o', 'x.png'],
  # 10 micro-batches per epoch in groups of 3: 4 optimizer steps per epoch, the last one after a partial group
  'accumulate': [
    'check',
    P['one_cycle'],
    'accumulate_grad_batches=3',
    'scheduler_kwargs.total_steps=8',
    '--epochs',
    '2',
    '--batches-per-epoch',
    '10',
  ],
  'plot no dir': ['plot', 'one_cycle', '--steps-per-epoch', '1', '--epochs', '1', '-o', 'no/x.png'],
}
ERRORS = {
  'nope.yaml': (['nope.yaml'], "error: config file 'nope.yaml' not found."),
  'malformed': (['bad.yaml'], 'error: bad.yaml: line 2, column 1: malformed YAML'),
  'typo': (['one_cycle', 'optimizer=Adamm'], "error: unknown optimizer 'Adamm'. Did you mean 'Adam'?"),
  'override': (['one_cycle', 'learning_rate'], "error: override 'learning_rate' must look like KEY=VALUE"),
  'past total_steps': (
    ['one_cycle', '--epochs', '10', '--steps-per-epoch', '1001'],
    'error: OneCycleLR: the run steps the scheduler 10010 times, but torch raises after 10000',
  ),
  'no momentum': (
    ['one_cycle', 'optimizer=Adagrad', 'optimizer_kwargs={}'],
    'error: Adagrad has neither momentum nor betas',
  ),
  'short metrics': (
    ['adaptive_plateau', '--epochs', '20', '--steps-per-epoch', '2', '--metrics', 'short.json'],
    "error: the metrics file has 3 values of 'val_loss', but the run has 20 epochs",
  ),
  'steps with accumulation': (
    ['sgd_step_decay', 'accumulate_grad_batches=2', '--epochs', '2', '--steps-per-epoch', '5'],
    'error: steps_per_epoch=5 counts optimizer steps',
  ),
  'infinite lr': (
    [
      'sgd_step_decay',
      'scheduler=LambdaLR',
      'scheduler_kwargs={lr_lambda: 1/(10-epoch)}',
      '--epochs',
      '20',
      '--steps-per-epoch',
      '2',
    ],
    "error: the 'regular' group's learning rate is inf at optimizer step 20 (epoch 10)",
  ),
}
COMMANDS.update({f'error {k}': ['check', *args] for k, (args, _) in ERRORS.items()})


def write_inputs(d):
  (d / 'bad.yaml').write_text('optimizer: [Adam\n')
  (d / 'short.json').write_text(json.dumps([{'val_loss': 1.0}, {'val_loss': 0.9}, {'val_loss': 0.8}]))
  (d / 'metrics.json').write_text(json.dumps({'val_loss': [1.0, 0.9] + [0.95] * 20}))
  # facts-measured-here.md's Lightning run, as Lightning's CSVLogger writes it (several rows per epoch)
  with open(d / 'lightning.csv', 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['epoch', 'step', 'train_loss', 'val_loss'])
    for e, v in enumerate([1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8]):
      w.writerow([e, 5 * e + 4, 2.0, ''])
      w.writerow([e, 5 * e + 4, '', v])


@pytest.fixture(scope='module')
def ran(tmp_path_factory):
  """name -> (CompletedProcess-like, working directory), for every entry of COMMANDS."""
  d = tmp_path_factory.mktemp('cli')
  write_inputs(d)
  env = {**os.environ, 'JAXSCHED_PLAIN': '1'}
  env.pop('JAXSCHED_DEBUG', None)
  pending, out = list(COMMANDS.items()), {}
  running = []
  while pending or running:
    while pending and len(running) < PARALLEL:
      name, args = pending.pop(0)
      proc = subprocess.Popen(
        [*COMMAND, *map(str, args)], cwd=d, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
      )
      running.append((name, args, proc))
    name, args, proc = running.pop(0)
    stdout, stderr = proc.communicate(timeout=300)
    out[name] = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
  for p in out.values():
    assert 'Traceback' not in p.stderr, p.stderr
  return out, d


def table(stdout):
  """The LR table's rows as dicts (plain-text output)."""
  lines = stdout.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith('step '))
  headers = re.split(r'\s{2,}', lines[start].strip())
  rows = []
  for line in lines[start + 2 :]:
    if not line.strip():
      break
    rows.append(dict(zip(headers, re.split(r'\s{2,}', line.strip()))))
  return rows


# ----------------------------------------------------------------------------- commands


def test_list_names_every_id_with_its_defaults(ran):
  ran, _ = ran
  p = ran['list']
  assert p.returncode == 0, p.stderr
  for name in [*jaxsched.OPTIMIZERS, *jaxsched.SCHEDULES, 'ReduceLROnPlateau', 'optax.<alias>']:
    assert re.search(rf'^{re.escape(name)}\s', p.stdout, re.M), name
  assert re.search(r'^CosineAnnealingLR\s+T_max\s+250\s', p.stdout, re.M)
  assert re.search(r'^ExponentialLR\s+gamma\s+REQUIRED\s', p.stdout, re.M)
  assert re.search(r'^AdamW\s+lr\s+0\.001\s', p.stdout, re.M)
  assert re.search(r'^\s+weight_decay\s+0\.01\s', p.stdout, re.M)

  p = ran['list schedulers']
  assert p.returncode == 0 and 'OneCycleLR' in p.stdout and 'AdamW' not in p.stdout
  p = ran['list typo']
  assert p.returncode == 2 and "invalid choice: 'optimisers'" in p.stderr


@pytest.mark.parametrize('name', sorted(P))
def test_check_passes_on_every_shipped_pattern(ran, name):
  p = ran[0][f'pattern {name}']
  assert p.returncode == 0, p.stderr
  assert 'OK: no errors' in p.stdout
  assert f'optimizer: {jaxsched.load_config(P[name]).optimizer}' in p.stdout
  assert 'note: assuming a run of' in p.stderr  # no --epochs: a run fitted to the schedule
  rows = table(p.stdout)
  assert rows[0]['point'].startswith('start') and rows[-1]['point'].endswith('end')
  assert 'warning' not in p.stderr  # the patterns show good practice: the lints are quiet
  if name == 'warmup_cosine':  # warmed up from warmup_start_lr, not from LR 0
    assert rows[0]['lr regular'] == '0.0001' and any(r['point'] == 'end of warm-up' for r in rows)
  if name == 'one_cycle':  # momentum cycles: its column is shown
    assert rows[0]['momentum regular'] == '0.95'
  if name == 'adaptive_plateau':
    assert 'upper bound' in p.stderr


def test_check_tables_the_run_with_overrides_and_groups(ran):
  p = ran[0]['overrides']
  assert p.returncode == 0, p.stderr
  assert 'run: 100 epochs x 10 steps per epoch = 1000 optimizer steps' in p.stdout
  rows = {r['point']: r for r in table(p.stdout)}
  assert rows['start']['lr regular'] == '0.1' and rows['start']['lr recurrent'] == '0.01'
  milestone = rows['milestone 30']
  assert (milestone['step'], milestone['epoch'], milestone['lr regular']) == ('300', '30', '0.01')
  assert rows['milestone 90']['lr recurrent'] == '1e-05'
  assert rows['end']['step'] == '999'
  assert p.stderr == ''  # a clean config: no warnings


def test_check_with_accumulation_counts_optimizer_steps_and_partial_groups(ran):
  p = ran[0]['accumulate']
  assert p.returncode == 0, p.stderr
  assert (
    'run: 2 epochs x 10 batches (4 optimizer steps: accumulate_grad_batches 3, the last group of an epoch '
    'may be partial) per epoch = 8 optimizer steps'
  ) in p.stdout
  rows = {r['point']: r for r in table(p.stdout)}
  assert rows['end']['step'] == '7' and rows['end']['epoch'] == '1'


def test_check_plateau_follows_the_metrics_file_like_lightning(ran):
  # facts-measured-here.md: patience 1, factor 0.5, val_loss per epoch ->
  # LR 1.0 for epochs 0-3, 0.5 for 4-5, 0.25 for 6-8, 0.125 from epoch 9.
  p = ran[0]['plateau']
  assert p.returncode == 0, p.stderr
  cuts = [(r['epoch'], r['lr regular']) for r in table(p.stdout) if 'plateau cut' in r['point']]
  assert cuts == [('4', '0.5'), ('6', '0.25'), ('9', '0.125')]


@pytest.mark.parametrize('name', ERRORS)
def test_check_errors_are_one_line_and_exit_1(ran, name):
  p = ran[0][f'error {name}']
  assert p.returncode == 1, (p.stdout, p.stderr)
  errors = [line for line in p.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and errors[0].startswith(ERRORS[name][1]), p.stderr


def test_plot_writes_pngs(ran):
  ran, d = ran
  for name, png in (('plot one_cycle', 'one_cycle.png'), ('plot plateau', 'plateau.png')):
    p = ran[name]
    assert p.returncode == 0, p.stderr
    assert (d / png).read_bytes().startswith(PNG) and f'wrote {png}' in p.stdout
  p = ran['plot no run']  # the run's length is required
  assert p.returncode == 2 and 'required: --epochs' in p.stderr
  p = ran['plot no batches']
  assert p.returncode == 2 and 'one of the arguments --batches-per-epoch --steps-per-epoch is required' in p.stderr
  p = ran['plot no dir']
  assert p.returncode == 1 and 'does not exist' in p.stderr


# ----------------------------------------------------------------------------- metrics files


def test_read_metrics_forms(tmp_path):
  f = tmp_path / 'a.json'
  f.write_text('[0.5, 0.4]')
  assert read_metrics(str(f), 'val_loss') == [0.5, 0.4]
  f.write_text('[{"val_loss": 0.5, "epoch": 0}, {"train_loss": 1}, {"val_loss": 0.4}]')
  assert read_metrics(str(f), 'val_loss') == [0.5, 0.4]
  f = tmp_path / 'b.csv'
  f.write_text('0.5\n0.4\n')
  assert read_metrics(str(f), 'val_loss') == [0.5, 0.4]
  f.write_text('epoch,val_acc,val_loss\n0,0.5,\n0,,0.7\n1,0.6,0.65\n')
  assert read_metrics(str(f), 'val_loss') == [0.7, 0.65]


@pytest.mark.parametrize('text', ['epoch,loss\n0,0.5\n1,0.4\n', 'epoch,val_acc,train_loss\n0,0.5,1\n'])
def test_a_csv_without_the_monitored_column_is_an_error_naming_it_and_the_columns(tmp_path, text):
  from jaxsched.cli import CliError

  f = tmp_path / 'm.csv'
  f.write_text(text)
  columns = text.splitlines()[0].replace(',', ', ')
  with pytest.raises(CliError, match=f"no column 'val_loss' .*; columns: {columns}\\.$"):
    read_metrics(str(f), 'val_loss')


@pytest.mark.parametrize(
  'kwargs',
  [
    {},
    {'mode': 'max'},
    {'threshold_mode': 'abs', 'threshold': 0.5},
    {'mode': 'max', 'threshold': 2.0},
    {'threshold': 3.0},
  ],
)
def test_upper_bound_metrics_always_improve(kwargs):
  from jaxsched.plateau import KWARGS, PlateauConfig, _is_better

  c = PlateauConfig(**{k: kwargs.get(k, d) for k, (d, _) in KWARGS.items()})
  values = improving_metrics(kwargs, 50)
  assert all(bool(_is_better(c, b, a)) for a, b in zip(values, values[1:]))


# ----------------------------------------------------------------------------- lints


def cfg(pattern=None, *overrides, **values):
  source = P[pattern] if pattern else values
  return jaxsched.load_config(source, overrides)


CLEAN = [
  (cfg('sgd_step_decay'), Run(100, 10)),
  (cfg('one_cycle'), Run(100, 100)),
  (cfg('adaptive_plateau'), Run(50, 10)),
  (cfg('warmup_cosine'), Run(100, 10)),
  (
    jaxsched.load_config(os.path.join(os.path.dirname(__file__), '..', '..', 'examples', 'configs', 'digits.yaml')),
    Run(100, 22),
  ),  # the example's default config
  (
    cfg(
      optimizer='SGD',
      learning_rate=0.05,
      scheduler='CosineAnnealingLR',
      scheduler_kwargs={'T_max': 30},
      recurrent_learning_rate_multiplier=0.5,
    ),
    Run(30, 20),
  ),
  (
    cfg(
      optimizer='SGD',
      scheduler='CyclicLR',
      scheduler_kwargs={'base_lr': [1e-3, 1e-4], 'max_lr': [0.1, 0.01]},
      scheduler_configs={'interval': 'step'},
      recurrent_learning_rate_multiplier=0.1,
    ),
    Run(10, 100),
  ),
]


@pytest.mark.parametrize('fn', LINTS, ids=lambda f: f.__name__)
def test_clean_configs_have_no_warnings(fn):
  for config, run in CLEAN:
    assert fn(config, run) == [], (fn.__name__, config)


def one(fn, config, run=None):
  out = fn(config, Run(100, 10) if run is None else run)
  assert len(out) == 1, out
  return out[0]


def test_warmup_from_zero_per_epoch():
  fn = lints.warmup_from_zero_per_epoch
  from_zero = 'scheduler_kwargs.warmup_start_lr=0'
  assert fn(cfg('warmup_cosine'), Run(100, 10)) == []
  assert 'the whole first epoch trains at LR 0' in one(fn, cfg('warmup_cosine', from_zero))
  assert 'first 2 epochs train' in one(fn, cfg('warmup_cosine', from_zero, 'scheduler_configs.frequency=2'))
  assert fn(cfg('warmup_cosine', 'scheduler_configs.interval=step'), Run(1, 100)) == []


def test_cosine_shorter_than_run():
  fn = lints.cosine_shorter_than_run
  w = one(fn, cfg(scheduler='CosineAnnealingLR', scheduler_kwargs={'T_max': 50}), Run(100, 10))
  assert 'T_max=50' in w and 'rises again' in w and 'Set T_max: 99' in w
  w = one(fn, cfg('warmup_cosine'), Run(150, 10))
  assert 'max_epochs=100' in w
  # interval step: max_epochs counts batches
  assert 'Set max_epochs: 999' in one(fn, cfg('warmup_cosine', 'scheduler_configs.interval=step'), Run(10, 100))
  seq = cfg(
    scheduler='SequentialLR',
    scheduler_kwargs={
      'milestones': [5],
      'schedulers': [
        {'scheduler': 'LinearLR', 'scheduler_kwargs': {'total_iters': 5}},
        {'scheduler': 'CosineAnnealingLR', 'scheduler_kwargs': {'T_max': 20}},
      ],
    },
  )
  assert 'T_max=20' in one(fn, seq, Run(40, 1)) and fn(seq, Run(25, 1)) == []
  assert fn(cfg(scheduler='CosineAnnealingLR', scheduler_kwargs={'T_max': 50}), Run(100, 10, explicit=False)) == []


def test_one_cycle_total_steps():
  fn = lints.one_cycle_total_steps
  assert 'Set total_steps: 5000' in one(fn, cfg('one_cycle'), Run(50, 100))
  assert 'interval "epoch"' in one(fn, cfg('one_cycle', 'scheduler_configs.interval=epoch'), Run(10000, 1))
  epochs_form = cfg('one_cycle', 'scheduler_kwargs={max_lr:0.1,epochs:10,steps_per_epoch:100}')
  assert fn(epochs_form, Run(10, 100)) == [] and 'total_steps=1000' in one(fn, epochs_form, Run(5, 100))


def test_plateau_val_metric_per_step():
  fn = lints.plateau_val_metric_per_step
  assert 'monitors \'val_loss\' with interval "step"' in one(
    fn, cfg('adaptive_plateau', 'scheduler_configs.interval=step')
  )
  assert fn(cfg('adaptive_plateau', 'scheduler_configs={interval:step,monitor:train_loss}'), Run(10, 10)) == []


def test_absolute_lr_overrides_groups():
  fn = lints.absolute_lr_overrides_groups
  w = one(fn, cfg('one_cycle', 'recurrent_learning_rate_multiplier=0.1'))
  assert 'recurrent_learning_rate_multiplier=0.1 has no effect' in w and '[regular, recurrent]' in w
  w = one(fn, cfg('one_cycle', 'lr_parameter_groups={head:{lr_factor:10}}'))
  assert 'lr_parameter_groups.head.lr_factor=10.0' in w
  assert 'ignores learning_rate=0.5' in one(fn, cfg('one_cycle', 'learning_rate=0.5'))
  cyc = cfg(
    optimizer='SGD',
    scheduler='CyclicLR',
    scheduler_kwargs={'base_lr': 1e-3, 'max_lr': 0.1},
    recurrent_learning_rate_multiplier=0.1,
  )
  assert 'absolute base_lr and max_lr' in one(fn, cyc)


def test_swa_lrs_overrides_groups():
  fn = lints.swa_lrs_overrides_groups
  swa = 'swa={swa_lrs:0.02,swa_epoch_start:2}'
  w = one(fn, cfg('sgd_step_decay', 'recurrent_learning_rate_multiplier=0.1', swa))
  assert "swa.swa_lrs=0.02 becomes every parameter group's LR" in w, w
  assert 'recurrent_learning_rate_multiplier=0.1 has no effect' in w and 'in this order: [regular, recurrent]' in w
  assert 'e.g. [0.02, 0.002] keeps the multipliers' in w
  w = one(fn, cfg('sgd_step_decay', 'lr_parameter_groups={head:{lr_factor:10}}', swa))
  assert 'lr_parameter_groups.head.lr_factor=10.0' in w
  # a per-group list keeps the multipliers; without groups there is nothing to cancel
  per_group = 'swa={swa_lrs:[0.02,0.002],swa_epoch_start:2}'
  assert fn(cfg('sgd_step_decay', 'recurrent_learning_rate_multiplier=0.1', per_group), Run(10, 10)) == []
  assert fn(cfg('sgd_step_decay', swa), Run(10, 10)) == []
  assert fn in lints.LINTS  # check runs it


def test_momentum_cycling_without_momentum():
  fn = lints.momentum_cycling_without_momentum
  w = one(fn, cfg('one_cycle', 'optimizer_kwargs.momentum=0'))
  assert 'silently turns it into momentum SGD' in w and 'between 0.85 and 0.95' in w
  rms = cfg(optimizer='RMSprop', scheduler='CyclicLR', scheduler_kwargs={'base_lr': 1e-3, 'max_lr': 1e-2})
  assert 'RMSprop has momentum: 0.0' in one(fn, rms)
  assert (
    fn(cfg('one_cycle', 'optimizer_kwargs.momentum=0', 'scheduler_kwargs.cycle_momentum=false'), Run(100, 100)) == []
  )
  assert fn(cfg('one_cycle', 'optimizer=Adam', 'optimizer_kwargs={}'), Run(100, 100)) == []  # beta1 cycles, as in torch


def test_learning_rate_out_of_range():
  fn = lints.learning_rate_out_of_range
  w = one(fn, cfg('adaptive_plateau', 'learning_rate=0.5'))
  assert "learning_rate=0.5 is far outside the usual range (Adam's default is 0.001" in w and 'too high' in w
  assert 'too low' in one(fn, cfg('sgd_step_decay', 'learning_rate=1e-6'))
  assert 'nothing trains' in one(fn, cfg('sgd_step_decay', 'learning_rate=0'))
  assert "'recurrent' group's LR=1e-06" in one(fn, cfg('adaptive_plateau', 'recurrent_learning_rate_multiplier=0.001'))
  assert 'scheduler_kwargs.max_lr=50' in one(fn, cfg('one_cycle', 'scheduler_kwargs.max_lr=50'))
  assert fn(cfg('adaptive_plateau', 'lr_parameter_groups={frozen:{lr_factor:0}}'), Run(1, 1)) == []


def test_scheduler_never_steps():
  fn = lints.scheduler_never_steps
  assert 'never steps' in one(fn, cfg('sgd_step_decay', 'scheduler_configs.frequency=5'), Run(3, 10))
  assert 'milestone(s) [60, 90] are never reached' in one(fn, cfg('sgd_step_decay'), Run(50, 10))
  assert 'step_size=30 is never reached' in one(
    fn, cfg(scheduler='StepLR', scheduler_kwargs={'step_size': 30}), Run(20, 10)
  )


def test_group_value_torch_ignores():
  fn = lints.group_value_torch_ignores
  config = cfg(
    optimizer='Adagrad',
    optimizer_kwargs={'initial_accumulator_value': 0.1},
    lr_parameter_groups={'head': {'initial_accumulator_value': 5.0}},
  )
  w = one(fn, config)
  assert 'lr_parameter_groups.head.initial_accumulator_value=5.0 has no effect' in w and '(0.1' in w
  assert fn(cfg(optimizer='SGD', lr_parameter_groups={'head': {'weight_decay': 0.0}}), Run(1, 1)) == []


def test_negative_learning_rates_are_warned_and_non_finite_ones_are_errors():
  from jaxsched.cli import CliError
  from jaxsched.cli.tables import check_learning_rates
  from jaxsched.simulate import simulate

  with x64('float64'):  # as the command runs
    negative = cfg(
      optimizer='SGD', learning_rate=0.1, scheduler='LambdaLR', scheduler_kwargs={'lr_lambda': '1 - epoch / 4'}
    )  # 0 at epoch 4, exactly
    warnings = check_learning_rates(simulate(negative, Run(8, 1)))
    assert len(warnings) == 1 and "'regular' group's learning rate is negative" in warnings[0]
    assert 'optimizer step 5 (epoch 5)' in warnings[0]
    infinite = cfg(
      optimizer='SGD', learning_rate=0.1, scheduler='LambdaLR', scheduler_kwargs={'lr_lambda': '1 / (3 - epoch)'}
    )
    with pytest.raises(CliError, match='learning rate is inf at optimizer step 6 \\(epoch 3\\)'):
      check_learning_rates(simulate(infinite, Run(5, 2)))


def test_lint_skips_what_build_reports():
  # a malformed value is build()'s error to report, not a lint crash
  config = jaxsched.Config(optimizer='SGD', scheduler='MultiStepLR', scheduler_kwargs={'milestones': 'oops'})
  assert lints.lint(config, Run(10, 1)) == []
