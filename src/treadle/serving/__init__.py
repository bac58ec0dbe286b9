"""Model serving: the model server, traffic across revisions, deployments.

From Python: `deploy`, `set_traffic`, `rollback`, `follow` and `start_server`.
"""

from treadle.serving.api import (
    ServerProcess,
    deploy,
    follow,
    rollback,
    set_traffic,
    start_server,
)

__all__ = ["ServerProcess", "deploy", "follow", "rollback", "set_traffic", "start_server"]
