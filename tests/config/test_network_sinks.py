"""The mqtt and webhook sinks' config and the `outbox:` section: each mistake names the file, the
line and the key; the outbox path and TLS files are checked before anything runs."""

import textwrap
from pathlib import Path

import pytest

from pipeline.config import ConfigError, MqttSinkConfig, check_files, load_config
from tests.helpers import only_issue

from conftest import run_cli


def site(tmp_path: Path, sinks: str, extra: str = "", model: Path | None = None, video: Path | None = None) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent(f"""\
        cameras:
          - id: gate
            source: {{type: file, path: {video or 'in.mp4'}}}
            model: yolo
            rules: [{{id: r, type: count, zone: z, max_count: 1}}]
            zones: [{{id: z, points: [[0, 0], [10, 0], [10, 10]]}}]
        models:
          - id: yolo
            path: {model or 'm.onnx'}
        sinks:
        """) + textwrap.dedent(sinks) + textwrap.dedent(extra))
    return path


def test_defaults_and_the_outbox_next_to_the_config(tmp_path):
    loaded = load_config(site(tmp_path, "  - {type: mqtt}\n  - {type: webhook, url: 'http://127.0.0.1:8080/hook'}\n"))
    mqtt, hook = loaded.config.sinks
    assert isinstance(mqtt, MqttSinkConfig)
    assert (mqtt.host, mqtt.port, mqtt.client_id, mqtt.topic_prefix, mqtt.qos) == ("127.0.0.1", 1883, "vigil", "vigil", 1)
    assert hook.headers == {} and hook.timeout_s == 5.0
    assert loaded.config.outbox.path == tmp_path / "vigil-outbox.db"  # relative to the config's folder
    assert loaded.config.cameras[0].down_after_s == 10.0


@pytest.mark.parametrize(("sinks", "line", "key", "says"), [
    ("  - {type: mqtt, hots: broker}\n", 11, "sinks[0].hots", "unknown key (did you mean 'host'?)"),
    ("  - {type: mqtt, qos: 3}\n", 11, "sinks[0].qos", "1"),
    ("  - {type: mqtt, topic_prefix: 'plant/#'}\n", 11, "sinks[0].topic_prefix", "pattern"),
    ("  - {type: mqtt, cert: c.pem}\n", 11, "sinks[0]", "cert and key go together"),
    ("  - {type: webhook, url: 'ftp://example.com/x'}\n", 11, "sinks[0].url", "pattern"),
    ("  - {type: webhook}\n", 11, "sinks[0].url", "required key is missing"),
])
def test_a_bad_network_sink_names_its_line_and_key(tmp_path, sinks, line, key, says):
    with pytest.raises(ConfigError) as info:
        load_config(site(tmp_path, sinks))
    issue = only_issue(info)
    assert (issue.line, issue.key) == (line, key), str(issue)
    assert says in issue.message


def test_two_mqtt_sinks_with_one_client_id_on_one_broker_are_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(site(tmp_path, "  - {type: mqtt}\n  - {type: mqtt, topic_prefix: other}\n"))
    issue = only_issue(info)
    assert (issue.line, issue.key) == (12, "sinks[1].client_id") and "client_id of its own" in issue.message


def test_outbox_bounds_are_checked(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(site(tmp_path, "  - {type: mqtt}\n", "outbox: {max_mb: 0}\n"))
    issue = only_issue(info)
    assert (issue.line, issue.key) == (12, "outbox.max_mb")


def test_missing_tls_files_are_named(tmp_path):
    loaded = load_config(site(tmp_path, "  - {type: mqtt, port: 8883, ca: ca.pem}\n"))
    issues = [i for i in check_files(loaded) if i.key.startswith("sinks")]
    assert [(i.line, i.key) for i in issues] == [(11, "sinks[0].ca")]
    assert "TLS file not found" in issues[0].message and "ca.pem" in issues[0].message


def test_validate_refuses_an_outbox_that_cannot_be_written(tmp_path, model_path, media):
    (tmp_path / "afile").write_text("not a folder")
    cfg = site(tmp_path, "  - {type: webhook, url: 'http://127.0.0.1:9/x'}\n", "outbox: {path: afile/outbox.db}\n",
               model=model_path, video=media / "crowd_overhead.mp4")
    result = run_cli("validate", str(cfg))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "outbox.path" in result.stderr and "afile" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_zone_named_events_is_refused_with_an_mqtt_sink(tmp_path):
    path = site(tmp_path, "  - {type: mqtt}\n")
    path.write_text(path.read_text().replace("zone: z", "zone: events").replace("id: z,", "id: events,"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    issue = only_issue(info)
    assert (issue.line, issue.key) == (6, "cameras[0].zones[0].id") and "gate/events/count" in issue.message
