"""The camera graph: built from a config (builder.py), one Camera object per camera (camera.py),
shared model and sink lanes (lanes.py), model loading (models.py) and reloads as camera diffs
(reload.py)."""

from pipeline.graph.builder import Graph, build_graph
from pipeline.graph.camera import Camera, CameraLifecycle
from pipeline.graph.models import LoadedModel, load_models
from pipeline.graph.reload import ReloadReport

__all__ = ["Camera", "CameraLifecycle", "Graph", "LoadedModel", "ReloadReport", "build_graph", "load_models"]
