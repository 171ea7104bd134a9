"""The command line in-process: its simulation of a run against the transformation stepped
through it, runs of any length the counters count, hostile files, --strict and --help."""

import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsched
from helpers import assert_config_error, x64
from jaxsched.build import build, current_lr, current_momentum
from jaxsched.cli import main
from jaxsched.cli.commands import parsers
from jaxsched.groups import groups
from jaxsched.lints import Run
from jaxsched.simulate import SAMPLES, dummy_params, improving_metrics, plateau_monitors, simulate

P = jaxsched.patterns()
CHAINED = (
  'schedulers=[{scheduler:LinearLR,scheduler_kwargs:{start_factor:0.1,total_iters:4},'
  'scheduler_configs:{interval:step}},{scheduler:StepLR,scheduler_kwargs:{step_size:2,gamma:0.5}}]'
)
UNSET = ['scheduler=null', 'scheduler_kwargs={}', 'scheduler_configs={}']  # the pattern's one scheduler


def stepped(config, run, metrics=None):
  """Each group's LR (and momentum) before every optimizer step: the built transformation
  updated once per micro-batch over the whole run, reported once per epoch (per
  micro-batch with interval "step") under ReduceLROnPlateau."""
  params = dummy_params(config)
  tx = build(config, params, batches_per_epoch=run.batches_per_epoch)
  grads = jax.tree.map(jnp.zeros_like, params)
  lbfgs = config.optimizer == 'LBFGS'
  extra = {'value_fn': lambda p: 0.0 * sum(jnp.sum(x) for x in jax.tree.leaves(p))} if lbfgs else {}
  monitors = plateau_monitors(config)  # the list's plateaus each get their monitor; metrics is config.monitor's
  values = np.array(
    [
      (metrics if metrics and m == config.monitor else improving_metrics(kw, run.epochs))[: run.epochs]
      for m, kw in monitors.items()
    ],
    np.float64,
  ).T.reshape(run.epochs, len(monitors))
  intervals = [
    e['scheduler_configs']['interval'] for e in config.schedulers or [] if e['scheduler'] == 'ReduceLROnPlateau'
  ] or [config.scheduler_configs['interval']]
  per_batch = 'step' in intervals

  @jax.jit
  def whole(state, values):
    def epoch(state, metric):
      reported = {m: metric[i] for i, m in enumerate(monitors)}

      def batch(state, _):
        lr = {**current_lr(state), **{f'{g}/momentum': m for g, m in current_momentum(state).items()}}
        _, state = tx.update(grads, state, params, **extra)
        if monitors and per_batch:
          state = jaxsched.report(state, reported)
        return state, lr

      state, lrs = jax.lax.scan(batch, state, None, length=run.batches_per_epoch)
      if monitors and not per_batch:
        state = jaxsched.report(state, reported)
      return state, lrs

    return jax.lax.scan(epoch, state, values)[1]

  out = whole(tx.init(params), jnp.asarray(values, jnp.float64))
  b = np.arange(run.batches_per_epoch)  # the micro-batch that completes each group
  last = (b + 1) % run.accumulate == 0
  last[-1] = True
  return {k: np.asarray(v)[:, last].reshape(-1) for k, v in out.items()}


