"""Class names or ids from a config, resolved against a model's class names.

Models (`classes:` filter) and rules (`classes:`, `classes_b:`) name classes the same way; this
module is the one place that turns those lists into id sets, and reports entries the model lacks
with a "did you mean". It knows nothing of stages or the graph.
"""

from __future__ import annotations

from pipeline.config import did_you_mean


def class_ids(names: dict[int, str], wanted: list[int | str] | None) -> tuple[frozenset[int] | None, list[tuple[int, str]]]:
    """Config class names or ids as ids of the model's classes (None: every class), and the
    problems found as (position in `wanted`, message)."""
    if wanted is None:
        return None, []
    by_name = {v: k for k, v in names.items()}
    ids: set[int] = set()
    problems = []
    for j, entry in enumerate(wanted):
        if isinstance(entry, int):
            if names and entry not in names:
                problems.append((j, f"class id {entry} is not in the model (0..{max(names)})"))
            ids.add(entry)
        elif entry in by_name:
            ids.add(by_name[entry])
        else:
            problems.append((j, f"unknown class name {entry!r}{did_you_mean(entry, list(by_name))}"))
    return frozenset(ids), problems


def resolve_classes(names: dict[int, str], wanted: list[int | str] | None) -> frozenset[int] | None:
    """class_ids for a config that load_models has already checked."""
    ids, problems = class_ids(names, wanted)
    if problems:
        raise ValueError(f"class list {wanted}: {problems[0][1]}")
    return ids
