"""hafence.sim."""