RUNS = {
  'multistep groups, interval step, frequency 3': (
    [
      P['sgd_step_decay'],
      'recurrent_learning_rate_multiplier=0.1',
      'scheduler_configs={interval:step,frequency:3}',
      'scheduler_kwargs.milestones=[5,9]',
    ],
    Run(4, 7),
    None,
  ),
  'one cycle, shared direction, cycled momentum, accumulation 3': (
    [
      P['one_cycle'],
      'recurrent_learning_rate_multiplier=0.1',
      'accumulate_grad_batches=3',
      'scheduler_kwargs.total_steps=13',
    ],
    Run(3, 11, 3),
    None,
  ),
  'one cycle per group, Adam beta1, skip_nonfinite': (
    [
      P['one_cycle'],
      'optimizer=Adam',
      'optimizer_kwargs={}',
      'recurrent_learning_rate_multiplier=0.1',
      'scheduler_kwargs={max_lr:[0.01,0.001],total_steps:25}',
      'skip_nonfinite=true',
    ],
    Run(5, 5),
    None,
  ),
  'plateau per epoch, metrics': (
    [P['adaptive_plateau'], 'scheduler_kwargs={factor:0.5,patience:1}', 'recurrent_learning_rate_multiplier=0.5'],
    Run(8, 3),
    [1.0, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8],
  ),
  'plateau per batch, accumulation 2': (
    [
      P['adaptive_plateau'],
      'scheduler_kwargs={factor:0.5,patience:3}',
      'accumulate_grad_batches=2',
      'scheduler_configs={interval:step,monitor:train_loss}',
    ],
    Run(4, 5, 2),
    [1.0, 0.9, 0.9, 0.8],
  ),
  'warm-up then plateau': (
    [
      P['adaptive_plateau'],
      'scheduler=SequentialLR',
      'scheduler_kwargs={milestones:[3],schedulers:['
      '{scheduler:LinearLR,scheduler_kwargs:{start_factor:0.1,total_iters:3}},'
      '{scheduler:ReduceLROnPlateau,scheduler_kwargs:{patience:0,factor:0.5}}]}',
    ],
    Run(7, 2),
    [1.0, 0.9, 0.8, 0.8, 0.8, 0.7, 0.7],
  ),
  'LBFGS, StepLR': (
    [
      P['sgd_step_decay'],
      'optimizer=LBFGS',
      'optimizer_kwargs={}',
      'learning_rate=1.0',
      'scheduler=StepLR',
      'scheduler_kwargs={step_size:2}',
    ],
    Run(5, 2),
    None,
  ),
  'optax alias, warm-up cosine per step': (
    [
      P['warmup_cosine'],
      'optimizer=optax.lion',
      'optimizer_kwargs={}',
      'scheduler_configs.interval=step',
      'scheduler_kwargs={warmup_epochs:4,max_epochs:20}',
    ],
    Run(3, 8),
    None,
  ),
  'constant': ([P['sgd_step_decay'], 'scheduler=null'], Run(2, 5), None),
  'schedulers list: LinearLR per step, StepLR per epoch, accumulation 2': (
    [P['sgd_step_decay'], *UNSET, 'recurrent_learning_rate_multiplier=0.1', 'accumulate_grad_batches=2', CHAINED],
    Run(5, 5, 2),
    None,
  ),
  'schedulers list with a plateau, metrics': (
    [
      P['sgd_step_decay'],
      *UNSET,
      CHAINED[:-1] + ',{scheduler:ReduceLROnPlateau,scheduler_kwargs:{patience:0,'
      'factor:0.5},scheduler_configs:{monitor:val_loss}}]',
    ],
    Run(7, 3),
    [1.0, 1.0, 0.9, 0.9, 0.9, 0.8, 0.8],
  ),
  'schedulers list with a plateau per batch, always improving': (
    [
      P['sgd_step_decay'],
      *UNSET,
      CHAINED[:-1] + ',{scheduler:ReduceLROnPlateau,scheduler_kwargs:{patience:1},'
      'scheduler_configs:{monitor:train_loss,interval:step}}]',
    ],
    Run(3, 4),
    None,
  ),
}


@pytest.mark.parametrize('name', RUNS)
def test_the_simulation_is_the_transformation_stepped_through_the_run(name):
  (source, *overrides), run, metrics = RUNS[name]
  with x64('float64'):  # as the command runs
    config = jaxsched.load_config(source, overrides)
    expected = stepped(config, run, metrics)
    for samples in (SAMPLES, 6):  # every step; a sample of them
      curve = simulate(config, run, metrics, samples=samples)
      assert len(curve.steps) == run.steps if samples == SAMPLES else len(curve.steps) < run.steps
      assert list(curve.lrs) == [g.name for g in groups(config, dummy_params(config))]
      got = {**curve.lrs, **{f'{g}/momentum': m for g, m in curve.momentum.items()}}
      assert sorted(got) == sorted(expected)
      for key, values in got.items():
        np.testing.assert_array_equal(values, expected[key][curve.steps], err_msg=f'{key}, samples={samples}')
      if curve.plateau:  # every change of the LR is among the steps evaluated, even in a sample
        first = next(iter(expected.values()))
        changes = np.flatnonzero(np.diff(first)) + 1
        assert set(changes) <= set(curve.steps.tolist())


