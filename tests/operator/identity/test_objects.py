"""SeptumIdentity encoding: hash, object shape, reading back, number picking."""

from __future__ import annotations

import hashlib

import pytest

from septum.operator.engine.labels import LabelFilter, pod_label_set
from septum.operator.identity.objects import (
    HASH_LABEL,
    NAMESPACE_LABEL,
    InvalidIdentityObject,
    NumberCursor,
    identity_object,
    labels_hash,
    read_identity,
)


def _labels():  # type: ignore[no-untyped-def]
    return pod_label_set("shop", {"app": "web"}, {"team": "a"}, "default", "default", LabelFilter())


def test_hash_is_sha256_of_sorted_source_key_value_lines() -> None:
    text = "k8s:a=1\nk8s:b="
    assert (
        labels_hash("k8s", [("b", ""), ("a", "1")])
        == hashlib.sha256(text.encode()).hexdigest()[:40]
    )


def test_object_round_trips_and_carries_hash_and_namespace_labels() -> None:
    labels = _labels()
    obj = identity_object(300, labels.source, labels.items)
    assert obj["metadata"]["name"] == "300"
    assert obj["securityLabels"]["k8s:app"] == "web"
    assert obj["securityLabels"]["k8s:io.kubernetes.pod.namespace"] == "shop"
    assert obj["metadata"]["labels"] == {
        HASH_LABEL: labels_hash(labels.source, labels.items),
        NAMESPACE_LABEL: "shop",
    }
    stored = read_identity(obj)
    assert (stored.number, stored.source, stored.labels) == (300, "k8s", labels.items)
    assert stored.hash == obj["metadata"]["labels"][HASH_LABEL]


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"metadata": {"name": "x"}, "securityLabels": {"k8s:a": "1"}}, "metadata.name"),
        ({"metadata": {"name": "300"}, "securityLabels": {}}, "non-empty"),
        ({"metadata": {"name": "300"}, "securityLabels": {"a": "1"}}, "source:key"),
        (
            {"metadata": {"name": "300"}, "securityLabels": {"k8s:a": "1", "cidr:b": "2"}},
            "several sources",
        ),
    ],
)
def test_unreadable_objects_are_rejected_naming_the_field(obj: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidIdentityObject, match=message):
        read_identity(obj)


def test_cursor_resumes_after_the_highest_number_and_wraps_to_free_ones() -> None:
    cursor = NumberCursor(256, 260)
    for number in (256, 258):
        cursor.seen(number)
    assert cursor.pick({256, 258}) == 259
    assert cursor.pick({256, 258, 259}) == 260
    assert cursor.pick({256, 258, 259, 260}) == 257  # wrapped: the lowest free one
    assert cursor.pick({256, 257, 258, 259, 260}) is None
