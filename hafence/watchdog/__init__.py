"""hafence.watchdog."""