def test_lr_curve_from_python():
  curve = jaxsched.lr_curve(P['sgd_step_decay'], epochs=100, batches_per_epoch=10)
  assert curve.steps.tolist() == list(range(1000)) and list(curve.lrs) == ['regular'] and curve.momentum == {}
  np.testing.assert_allclose(curve.lrs['regular'][[0, 299, 300, 999]], [0.01, 0.01, 0.001, 1e-5], rtol=1e-6)
  config = jaxsched.load_config(P['one_cycle'], ['scheduler_kwargs.total_steps=1000000000'])
  long = jaxsched.lr_curve(config, epochs=1000, batches_per_epoch=10**6, samples=100)
  assert len(long.steps) <= 300 and long.steps[-1] == 10**9 - 1 and long.sampled
  assert np.argmax(long.lrs['regular']) == long.index(299_999_999)  # the cycle's peak, float(0.3 * 10**9) - 1
  assert long.lrs['regular'].max() == pytest.approx(0.1) and set(long.momentum) == {'regular'}
  assert_config_error(lambda: jaxsched.lr_curve(P['sgd_step_decay'], epochs=10), ['batches_per_epoch'])
  assert_config_error(
    lambda: jaxsched.lr_curve(P['adaptive_plateau'], epochs=3, steps_per_epoch=1, metrics=[1.0]),
    ["metrics has 1 values of 'val_loss'", '3 epochs'],
  )
  assert_config_error(
    lambda: jaxsched.lr_curve(P['sgd_step_decay'], epochs=10, batches_per_epoch=2**31), ['2147483647']
  )


def test_lr_curve_of_a_schedulers_list_and_its_limit():
  overrides = [*UNSET, CHAINED[:-1] + ',{scheduler:ReduceLROnPlateau,scheduler_configs:{monitor:val_loss}}]']
  with x64('float64'):
    config = jaxsched.load_config(P['sgd_step_decay'], overrides)
    curve = jaxsched.lr_curve(config, epochs=4, batches_per_epoch=3, metrics={'val_loss': [1.0] * 4})
    expected = stepped(config, Run(4, 3), [1.0] * 4)
  assert curve.steps.tolist() == list(range(12)) and curve.plateau and curve.metrics == [1.0] * 4
  np.testing.assert_array_equal(curve.lrs['regular'], expected['regular'])
  assert curve.counts[:, 0].tolist() == list(range(12))
  assert curve.counts[:, 1].tolist() == [e for e in range(4) for _ in range(3)]
  assert (
    'LinearLR total_iters' in dict((label, k) for k, label in curve.marks)
    and (6, 'StepLR step_size x 1') in curve.marks
  )
  assert_config_error(
    lambda: jaxsched.lr_curve(config, epochs=1000, batches_per_epoch=1001),
    ['1001000 micro-batches', 'stepping the optimizer', '1000000 (10**6)'],
  )


# ----------------------------------------------------------------------------- main() in-process


@pytest.fixture
def command(capsys):
  """main(argv) -> (exit status, stdout, stderr), leaving JAX's precision as it was."""

  def run(*argv):
    before = jax.config.jax_enable_x64
    try:
      status = main([str(a) for a in argv])
    finally:
      jax.config.update('jax_enable_x64', before)
    out, err = capsys.readouterr()
    assert 'Traceback' not in err, err
    return status, out, err

  return run


def one_error(err):
  errors = [line for line in err.splitlines() if line.startswith('error:')]
  assert len(errors) == 1, err
  return errors[0]


def test_a_run_of_a_hundred_million_steps_is_sampled_not_stepped(command):
  start = time.perf_counter()
  status, out, err = command('check', 'sgd_step_decay', '--epochs', 100, '--batches-per-epoch', 10**6)
  assert status == 0, err
  assert time.perf_counter() - start < 60  # stepping it would take hours and GBs
  assert 'run: 100 epochs x 1000000 steps per epoch = 100000000 optimizer steps' in out
  assert re.search(r'LRs evaluated at \d+ of the 100000000 optimizer steps', out)
  rows = {line.split()[0]: line.split() for line in out.splitlines() if re.match(r'\d+\s+\d+\s', line)}
  assert rows['30000000'][2:5] == ['milestone', '30', '0.001'] and rows['99999999'][2:4] == ['end', '1e-05']


