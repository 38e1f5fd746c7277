"""The token store moved to :mod:`workbench.indexes.store`; this name keeps old imports working."""

from workbench.indexes.store import *  # noqa: F403
from workbench.indexes.store import __all__  # noqa: F401
