"""YAML with line numbers: a suite's mappings and lists remember where each key and item sits.

Loading refuses what PyYAML would silently accept or choke on: duplicate keys (it keeps the
last), keys that are no string or number, and alias bombs (a few nested aliases of aliases
expanding to billions of nodes); each becomes one :class:`CaseFormatError` line, as does a
YAML syntax error.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .errors import CaseFormatError


class YamlMap(dict):
    """A YAML mapping that remembers the 1-based line of itself, of each key and of each value.

    ``key_fields``: for a case merged with ``defaults:``, the field path of each key that
    came from the defaults block (``defaults.tolerances.atol``), so errors name that block."""

    line: int = 0
    key_lines: dict
    value_lines: dict
    value_styles: dict
    key_fields: dict = {}


class YamlSeq(list):
    """A YAML sequence that remembers its 1-based line and each item's line (and, merged
    from ``defaults:``, each item's field path)."""

    line: int = 0
    item_lines: list
    item_fields: list = []


#: Nodes a suite may hold once its aliases are expanded. Suites have hundreds; a few
#: nested aliases of aliases ("billion laughs") reach billions in a few hundred bytes.
MAX_YAML_NODES = 200_000


class LineLoader(yaml.SafeLoader):
    """SafeLoader building YamlMap/YamlSeq, refusing duplicate keys (PyYAML keeps the last
    silently), unhashable keys and alias bombs."""

    def construct_document(self, node: yaml.Node):  # type: ignore[override]
        _check_alias_expansion(node)
        return super().construct_document(node)

    def construct_yaml_map(self, node: yaml.MappingNode):  # type: ignore[override]
        mapping = YamlMap()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines, mapping.value_lines, mapping.value_styles = {}, {}, {}
        yield mapping
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise _BadKey(key, key_node.start_mark.line + 1)
            if key in mapping:
                raise _DuplicateKey(key, key_node.start_mark.line + 1, mapping.key_lines[key])
            mapping[key] = self.construct_object(value_node, deep=True)
            mapping.key_lines[key] = key_node.start_mark.line + 1
            mapping.value_lines[key] = value_node.start_mark.line + 1
            mapping.value_styles[key] = getattr(value_node, "style", None)

    def construct_yaml_seq(self, node: yaml.SequenceNode):  # type: ignore[override]
        seq = YamlSeq()
        seq.line = node.start_mark.line + 1
        seq.item_lines = [child.start_mark.line + 1 for child in node.value]
        yield seq
        seq.extend(self.construct_object(child, deep=True) for child in node.value)


LineLoader.add_constructor("tag:yaml.org,2002:map", LineLoader.construct_yaml_map)
# YAML 1.1 (PyYAML) reads 1e-2 as a *string*; tolerances are written that way all the time.
LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
LineLoader.add_constructor("tag:yaml.org,2002:seq", LineLoader.construct_yaml_seq)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        self.key, self.line, self.first_line = key, line, first_line


class _BadKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        self.key, self.line = key, line


class _AliasBomb(Exception):
    def __init__(self, nodes: int, line: int) -> None:
        self.nodes, self.line = nodes, line


def _check_alias_expansion(root: yaml.Node) -> None:
    """Raise _AliasBomb when the document, aliases expanded, has more than MAX_YAML_NODES nodes.

    Sizes are memoized per node, so this costs one visit per distinct node however large
    the expansion; the line named is that of the first node whose expansion alone is too big."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a recursive alias counts once
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                raise _AliasBomb(total, child.start_mark.line + 1)
        sizes[id(node)] = total
        return total

    size(root)


def parse_yaml_with_lines(text: str, display_path: str) -> Any:
    """Parse ``text``; YAML syntax errors and duplicate keys become CaseFormatError."""
    try:
        return yaml.load(text, Loader=LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as dup:
        raise CaseFormatError(display_path, dup.line, str(dup.key), f"duplicate key (first defined on line {dup.first_line})") from None
    except _BadKey as bad:
        raise CaseFormatError(display_path, bad.line, "yaml", "a mapping key must be a string or a number", got=bad.key) from None
    except _AliasBomb as bomb:
        raise CaseFormatError(
            display_path, bomb.line, "yaml",
            f"aliases expand to more than {MAX_YAML_NODES} nodes (an alias of aliases of aliases?); "
            "write the repeated part out or use fewer nested aliases",
        ) from None
    except RecursionError:
        raise CaseFormatError(display_path, 1, "yaml", "nested too deeply (or a recursive alias)") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise CaseFormatError(display_path, line, "yaml", f"malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise CaseFormatError(display_path, 1, "yaml", f"malformed YAML: {exc}") from None


def as_yaml_map(value: dict, line: int) -> YamlMap:
    """A programmatic dict as a YamlMap whose every key and value sits on ``line``."""
    mapping = YamlMap(value)
    mapping.line = line
    mapping.key_lines = {k: line for k in value}
    mapping.value_lines = {k: line for k in value}
    mapping.value_styles = {k: None for k in value}
    return mapping
