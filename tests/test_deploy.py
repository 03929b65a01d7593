"""The deployment files (deploy/docker, deploy/k8s, .dockerignore) agree with each other and with Vigil:
the StatefulSet's VIGIL_SHARDS equals its replicas, the probes and the scrape annotations hit the
port the site config serves, the site config in the ConfigMap loads with the environment the pod
gives it, the Secret holds placeholders only, and the Dockerfile's targets run as a non-root user
with a health check. The image itself is built only where a Docker daemon answers."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import check_files, load_config
from pipeline.config.sinks import MqttSinkConfig
from pipeline.health import HealthServer
from pipeline.metrics import Metrics
from pipeline.paths import shared_dir
from pipeline.shard import apply_shard, resolve_shard

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "k8s"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
PLACEHOLDER = "CHANGE_ME"
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")  # ${VAR} and ${VAR:-default}, as the loader reads them


# ----------------------------------------------------------------------------------- Kubernetes


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted([*K8S.glob("*.yaml"), *K8S.glob("*.yml")]):
        with path.open(encoding="utf-8") as f:
            found += [(path, doc) for doc in yaml.safe_load_all(f) if doc is not None]
    return found


def _one(kind: str) -> dict[str, Any]:
    docs = [doc for _, doc in _manifests() if doc.get("kind") == kind]
    assert len(docs) == 1, f"expected one {kind} in {K8S}, found {len(docs)}"
    return docs[0]


def _container() -> dict[str, Any]:
    containers = _one("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def _container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    assert port in named, f"port {port!r} names none of the container's ports {named}"
    return named[port]


def _site_yaml() -> str:
    return _one("ConfigMap")["data"]["site.yaml"]


def _pod_environment() -> dict[str, str]:
    """The environment the site config sees in pod vigil-0: the container's `env` (fieldRefs as the
    kubelet fills them), the Secret's keys through `envFrom`, and the image's VIGIL_SHARED, which
    points at this machine's shared folder (models/) instead of the pod's /shared."""
    container = _container()
    secret = _one("Secret")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["secretRef"]["name"] == secret["metadata"]["name"]
        env.update(secret["stringData"])
    field_values = {"metadata.name": "vigil-0", "metadata.namespace": "plant"}
    for name, item in _env(container).items():
        env[name] = str(item["value"]) if "value" in item else field_values[item["valueFrom"]["fieldRef"]["fieldPath"]]
    env["VIGIL_SHARED"] = str(shared_dir())
    return env


@pytest.fixture
def site_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The ConfigMap's site.yaml as a file, with the pod's environment set."""
    for name, value in _pod_environment().items():
        monkeypatch.setenv(name, value)
    for name in ("VIGIL_SHARD", "VIGIL_SHARDS"):  # the shard is chosen explicitly below
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "site.yaml"
    path.write_text(_site_yaml(), encoding="utf-8")
    return path


def test_every_manifest_parses_as_a_kubernetes_object() -> None:
    manifests = _manifests()
    assert {doc["kind"] for _, doc in manifests} >= {"StatefulSet", "Service", "ConfigMap", "Secret", "Kustomization"}
    for path, doc in manifests:
        assert doc.get("apiVersion") and doc.get("kind"), f"{path.name}: a document without apiVersion/kind"


def test_kustomization_lists_every_manifest_except_the_secret_template() -> None:
    kustomization = _one("Kustomization")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.y*ml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.yaml"}, "a manifest is missing from kustomization.yaml (or it lists a file that is not there)"
    assert "secret.yaml" not in listed  # `apply -k` must never overwrite the real Secret with placeholders


def test_statefulset_shards_equal_its_replicas() -> None:
    sts = _one("StatefulSet")
    env = _env(_container())
    assert sts["metadata"]["name"] == "vigil"  # pods vigil-0, vigil-1: the ordinal is the shard
    assert int(env["VIGIL_SHARDS"]["value"]) == sts["spec"]["replicas"] == 2


def test_each_pod_runs_its_own_cameras_with_its_own_client_id_and_outbox(site_config: Path) -> None:
    sts = _one("StatefulSet")
    shards = _env(_container())["VIGIL_SHARDS"]["value"]
    loaded = load_config(site_config)
    owners: dict[str, str] = {}
    client_ids, outboxes = set(), set()
    for ordinal in range(sts["spec"]["replicas"]):
        pod = f"{sts['metadata']['name']}-{ordinal}"
        shard = resolve_shard(None, env={"VIGIL_SHARDS": shards}, hostname=pod)
        assert shard is not None and shard.index == ordinal
        mine = apply_shard(loaded, shard).config
        assert mine.cameras, f"{pod} would run no camera"
        for cam in mine.cameras:
            assert cam.id not in owners, f"camera {cam.id} runs in {owners.get(cam.id)} and {pod}"
            owners[cam.id] = pod
        client_ids |= {s.client_id for s in mine.sinks if isinstance(s, MqttSinkConfig)}
        outboxes.add(mine.outbox.path)
    assert set(owners) == {cam.id for cam in loaded.config.cameras}
    assert len(client_ids) == len(outboxes) == sts["spec"]["replicas"]


