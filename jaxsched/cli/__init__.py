"""The ``jaxsched`` command: see a config before training.

``jaxsched list [optimizers|schedulers|patterns]``
    every string ID with its keywords, defaults and what each accepts.
``jaxsched check CONFIG [--batches-per-epoch B] [--epochs E] [--metrics FILE] [--strict] [KEY=VALUE ...]``
    validates the config (exit 1 on errors, and on warnings with --strict),
    prints it resolved, lints it, and tabulates each group's LR (and cycled
    momentum) at telling points.
``jaxsched plot CONFIG --batches-per-epoch B --epochs E -o FILE.png [--metrics FILE] [KEY=VALUE ...]``
    a PNG of each group's LR over optimizer steps.

CONFIG is a YAML file or the name of a shipped pattern (``jaxsched list
patterns``). KEY=VALUE overrides use snakemake's ``--config`` syntax, as
:func:`jaxsched.load_config`. Every failure is one ``error: ...`` line on
stderr and exit status 1 (2 for a usage error, as argparse gives).

The package, a file per job: :mod:`.commands` (arguments, the three commands,
reading the config; the LRs of a run come from :mod:`jaxsched.simulate`, the
warnings from :mod:`jaxsched.lints`), :mod:`.metrics` (the metrics file),
:mod:`.tables` (what check tabulates and checks), :mod:`.draw` (the plot) and
:mod:`.output` (tables, notes, warnings, errors).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import jax

from jaxsched._errors import ConfigError
from jaxsched.cli.commands import COMMANDS, parsers
from jaxsched.cli.output import CliError, error


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  parser, subs = parsers()
  if not argv or argv[0] not in subs:
    parser.parse_args(argv or ['--help'])  # --help, or a usage error for an unknown command
    return 2
  # Per command, so that options may follow the KEY=VALUE overrides.
  args = subs[argv[0]].parse_intermixed_args(argv[1:])
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # read when XLA's backend starts, at the first computation
  jax.config.update('jax_enable_x64', True)  # torch's float64 numbers in the tables
  try:
    return COMMANDS[argv[0]](args)
  except (ConfigError, CliError) as e:
    error(str(e))
    return 1
  except KeyboardInterrupt:
    return 130
  except BrokenPipeError:  # `jaxsched list | head`
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
  except OSError as e:
    error(f'{e.strerror or e}' + (f': {e.filename!r}' if e.filename else ''))
    return 1
  except Exception as e:  # noqa: BLE001 - never a traceback for a user
    if os.environ.get('JAXSCHED_DEBUG'):
      raise
    error(f'{type(e).__name__}: {e} (set JAXSCHED_DEBUG=1 for the traceback)')
    return 1


def entry() -> None:
  """The console script."""
  sys.exit(main())


__all__ = ['CliError', 'entry', 'main']
