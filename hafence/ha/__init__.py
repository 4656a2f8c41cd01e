"""hafence.ha."""
