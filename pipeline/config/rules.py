"""A camera's `zones:`, `lines:` and `rules:` sections as pydantic models.

Owns the keys, bounds and defaults of zones, lines and each rule `type:` (the `RuleConfig` union).
It must not turn coordinates into pixels or class names into ids, nor build rules: analytics.py
does that with pipeline.rules once the camera's frame size and the model's class names are known.
It imports only fields.py, so schema.py can import it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt

from pipeline.config.fields import Identifier, Strict

Point = tuple[float, float]
ClassList = list[StrictInt | str]


class ZoneConfig(Strict):
    """A named polygon (`zones:` item) that zone rules refer to by `id`."""

    id: Identifier
    points: list[Point] = Field(min_length=3, description="polygon corners")
    units: Literal["pixels", "normalized"] = Field("pixels", description="normalized: fractions of width/height")


class LineConfig(Strict):
    """A named segment a → b (`lines:` item) that line_crossing rules refer to by `id`."""

    id: Identifier
    points: tuple[Point, Point] = Field(description="a → b; `in`: from the left-hand to the right-hand side walking a→b")
    units: Literal["pixels", "normalized"] = "pixels"


class RuleBase(Strict):
    """The keys every rule has: which classes it watches, the box point it tests (`anchor`), and
    the debounce times that turn a per-frame condition into incidents (`start`, `update`s, `end`)."""

    id: Identifier
    classes: ClassList | None = Field(None, min_length=1, description="names or ids; default every class")
    anchor: Literal["bottom_center", "center", "top_center"] = "bottom_center"
    clear_seconds: float = Field(1.0, ge=0, le=3600, description="condition false this long ends an incident")
    cooldown_seconds: float = Field(10.0, ge=0, le=86400,
                                    description="no new incident for the same subject before this has passed")
    update_seconds: float | None = Field(None, gt=0, le=3600, description="period of `update` events while active")


class ZoneIntrusionRule(RuleBase):
    """`type: zone_intrusion`: an object inside `zone` for at least `min_seconds`."""

    type: Literal["zone_intrusion"]
    zone: str
    min_seconds: float = Field(0.5, ge=0, le=3600)


class DwellRule(RuleBase):
    """`type: dwell`: an object inside `zone` for longer than `max_seconds`."""

    type: Literal["dwell"]
    zone: str
    max_seconds: float = Field(gt=0, le=86400)


class LineCrossingRule(RuleBase):
    """`type: line_crossing`: a track crosses `line` in `direction`; each crossing is one `start`
    event (`cooldown_seconds` keeps jitter on the line from counting again)."""

    type: Literal["line_crossing"]
    line: str
    direction: Literal["in", "out", "both"] = "both"


class ProximityRule(RuleBase):
    """`type: proximity`: an object of `classes` closer than `max_distance` to one of `classes_b`
    for at least `min_seconds`."""

    type: Literal["proximity"]
    classes_b: ClassList = Field(min_length=1)
    max_distance: float = Field(gt=0)
    units: Literal["pixels", "box_height"] = Field("box_height", description="box_height: multiples of the A box's height")
    min_seconds: float = Field(0.5, ge=0, le=3600)


class CountRule(RuleBase):
    """`type: count`: more than `max_count` objects inside `zone` for at least `min_seconds`."""

    type: Literal["count"]
    zone: str
    max_count: int = Field(ge=0)
    min_seconds: float = Field(1.0, ge=0, le=3600)


RuleConfig = Annotated[ZoneIntrusionRule | DwellRule | LineCrossingRule | ProximityRule | CountRule, Field(discriminator="type")]
