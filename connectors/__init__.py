"""Integrations, one folder each. Inbound sources register here, one line per source."""

from __future__ import annotations

from connectors.base.inbound import InboundSource
from connectors.calcom.inbound import SOURCE as CALCOM
from connectors.calendly.inbound import SOURCE as CALENDLY
from connectors.mailgun.inbound import SOURCE as MAILGUN
from connectors.postmark.inbound import SOURCE as POSTMARK
from connectors.sendgrid.inbound import SOURCE as SENDGRID
from connectors.standard.inbound import SOURCE as STANDARD

SOURCES: dict[str, InboundSource] = {
    source.name: source
    for source in (
        STANDARD,
        CALENDLY,
        CALCOM,
        MAILGUN,
        SENDGRID,
        POSTMARK,
    )
}
