"""YAML that remembers where each value came from, so every error can name file:line."""

from __future__ import annotations

from typing import Any

import yaml

from engine.errors import Problem, RulesError


class Located(dict):
    """A YAML mapping: a dict that also knows its own line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class LocatedList(list):
    line: int = 0
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry line numbers and refuse duplicate keys."""

    filename = "<rules>"


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Located:
    loader.flatten_mapping(node)
    result = Located()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            key = str(key) if isinstance(key, int | float | bool) else repr(key)
        if key in result:
            raise RulesError(
                [Problem(loader.filename, line, "error", f"duplicate key {key!r} in this mapping")]
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LocatedList:
    result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


_UNCLOSED = ("while parsing a flow", "while scanning a quoted scalar")


def load_yaml(text: str, filename: str) -> Any:
    """Parse YAML; a syntax error becomes a RulesError naming file and line, never a traceback."""
    loader = _Loader(text)
    loader.filename = filename
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        opened = exc.context_mark
        if opened and exc.context and exc.context.startswith(_UNCLOSED) and opened.line + 1 < line:
            # An unclosed [ { or quote: PyYAML notices lines later; send the user to the opening.
            what = f"{what} (opened here, still open at line {line})"
            line = opened.line + 1
        raise RulesError([Problem(filename, line, "error", f"YAML syntax: {what}")]) from None
    except yaml.YAMLError as exc:
        raise RulesError([Problem(filename, 1, "error", f"YAML: {exc}")]) from None
    finally:
        loader.dispose()
