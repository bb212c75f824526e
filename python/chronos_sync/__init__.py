"""chronos-sync for Python: significance-triggered sparse sync.

``chronos_sync.Engine`` is the crate's engine for one vector, on a shared
``chronos_sync.Backend`` (CPU) and a collective object; ``chronos_sync.torch``
runs it as a ``DistributedDataParallel`` comm hook over the job's own
process group.
"""

from ._native import (
    Backend,
    ChronosError,
    CollectiveFailedError,
    ConfigError,
    Engine,
    NonFiniteError,
    RankFailedError,
    SyncTimeoutError,
)

__all__ = [
    "Backend",
    "ChronosError",
    "CollectiveFailedError",
    "ConfigError",
    "Engine",
    "NonFiniteError",
    "RankFailedError",
    "SyncTimeoutError",
]
