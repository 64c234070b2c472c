"""The version, importable without the package's other imports."""

__version__ = "0.1.0"
