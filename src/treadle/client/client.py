"""`treadle.Client`: the platform server's REST API in Python."""

from __future__ import annotations

from treadle.client.artifacts import ArtifactsApi
from treadle.client.automation import AutomationApi
from treadle.client.deployments import DeploymentsApi
from treadle.client.external import ExternalApi
from treadle.client.models import ModelsApi
from treadle.client.monitoring import MonitoringApi
from treadle.client.projects import ProjectsApi
from treadle.client.runs import RunsApi


class Client(
    ProjectsApi,
    RunsApi,
    ArtifactsApi,
    ModelsApi,
    DeploymentsApi,
    AutomationApi,
    MonitoringApi,
    ExternalApi,
):
    """The API of a treadle server (`treadle up`), one method per route, answering with
    the store's records and raising treadle's errors (NotFoundError, ConflictError,
    InvalidInputError, AccessError…) with the server's message and hint.

        client = treadle.Client("http://127.0.0.1:8080", token, project="default")
        run = client.list_runs(limit=1)[0]
        client.latest_metrics(run.id)
        client.promote("churn", source="challenger", target="champion",
                       require=["auc >= champion.auc"])

    `url`, `token` and `project` default to TREADLE_URL, TREADLE_TOKEN and
    TREADLE_PROJECT. Calls about one project address `project`; `for_project(name)`
    gives a client for another over the same connections.
    """
