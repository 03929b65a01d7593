"""The building blocks the config models share: the `Strict` base model, the `ConfigPath` and
`Identifier` field types, and the regex patterns with their plain-words meaning.

Owns what a single field accepts, not which keys a section has (schema.py and rules.py do that).
It must not import the other config modules: they all import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo
from pydantic_core import PydanticCustomError

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
FOURCC_PATTERN = r"^[A-Za-z0-9 ]{4}$"
RTSP_URL_PATTERN = r"^rtsps?://\S+$"
# What each pattern means, for error messages (a regex is no help to a user).
PATTERN_MEANING = {
    ID_PATTERN: "an id of letters, digits, '_', '.' or '-', starting with a letter or digit, at most 64 long",
    FOURCC_PATTERN: "a 4-character FourCC codec code such as mp4v, avc1 or MJPG",
    RTSP_URL_PATTERN: "an rtsp:// or rtsps:// URL without spaces, e.g. rtsp://${CAM_USER}:${CAM_PASSWORD}@10.0.0.5:554/stream",
}


def rtsp_url_problem(url: str) -> str | None:
    """What FFmpeg would misread in a camera URL (no host, a port that is no port), in words that
    never quote the URL's credentials; None when it is fine.

    A '/', '?' or '#' in a password ends the URL's authority early (rtsp://admin:pw/x@host makes
    `pw` the port), so the usual cause is an unescaped character in the credentials.

    Args:
        url: an rtsp:// or rtsps:// URL, possibly with `user:password@`.

    Returns:
        The problem, or None.
    """
    netloc = urlsplit(url).netloc
    hostport = netloc.rpartition("@")[2]
    host, _, port = hostport.partition("]") if hostport.startswith("[") else hostport.partition(":")
    port = port.partition(":")[2] if hostport.startswith("[") else port
    escape = ("; a user name or password holding '/', '?', '#' or '@' must be written percent-encoded "
              "(/ as %2F, ? as %3F, # as %23, @ as %40)")
    hidden = "@" not in netloc and "@" in url  # the credentials' '@' came after a '/', '?' or '#'
    if port and not port.isdigit():
        return "the port is not a number" + (escape if hidden else "")
    if port and not 1 <= int(port) <= 65535:
        return "the port is out of range 1-65535" + (escape if hidden else "")  # no number: it may be a password
    if not host.strip("["):
        return "the URL has no host" + (escape if hidden else "")
    return None


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    return (Path(base) / value).resolve() if base is not None and not value.is_absolute() else value


def _check_rtsp_url(url: str) -> str:
    problem = rtsp_url_problem(url)
    if problem is not None:
        raise PydanticCustomError("rtsp_url", problem)  # quoted back masked (errors.py)
    return url


# A relative path is taken from the config file's directory (the `base_dir` validation context), not the cwd.
ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]
# Refused at config time rather than when FFmpeg misreads it (and an error quotes the password).
RtspUrl = Annotated[str, Field(pattern=RTSP_URL_PATTERN), AfterValidator(_check_rtsp_url)]


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors (a typo must not pass silently) and a
    validated config is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Precision = Literal["auto", "f32", "bf16", "fp16"]
# What each backend can run; None (unset) is every backend's default: f32 on the CPU backends, fp16
# for TensorRT. `auto` leaves the choice to the backend (OpenVINO picks bf16 on CPUs that have it).
BACKEND_PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("f32",),
    "openvino": ("f32", "bf16", "auto"),
    "tensorrt": ("f32", "fp16", "auto"),
    # f32 and auto fit whichever backend `auto` picks; bf16 makes it pick OpenVINO, fp16 TensorRT
    "auto": ("f32", "bf16", "fp16", "auto"),
}


def check_precision(backend: str | None, precision: str | None) -> str | None:
    """`precision` when `backend` can run it. Raises PydanticCustomError (the config error names the
    `precision` key and its line) saying what the backend takes.

    Args:
        backend: the model's validated backend; None when it was itself invalid (nothing to check).
        precision: the model's precision, already normalised (`fp32` → `f32`).

    Returns:
        `precision` unchanged.
    """
    allowed = BACKEND_PRECISIONS.get(backend or "")
    if precision is None or allowed is None or precision in allowed:
        return precision
    if backend == "onnxruntime":
        text = "backend onnxruntime runs f32 only: remove precision or set it to f32 (bf16: backend openvino; fp16: backend tensorrt)"
    else:
        text = f"backend {backend} takes precision " + ", ".join(allowed[:-1]) + f" or {allowed[-1]}"
        text += " (auto = fp16)" if backend == "tensorrt" else " (auto: OpenVINO's own choice, bf16 where the CPU has it)"
    raise PydanticCustomError("precision", text)
