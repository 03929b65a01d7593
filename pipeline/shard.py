"""Cameras split over N instances without code: which shard runs which camera, and the config of
one shard.

Owns the choice of cameras and the per-shard file names. A camera belongs to the shard with the
highest hash of (camera id, shard) (rendezvous hashing): stable across restarts and machines, and
changing N moves only the cameras that must move (about 1/N of them), not nearly all of them as
`hash % N` would.

Where the shard comes from, first found wins:
- `--shard I/N` on the command line;
- `VIGIL_SHARD=I/N` in the environment;
- `VIGIL_SHARDS=N` with the trailing ordinal of the host name (a Kubernetes StatefulSet names its
  pods `vigil-0`, `vigil-1`, ...: `vigil-3` is shard 3).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import LoadedConfig

SHARD_ENV = "VIGIL_SHARD"
SHARDS_ENV = "VIGIL_SHARDS"
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_ORDINAL = re.compile(r"-(\d+)$")


class ShardError(ValueError):
    """A shard that cannot be used; says what was expected and what arrived."""


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count` (0-based).

    Args:
        index: this instance's shard, 0 ≤ index < count.
        count: how many instances share the cameras.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ShardError(f"expected a shard I/N with 0 <= I < N, got {self.index}/{self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """What the files and MQTT client id of this shard carry: `shard1`. The index only: an
        instance keeps its outbox (and what waits in it) when the number of shards changes."""
        return f"shard{self.index}"

    def owns(self, camera_id: str) -> bool:
        return shard_of(camera_id, self.count) == self.index

    def path(self, path: Path) -> Path:
        """`path` for this shard: `{shard}` replaced by `tag`, else the tag before the suffix
        (`events.jsonl` → `events.shard1.jsonl`), so instances never write one file."""
        text = str(path)
        if "{shard}" in text:
            return Path(text.replace("{shard}", self.tag))
        return path.with_name(f"{path.stem}.{self.tag}{path.suffix}") if path.suffix else path.with_name(f"{path.name}.{self.tag}")


def shard_of(camera_id: str, count: int) -> int:
    """The shard (of `count`) that runs the camera: the highest hash of (id, shard)."""
    if count < 1:
        raise ShardError(f"expected at least 1 shard, got {count}")
    return max(range(count), key=lambda i: hashlib.sha256(f"{camera_id}\0{i}".encode()).digest())


def parse_shard(text: str) -> Shard:
    """`I/N` → Shard(I, N)."""
    match = _SHARD.match(text)
    if match is None:
        raise ShardError(f"expected a shard as I/N (e.g. 0/4), got {text!r}")
    return Shard(int(match.group(1)), int(match.group(2)))


def resolve_shard(arg: str | None, env: dict[str, str] | None = None, hostname: str | None = None) -> Shard | None:
    """This instance's shard (see the module's docstring), or None when it runs every camera.

    Args:
        arg: the `--shard` option.
        env: the environment (default: os.environ).
        hostname: the host's name (default: socket.gethostname()).
    """
    env = os.environ if env is None else env
    if arg:
        return parse_shard(arg)
    if env.get(SHARD_ENV):
        return parse_shard(env[SHARD_ENV])
    if env.get(SHARDS_ENV):
        name = hostname if hostname is not None else socket.gethostname()
        match = _ORDINAL.search(name.split(".", 1)[0])
        if match is None:
            raise ShardError(f"{SHARDS_ENV}={env[SHARDS_ENV]} needs the shard from the host name's trailing ordinal "
                             f"(e.g. vigil-3), got host name {name!r}; or set {SHARD_ENV}=I/N")
        try:
            count = int(env[SHARDS_ENV])
        except ValueError:
            raise ShardError(f"expected {SHARDS_ENV} to be a number of shards, got {env[SHARDS_ENV]!r}") from None
        return Shard(int(match.group(1)), count)
    return None


def apply_shard(loaded: LoadedConfig, shard: Shard | None) -> LoadedConfig:
    """The config of one shard: its cameras only, the models and sinks they use, and (with more than
    one shard) the outbox, evidence folder, output files and MQTT client ids named for the shard.
    None: unchanged.

    A shard may get no camera at all (fewer cameras than shards): it then runs with none, which a
    live fleet member survives (cameras may come by reload), and a run of files ends at once."""
    if shard is None:
        return loaded
    cfg = loaded.config
    keep = [i for i, cam in enumerate(cfg.cameras) if shard.owns(cam.id)]
    cameras = [cfg.cameras[i] for i in keep]
    ids = {c.id for c in cameras}
    used_models = {c.model for c in cameras}
    model_keep = [i for i, m in enumerate(cfg.models) if m.id in used_models] or [0]  # one stays: a reload may need it
    sinks, sink_keep = [], []
    for i, sink in enumerate(cfg.sinks):
        update: dict[str, Any] = {}
        if sink.cameras is not None:
            update["cameras"] = [c for c in sink.cameras if c in ids]
            if not update["cameras"]:
                continue  # none of its cameras runs here
        path = getattr(sink, "path", None)
        if path is not None and shard.count > 1 and ("{shard}" in str(path) or "{camera}" not in str(path)):
            update["path"] = shard.path(Path(path))
        client_id = getattr(sink, "client_id", None)
        if client_id is not None and shard.count > 1:
            # A broker drops a client when another connects with its id: each instance its own.
            update["client_id"] = f"{client_id}-{shard.tag}"
        sinks.append(sink.model_copy(update=update) if update else sink)
        sink_keep.append(i)
    update_cfg: dict[str, Any] = {"cameras": cameras, "models": [cfg.models[i] for i in model_keep], "sinks": sinks}
    if shard.count > 1:
        update_cfg["outbox"] = cfg.outbox.model_copy(update={"path": shard.path(cfg.outbox.path)})
        if cfg.evidence is not None:
            update_cfg["evidence"] = cfg.evidence.model_copy(update={"dir": shard.path(cfg.evidence.dir)})
    # model_copy does not validate: `cameras` may be empty here, which a file could not say.
    new_cfg = cfg.model_copy(update=update_cfg)
    renumber = {"cameras": keep, "models": model_keep, "sinks": sink_keep}
    lines = {}
    for key, line in loaded.lines.items():
        if len(key) >= 2 and key[0] in renumber and isinstance(key[1], int):
            if key[1] not in renumber[key[0]]:
                continue
            key = (key[0], renumber[key[0]].index(key[1]), *key[2:])
        lines[key] = line
    return dataclasses.replace(loaded, config=new_cfg, lines=lines)


def shard_table(loaded: LoadedConfig, count: int) -> list[tuple[int, list[str]]]:
    """For `validate --shards N`: each shard and the ids of its cameras, in config order."""
    table: list[tuple[int, list[str]]] = [(i, []) for i in range(count)]
    for cam in loaded.config.cameras:
        table[shard_of(cam.id, count)][1].append(cam.id)
    return table
