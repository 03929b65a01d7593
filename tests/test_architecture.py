"""The shape of the package: no import cycles (not even type-only), small modules, registries that
match the config's choices, and the CPU path free of GPU imports."""

from __future__ import annotations

import ast
import subprocess
import sys
import typing
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"
MAX_MODULE_LINES = 400
MAX_BUILDER_LINES = 250


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """module -> the pipeline modules it imports anywhere (top level, in functions, under
    TYPE_CHECKING). `from a.b import c` counts as importing a.b.c when that is a module, else a.b."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle_not_even_type_only():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_is_over_400_lines_and_the_builder_is_small():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert not {n: s for n, s in sizes.items() if s > MAX_MODULE_LINES}
    assert sizes["pipeline.graph.builder"] <= MAX_BUILDER_LINES


def test_every_public_class_and_function_has_a_docstring():
    missing = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        if ast.get_docstring(tree) is None:
            missing.append(f"{name} (module)")
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_"):
                if ast.get_docstring(node) is None and not _is_trivial(node):
                    missing.append(f"{name}.{node.name}")
    assert not missing, f"public names without a docstring: {missing}"


def _is_trivial(node: ast.AST) -> bool:
    """Exception classes with a body of `pass` or `...`; enums."""
    if isinstance(node, ast.ClassDef):
        bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
        return bool(bases & {"Enum", "str"}) and any(isinstance(s, ast.Assign) for s in node.body)
    return False


def test_registries_cover_exactly_the_config_choices():
    from pipeline.backends import BACKENDS
    from pipeline.config import ModelConfig, SinkConfig, SourceConfig
    from pipeline.sinks import SINKS
    from pipeline.sources import SOURCES

    def tags(union: object) -> set[str]:
        members = typing.get_args(typing.get_args(union)[0])
        return {typing.get_args(m.model_fields["type"].annotation)[0] for m in members}

    assert set(SOURCES.names()) == tags(SourceConfig)
    assert set(SINKS.names()) == tags(SinkConfig)
    # `auto` is no class: create_backend resolves it to one of the registered backends
    assert set(BACKENDS.names()) == set(typing.get_args(ModelConfig.model_fields["backend"].annotation)) - {"auto"}
    for registry in (SOURCES, SINKS):  # the CPU ones import here
        for name in registry.names():
            assert hasattr(registry.get(name), "from_config"), f"{registry.kind} {name}"
    assert hasattr(BACKENDS.get("onnxruntime"), "from_config")


def test_the_cpu_path_imports_no_gpu_module_and_no_opencv_through_the_slots():
    code = (
        "import sys; import pipeline.slots, pipeline.backends.onnxruntime, pipeline.frames\n"
        "assert 'cv2' not in sys.modules, 'slots or the ONNX Runtime backend imported OpenCV'\n"
        "import pipeline.graph, pipeline.runner, pipeline.cli\n"
        "bad = [m for m in sys.modules if m.startswith(('tensorrt', 'cuda.', 'pipeline.cuda', 'pipeline.backends.tensorrt'))]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("module", ["pipeline.config", "pipeline.graph", "pipeline.sinks", "pipeline.sources", "pipeline.backends"])
def test_each_package_imports_on_its_own(module):
    result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=PACKAGE.parent, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
