"""The edge of telemetry-kit cloud: the Litestar app, the composition root and the CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tkcloud-api")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
