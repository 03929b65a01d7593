"""A reload as a diff of cameras: which to add, remove and restart, applied one camera at a time
with a result for each.

Owns the diff and its application order. A camera whose removal times out is reported as failed
and left draining; the other cameras are still applied, and the next reload (which diffs against
the cameras actually running) converges. It never builds stages itself: it works through the
`CameraHost` protocol, which the graph implements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pipeline.config import CameraConfig, ConfigError, LoadedConfig
from pipeline.graph.lanes import CameraRefused

# Sections a reload cannot change in a running graph: they are reported as needing a restart.
RESTART_SECTIONS = ("models", "sinks", "evidence", "pipeline", "metrics")
REMOVE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """What a reload did, per camera.

    Args:
        added / removed / restarted: cameras for which that was done.
        not_applied: config sections that changed but need a restart (models, sinks, ...).
        failed: camera -> why its change was not done (it is retried by the next reload).
    """

    added: list[str]
    removed: list[str]
    restarted: list[str]
    not_applied: list[str]
    failed: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """The report as the JSON object POST /reload answers with."""
        return {"ok": not self.failed, "added": self.added, "removed": self.removed, "restarted": self.restarted,
                "not_applied": self.not_applied, "failed": self.failed}


@dataclass(frozen=True, slots=True)
class CameraDiff:
    """The changes that take the running cameras to the wanted ones."""

    added: list[str]
    removed: list[str]
    restarted: list[str]


def diff_cameras(running: dict[str, CameraConfig], draining: set[str], wanted: list[CameraConfig]) -> CameraDiff:
    """The camera changes from `running` (and `draining`, cameras whose earlier removal did not
    finish) to `wanted`.

    Args:
        running: camera id -> config of the cameras running now.
        draining: ids of cameras still draining from an earlier removal.
        wanted: the cameras of the new config.

    Returns:
        Cameras to add (new ids), to remove (gone from the config), and to restart (changed, or
        still draining but wanted again).
    """
    wanted_ids = {c.id: c for c in wanted}
    added = [cid for cid in wanted_ids if cid not in running and cid not in draining]
    removed = [cid for cid in (*running, *sorted(draining)) if cid not in wanted_ids]
    restarted = [cid for cid, cfg in wanted_ids.items()
                 if (cid in running and running[cid] != cfg) or cid in draining]
    return CameraDiff(added, removed, restarted)


class CameraHost(Protocol):
    """What a reload needs of the running graph."""

    def running_cameras(self) -> dict[str, CameraConfig]: ...

    def draining_cameras(self) -> set[str]: ...

    def check_cameras(self, new: LoadedConfig, camera_ids: set[str]) -> ConfigError | None: ...

    def stop_camera(self, camera_id: str, timeout_s: float) -> None: ...

    def start_camera(self, cam: CameraConfig) -> None: ...


def apply_reload(host: CameraHost, built: LoadedConfig, new: LoadedConfig) -> ReloadReport:
    """Brings the host's cameras in line with `new`: removes, restarts and adds cameras, the others
    untouched. Nothing changes when `new` has problems (raises ConfigError).

    Args:
        host: the running graph.
        built: the config the graph was built with (for sections that need a restart).
        new: the new config.
    """
    not_applied = [name for name in RESTART_SECTIONS if getattr(built.config, name) != getattr(new.config, name)]
    diff = diff_cameras(host.running_cameras(), host.draining_cameras(), new.config.cameras)
    problems = host.check_cameras(new, set(diff.added + diff.restarted))
    if problems is not None:
        raise ConfigError(problems.issues)
    wanted = {c.id: c for c in new.config.cameras}
    failed: dict[str, str] = {}
    removed, restarted, added = [], [], []
    for cid in diff.removed + diff.restarted:
        try:
            host.stop_camera(cid, REMOVE_TIMEOUT_S)
        except (TimeoutError, KeyError) as exc:
            failed[cid] = f"{type(exc).__name__}: {exc}"
            continue
        if cid in diff.removed:
            removed.append(cid)
    for cid in diff.restarted + diff.added:
        if cid in failed:
            continue  # still draining: the next reload restarts it
        try:
            host.start_camera(wanted[cid])
        except (CameraRefused, ValueError, OSError) as exc:
            failed[cid] = f"{type(exc).__name__}: {exc}"
            continue
        (restarted if cid in diff.restarted else added).append(cid)
    return ReloadReport(added, removed, restarted, not_applied, failed)