@pytest.mark.parametrize(
  'argv, words',
  [
    (['--epochs', 100, '--batches-per-epoch', 10**8], ['10000000000 optimizer steps', '2147483647 (2**31 - 1)']),
    (['--epochs', 2, '--batches-per-epoch', 2**31], ['batches_per_epoch=2147483648', '2147483647']),
    (['--epochs', 10**6 + 1, '--batches-per-epoch', 1], ['1000001 epochs', '1000000 (10**6)']),
    (
      [
        'scheduler_configs.interval=step',
        'scheduler=ReduceLROnPlateau',
        'scheduler_kwargs={}',
        '--epochs',
        1000,
        '--batches-per-epoch',
        1001,
      ],
      ['1001000 in this run', '1000000 (10**6)'],
    ),
    ([], []),  # the run fitted to the schedule is within the limits
  ],
  ids=['steps', 'batches', 'epochs', 'plateau reports', 'assumed'],
)
def test_a_run_beyond_the_limits_is_one_error_naming_the_limit(command, argv, words):
  status, out, err = command('check', 'sgd_step_decay', 'scheduler_kwargs.milestones=[10000000]', *argv)
  if not words:
    assert status == 0, err
    return
  assert status == 1 and out == ''
  error = one_error(err)
  assert all(w in error for w in words), error


def test_check_shows_where_swa_takes_over_and_overrides_that_drop_keywords(command):
  status, out, err = command(
    'check',
    'sgd_step_decay',
    'swa={swa_lrs:0.01,swa_epoch_start:0.6,annealing_epochs:2}',
    '--epochs',
    10,
    '--batches-per-epoch',
    3,
  )
  assert status == 0, err
  row = next(line.split() for line in out.splitlines() if 'SWA starts, SWALR takes over' in line)
  assert row[:2] == ['15', '5']  # Lightning: epoch int(0.6 * 10) - 1, 0-based
  end = next(line.split() for line in out.splitlines() if re.match(r'29\s+9\s+end', line))
  assert end[-1] == '0.01'  # annealed to swa_lrs in 2 epochs
  status, out, err = command('check', 'sgd_step_decay', 'optimizer=Adam', '--epochs', 3, '--steps-per-epoch', 2)
  assert status == 0 and 'note: optimizer_kwargs momentum=0.9 dropped' in err, err


def test_strict_turns_warnings_into_exit_1(command):
  status, out, err = command('check', 'sgd_step_decay', 'learning_rate=1e-6', '--epochs', 3, '--steps-per-epoch', 2)
  assert status == 0 and 'OK: no errors, 2 warnings.' in out, err
  status, out, err = command(
    'check', 'sgd_step_decay', 'learning_rate=1e-6', '--epochs', 3, '--steps-per-epoch', 2, '--strict'
  )
  assert status == 1 and 'OK' not in out and err.count('warning:') == 2
  assert one_error(err) == 'error: 2 warnings with --strict (warnings fail the check).'
  status, out, err = command('check', 'sgd_step_decay', '--epochs', 100, '--steps-per-epoch', 2, '--strict')
  assert status == 0 and 'OK: no errors, 0 warnings.' in out, err


@pytest.mark.parametrize('name', ['list', 'check', 'plot'])
def test_every_command_has_a_description_in_its_help(capsys, name):
  with pytest.raises(SystemExit) as e:
    main([name, '--help'])
  assert e.value.code == 0
  description = parsers()[1][name].description
  assert description and ' '.join(description.split()) in ' '.join(capsys.readouterr().out.split())


