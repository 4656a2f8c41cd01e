"""Command-line interfaces: ``hafence`` and ``ha-manager``."""
