"""The bare reference server of the serving benchmark: Starlette under uvicorn, nothing else.

POST /predict takes {"columns": [...], "data": [[...], ...]}, builds a float64 array,
calls model.predict and answers {"predictions": [...]}. No validation, metrics or
logging: it is the floor that the issue measures treadle against, so it must stay as
plain as a first hand-written model server would be.

    python benchmarks/bare_app.py MODEL.pkl --port 8002
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def make_app(model: Any) -> Starlette:
    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        X = np.array(body["data"], dtype=np.float64)
        return JSONResponse({"predictions": model.predict(X).tolist()})

    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    return Starlette(
        routes=[Route("/predict", predict, methods=["POST"]), Route("/ping", ping)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a pickled scikit-learn model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    # The pickle is one the benchmark wrote a moment ago in a private temporary folder.
    model = pickle.loads(args.model.read_bytes())
    # Access logging off, as in `treadle serve`: a log line per request would measure
    # the terminal, not the server.
    uvicorn.run(
        make_app(model), host=args.host, port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