DIRECTORY, MISSING = object(), object()
METRICS = ['check', 'adaptive_plateau', '--epochs', '2', '--metrics']
HOSTILE = {
  # the file's name and content (bytes, text, a directory or none), the command line ({} is its path), the words
  'config not UTF-8': ('c.yaml', b'optimizer: Adam\n\xff\xfe\n', ['check', '{}'], ['not UTF-8 text', '0xff']),
  'config a directory': ('c', DIRECTORY, ['check', '{}'], ['cannot read config', 'directory']),
  'config a YAML list': ('c.yaml', '- optimizer: Adam\n- lr: 0.1\n', ['check', '{}'], ['must be a mapping', 'list']),
  'config missing': ('c.yaml', MISSING, ['check', '{}'], ['not found', 'Shipped patterns']),
  'config malformed': ('c.yaml', 'optimizer: [Adam\n', ['check', '{}'], ['malformed YAML']),
  'metrics not UTF-8': ('m.csv', b'\xff\xfe1\n', [*METRICS, '{}'], ['cannot read metrics file', 'not UTF-8 text']),
  'metrics empty': ('m.csv', '', [*METRICS, '{}'], ['is empty']),
  'metrics a directory': ('m', DIRECTORY, [*METRICS, '{}'], ['cannot read metrics file', 'directory']),
  'metrics missing': ('m.csv', MISSING, [*METRICS, '{}'], ['cannot read metrics file', 'No such file']),
  'metrics without the monitored column': (
    'm.csv',
    'epoch,loss\n0,1.0\n1,0.9\n',
    [*METRICS, '{}'],
    ["no column 'val_loss'", 'columns: epoch, loss.'],
  ),
  'metrics JSON not a list': ('m.json', '3', [*METRICS, '{}'], ['expected a list']),
  'metrics epoch not a number': (
    'm.csv',
    'epoch,val_loss\ninf,1.0\n',
    [*METRICS, '{}'],
    ["epoch 'inf' is not a whole number"],
  ),
  'plot to a directory': (
    'o',
    DIRECTORY,
    ['plot', 'one_cycle', '--epochs', '1', '--steps-per-epoch', '1', '-o', '{}'],
    ['cannot write', 'directory'],
  ),
}


@pytest.mark.parametrize('name', HOSTILE)
def test_a_hostile_file_is_one_error_line_and_exit_1(command, tmp_path, name):
  filename, content, argv, words = HOSTILE[name]
  path = tmp_path / filename
  if content is DIRECTORY:
    path.mkdir()
  elif isinstance(content, bytes):
    path.write_bytes(content)
  elif content is not MISSING:
    path.write_text(content)
  status, out, err = command(*[a.format(path) for a in argv])
  assert status == 1, (out, err)
  error = one_error(err)
  assert all(w in error for w in words), error


def test_an_empty_config_file_is_every_default_with_a_note(command, tmp_path):
  (tmp_path / 'empty.yaml').write_text('')
  status, out, err = command('check', tmp_path / 'empty.yaml', '--epochs', 2, '--steps-per-epoch', 2)
  assert status == 0 and 'optimizer: Adam' in out and 'empty.yaml is empty: every key takes its default' in err


def test_check_and_plot_a_schedulers_list(command, tmp_path):
  path = tmp_path / 'chain.yaml'
  path.write_text(
    'optimizer: SGD\nlearning_rate: 0.1\nschedulers:\n'
    '  - {scheduler: LinearLR, scheduler_kwargs: {start_factor: 0.1, total_iters: 4}, '
    'scheduler_configs: {interval: step}}\n'
    '  - {scheduler: StepLR, scheduler_kwargs: {step_size: 2}}\n'
    '  - {scheduler: ReduceLROnPlateau, scheduler_kwargs: {patience: 0, factor: 0.5}, '
    'scheduler_configs: {monitor: val_loss}}\n'
  )
  metrics = tmp_path / 'm.csv'
  metrics.write_text('epoch,val_loss\n0,1\n1,1\n2,1\n3,0.5\n4,0.5\n5,0.5\n')
  status, out, err = command('check', path, '--epochs', 6, '--batches-per-epoch', 3, '--metrics', metrics)
  assert status == 0 and 'OK: no errors, 0 warnings.' in out, err
  assert 'gamma: 0.1' in out and 'cooldown: 0' in out  # each entry's defaults
  with x64('float64'):
    expected = stepped(jaxsched.load_config(str(path)), Run(6, 3), [1.0, 1.0, 1.0, 0.5, 0.5, 0.5])['regular']
  rows = [line.split() for line in out.splitlines() if re.match(r'\d+\s+\d+\s', line)]
  assert len(rows) > 4 and any('LinearLR total_iters' in ' '.join(r) for r in rows)
  for row in rows:
    assert float(row[-1]) == pytest.approx(expected[int(row[0])], rel=1e-6), row
  status, out, err = command('check', path, '--epochs', 6, '--batches-per-epoch', 3)
  assert status == 0 and 'LinearLR + StepLR + ReduceLROnPlateau follows the metric' in err, err
  status, out, err = command('plot', path, '--epochs', 6, '--batches-per-epoch', 3, '-o', tmp_path / 'c.png')
  assert status == 0 and (tmp_path / 'c.png').stat().st_size > 0, err
  status, out, err = command('check', path, '--epochs', 1000, '--batches-per-epoch', 1001)
  assert status == 1 and '1001000 micro-batches' in one_error(err)


