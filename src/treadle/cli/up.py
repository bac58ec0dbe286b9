"""`treadle up`: the control plane (REST API) on this machine."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from treadle.cli import common


def up(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """Start the platform server: the REST API over this home, behind tokens.

    The API serves runs, artifacts, metrics, models and deployments, and the deployment
    controller keeps the servers of deployments with a port running. The first start
    creates an admin user and prints its token once. Ctrl-C stops it.
    """
    started = time.monotonic()
    common.require_local("up")
    from treadle.server.up import UpOptions, serve

    serve(common.settings(), UpOptions(host=host, port=port), common.err_console().print, started)
