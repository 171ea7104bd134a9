"""MkDocs hook: the package's docstrings cite names Sphinx-style (:func:`report`); mkdocstrings
renders those as text, so each becomes a link to the name's API entry where the reference documents it
(an optional cross-reference: plain code where it does not)."""

import re

ROLE = re.compile(r':(?:func|class|data|mod|meth|attr|obj|exc):<code>~?([\w.]+)</code>')


def _link(match: re.Match) -> str:
  name = match[1]
  identifier = name if name.startswith('jaxsched') else f'jaxsched.{name}'
  return f'<autoref identifier="{identifier}" optional><code>{name}</code></autoref>'


def on_page_content(html, **kwargs):
  return ROLE.sub(_link, html)
