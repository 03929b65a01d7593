"""Reading a config: YAML with the line of every key, `${...}` references, then validation.

`load_config(path)` reads the YAML file, records each key's line, expands references in every
string value, validates (schema.py) and cross-checks (checks.py); every problem it finds is raised
at once as a ConfigError of `file:line: key: message` lines. `config_from_data` does the same for a
config built in code (the `detect` and `bench` commands). Relative paths are relative to the
config file's folder (for `config_from_data`, its `base_dir`).

References, in any string value (one pass: a value read from the environment or a file is used as
it is, never searched for references again):

- `${VAR}`: the environment variable VAR; unset is an error. VIGIL_SHARED defaults to ../shared.
- `${VAR:-default}`: VAR, or `default` when VAR is unset or empty (as in the shell).
- `${file:PATH}`: the contents of the file PATH, with trailing newlines stripped (as Docker and
  Kubernetes secret files usually end), e.g. `url: rtsp://${CAM_USER}:${file:/run/secrets/cam_pw}@10.0.0.5/stream`.
  A relative PATH is relative to the config file's folder. A file that is missing, unreadable, a
  directory, over 64 KiB or not UTF-8 is an error on the value's line and key; no message ever
  quotes a secret's content (each is masked as `***` in the issues of that config). `${file:-x}`
  is still the variable `file` with a default. `config_from_data` expands both forms too: a `${VAR}`
  the shell left alone (single quotes) was left for us, e.g. `detect 'rtsp://admin:${CAM_PW}@cam/s'`
  keeps the password out of the command line that `ps` shows.

Limits, so that a hostile or broken file (or POST /reload of one) costs a clear error rather than
minutes and gigabytes: at most 1 MiB, UTF-8, nesting at most 64 levels deep and at most 100,000
values once YAML aliases are expanded (a "billion laughs" file of 800 bytes would expand to hundreds
of millions), no alias that contains itself. Each is one `file:line: yaml: message` issue.

A value with references stays a string: pydantic turns "4" into 4 where a field wants a number, and
a secret such as "*pw" or "on" is never re-read as YAML.

The loader only reads the config file and the secret files it names; whether a source or model
file exists is `check_files`' business (checks.py), and nothing here loads a model.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.config.checks import cross_check
from pipeline.config.errors import ConfigError, ConfigIssue, LoadedConfig, _issues_from_pydantic, format_path, mask_secrets
from pipeline.config.schema import VigilConfig
from pipeline.paths import SHARED_ENV, shared_dir

SECRET_MAX_BYTES = 64 * 1024
CONFIG_MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64  # the deepest real config (a zone's point) is 6 levels; Python's recursion is the hard limit
MAX_NODES = 100_000  # once aliases are expanded; 64 cameras with 100-point masks are ~25,000
# ${VAR}, ${VAR:-default} or ${file:PATH}. The variable form is tried first, so `${file:-x}` stays
# the variable `file` with a default, as it was before secret files existed.
_REF = re.compile(r"\$\{(?:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?|file:([^}]*))\}")


class _Expander:
    """Expands the references in strings; collects the problems (as messages) and the secrets read."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.secrets: list[str] = []
        self._read: dict[Path, tuple[str | None, str | None]] = {}  # a file named twice is read once

    def expand(self, text: str) -> tuple[str, list[str]]:
        problems: list[str] = []

        def sub(m: re.Match[str]) -> str:
            name, default, secret_path = m.group(1), m.group(2), m.group(3)
            if secret_path is not None:
                content, problem = self._secret(secret_path, m.group(0))
                if problem is not None:
                    problems.append(problem)
                    return m.group(0)
                return content or ""
            value = os.environ.get(name)
            # As in the shell, ${VAR:-default} also takes the default when VAR is set but empty.
            if value is not None and (value or default is None):
                return value
            if default is not None:
                return default
            if name == SHARED_ENV:
                return str(shared_dir())  # unset or empty: the same ../shared default as the CLI
            problems.append(f"environment variable {name} is not set (export it, or write ${{{name}:-default}})")
            return m.group(0)

        return _REF.sub(sub, text), problems

    def _secret(self, written: str, ref: str) -> tuple[str | None, str | None]:
        """(content, None) or (None, problem)."""
        if not written:
            return None, f"{ref} names no file: write ${{file:/run/secrets/NAME}}"
        path = Path(written).expanduser()
        # abspath, not resolve: a Kubernetes secret is a symlink, and its own name says more.
        path = Path(os.path.abspath(path if path.is_absolute() else self.base_dir / path))
        if path not in self._read:
            self._read[path] = _read_secret(path, ref)
            content = self._read[path][0]
            if content is not None:
                self.secrets.append(content)
        return self._read[path]


