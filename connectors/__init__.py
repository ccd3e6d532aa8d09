"""Integrations, one folder each. Inbound sources register here, one line per source."""

from __future__ import annotations

from connectors.base.inbound import InboundSource
from connectors.standard.inbound import SOURCE as STANDARD

SOURCES: dict[str, InboundSource] = {source.name: source for source in (STANDARD,)}
