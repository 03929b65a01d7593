"""The status page in a real browser (Debian's headless Chromium through Selenium) on a live graph
of two RTSP cameras: a tile per camera whose picture loads and changes, a camera killed on the
server changing state on the page, an event with its snapshot, the zone helper's snippet matching
the clicked pixels; the picture routes decoded with OpenCV; the token, traversal and escaping."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.graph import build_graph
from tests.helpers import Running, free_port, wait_for
from tests.tools.browser import need_browser, start_chromium
from tests.tools.rtsp import RtspServer, need_rtsp_server

TOKEN = "s3cret-token-for-the-page"
NAMES = ["<img src=x id=injected>"] + [f"class{i}" for i in range(1, 80)]  # yolov8n has 80 classes


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)
    except OSError:  # not listening yet (the server starts once the models have loaded)
        return 0, b"", {}


@pytest.fixture(scope="module")
def site(tmp_path_factory, model_path, media):
    """Two live RTSP cameras (`dock` with a zone rule and evidence, `gate` plain) with the metrics
    port, a model whose class 0 is named with HTML in it (the page must show it as text)."""
    need_rtsp_server()
    tmp = tmp_path_factory.mktemp("page")
    servers = [RtspServer(media / "crowd_overhead.mp4").start(), RtspServer(media / "crowd_overhead.mp4").start()]
    port = free_port()
    cfg = tmp / "live.yaml"
    cfg.write_text(f"""
cameras:
  - id: dock
    source: {{type: rtsp, url: "{servers[0].url}"}}
    model: yolo
    detect_fps: 5
    zones: [{{id: floor, units: normalized, points: [[0.05, 0.05], [0.95, 0.05], [0.95, 0.95], [0.05, 0.95]]}}]
    rules: [{{id: on_floor, type: zone_intrusion, zone: floor, classes: [0], min_seconds: 0}}]
  - id: gate
    source: {{type: rtsp, url: "{servers[1].url}", open_timeout_s: 2}}
    model: yolo
    detect_fps: 5
    reconnect: {{initial_delay_s: 0.2, max_delay_s: 1}}
models:
  - {{id: yolo, path: {model_path}, classes: [0], names: {json.dumps(NAMES)}}}
