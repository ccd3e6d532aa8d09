"""Integrations, one folder each. Inbound sources register here, one line per source."""

from __future__ import annotations

from connectors.base.inbound import InboundSource
from connectors.calcom.inbound import SOURCE as CALCOM
from connectors.calendly.inbound import SOURCE as CALENDLY
from connectors.hubspot.inbound import SOURCE as HUBSPOT
from connectors.jotform.inbound import SOURCE as JOTFORM
from connectors.mailgun.inbound import SOURCE as MAILGUN
from connectors.postmark.inbound import SOURCE as POSTMARK
from connectors.salesforce.inbound import SOURCE as SALESFORCE
from connectors.sendgrid.inbound import SOURCE as SENDGRID
from connectors.standard.inbound import SOURCE as STANDARD
from connectors.typeform.inbound import SOURCE as TYPEFORM
from connectors.webflow.inbound import SOURCE as WEBFLOW

SOURCES: dict[str, InboundSource] = {
    source.name: source
    for source in (
        STANDARD,
        TYPEFORM,
        WEBFLOW,
        JOTFORM,
        CALENDLY,
        CALCOM,
        MAILGUN,
        SENDGRID,
        POSTMARK,
        HUBSPOT,
        SALESFORCE,
    )
}
