"""``docker rename``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from berth import errdefs
from berth.daemon.names import validate_name

if TYPE_CHECKING:
    from berth.daemon.daemon import Daemon


def rename_container(d: Daemon, old: str, new: str) -> None:
    if not old or not new:
        raise errdefs.InvalidParameter("Neither old nor new names may be empty")
    container = d.get_container(old)
    with container.lock:
        if not new.startswith("/"):
            new = "/" + new
        if container.name == new:
            raise errdefs.InvalidParameter(
                "Renaming a container with the same name as its current name"
            )
        try:
            canonical = validate_name(new)
            d.view.reserve_name(canonical, container.id)
        except errdefs.InvalidParameter as e:
            raise errdefs.InvalidParameter(f"Error when allocating new name: {e}") from None
        except errdefs.Conflict as e:
            raise errdefs.Conflict(f"Error when allocating new name: {e}") from None
        previous = container.record.name
        container.record.name = canonical
        try:
            d.checkpoint(container, host_config=False)
        except BaseException:
            container.record.name = previous
            d.view.release_name(canonical)
            raise
        d.view.release_name(previous)
