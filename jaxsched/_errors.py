"""The one exception jaxsched raises for bad input, and its "did you mean" helper."""

from __future__ import annotations

import difflib
from typing import Iterable


class ConfigError(ValueError):
  """Bad configuration: an unknown name or key, a wrong type, an out-of-range value.

  Raised at construction time (never from inside a jit trace). The message names
  the offending key and value, what is allowed, and the nearest valid name.
  """


class ConfigWarning(UserWarning):
  """A config was changed on the way in (keywords dropped after an override changed the
  optimizer or scheduler); the message says what and why."""


def nearest(word: str, choices: Iterable[str]) -> str | None:
  """The valid name closest to ``word`` (case-insensitive), or None."""
  choices = list(choices)
  lowered = {c.lower(): c for c in choices}
  if str(word).lower() in lowered:
    return lowered[str(word).lower()]
  match = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=0.5)
  return lowered[match[0]] if match else None


def unknown(what: str, word: object, choices: Iterable[str]) -> ConfigError:
  """A ConfigError for an unknown name: what was given, what is allowed, the nearest."""
  choices = sorted(choices, key=str.lower)
  guess = nearest(str(word), choices)
  hint = f' Did you mean {guess!r}?' if guess is not None else ''
  return ConfigError(f'unknown {what} {word!r}.{hint} Allowed: {", ".join(choices)}.')
