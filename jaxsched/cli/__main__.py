"""``python -m jaxsched.cli``: the ``jaxsched`` command."""

from jaxsched.cli import entry

entry()
