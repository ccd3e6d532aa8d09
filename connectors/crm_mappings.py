"""The `crm:` section of rules.yaml, checked by each CRM's own mapping parser.

A wrong mapping is refused where rules are checked (`lifecycle check`, the hot reload, a worker's
start), with the file and line, instead of surfacing when a worker first pushes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from connectors.hubspot.mapping import Mapping as HubSpotMapping
from connectors.salesforce.mapping import parse_mapping as parse_salesforce
from engine.config import ConfigError
from engine.errors import Problem
from engine.model import Vocabulary
from engine.rules.schema import RuleSet
from engine.rules.yamlsource import Located

PARSERS: dict[str, Callable[[Mapping[str, Any] | None, Vocabulary], object]] = {
    "hubspot": HubSpotMapping.from_config,
    "salesforce": parse_salesforce,
    "sandbox": lambda config, vocab: None,  # takes whatever state it is given
}
_KEY = re.compile(r"^crm\.\w+\.(\w+)")


def mapping_problems(ruleset: RuleSet) -> list[Problem]:
    """One error per CRM section its parser refuses, at the line of the key at fault."""
    crm, problems = ruleset.crm, []
    for name, section in crm.items():
        line = crm.line_of(name) if isinstance(crm, Located) else ruleset.lines.get("crm", 1)
        parser = PARSERS.get(name)
        if parser is None:
            message = f"crm.{name}: unknown CRM; known: {', '.join(PARSERS)}"
            problems.append(Problem(ruleset.file, line, "error", message))
            continue
        try:
            parser(section, ruleset.vocab)
        except ConfigError as exc:
            key = _KEY.match(exc.detail)
            if key and isinstance(section, Located):
                line = section.line_of(key.group(1))
            problems.append(Problem(ruleset.file, line, "error", exc.detail))
    return problems