def _read_secret(path: Path, ref: str) -> tuple[str | None, str | None]:
    # Messages name the file, never its content (not even a byte of it, as a decode error would).
    where = f"{path} (referenced as {ref})"
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            return None, f"secret file is a directory: {where}"
        if not stat.S_ISREG(info.st_mode):
            return None, f"secret file is not a regular file: {where}"
        if info.st_size > SECRET_MAX_BYTES:
            return None, f"secret file is over 64 KiB ({info.st_size} bytes): {where}"
        with path.open("rb") as f:
            raw = f.read(SECRET_MAX_BYTES + 1)
    except FileNotFoundError:
        return None, f"secret file not found: {where}"
    except PermissionError:
        return None, f"secret file cannot be read (permission denied): {where}"
    except OSError as exc:
        return None, f"secret file cannot be read ({exc.strerror or type(exc).__name__}): {where}"
    if len(raw) > SECRET_MAX_BYTES:  # grew since stat
        return None, f"secret file is over 64 KiB: {where}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, f"secret file is not UTF-8 text: {where}"
    return text.rstrip("\r\n"), None


class _LimitError(yaml.MarkedYAMLError):
    """A file over one of the limits (module docstring); its problem_mark is where."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than MAX_DEPTH: the composer recurses per
    level, and a few hundred `[` are enough for a RecursionError."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _LimitError(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_expansion(root: yaml.Node) -> None:
    """Raises _LimitError where the tree, with every alias expanded, gets deeper than MAX_DEPTH or
    larger than MAX_NODES, or where an alias contains itself. Each distinct node is sized once
    (iteratively, so a deep alias chain cannot overflow the stack): linear in the file's size."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, depth) with aliases expanded
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        # An alias is composed into the node it names, which has no line of its own: a mapping's key says where it is.
        marks = ([k.start_mark for k, _ in node.value for _ in (0, 1)] if isinstance(node, yaml.MappingNode)
                 else [node.start_mark] * len(children))
        if children_done:
            open_nodes.discard(key)
            nodes = 1 + sum(sizes[id(c)][0] for c in children)
            depth = 1 + max((sizes[id(c)][1] for c in children), default=0)
            if nodes > MAX_NODES:
                raise _LimitError(problem=f"more than {MAX_NODES} values once YAML aliases (*name) are expanded: "
                                          f"refused (aliases repeating aliases, as in a 'billion laughs' file?)",
                                  problem_mark=node.start_mark)
            if depth > MAX_DEPTH:
                raise _LimitError(problem=f"nested more than {MAX_DEPTH} levels deep once YAML aliases (*name) are expanded",
                                  problem_mark=node.start_mark)
            sizes[key] = (nodes, depth)
            continue
        if key in sizes:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for child, mark in zip(children, marks, strict=True):
            if id(child) in open_nodes:
                raise _LimitError(problem="a YAML alias refers to itself (the node it names contains the alias)",
                                  problem_mark=mark)
            if id(child) not in sizes:
                stack.append((child, False))


