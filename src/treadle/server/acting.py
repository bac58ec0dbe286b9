"""Changes made through the layers below on behalf of an API caller.

The registry and deployment functions read who acts, and in which project, from the
store's settings (the CLI's way). A route hands them a view of the server's store that
carries the caller's name and the project of the path, so alias events and revisions
name the person who asked, not the login the server runs under.
"""

from __future__ import annotations

import dataclasses

from treadle.server.auth import Access
from treadle.store import Store


def acting_store(store: Store, access: Access) -> Store:
    """`store` (the same database and objects) acting as `access`'s user in its project."""
    return dataclasses.replace(
        store, settings=store.settings.replace(project=access.project.name, user=access.user)
    )
