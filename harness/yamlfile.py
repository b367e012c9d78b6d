"""Load YAML safely, keeping the line of every key so errors can name file:line: field."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError

Loc = tuple[str | int, ...]

_FIELD_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass
class YamlDoc:
    """A parsed YAML document with the 1-based line of each key path."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """The line of `loc`, or of its nearest ancestor that has one."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def error(self, message: str, loc: Loc = ()) -> ConfigError:
        """A ConfigError naming this file, the line of `loc` and the field path."""
        return ConfigError(
            message, path=self.path, line=self.line_of(loc), field=format_loc(loc) or None
        )


def format_loc(loc: Loc) -> str:
    """('scorers', 1, 'type') -> 'scorers[1].type'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_loc(field_path: str) -> Loc:
    """'scorers[1].type' -> ('scorers', 1, 'type'); the inverse of format_loc."""
    parts: list[str | int] = []
    for name, index in _FIELD_PART.findall(field_path):
        parts.append(int(index) if index else name)
    return tuple(parts)


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"duplicate key {key!r} (first at line {seen[key]})",
                    path=path,
                    line=line,
                    field=format_loc((*loc, key)),
                )
            seen[key] = line
            lines[(*loc, key)] = line
            _walk(value_node, (*loc, key), lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = item.start_mark.line + 1
            _walk(item, (*loc, index), lines, path)


def load_yaml(path: Path, *, display: str | None = None) -> YamlDoc:
    """Parse `path` with the safe loader; syntax errors and duplicate keys are ConfigErrors."""
    shown = Path(display) if display else path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", path=shown) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file: {exc}", path=shown) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Loc, int] = {}
        if node is not None:
            _walk(node, (), lines, shown)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"invalid YAML: {problem}", path=shown, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path=shown) from None
    finally:
        loader.dispose()
    return YamlDoc(path=shown, data=data, lines=lines)
