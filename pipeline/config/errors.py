"""Config problems as `file:line: key: message`, and pydantic's errors turned into them.

Owns ConfigIssue and ConfigError (what every config check raises), LoadedConfig (a validated
config with the line of each key, so a later check can point at the right line), the dotted key
format (`cameras[0].source.url`), "did you mean" hints, and the translation of pydantic's
ValidationError into one readable issue per key, in the user's words rather than pydantic's.

Values quoted in messages go through `mask_url` and `mask_secrets`: no camera password or secret
file content may reach a message. This module reads no files and parses no YAML (loader.py does).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError

from pipeline.config.fields import PATTERN_MEANING
from pipeline.config.schema import VigilConfig
from pipeline.redact import mask_url


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem: the file (or `error` for command-line options), its line (0: none), the dotted
    key and the message; str() is `file:line: key: message`."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file  # line 0: not from a file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """One or more problems in a config file; str() is one `file:line: key: message` per line
    (the key is `yaml` for syntax errors and `config` for the file as a whole)."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.file, i.line))
        super().__init__("\n".join(str(i) for i in self.issues))


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config with the line of each key in its file, so later checks (cross_check,
    check_files, the graph) report issues at the right line."""

    config: VigilConfig
    file: str
    lines: dict[tuple[Any, ...], int]
    # For configs built from command-line options: the option that set a key, named in errors.
    key_names: dict[tuple[Any, ...], str] = field(default_factory=dict)
    # Contents read from `${file:...}` secrets: masked in every issue this config reports.
    secrets: tuple[str, ...] = field(default=(), repr=False)
    # The config file read (absolute), which no output may replace; None for configs built in code.
    config_file: Path | None = None

    def line_of(self, path: tuple[Any, ...]) -> int:
        """The line of `path` (or of its nearest parent) in the file; 0 for configs built in code."""
        return _line_of(self.lines, path)

    def issue(self, path: tuple[Any, ...], message: str) -> ConfigIssue:
        """An issue at `path`, with its line, its key (or the option that set it) and secrets masked."""
        return ConfigIssue(self.file, self.line_of(path), self.key_names.get(path, format_path(path)),
                           mask_secrets(message, self.secrets))


def format_path(path: tuple[Any, ...]) -> str:
    """A key path as users write it: ("cameras", 0, "source", "url") -> `cameras[0].source.url`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int:
    if not lines:
        return 0  # a config built in code has no lines
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


