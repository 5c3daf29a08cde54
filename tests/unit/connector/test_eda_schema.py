"""The EDA source's schema is generated from the one list of event types."""

from __future__ import annotations

import json

from ansible_collections.takelan.multiall.plugins.module_utils.tns import EVENT_TYPES

from connector import eda_schema


def test_checked_in_schema_is_the_generated_one():
    # Fails when EVENT_TYPES changed without `python -m connector.eda_schema --write`.
    assert eda_schema.SCHEMA_PATH.read_text() == eda_schema.render()


def test_schema_offers_exactly_the_published_event_types():
    checked_in = json.loads(eda_schema.SCHEMA_PATH.read_text())
    assert checked_in["properties"]["types"]["items"]["enum"] == list(EVENT_TYPES)
    assert "dns_changed" in EVENT_TYPES