def _read_text(path: Path, file: str) -> str:
    """The config file as text; ConfigError (one line) when it is too large, unreadable or not UTF-8."""
    try:
        with path.open("rb") as f:
            raw = f.read(CONFIG_MAX_BYTES + 1)
    except OSError as exc:
        why = "permission denied" if isinstance(exc, PermissionError) else exc.strerror or type(exc).__name__
        raise ConfigError([ConfigIssue(file, 1, "config", f"cannot read the config file ({why})")]) from None
    if len(raw) > CONFIG_MAX_BYTES:
        raise ConfigError([ConfigIssue(file, 1, "config", "config file is over 1 MiB: refused (is this the right file?)")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([ConfigIssue(file, line, "yaml", f"the file is not UTF-8 text: byte 0x{raw[exc.start]:02x} "
                                                           f"(save it as UTF-8)")]) from None


def _node_kind(node: yaml.Node) -> str:
    return "list" if isinstance(node, yaml.SequenceNode) else "single value" if isinstance(node, yaml.ScalarNode) else "mapping"


class _Builder:
    """Turns a composed YAML node tree into Python data, recording each key's line."""

    def __init__(self, file: str, base_dir: Path) -> None:
        self.file = file
        self.lines: dict[tuple[Any, ...], int] = {}
        self.issues: list[ConfigIssue] = []
        self.expander = _Expander(base_dir)
        self._constructor = yaml.SafeLoader("")

    def _scalar(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self.issues.append(ConfigIssue(self.file, node.start_mark.line + 1, format_path(path) or "config",
                                           f"cannot read value {node.value!r} tagged {node.tag}: {problem}"))
            return None

    def build(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            try:
                self._constructor.flatten_mapping(node)  # resolves `<<: *defaults` merge keys
            except yaml.MarkedYAMLError as exc:
                line = exc.problem_mark.line + 1 if exc.problem_mark else node.start_mark.line + 1
                self.issues.append(ConfigIssue(self.file, line, format_path(path) or "config",
                                               f"bad merge key (<<): {exc.problem}"))
                return {}
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node, path)
                line = key_node.start_mark.line + 1
                # Keys are names; only a class-name table (`names: {0: person}`) is keyed by numbers.
                numeric_ok = path[-1:] == ("names",) and isinstance(key, int)
                if isinstance(key, bool) or not (isinstance(key, str) or numeric_ok):
                    self.issues.append(ConfigIssue(self.file, line, format_path(path) or "config",
                                                   f"keys must be names, got {key_node.value!r}"))
                    continue
                if not path and isinstance(key, str) and key.startswith("x-"):
                    # Top-level `x-...` keys hold shared YAML anchors (as in docker-compose), e.g.
                    # `x-live: &live {...}` merged into each camera with `<<: *live`.
                    continue
                if key in out:
                    first = self.lines.get((*path, key), line)
                    self.issues.append(
                        ConfigIssue(self.file, line, format_path((*path, key)), f"duplicate key (first given on line {first})")
                    )
                    continue
                self.lines[(*path, key)] = line
                out[key] = self.build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        # A value with references stays a string (see the module docstring).
        return _expand_string(self._scalar(node, path), path, self.expander, lambda p, message: self.issues.append(
            ConfigIssue(self.file, node.start_mark.line + 1, format_path(p), message)))


def _compose(text: str, file: str) -> yaml.Node | None:
    """The YAML node tree of `text` (None: empty), within the limits; ConfigError (one line) if not."""
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # refuses control characters (a binary file) at once
        root = loader.get_single_node()
        if root is not None:
            _check_expansion(root)
    except _LimitError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise ConfigError([ConfigIssue(file, line, "yaml", str(exc.problem))]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        message = f"YAML syntax error: {exc.problem or exc}"
        if (exc.context and exc.context.startswith("while") and exc.context_mark is not None
                and exc.context_mark.line + 1 != line):
            # e.g. an unclosed [ is noticed lines later: name where it opened too
            message += f" ({exc.context} that starts on line {exc.context_mark.line + 1}; check indentation and brackets)"
        raise ConfigError([ConfigIssue(file, line, "yaml", message)]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError([ConfigIssue(file, line, "yaml", f"character {chr(exc.character)!a} is not allowed in YAML "
                                                           f"(is this a text file?)")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, 1, "yaml", f"YAML error: {exc}".replace("\n", " "))]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return root


def load_config(path: str | Path) -> LoadedConfig:
    """Reads, expands, validates and cross-checks a config. Raises ConfigError with every issue found.
    Does not touch the files it names (see `check_files`) nor load models; it reads `${file:...}` secrets.

    Example:
        >>> loaded = load_config("configs/demo.yaml")
        >>> [camera.id for camera in loaded.config.cameras]
    """
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise ConfigError([ConfigIssue(file, 1, "config", "config file not found")])
    root = _compose(_read_text(path, file), file)
    if root is None:
        raise ConfigError([ConfigIssue(file, 1, "config", "config is empty: expected a mapping with cameras, models and sinks")])
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError([ConfigIssue(file, root.start_mark.line + 1, "config",
                                       f"expected a mapping with cameras, models and sinks at the top, got a {_node_kind(root)}")])
    base_dir = path.resolve().parent
    builder = _Builder(file, base_dir)
    data = builder.build(root, ())
    return _validated(data, builder.issues, tuple(builder.expander.secrets), base_dir,
                      origin=file, lines=builder.lines, config_file=Path(os.path.abspath(path)))


def config_from_data(data: dict[str, Any], *, origin: str, base_dir: Path,
                     key_names: dict[tuple[Any, ...], str] | None = None) -> LoadedConfig:
    """Validates a config built in code (the `detect` and `bench` commands). Issues carry line 0
    and, where `key_names` maps a config key to the option that set it, the option's name.
    `${VAR}` and `${file:...}` in its strings are expanded (secrets read relative to `base_dir`)."""
    names = key_names or {}
    expander = _Expander(base_dir)
    problems: list[ConfigIssue] = []
    data = _expand_data(data, (), expander, lambda p, message: problems.append(
        ConfigIssue(origin, 0, names.get(p, format_path(p)), message)))
    return _validated(data, problems, tuple(expander.secrets), base_dir, origin=origin, lines={}, key_names=names)


def _validated(data: Any, problems: list[ConfigIssue], secrets: tuple[str, ...], base_dir: Path, *, origin: str,
               lines: dict[tuple[Any, ...], int], key_names: dict[tuple[Any, ...], str] | None = None,
               config_file: Path | None = None) -> LoadedConfig:
    """The common tail of `load_config` and `config_from_data`: the expansion `problems` (masked),
    else validation, else the cross-section checks; every failure raised as one ConfigError."""
    if problems:
        raise ConfigError(_masked(problems, secrets))
    names = key_names or {}
    try:
        config = VigilConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(_issues_from_pydantic(origin, lines, data, exc, names, secrets)) from None
    loaded = LoadedConfig(config, origin, lines, names, secrets=secrets, config_file=config_file)
    issues = cross_check(loaded)
    if issues:
        raise ConfigError(issues)
    return loaded


def _expand_data(value: Any, path: tuple[Any, ...], expander: _Expander,
                 report: Callable[[tuple[Any, ...], str], None]) -> Any:
    """A copy of `value` with every `${...}` reference expanded in its strings (the caller's data
    is not changed); each problem goes to `report(path, message)`."""
    if isinstance(value, dict):
        return {k: _expand_data(v, (*path, k), expander, report) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_expand_data(v, (*path, i), expander, report) for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    return _expand_string(value, path, expander, report)


def _expand_string(value: Any, path: tuple[Any, ...], expander: _Expander,
                   report: Callable[[tuple[Any, ...], str], None]) -> Any:
    """`value` with its `${...}` references expanded when it is a string holding one; else as it is."""
    if isinstance(value, str) and "${" in value:
        expanded, problems = expander.expand(value)
        for problem in problems:
            report(path, problem)
        return expanded
    return value


def _masked(issues: list[ConfigIssue], secrets: tuple[str, ...]) -> list[ConfigIssue]:
    return [ConfigIssue(i.file, i.line, i.key, mask_secrets(i.message, secrets)) for i in issues]
