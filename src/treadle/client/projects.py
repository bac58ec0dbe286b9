"""Client calls for projects, members, users, tokens and the audit log."""

from __future__ import annotations

import httpx

from treadle.client.schemas import IssuedToken, Me
from treadle.client.transport import Transport, segment
from treadle.store.records import AuditRecord, MemberRecord, ProjectRecord, TokenRecord, UserRecord


class ProjectsApi(Transport):
    def healthy(self) -> bool:
        """Whether the control plane answers (no token needed)."""
        try:
            return self._http.get(self.url + "/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def me(self) -> Me:
        """The token's user and the projects it reaches, with the role in each."""
        return self._get(Me, "/me")

    def list_projects(self) -> list[ProjectRecord]:
        return self._get(list[ProjectRecord], "/projects")

    def get_project(self, name: str | None = None) -> ProjectRecord:
        """A project (this client's by default)."""
        path = self._in_project() if name is None else f"/projects/{segment(name)}"
        return self._get(ProjectRecord, path)

    def create_project(self, name: str) -> ProjectRecord:
        """Create a project (server admins); its creator becomes an owner."""
        return self._call(ProjectRecord, "POST", "/projects", json={"name": name})

    def list_members(self) -> list[MemberRecord]:
        return self._get(list[MemberRecord], self._in_project("/members"))

    def set_member(self, user: str, role: str) -> MemberRecord:
        """Add a member to this client's project or change their role (owners)."""
        return self._call(
            MemberRecord, "PUT", self._in_project(f"/members/{segment(user)}"), json={"role": role}
        )

    def remove_member(self, user: str) -> None:
        self._send("DELETE", self._in_project(f"/members/{segment(user)}"))

    def list_users(self) -> list[UserRecord]:
        return self._get(list[UserRecord], "/users")

    def create_user(self, name: str, *, is_admin: bool = False) -> UserRecord:
        """Create a user (server admins); give them a token with `issue_token`."""
        body = {"name": name, "is_admin": is_admin}
        return self._call(UserRecord, "POST", "/users", json=body)

    def issue_token(
        self, user: str, name: str, *, expires_in_days: float | None = None
    ) -> IssuedToken:
        """A token for another user (server admins); the secret is shown this once."""
        body = {"name": name, "expires_in_days": expires_in_days}
        return self._call(IssuedToken, "POST", f"/users/{segment(user)}/tokens", json=body)

    def list_tokens(self) -> list[TokenRecord]:
        """Your tokens (never their secrets)."""
        return self._get(list[TokenRecord], "/tokens")

    def create_token(self, name: str, *, expires_in_days: float | None = None) -> IssuedToken:
        """A new token for yourself; the secret is shown this once."""
        body = {"name": name, "expires_in_days": expires_in_days}
        return self._call(IssuedToken, "POST", "/tokens", json=body)

    def revoke_token(self, token_id: str) -> TokenRecord:
        return self._call(TokenRecord, "DELETE", f"/tokens/{segment(token_id)}")

    def audit(self, *, limit: int = 100, offset: int = 0) -> list[AuditRecord]:
        """Changes in this client's project, newest first (owners)."""
        return self._get(list[AuditRecord], self._in_project("/audit"), limit=limit, offset=offset)

    def server_audit(self, *, limit: int = 100, offset: int = 0) -> list[AuditRecord]:
        """Server-wide changes (users, tokens), newest first (server admins)."""
        return self._get(list[AuditRecord], "/audit", limit=limit, offset=offset)
