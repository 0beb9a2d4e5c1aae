from setuptools import setup

# The package metadata and its dependencies are in pyproject.toml ([project]); this file lets older tooling build it.
setup()
