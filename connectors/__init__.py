"""Integrations, one folder each. Inbound sources register here, one line per source."""

from __future__ import annotations

from connectors.base.inbound import InboundSource
from connectors.calcom.inbound import SOURCE as CALCOM
from connectors.calendly.inbound import SOURCE as CALENDLY
from connectors.standard.inbound import SOURCE as STANDARD

SOURCES: dict[str, InboundSource] = {
    source.name: source
    for source in (
        STANDARD,
        CALENDLY,
        CALCOM,
    )
}
