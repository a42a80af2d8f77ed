"""metagrasp: meta-RL grasping for low-cost servo arms.

The top-level package stays import-light on purpose: the device-side packages
(``metagrasp.adapt``, ``metagrasp.hardware``) import it on a robot's small computer,
where neither torch nor mujoco is installed.
"""

__version__ = "0.1.0"

from metagrasp.errors import (  # noqa: E402  (re-exported for convenience)
    ConfigError,
    MetagraspError,
    TaskParamError,
    UnknownNameError,
)

__all__ = [
    "ConfigError",
    "MetagraspError",
    "TaskParamError",
    "UnknownNameError",
    "__version__",
]