def test_probes_hit_healthz_and_livez_on_the_metrics_port() -> None:
    container = _container()
    (port,) = [p["containerPort"] for p in container["ports"] if p.get("name") == "metrics"]
    assert port == 9108
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/livez"), ("readinessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert _container_port(container, get["port"]) == port, probe


def test_pods_carry_the_prometheus_scrape_annotations() -> None:
    annotations = _one("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    (port,) = [p["containerPort"] for p in _container()["ports"] if p.get("name") == "metrics"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_headless_service_selects_the_statefulset_pods() -> None:
    sts, svc = _one("StatefulSet"), _one("Service")
    assert svc["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = svc["spec"]["ports"]
    assert _container_port(_container(), port["targetPort"]) == port["port"] == 9108


def test_pods_run_as_the_images_non_root_user() -> None:
    pod = _one("StatefulSet")["spec"]["template"]["spec"]
    uid = int(re.search(r"^ARG VIGIL_UID=(\d+)$", DOCKERFILE.read_text(), re.M).group(1))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid != 0
    assert _container()["securityContext"]["allowPrivilegeEscalation"] is False


def test_config_models_and_outbox_volumes_are_mounted_where_the_config_expects_them(site_config: Path) -> None:
    sts = _one("StatefulSet")
    container = _container()
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    # `vigil run /etc/vigil/site.yaml`: the ConfigMap's key in the folder it is mounted on
    config_arg = Path(container["args"][1])
    assert container["args"][0] == "run"
    assert volumes["site"]["configMap"]["name"] == _one("ConfigMap")["metadata"]["name"]
    assert mounts["site"] == str(config_arg.parent) and config_arg.name in _one("ConfigMap")["data"]
    assert mounts["shared"] == _env(container)["VIGIL_SHARED"]["value"] == "/shared"
    # The outbox lives on the pod's own claim (kept across restarts), not on the container's disk.
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    outbox = load_config(site_config).config.outbox.path
    assert outbox.is_relative_to(mounts[claim["metadata"]["name"]]) and str(outbox) == "/var/lib/vigil/outbox.db"


def test_secret_holds_only_placeholders() -> None:
    secret = _one("Secret")
    assert "data" not in secret, "base64 `data` would hide real values: use stringData placeholders"
    assert set(secret["stringData"]) >= {"CAM_USER", "CAM_PASSWORD", "MQTT_PASSWORD"}
    for key, value in secret["stringData"].items():
        assert str(value).startswith(PLACEHOLDER), f"{key}: not a placeholder"


def test_every_reference_in_the_site_config_is_set_in_the_pod() -> None:
    needed = {m.group(1) for m in _REF.finditer(_site_yaml()) if m.group(2) is None}
    assert needed >= {"CAM_USER", "CAM_PASSWORD", "MQTT_PASSWORD", "VIGIL_SHARED"}
    assert needed <= set(_pod_environment()), f"unset in the pod: {sorted(needed - set(_pod_environment()))}"


def test_site_config_in_the_configmap_validates(site_config: Path) -> None:
    loaded = load_config(site_config)
    cfg = loaded.config
    assert [cam.source.type for cam in cfg.cameras] == ["rtsp"] * 4
    assert all("${" not in cam.source.url and PLACEHOLDER in cam.source.url for cam in cfg.cameras)
    (mqtt,) = [s for s in cfg.sinks if isinstance(s, MqttSinkConfig)]
    assert mqtt.host == "mqtt.plant.svc" and mqtt.password == PLACEHOLDER
    (port,) = [p["containerPort"] for p in _container()["ports"] if p.get("name") == "metrics"]
    assert cfg.metrics.port == port and cfg.metrics.host == "0.0.0.0"
    assert "vigil-0.vigil.plant.svc" in cfg.metrics.allowed_hosts
    assert cfg.models[0].path == shared_dir() / "models" / "yolov8n.onnx"
    if cfg.models[0].path.is_file():  # as `vigil validate` checks it; the model is not in every checkout
        assert check_files(loaded) == []


def test_kustomize_builds_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize deploy/k8s` not checked")
    built = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Service", "StatefulSet"]
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "vigil:0.2.0"


# --------------------------------------------------------------------------------------- Docker


def _stages() -> dict[str, list[str]]:
    """Stage name → its instructions (continuation lines joined, comments dropped), in file order."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)$", line, re.I)
        if match:
            current = match.group(2)
            stages[current] = []
        stages[current].append(line)
    return stages


def _instruction(stage: list[str], name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in stage if line.split(None, 1)[0].upper() == name]


def test_dockerfile_has_a_gpu_target_and_cpu_as_the_default() -> None:
    stages = _stages()
    names = [n for n in stages if n]
    assert "gpu" in names
    assert names[-1] == "cpu", "the last stage is what `docker build` builds without --target"
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in _instruction(stages[""], "ARG") if "=" in a}
    assert args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    assert re.match(r"nvcr\.io/nvidia/(cuda:12\.\d+(\.\d+)?-cudnn-runtime-ubuntu22\.04|tensorrt:)", args["CUDA_IMAGE"])
    assert _instruction(stages["cpu"], "FROM")[0].startswith("${PYTHON_IMAGE}")
    assert _instruction(stages["gpu"], "FROM")[0].startswith("${CUDA_IMAGE}")


def test_dockerfile_installs_from_pyproject_without_dev_extras() -> None:
    stages = _stages()
    cpu_runs, gpu_runs = " ".join(_instruction(stages["cpu"], "RUN")), " ".join(_instruction(stages["gpu"], "RUN"))
    assert "pip install ." in cpu_runs and "[dev]" not in cpu_runs + gpu_runs and "requirements" not in cpu_runs
    assert '".[gpu]"' in gpu_runs and "--extra-index-url https://pypi.nvidia.com" in gpu_runs


@pytest.mark.parametrize("stage", ["cpu", "gpu"])
def test_dockerfile_target_runs_vigil_as_non_root_with_a_healthcheck(stage: str) -> None:
    stages = _stages()
    lines = stages[stage]
    uid = [a.split("=", 1)[1] for a in _instruction(stages[""], "ARG") if a.startswith("VIGIL_UID=")][0]
    (user,) = _instruction(lines, "USER")
    assert user.split(":")[0] not in ("root", "0") and user.replace("${VIGIL_UID}", uid).split(":")[0] == uid
    assert any("useradd" in run and " vigil" in run for run in _instruction(lines, "RUN"))
    assert _instruction(lines, "EXPOSE") == ["9108"]
    (check,) = _instruction(lines, "HEALTHCHECK")
    assert "urllib.request" in check and "http://127.0.0.1:9108/healthz" in check
    assert _instruction(lines, "ENTRYPOINT") == ['["vigil"]']
    assert _instruction(lines, "CMD") == ['["run", "/etc/vigil/site.yaml", "--no-progress"]']
    assert any("VIGIL_SHARED=/shared" in env for env in _instruction(lines, "ENV"))


def _healthcheck_command(port: int) -> list[str]:
    (check,) = _instruction(_stages()["cpu"], "HEALTHCHECK")
    command = yaml.safe_load(check.split("CMD", 1)[1])  # the exec form is a JSON array
    assert command[0] == "python"
    return [sys.executable, *[arg.replace(":9108/", f":{port}/") for arg in command[1:]]]


def test_the_healthcheck_command_passes_on_healthz_and_fails_without_it() -> None:
    server = HealthServer(Metrics(), port=0).start()
    try:
        ok = subprocess.run(_healthcheck_command(server.port), capture_output=True, text=True, timeout=30)
    finally:
        server.close()
    assert ok.returncode == 0, ok.stderr
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    down = subprocess.run(_healthcheck_command(free), capture_output=True, text=True, timeout=30)
    assert down.returncode == 1  # Docker: 1 is unhealthy (2 is reserved)


def test_dockerignore_keeps_models_media_and_venvs_out_of_the_context() -> None:
    patterns = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert patterns >= {".git", ".venv*", "engines/", "out/", "tests/", "**/__pycache__", "**/*.onnx", "**/*.mp4"}
    for needed in ("pyproject.toml", "README.md", "pipeline", "pipeline/"):  # what the Dockerfile copies
        assert needed not in patterns and f"/{needed}" not in patterns


def _docker_problem() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "the docker command is not installed"
    try:
        info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no reason given"])[-1]
        return f"no Docker daemon answers `docker info` ({reason})"
    return None


@pytest.mark.timeout(3600)
def test_cpu_image_builds_and_runs_vigil_as_non_root() -> None:
    problem = _docker_problem()
    if problem is not None:
        pytest.skip(f"cannot build the image: {problem}")
    tag = f"vigil-test:{os.getpid()}"
    build = subprocess.run(["docker", "build", "-f", str(DOCKERFILE), "-t", tag, str(REPO)], capture_output=True, text=True,
                           timeout=3300)
    assert build.returncode == 0, build.stderr[-4000:]
    try:
        user = subprocess.run(["docker", "image", "inspect", "-f", "{{.Config.User}}", tag], capture_output=True, text=True,
                              timeout=60)
        assert user.stdout.strip().split(":")[0] not in ("", "root", "0")
        usage = subprocess.run(["docker", "run", "--rm", tag, "--help"], capture_output=True, text=True, timeout=120)
        assert usage.returncode == 0 and "run" in usage.stdout, shlex.join(usage.args) + "\n" + usage.stderr
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=120)
