"""Placeholder: filled by the schedules port."""
