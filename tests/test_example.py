"""The main job: examples/train_digits.py trains, checkpoints and resumes exactly."""

import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # minutes of training: left out of the fast lane (tests/conftest.py)


def load_example():
  spec = importlib.util.spec_from_file_location('train_digits', ROOT / 'examples' / 'train_digits.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# A short run with a plateau after a warm-up cosine would need many epochs; this
# config exercises groups, an epoch-interval schedule and clipping in 4 epochs.
SHORT = [
  'scheduler_kwargs.warmup_epochs=2',
  'scheduler_kwargs.max_epochs=4',
  'scheduler_kwargs.warmup_start_lr=1e-4',
  'gradient_clip_val=1.0',
]


def test_resume_is_bit_for_bit(tmp_path, capsys):
  example = load_example()
  whole, split = tmp_path / 'whole', tmp_path / 'split'
  example.main(['--epochs', '4', '--out', str(whole), '--quiet', *SHORT])
  example.main(['--epochs', '2', '--out', str(split), '--quiet', *SHORT])
  final = example.main(['--epochs', '4', '--out', str(split), '--quiet', '--resume', *SHORT])
  out = capsys.readouterr().out
  assert 'resumed from the checkpoint of epoch 1' in out
  assert out.strip().splitlines()[-1] == f'final val_accuracy={final:.4f}'
  a, b = np.load(whole / 'params.npz'), np.load(split / 'params.npz')
  assert sorted(a) == sorted(b) and 'recurrent/kernel' in a
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  ha, hb = (json.loads((d / 'history.json').read_text()) for d in (whole, split))
  assert ha == hb
  assert set(ha['lr']) == {'regular', 'recurrent'}
  # each group is scheduled from its own base LR: both start at the absolute warmup_start_lr,
  # and at the end of warm-up (epoch 1) the recurrent group is at a tenth of the regular one.
  np.testing.assert_allclose([ha['lr']['regular'][0], ha['lr']['recurrent'][0]], [1e-4, 1e-4], rtol=1e-6)
  np.testing.assert_allclose([ha['lr']['regular'][1], ha['lr']['recurrent'][1]], [1e-3, 1e-4], rtol=1e-6)
  assert (whole / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_plateau_reductions_are_announced(tmp_path, capsys):
  example = load_example()
  example.main(
    [
      '--epochs',
      '3',
      '--out',
      str(tmp_path),
      '--quiet',
      'scheduler=ReduceLROnPlateau',
      'scheduler_kwargs={patience:0,factor:0.5,threshold:10.0,threshold_mode:abs}',
      'scheduler_configs.monitor=val_loss',
    ]
  )
  out = capsys.readouterr().out
  # an absolute threshold of 10 means no epoch counts as an improvement after the first: cuts at epochs 1 and 2
  assert "Epoch 1: reducing learning rate of group 'regular' from 1.0000e-03 to 5.0000e-04." in out
  assert "Epoch 2: reducing learning rate of group 'recurrent' from 5.0000e-05 to 2.5000e-05." in out


def test_bad_config_is_one_line(tmp_path, capsys):
  example = load_example()
  with pytest.raises(SystemExit) as e:
    example.main(['--out', str(tmp_path), 'optimizer=Adamm'])
  assert e.value.code == 1
  assert "Did you mean 'Adam'?" in capsys.readouterr().out


def test_resume_under_another_config_says_what_differs(tmp_path, capsys):
  example = load_example()
  example.main(['--epochs', '1', '--out', str(tmp_path), '--quiet', *SHORT])
  with pytest.raises(SystemExit) as e:
    example.main(['--epochs', '2', '--out', str(tmp_path), '--quiet', '--resume', *SHORT, 'optimizer=SGD'])
  assert e.value.code == 1
  out = capsys.readouterr().out
  assert 'cannot resume' in out and "optimizer 'AdamW' -> 'SGD'" in out and 'momentum' in out


def test_accumulation_keeps_the_schedule_per_epoch(tmp_path, capsys):
  # 22 batches per epoch in groups of 3: 8 optimizer steps per epoch, the last after one batch;
  # the per-epoch schedule moves once per epoch, as without accumulation
  example = load_example()
  plain, accumulated = tmp_path / 'plain', tmp_path / 'accumulated'
  example.main(['--epochs', '2', '--out', str(plain), '--quiet', *SHORT])
  example.main(['--epochs', '2', '--out', str(accumulated), '--quiet', *SHORT, 'accumulate_grad_batches=3'])
  assert '22 batches (8 optimizer steps) per epoch' in capsys.readouterr().out
  ha, hb = (json.loads((d / 'history.json').read_text()) for d in (plain, accumulated))
  assert ha['lr'] == hb['lr']
  # per epoch: warmup_start_lr, then (warmup_epochs - 1 = 1) the base LR
  np.testing.assert_allclose(hb['lr']['regular'], [1e-4, 1e-3], rtol=1e-6)
  assert ha['train_loss'] != hb['train_loss']  # the groups of 3 do train differently


def test_swa_from_a_config_logs_both_models_and_ends_as_the_average(tmp_path, capsys):
  example = load_example()
  config = str(ROOT / 'examples' / 'configs' / 'digits_swa.yaml')
  final = example.main(
    [
      '--config',
      config,
      '--epochs',
      '3',
      '--out',
      str(tmp_path),
      '--quiet',
      'swa.swa_epoch_start=2',
      'scheduler_kwargs.T_max=3',
    ]
  )
  history = json.loads((tmp_path / 'history.json').read_text())
  averaged = history['val_accuracy_averaged']
  assert math.isnan(averaged[0]) and not any(math.isnan(a) for a in averaged[1:])  # averaging from epoch 1 (0-based)
  assert history['val_accuracy_raw'] == history['val_accuracy']  # SWA validates with the current weights
  assert f'final val_accuracy={final:.4f}' in capsys.readouterr().out and final > 0.5
