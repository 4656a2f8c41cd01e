"""hafence.store."""
