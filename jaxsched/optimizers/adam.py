"""Placeholder: filled by its family port."""

SPECS = ()
