"""Package version, kept in one place so pyproject.toml and the engine report the same string."""

__version__ = "0.2.0"
