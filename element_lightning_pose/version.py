"""Package version, kept in one place so setup.py and the engine report the same string."""

__version__ = "0.1.0"
