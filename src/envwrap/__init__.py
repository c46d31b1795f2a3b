"""envwrap: run a program with its secrets in its environment."""

__all__ = ["__version__"]
__version__ = "0.1.0"
