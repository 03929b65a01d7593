"""Loading the config's models and checking each against its config before any frame flows.

Owns `load_models`: backend creation (through the backend registry), the batch/output-layout/class
checks, and the decoder per model. Problems become ConfigErrors that point at the key to change.
It builds no stages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pipeline.backends import Backend, ModelLoadError, create_backend
from pipeline.backends.base import ModelNotBuilt
from pipeline.classes import class_ids
from pipeline.config import ConfigError, ConfigIssue, LoadedConfig, ModelConfig
from pipeline.postprocess.yolo import DecodeParams, LayoutError, YoloDecoder

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LoadedModel:
    """A model ready to run: its config, backend, output decoder and the batch it runs at.

    Args:
        config: the model's config entry.
        backend: the loaded inference backend.
        decoder: decodes its output tensor into detections (with NMS).
        batch: frames per inference call.
    """

    config: ModelConfig
    backend: Backend
    decoder: YoloDecoder
    batch: int


def load_models(loaded: LoadedConfig, *, intra_op_threads: int | None = None,
                build_engines: bool = True) -> dict[str, LoadedModel]:
    """Loads every model and checks it against its config (batch, output layout, class filter).

    Args:
        loaded: the validated config.
        intra_op_threads: CPU threads per inference call, overriding each model's `threads`.
        build_engines: False (`validate`): never build a TensorRT engine, whatever `build_engine`
            says; a model whose engine `run` would build is then reported (a warning) and left out.

    Returns:
        model id -> LoadedModel. Raises ConfigError (every problem, each at its key) and closes
        what it loaded when anything does not fit.
    """
    issues: list[ConfigIssue] = []
    models: dict[str, LoadedModel] = {}
    for i, mcfg in enumerate(loaded.config.models):
        try:
            # validate must not spend minutes building an engine: it loads with building off.
            backend = create_backend(mcfg if build_engines else mcfg.model_copy(update={"build_engine": False}),
                                     intra_op_threads=intra_op_threads)
        except ModelNotBuilt as exc:
            if build_engines or not mcfg.build_engine:
                issues.append(loaded.issue(("models", i, "path"), str(exc)))
            else:  # `run` would build it: not a config problem
                log.warning("model %s: %s; `vigil run` builds one first (build_engine: true; minutes)", mcfg.id, exc)
            continue
        except ModelLoadError as exc:
            issues.append(loaded.issue(("models", i, "path"), str(exc)))
            continue
        info = backend.info
        batch_problem = info.batch_problem(mcfg.batch)
        if batch_problem is not None:
            issues.append(loaded.issue(("models", i, "batch"), batch_problem))
        if len(info.outputs) != 1:
            issues.append(loaded.issue(("models", i, "family"),
                                       f"family {mcfg.family!r} expects one output tensor, {info.path.name} has "
                                       f"{len(info.outputs)}: {[o.name for o in info.outputs]} (not a YOLO detection "
                                       f"export this build can decode)"))
            backend.close()
            continue
        ids, class_issues = _resolve_classes(loaded, ("models", i, "classes"), mcfg.classes, info.class_names)
        issues.extend(class_issues)
        issues.extend(camera_class_issues(loaded, mcfg.id, info.class_names))
        try:
            decoder = YoloDecoder(
                mcfg.family,
                info.outputs[0].shape,
                len(info.class_names) or None,
                DecodeParams(conf=mcfg.conf, iou=mcfg.iou, max_det=mcfg.max_det, classes=ids),
            )
        except LayoutError as exc:
            issues.append(loaded.issue(("models", i, "family"), f"{info.path.name}: {exc}"))
            backend.close()
            continue
        models[mcfg.id] = LoadedModel(mcfg, backend, decoder, mcfg.batch)
    if issues:
        for m in models.values():
            m.backend.close()
        raise ConfigError(issues)
    return models


def camera_class_issues(loaded: LoadedConfig, model_id: str, class_names: dict[int, str],
                        camera_ids: set[str] | None = None) -> list[ConfigIssue]:
    """The rule class names of the cameras fed by `model_id` (or only `camera_ids`) that the model lacks.

    Args:
        loaded: the config the cameras come from (for line numbers).
        model_id: the model whose cameras to check.
        class_names: the model's class names.
        camera_ids: only these cameras (a reload checks the ones it adds); None: all.
    """
    issues: list[ConfigIssue] = []
    for c, cam in enumerate(loaded.config.cameras):
        if cam.model != model_id or (camera_ids is not None and cam.id not in camera_ids):
            continue
        for r, rule in enumerate(cam.rules):
            for key in ("classes", "classes_b"):  # classes_b: the second class set of a proximity rule
                if hasattr(rule, key):
                    issues.extend(_resolve_classes(loaded, ("cameras", c, "rules", r, key), getattr(rule, key),
                                                   class_names)[1])
    return issues


def _resolve_classes(loaded: LoadedConfig, path: tuple[Any, ...], wanted: list[int | str] | None,
                     names: dict[int, str]) -> tuple[frozenset[int] | None, list[ConfigIssue]]:
    """class_ids, with its problems as config issues at `path`."""
    ids, problems = class_ids(names, wanted)
    return ids, [loaded.issue((*path, j), message) for j, message in problems]
