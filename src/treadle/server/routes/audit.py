"""The audit log: who changed what, and when."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from treadle.server.auth import Access, Principal, need, require_admin, store_of
from treadle.store.records import AuditRecord

router = APIRouter(tags=["audit"])


@router.get("/projects/{project}/audit", response_model=list[AuditRecord])
def project_audit(
    request: Request,
    access: Access = Depends(need("owner")),
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> list[AuditRecord]:
    """Changes in the project, newest first (owners)."""
    return store_of(request).audit.list(access.project.id, limit=limit, offset=offset)


@router.get("/audit", response_model=list[AuditRecord])
def server_audit(
    request: Request,
    _: Principal = Depends(require_admin),
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> list[AuditRecord]:
    """Server-wide changes (users, tokens), newest first (server admins)."""
    return store_of(request).audit.list(None, limit=limit, offset=offset)
