"""The version and the distribution's name, in a module of their own: every layer may read them
without importing the package's top (which imports every layer)."""

__version__ = "0.1.0"

# What pip knows it as (`dispatcher` on PyPI is an unrelated library); the import package and the
# command stay `dispatcher`. pyproject.toml's [project] name says the same, and a test builds the
# wheel and checks the two agree.
DISTRIBUTION = "tim-dispatcher"
