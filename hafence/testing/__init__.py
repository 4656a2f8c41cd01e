"""hafence.testing."""