def did_you_mean(word: str, choices: list[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `choices` to `word`, or "" when none is close."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """Replaces each secret (as written, and as repr() escapes it) by `***`, longest first so a
    secret that contains another is masked whole. Blank secrets are left alone."""
    for secret in sorted({s for s in secrets if s.strip()}, key=len, reverse=True):
        text = text.replace(secret, "***")
        escaped = repr(secret)[1:-1]
        if escaped != secret:
            text = text.replace(escaped, "***")
    return text


# --------------------------------------------------------------------------------------------------
# pydantic errors → file:line: key: message


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """pydantic's loc without the parts that name a union member: the `type` tag of a tagged
    union (the 'file' in cameras.0.source.file.path) or the member type of a plain union (the
    'int' in classes.0.int). A part is taken as a member name only where the schema has a union."""
    path: list[Any] = []
    node = data
    skipped_at: tuple[Any, ...] | None = None
    for part in loc:
        here = tuple(path)
        if skipped_at != here and isinstance(part, str) and _is_union(_annotation_at(data, here)):
            is_tag = isinstance(node, dict) and node.get("type") == part
            if is_tag or not isinstance(node, dict):
                skipped_at = here  # one member name per union level
                continue
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
        path.append(part)
    return tuple(path)


def _is_optional(ann: Any) -> bool:
    return typing.get_origin(ann) in (Union, types.UnionType) and type(None) in typing.get_args(ann)


def _is_union(ann: Any) -> bool:
    while typing.get_origin(ann) is Annotated:
        ann = typing.get_args(ann)[0]
    if typing.get_origin(ann) not in (Union, types.UnionType):
        return False
    return len([a for a in typing.get_args(ann) if a is not type(None)]) > 1


def _annotation_at(data: Any, path: tuple[Any, ...]) -> Any:
    """The type annotation that validates the value at `path` (union members picked by `type`)."""
    ann: Any = VigilConfig
    node = data
    for part in path:
        ann = _unwrap(ann, node)
        if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(part, str) and part in ann.model_fields:
            ann = ann.model_fields[part].annotation
        elif typing.get_origin(ann) is list and isinstance(part, int):
            ann = typing.get_args(ann)[0]
        elif typing.get_origin(ann) is dict:
            ann = typing.get_args(ann)[1]
        else:
            return None
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    return ann


def _model_at(data: Any, path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that validates the mapping at `path`."""
    ann = _unwrap(_annotation_at(data, path), _value_at(data, path))
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _union_tags(data: Any, path: tuple[Any, ...]) -> list[str]:
    """The `type:` values a discriminated union at `path` accepts, in declaration order."""
    ann = _annotation_at(data, path)
    while typing.get_origin(ann) is Annotated:
        ann = typing.get_args(ann)[0]
    tags = []
    for member in typing.get_args(ann):
        if isinstance(member, type) and issubclass(member, BaseModel) and "type" in member.model_fields:
            tags.extend(str(t) for t in typing.get_args(member.model_fields["type"].annotation))
    return tags


def _value_at(data: Any, path: tuple[Any, ...]) -> Any:
    node = data
    for part in path:
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    return node


def _has(node: Any, part: Any) -> bool:
    return part in node if isinstance(node, dict) else isinstance(part, int) and 0 <= part < len(node)


def _unwrap(ann: Any, node: Any) -> Any:
    """Strips Annotated and Optional, and picks the union member that validates `node` (by its
    `type:` tag for tagged mappings). None when a tag matches no member."""
    while True:
        origin = typing.get_origin(ann)
        if origin is Annotated:
            ann = typing.get_args(ann)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(ann) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            if len(members) == 1:
                ann = members[0]
            elif models and isinstance(node, dict):
                tag = node.get("type")
                match = [m for m in models if "type" in m.model_fields and typing.get_args(m.model_fields["type"].annotation) == (tag,)]
                if not match:
                    return None
                ann = match[0]
            else:
                # No tag to go by: the first member that holds this kind of value (mapping or not).
                fitting = [m for m in members if (m in models) == isinstance(node, dict)]
                ann = (fitting or members)[0]
        else:
            return ann


def _show(value: Any, secrets: tuple[str, ...] = ()) -> str:
    # Secrets are masked before the cut: a cut secret would no longer match.
    text = mask_url(mask_secrets(repr(value), secrets))
    return text if len(text) <= 60 else text[:57] + "..."


def _hint(word: str, choices: list[str], secrets: tuple[str, ...]) -> str:
    """did_you_mean, except for a value holding a secret: the nearest choice would hint at it."""
    return "" if mask_secrets(word, secrets) != word else did_you_mean(word, choices)


def _issues_from_pydantic(file: str, lines: dict[tuple[Any, ...], int], data: Any, exc: ValidationError,
                          key_names: dict[tuple[Any, ...], str], secrets: tuple[str, ...] = ()) -> list[ConfigIssue]:
    """One issue per key: a value that fits no member of a union gives one line, not one per member."""
    by_key: dict[tuple[str, int], list[str]] = {}
    for err in exc.errors(include_url=False):
        issue = _issue_from_pydantic(file, lines, data, err, secrets)
        key = key_names.get(_data_path(data, tuple(err["loc"])), issue.key)
        messages = by_key.setdefault((key, issue.line), [])
        if issue.message not in messages:
            messages.append(issue.message)
    return [ConfigIssue(file, line, key, " or ".join(messages) if len(messages) < 2 else
                        " or ".join(m.rsplit(", got ", 1)[0] for m in messages[:-1]) + " or " + messages[-1])
            for (key, line), messages in by_key.items()]


def _issue_from_pydantic(file: str, lines: dict[tuple[Any, ...], int], data: Any, err: Any,
                         secrets: tuple[str, ...] = ()) -> ConfigIssue:
    loc = tuple(err["loc"])
    path = _data_path(data, loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        model = _model_at(data, path[:-1])
        allowed = list(model.model_fields) if model else []
        key = str(path[-1])
        hint = did_you_mean(key, allowed)
        message = f"unknown key{hint}" + ("" if hint or not allowed else f"; expected one of: {', '.join(allowed)}")
    elif kind == "missing" and path and isinstance(path[-1], int):
        path = path[:-1]  # a fixed-length list (e.g. input_size) is short
        ann = _annotation_at(data, path)
        while typing.get_origin(ann) is Annotated or _is_optional(ann):
            ann = typing.get_args(ann)[0]
        count = len(typing.get_args(ann)) if typing.get_origin(ann) is tuple else None
        message = f"expected {count or 'more'} items, got {_show(_value_at(data, path), secrets)}"
    elif kind == "missing":
        message = "required key is missing"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = _union_tags(data, path)
        if kind == "union_tag_not_found":
            message = f"missing 'type': expected one of {', '.join(expected)}"
        else:
            tag = str(ctx.get("tag", ""))
            path = (*path, "type")
            message = f"unknown type {tag!r}{_hint(tag, expected, secrets)}; expected one of {', '.join(expected)}"
    elif kind == "literal_error":
        expected_text = str(ctx.get("expected", ""))
        choices = re.findall(r"'([^']*)'", expected_text)
        message = f"expected {expected_text}, got {_show(value, secrets)}{_hint(str(value), choices, secrets)}"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        tags = _union_tags(data, path)
        wanted = f"a mapping with type: one of {', '.join(tags)}" if tags else "a mapping of keys"
        message = f"expected {wanted}, got {_show(value, secrets)}"
    elif kind == "string_pattern_mismatch" and ctx.get("pattern") in PATTERN_MEANING:
        message = f"expected {PATTERN_MEANING[ctx['pattern']]}, got {_show(value, secrets)}"
    elif kind == "list_type":
        message = f"expected a list, got {_show(value, secrets)}"
    else:
        message = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {_show(value, secrets)}"
    if path[-1:] == ("token",):  # a token is a secret, also a wrong one: say what is wrong, never what it is
        message = message.rsplit(", got ", 1)[0]
    return ConfigIssue(file, _line_of(lines, path), format_path(path), mask_secrets(message, secrets))
