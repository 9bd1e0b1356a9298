"""zoo: a declarative model zoo for normalizing flows on PyTorch."""

from zoo.errors import ZooError
from zoo.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["ZooError", "hookimpl", "__version__"]
