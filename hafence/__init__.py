"""hafence: fencing and high-availability manager."""

__version__ = "0.1.0"
