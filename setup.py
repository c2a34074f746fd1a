# pyproject.toml is the source of truth; this shim is for tools that still look for setup.py.
from setuptools import setup

setup()