def test_check_and_plot_a_list_with_a_sequential_entry_and_overrides_into_it(command, tmp_path):
  path = tmp_path / 'sequential.yaml'
  path.write_text(
    'optimizer: SGD\nlearning_rate: 0.1\nrecurrent_learning_rate_multiplier: 0.5\nschedulers:\n'
    '  - {scheduler: StepLR, scheduler_kwargs: {step_size: 2}}\n'
    '  - scheduler: SequentialLR\n'
    '    scheduler_kwargs:\n'
    '      milestones: [3]\n'
    '      schedulers:\n'
    '        - {scheduler: LinearLR, scheduler_kwargs: {start_factor: 0.2, total_iters: 3}}\n'
    '        - {scheduler: SWALR, scheduler_kwargs: {swa_lr: [0.02, 0.004], anneal_epochs: 3}}\n'
    '    scheduler_configs: {interval: step, frequency: 2}\n'
  )
  overrides = ['schedulers.0.scheduler_kwargs.gamma=0.5', 'schedulers.1.scheduler_kwargs.milestones.0=4']
  args = ['--epochs', 6, '--batches-per-epoch', 3]
  status, out, err = command('check', path, *args, *overrides)
  assert status == 0 and 'OK: no errors, 0 warnings.' in out, err
  assert 'gamma: 0.5' in out and 'milestones: [4]' in out and 'swa_lr: [0.02, 0.004]' in out
  with x64('float64'):
    config = jaxsched.load_config(str(path), overrides)
    expected = stepped(config, Run(6, 3))
  rows = [line.split() for line in out.splitlines() if re.match(r'\d+\s+\d+\s', line)]
  assert len(rows) > 4 and any('SequentialLR milestone 4' in ' '.join(r) for r in rows)
  for row in rows:
    k = int(row[0])
    assert [float(row[-2]), float(row[-1])] == pytest.approx(
      [expected['regular'][k], expected['recurrent'][k]],
      rel=1e-5,  # the table's 6 digits
    ), row
  status, out, err = command('plot', path, *args, *overrides, '-o', tmp_path / 's.png')
  assert status == 0 and (tmp_path / 's.png').stat().st_size > 0, err
  status, out, err = command('check', path, *args, 'schedulers.2.scheduler_kwargs.gamma=0.5')
  assert status == 1 and 'schedulers has 2 entries' in one_error(err) and 'valid indices: 0 to 1' in one_error(err)


def test_plateau_cut_labels_only_the_steps_a_plateau_cuts():
  from jaxsched.cli.tables import telling_points

  plateau = {'scheduler': 'ReduceLROnPlateau', 'scheduler_kwargs': {'patience': 1}}
  listed = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'schedulers': [{'scheduler': 'StepLR', 'scheduler_kwargs': {'step_size': 2}}, plateau],
  }
  decay_first = {
    'optimizer': 'SGD',
    'learning_rate': 0.1,
    'scheduler': 'SequentialLR',
    'scheduler_kwargs': {
      'milestones': [2],
      'schedulers': [
        {'scheduler': 'LinearLR', 'scheduler_kwargs': {'start_factor': 1.0, 'end_factor': 0.5, 'total_iters': 2}},
        plateau,
      ],
    },
  }
  run = Run(8, 2)

  def cuts(config, metrics=None):
    curve = simulate(jaxsched.load_config(config), run, metrics)
    return [k for k, label in telling_points(curve) if 'plateau cut' in label], curve

  with x64('float64'):
    for config in (listed, decay_first):  # the LR falls (StepLR, LinearLR), but no plateau cuts it
      found, curve = cuts(config)
      assert found == [] and np.any(np.diff(curve.lrs['regular']) < 0), config
    # a flat metric: patience 1 cuts after the reports of epochs 2, 4 and 6, so epochs 3, 5 and 7 train at
    # the cut LRs (optimizer steps 6, 10, 14); StepLR's steps at 4, 8 and 12 are not cuts
    found, curve = cuts(listed, {'train_loss': [1.0] * 8})
    assert found == [6, 10, 14]
    assert all(curve.lrs['regular'][curve.index(k)] < curve.lrs['regular'][curve.index(k - 1)] for k in found)
