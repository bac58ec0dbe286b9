"""Health: the one route that answers without a token."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness of the control plane."""
    return {"status": "ok"}