evidence: {{dir: {tmp / 'evidence'}, clips: false}}
metrics: {{port: {port}}}
""")
    run = Running(build_graph(load_config(cfg)), metrics_port=port)
    base = f"http://127.0.0.1:{port}"
    metrics = run.graph.ctx.metrics
    try:
        assert wait_for(lambda: all(metrics.camera(c).state.value == "streaming" for c in ("dock", "gate"))
                        and all(get(f"{base}/cameras/{c}/latest.jpg")[0] == 200 for c in ("dock", "gate")), 60)
        yield {"base": base, "servers": servers, "run": run, "tmp": tmp}
    finally:
        run.finish()
        for s in servers:
            s.stop()


@pytest.fixture(scope="module")
def chrome(site, tmp_path_factory):
    need_browser()
    driver = start_chromium(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()


def test_latest_jpeg_is_the_cameras_frame_size_and_the_stream_yields_successive_jpegs(site):
    status, body, headers = get(site["base"] + "/cameras/dock/latest.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (360, 640, 3)  # the RTSP server's frame size
    with urllib.request.urlopen(site["base"] + "/cameras/dock/stream.mjpeg", timeout=10) as r:
        assert r.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        data = b""
        while data.count(b"--frame") < 4:
            data += r.read1(65536)
    parts = [p for p in data.split(b"--frame\r\n") if p.startswith(b"Content-Type: image/jpeg")]
    jpegs = []
    for part in parts[:3]:
        head, _, rest = part.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        frame = cv2.imdecode(np.frombuffer(rest[:length], np.uint8), cv2.IMREAD_COLOR)
        assert frame is not None and frame.shape == (360, 640, 3)
        jpegs.append(rest[:length])
    assert len(set(jpegs)) == len(jpegs) >= 2, "the stream should move on to newer frames"


def test_one_tile_per_camera_with_a_picture_that_changes(site, chrome):
    from selenium.webdriver.common.by import By

    chrome.get(site["base"] + "/")
    assert wait_for(lambda: len(chrome.find_elements(By.CSS_SELECTOR, ".tile")) == 2, 15)
    ids = [t.get_attribute("data-camera") for t in chrome.find_elements(By.CSS_SELECTOR, ".tile")]
    assert sorted(ids) == ["dock", "gate"]
    loaded = "return [...document.querySelectorAll('.tile img')].map(i => i.complete ? i.naturalWidth : 0)"
    assert wait_for(lambda: all(w > 0 for w in chrome.execute_script(loaded)), 15), chrome.execute_script(loaded)
    srcs = lambda: [i.get_attribute("src") for i in chrome.find_elements(By.CSS_SELECTOR, ".tile img")]  # noqa: E731
    first = srcs()
    assert wait_for(lambda: all(a != b for a, b in zip(srcs(), first, strict=True)), 10), "pictures did not change"
    states = [s.text for s in chrome.find_elements(By.CSS_SELECTOR, ".tile .state")]
    assert states == ["streaming", "streaming"]


def test_an_event_appears_with_its_snapshot_and_names_are_text(site, chrome):
    from selenium.webdriver.common.by import By

    chrome.get(site["base"] + "/")
    assert wait_for(lambda: chrome.find_elements(By.CSS_SELECTOR, "#events tbody tr img.snapshot"), 30)
    row = chrome.find_elements(By.CSS_SELECTOR, "#events tbody tr")[-1]
    assert "dock" in row.text and "on_floor" in row.text
    snapshot = row.find_element(By.CSS_SELECTOR, "img.snapshot")
    assert wait_for(lambda: chrome.execute_script("return arguments[0].naturalWidth", snapshot) > 0, 10)
    # The class name holds HTML: it is shown as text, and no element was made of it.
    assert "<img src=x id=injected>" in chrome.find_element(By.ID, "events").text
    assert chrome.find_elements(By.ID, "injected") == []


def test_zone_helper_snippet_matches_the_clicked_pixels(site, chrome):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    chrome.get(site["base"] + "/cameras/dock")
    image = chrome.find_element(By.ID, "stream")
    assert wait_for(lambda: chrome.execute_script("return arguments[0].naturalWidth", image) > 0, 15)
    width, height = chrome.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image)
    shown = chrome.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", image)
    assert (width, height) == (640, 360)
    clicks = [(40, 30), (600, 30), (600, 330), (40, 330)]  # frame pixels
    for x, y in clicks:
        # Selenium 4 offsets are from the element's centre, in CSS pixels.
        dx = x * shown[0] / width - shown[0] / 2
        dy = y * shown[1] / height - shown[1] / 2
        ActionChains(chrome).move_to_element_with_offset(image, round(dx), round(dy)).click().perform()
    snippet = chrome.find_element(By.ID, "snippet").text
    assert "zones:" in snippet and "units: normalized" in snippet, snippet
    points = json.loads(re.search(r"points: (\[.*\])", snippet).group(1))
    assert len(points) == 4
    for (nx, ny), (x, y) in zip(points, clicks, strict=True):
        assert abs(nx * width - x) <= 1.0 and abs(ny * height - y) <= 1.0, (nx, ny, x, y)
        assert re.fullmatch(r"\d\.\d{1,3}", str(nx)) or nx in (0, 1)
    # The crowd stands inside a zone this big: its tracks are listed.
    assert wait_for(lambda: chrome.find_elements(By.CSS_SELECTOR, "#inside li"), 10)
    assert "<img src=x id=injected>" in chrome.find_element(By.ID, "inside").text
    assert chrome.find_elements(By.ID, "injected") == []


def test_a_camera_killed_on_the_server_changes_state_on_the_page(site, chrome):
    from selenium.webdriver.common.by import By

    chrome.get(site["base"] + "/")
    gate_state = lambda: chrome.find_element(By.CSS_SELECTOR, ".tile[data-camera=gate] .state").text  # noqa: E731
    assert wait_for(lambda: gate_state() == "streaming", 15)
    site["servers"][1].kill()
    try:
        assert wait_for(lambda: gate_state() in ("stalled", "reconnecting"), 20), gate_state()
        dock = chrome.find_element(By.CSS_SELECTOR, ".tile[data-camera=dock] .state").text
        assert dock == "streaming"
    finally:
        site["servers"][1].start()
    assert wait_for(lambda: gate_state() == "streaming", 30), gate_state()


def test_unknown_cameras_and_paths_outside_the_events_are_not_served(site):
    base = site["base"]
    for path in ("/cameras/nope/latest.jpg", "/cameras/..%2F..%2Fetc%2Fpasswd/latest.jpg", "/cameras/%2e%2e/latest.jpg",
                 "/evidence?path=/etc/passwd", f"/evidence?path={site['tmp']}/live.yaml", "/static/../health.py",
                 "/static/index.html", "/api/cameras/nope/tracks"):
        status, body, _ = get(base + path)
        assert status == 404, (path, status, body[:100])
    assert b"root:" not in get(base + "/evidence?path=/etc/passwd")[1]


def test_the_token_guards_the_page_but_not_the_probes(tmp_path, model_path, media):
    port = free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
cameras:
  - id: cam
    source: {{type: file, path: {media / 'crowd_overhead.mp4'}, realtime: true, loop: true}}
    model: yolo
    detect_fps: 2
models:
  - {{id: yolo, path: {model_path}}}
metrics: {{port: {port}, token: "{TOKEN}"}}
""")
    run = Running(build_graph(load_config(cfg)), metrics_port=port, metrics_token=TOKEN)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: get(base + "/healthz")[0] == 200, 30)
        for path in ("/", "/api/status", "/cameras/cam", "/cameras/cam/latest.jpg", "/cameras/cam/stream.mjpeg"):
            assert get(base + path)[0] == 401, path
            assert get(base + path, {"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401, path
        assert get(base + "/metrics")[0] == 200
        status, _, headers = get(base + f"/?token={TOKEN}")
        assert status == 200 and "vigil_token=" in headers["Set-Cookie"] and "HttpOnly" in headers["Set-Cookie"]
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        assert get(base + "/api/status", {"Cookie": cookie})[0] == 200
        assert wait_for(lambda: get(base + "/cameras/cam/latest.jpg", {"Authorization": f"Bearer {TOKEN}"})[0] == 200, 30)
    finally:
        run.finish()


def test_detect_with_a_metrics_port_serves_the_page(tmp_path, media, model_path):
    """The contract's other way in: `detect SOURCE --metrics-port P` serves `/`, `latest.jpg` and
    `stream.mjpeg` as `run` does."""
    import signal

    from conftest import start_cli

    port = free_port()
    proc = start_cli("detect", str(media / "crowd_overhead.mp4"), "--model", str(model_path), "--realtime",
                     "--detect-fps", "2", "--jsonl", str(tmp_path / "d.jsonl"), "--metrics-port", str(port),
                     "--no-progress")
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: get(base + "/cameras/cam0/latest.jpg")[0] == 200, 90), proc.poll()
        status, page, headers = get(base + "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html") and b"Vigil" in page
        image = cv2.imdecode(np.frombuffer(get(base + "/cameras/cam0/latest.jpg")[1], np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[:2] == (480, 854)  # the video's frame size
        with urllib.request.urlopen(base + "/cameras/cam0/stream.mjpeg", timeout=10) as r:
            assert r.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
            assert r.read1(65536).startswith(b"--frame\r\nContent-Type: image/jpeg")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
