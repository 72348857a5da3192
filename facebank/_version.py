"""The installed distribution's version, read once from its metadata (pyproject.toml is the one place it is written).

A leaf module: any module may import it without importing the package's public surface.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("facebank")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"
