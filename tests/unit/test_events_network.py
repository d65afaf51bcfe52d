"""``docker events --filter network=...`` / ``type=network``: moby's events filter on the
events a network's life publishes (create, connect, disconnect, destroy, prune)."""

from __future__ import annotations

import pytest

from berth import errdefs
from berth.api.events import _matcher
from berth.events import Events, Message
from berth.types.filters import Filters

NET_ID = "3f1e0c5d9a7b" + "a" * 52
OTHER_ID = "9c0ffee12345" + "b" * 52
CONTAINER_ID = "c" * 64


def _life(events: Events) -> None:
    """What the controller and the daemon publish for one network and its neighbours."""
    events.publish("network", "create", NET_ID, {"name": "backend", "type": "bridge"})
    events.publish("container", "create", CONTAINER_ID, {"name": "web", "image": "busybox"})
    events.publish(
        "network",
        "connect",
        NET_ID,
        {"container": CONTAINER_ID, "name": "backend", "type": "bridge"},
    )
    events.publish("network", "create", OTHER_ID, {"name": "frontend", "type": "bridge"})
    events.publish(
        "network",
        "disconnect",
        NET_ID,
        {"container": CONTAINER_ID, "name": "backend", "type": "bridge"},
    )
    events.publish("network", "destroy", NET_ID, {"name": "backend", "type": "bridge"})
    events.publish("network", "prune", "", {"reclaimed": "0"})
    events.publish("volume", "create", "data", {"driver": "local"})


def _seen(args: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    events = Events()
    _life(events)
    past, sub = events.subscribe(_matcher(Filters(args)), lambda: None, 0)
    events.unsubscribe(sub)
    return [(m.type, m.action, m.actor_id) for m in past]


def test_network_filter_by_name_matches_the_networks_events_only() -> None:
    assert _seen({"network": ["backend"]}) == [
        ("network", "create", NET_ID),
        ("network", "connect", NET_ID),
        ("network", "disconnect", NET_ID),
        ("network", "destroy", NET_ID),
    ]


@pytest.mark.parametrize("ref", [NET_ID, NET_ID[:12], "3f1e"])
def test_network_filter_by_id_or_id_prefix(ref: str) -> None:
    assert [a for _, a, _ in _seen({"network": [ref]})] == [
        "create",
        "connect",
        "disconnect",
        "destroy",
    ]


def test_network_filter_by_name_prefix_and_several_values() -> None:
    # FuzzyMatch: a value matches when the ID or the name starts with it; values OR'ed
    assert [i for _, _, i in _seen({"network": ["front"]})] == [OTHER_ID]
    seen = _seen({"network": ["frontend", "backend"]})
    assert [(a, i) for _, a, i in seen] == [
        ("create", NET_ID),
        ("connect", NET_ID),
        ("create", OTHER_ID),
        ("disconnect", NET_ID),
        ("destroy", NET_ID),
    ]


def test_network_filter_is_not_matched_by_the_attached_container() -> None:
    # the container is an attribute of connect/disconnect, not the actor: no network event
    # matches it.  As in moby the key applies to every type, so the container's own event
    # (actor ID, name "web") does.
    assert _seen({"network": [CONTAINER_ID]}) == [("container", "create", CONTAINER_ID)]
    assert _seen({"network": ["web"]}) == [("container", "create", CONTAINER_ID)]
    assert _seen({"type": ["network"], "network": [CONTAINER_ID[:12]]}) == []


def test_type_network_keeps_every_network_event_including_prune() -> None:
    assert [a for _, a, _ in _seen({"type": ["network"]})] == [
        "create",
        "connect",
        "create",
        "disconnect",
        "destroy",
        "prune",
    ]


def test_type_and_event_and_network_combine_with_and() -> None:
    assert _seen(
        {"type": ["network"], "event": ["connect", "disconnect"], "network": ["back"]}
    ) == [
        ("network", "connect", NET_ID),
        ("network", "disconnect", NET_ID),
    ]
    assert _seen({"type": ["container"], "network": ["backend"]}) == []


def test_label_filter_on_network_events_without_labels() -> None:
    assert _seen({"type": ["network"], "label": ["com.example=1"]}) == []


def test_volume_filter_uses_the_same_rule() -> None:
    assert _seen({"volume": ["dat"]}) == [("volume", "create", "data")]


def test_a_network_filter_on_a_live_subscription() -> None:
    events = Events()
    woken: list[int] = []
    _, sub = events.subscribe(
        _matcher(Filters({"network": ["backend"]})), lambda: woken.append(1), None
    )
    try:
        _life(events)
        got = [(m.action, m.attributes.get("container", "")) for m in sub.queue]
    finally:
        events.unsubscribe(sub)
    assert got == [
        ("create", ""),
        ("connect", CONTAINER_ID),
        ("disconnect", CONTAINER_ID),
        ("destroy", ""),
    ]
    assert woken


def test_message_wire_shape_of_a_connect() -> None:
    m = Message(
        "network",
        "connect",
        NET_ID,
        {"container": CONTAINER_ID, "name": "backend", "type": "bridge"},
        5,
    )
    out = m.to_json()
    assert out["Type"] == "network" and out["Action"] == "connect"
    assert out["Actor"] == {
        "ID": NET_ID,
        "Attributes": {"container": CONTAINER_ID, "name": "backend", "type": "bridge"},
    }


def test_unknown_filter_key_is_refused() -> None:
    with pytest.raises(errdefs.InvalidParameter):
        _matcher(Filters({"netwrk": ["x"]}))
