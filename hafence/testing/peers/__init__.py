"""hafence.testing.peers."""
