"""The platform server from Python: `Client` (one method per API route) and
`remote_store` (the store protocols read through the API)."""

from treadle.client.client import Client
from treadle.client.schemas import AliasMove, GateCheck, IssuedToken, Me
from treadle.client.store import RemoteStore, remote_store

__all__ = ["AliasMove", "Client", "GateCheck", "IssuedToken", "Me", "RemoteStore", "remote_store"]
