"""The building blocks the config models share: the `Strict` base model, the `ConfigPath` and
`Identifier` field types, and the regex patterns with their plain-words meaning.

Owns what a single field accepts, not which keys a section has (schema.py and rules.py do that).
It must not import the other config modules: they all import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
FOURCC_PATTERN = r"^[A-Za-z0-9 ]{4}$"
RTSP_URL_PATTERN = r"^rtsps?://\S+$"
# What each pattern means, for error messages (a regex is no help to a user).
PATTERN_MEANING = {
    ID_PATTERN: "an id of letters, digits, '_', '.' or '-', starting with a letter or digit, at most 64 long",
    FOURCC_PATTERN: "a 4-character FourCC codec code such as mp4v, avc1 or MJPG",
    RTSP_URL_PATTERN: "an rtsp:// or rtsps:// URL without spaces, e.g. rtsp://${CAM_USER}:${CAM_PASSWORD}@10.0.0.5:554/stream",
}


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    return (Path(base) / value).resolve() if base is not None and not value.is_absolute() else value


# A relative path is taken from the config file's directory (the `base_dir` validation context), not the cwd.
ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors (a typo must not pass silently) and a
    validated config is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
