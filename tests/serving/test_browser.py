"""The web pages in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

One small served catalogue for the whole module: the synthetic library, two tiny registered models (the
champion and a challenger), a collection filled by each (map written at refresh), and the real app under
uvicorn on a loopback port. Screenshots of the pages are taken too (see IMAGES).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipelines.catalogue.manifest import read_manifest
from pipelines.index.index_map import map_file
from pipelines.index.milvus import TrackIndex
from pipelines.index.refresh import refresh_collection
from pipelines.model.encoder import Encoder, EncoderConfig
from pipelines.model.ref import ModelRef
from pipelines.registry import CHAMPION, Registry
from pipelines.settings import IndexSettings, ServingSettings, Settings
from serving.api import create_app
from serving.service import Recommender
from tests import synth
from tests.pipelines.index.helpers import PARAMS_A, build_features, make_library

log = logging.getLogger(__name__)
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# The README's screenshots: refreshed with `MUSICREC_SCREENSHOTS=docs/img pytest tests/serving/test_browser.py`;
# otherwise they go to a temporary folder, so a test run never rewrites tracked files.
IMAGES = Path(os.environ.get("MUSICREC_SCREENSHOTS") or tempfile.mkdtemp(prefix="musicrec-screenshots-")).resolve()

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CONFIG = EncoderConfig(n_frames=PARAMS_A.n_frames, n_mfcc=PARAMS_A.n_mfcc, dim=8, frame_layers=(16,), head_layers=(16,))
# A 1x1 PNG: stands in for the confusion image the evaluation logs.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e2b0b1650000000049454e44ae426082"
)


def register_tiny(settings: Settings, seed: int, p_at_10: float, decision: str) -> str:
    """A tiny random branch for PARAMS_A vectors, logged with metrics and review artifacts, registered."""
    torch.manual_seed(seed)
    model = Encoder(CONFIG).eval()
    registry = Registry(settings)
    registry.check()
    run_id = registry.start_run({"seed": seed}, {"feature_version": PARAMS_A.version}, name=f"browser-{seed}")
    registry.log_metrics(
        run_id, {"model/catalogue/p@10": p_at_10, "model/catalogue/p@10_sd": 0.02, "raw/catalogue/p@10": 0.3}
    )
    art = settings.paths.data_root / f"art-{seed}"
    art.mkdir(parents=True)
    (art / "per_style.csv").write_text(f"model,style,p@10\nmodel,noise,{p_at_10:.3f}\nmodel,low_tones,0.5\n")
    (art / "confusion-catalogue.png").write_bytes(PNG)
    registry.log_artifacts(run_id, art, "review")
    example = np.random.default_rng(seed).standard_normal((2, CONFIG.input_dim)).astype(np.float32)
    uri = registry.log_model(run_id, model, PARAMS_A.version, example)
    tags = {"feature_version": PARAMS_A.version, "dim": str(CONFIG.out_dim), "encoder": CONFIG.model_dump_json()}
    version = registry.register(run_id, uri, tags | {"gate.decision": decision, "gate.reasons": f"p@10 {p_at_10}"})
    registry.end_run(run_id)
    return version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Site:
    url: str
    settings: Settings
    index: TrackIndex
    champion: str
    challenger: str
    downloads: Path
    clip: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    import uvicorn

    root = tmp_path_factory.mktemp("web")
    settings = make_library(root)
    champion = register_tiny(settings, 1, 0.61, "promoted")
    Registry(settings).set_champion(champion, by="test", reason="first")
    challenger = register_tiny(settings, 2, 0.55, "rejected")
    index = TrackIndex(
        settings.paths.milvus_uri, IndexSettings(collections_kept=1, embed_batch_size=8, verify_sample=4)
    )
    features = build_features(settings, PARAMS_A)
    manifest = read_manifest(settings.manifest_path)
    for version in (challenger, champion):  # the champion's collection ends up live, the challenger's kept
        embedder = ModelRef.parse(version).load(settings, PARAMS_A)
        refresh_collection(index, embedder, features, manifest, map_root=settings.paths.data_root)
    recommender = Recommender(index, settings, ServingSettings(serving_alias_ttl_s=0))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, recommender=recommender), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    clip = synth.write(root / "clip.wav", synth.noise(3.0, seed=11, colour=0.5))
    try:
        yield Site(f"http://127.0.0.1:{port}", settings, index, champion, challenger, root / "downloads", clip)
    finally:
        server.should_exit = True
        thread.join(10)
        index.close()


@pytest.fixture(scope="module")
def browser(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs chromium and chromium-driver: make browser-deps")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,1400",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        opts.add_argument(arg)
    site.downloads.mkdir(exist_ok=True)
    opts.add_experimental_option(
        "prefs", {"download.default_directory": str(site.downloads), "download.prompt_for_download": False}
    )
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any, timeout: float = 10.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def by_css(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def open_page(driver: Any, url: str) -> float:
    """Load ``url`` and wait until its script says it is ready; returns the seconds that took."""
    start = time.perf_counter()
    driver.get(url)
    wait(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "true")
    seconds = time.perf_counter() - start
    log.info("%s ready in %.3f s", url, seconds)
    return seconds


def button(item: Any, text: str) -> Any:
    from selenium.webdriver.common.by import By

    return next(b for b in item.find_elements(By.TAG_NAME, "button") if b.text == text)


def screenshot(driver: Any, name: str, element: Any = None) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    if element is not None:
        element.screenshot(str(IMAGES / name))
    else:
        driver.save_screenshot(str(IMAGES / name))


def search(driver: Any, text: str) -> list[Any]:
    box = by_css(driver, "#q")[0]
    box.clear()
    box.send_keys(text)
    by_css(driver, "#search-form button[type=submit]")[0].click()
    wait(driver, lambda d: "match" in by_css(d, "#search-status")[0].text)
    return by_css(driver, "#results li")


def test_load_the_page_and_search(browser: Any, site: Site) -> None:
    seconds = open_page(browser, site.url + "/")
    assert seconds < 3.0, f"the page took {seconds:.2f} s to be ready"
    assert len(by_css(browser, "#results li")) == 15  # the first page of the catalogue
    assert "15 tracks" in by_css(browser, "#served")[0].text
    found = search(browser, "noise 2")
    assert [li.find_element("css selector", ".name").text for li in found] == ["noise 2 — noise-artist-0"]
    assert by_css(browser, "#search-status")[0].text == "1 tracks match."
    # every form control has a label
    unlabelled = browser.execute_script(
        "return [...document.querySelectorAll('input, select')].filter(e => !e.labels || !e.labels.length)"
        ".map(e => e.id)"
    )
    assert unlabelled == []
    search(browser, "")
    screenshot(browser, "web-main.png")


def test_play_a_track_streams_with_range_requests(browser: Any, site: Site) -> None:
    open_page(browser, site.url + "/")
    browser.get_log("performance")  # forget the page load
    first = search(browser, "low_tones 1")[0]
    button(first, "Play").click()
    player = by_css(browser, "#player")[0]
    wait(browser, lambda d: d.execute_script("return arguments[0].currentTime", player) > 0.3)
    assert not browser.execute_script("return arguments[0].paused", player)
    statuses = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.responseReceived" and "/audio" in message["params"]["response"]["url"]:
            statuses.append(message["params"]["response"]["status"])
    assert 206 in statuses, statuses
    assert "low_tones 1" in by_css(browser, "#now-playing")[0].text


def test_neighbours_and_uploading_a_clip(browser: Any, site: Site) -> None:
    open_page(browser, site.url + "/")
    first = search(browser, "noise 0")[0]
    button(first, "Neighbours").click()
    wait(browser, lambda d: "nearest to" in by_css(d, "#neighbours-status")[0].text)
    items = by_css(browser, "#neighbours li")
    assert len(items) == 10
    assert all("distance 0." in li.text for li in items)
    button(items[0], "Play").click()
    wait(browser, lambda d: d.execute_script("return document.getElementById('player').currentTime") > 0.1)
    by_css(browser, "#clip")[0].send_keys(str(site.clip))
    by_css(browser, "#upload-form button")[0].click()
    wait(browser, lambda d: "the clip clip.wav" in by_css(d, "#neighbours-status")[0].text)
    assert len(by_css(browser, "#neighbours li")) == 10


def test_download_the_playlist_as_m3u(browser: Any, site: Site) -> None:
    open_page(browser, site.url + "/")
    shutil.rmtree(site.downloads, ignore_errors=True)
    site.downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(site.downloads)})
    seeds = []
    for text in ("low_tones 0", "high_tones 0"):
        item = search(browser, text)[0]
        seeds.append(item.get_attribute("data-track-id"))
        button(item, "Seed").click()
    length = by_css(browser, "#playlist-length")[0]
    length.clear()
    length.send_keys("4\t")
    assert len(by_css(browser, "#seeds li")) == 2
    by_css(browser, "#m3u")[0].click()
    target = site.downloads / "musicrec-playlist.m3u"
    wait(browser, lambda d: target.exists() and target.stat().st_size > 0)
    lines = target.read_text().splitlines()
    urls = [line for line in lines if not line.startswith("#")]
    assert lines[0] == "#EXTM3U" and len(urls) == 6 and len(set(urls)) == 6
    assert all(u.startswith(site.url + "/tracks/") and u.endswith("/audio") for u in urls)
    from urllib.parse import unquote

    assert [unquote(u.removeprefix(site.url + "/tracks/").removesuffix("/audio")) for u in urls[:2]] == seeds


def test_path_between_two_tracks(browser: Any, site: Site) -> None:
    open_page(browser, site.url + "/")
    button(search(browser, "low_tones 0")[0], "From").click()
    button(search(browser, "high_tones 4")[0], "To").click()
    by_css(browser, "#path-go")[0].click()
    wait(browser, lambda d: "tracks" in by_css(d, "#path-status")[0].text)
    names = [li.find_element("css selector", ".name").text for li in by_css(browser, "#path li")]
    assert names[0].startswith("low_tones 0") and names[-1].startswith("high_tones 4")
    assert len(names) == len(set(names)) >= 2


def test_the_map_plays_the_point_clicked(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    live = site.index.alias_target()
    assert live is not None and map_file(site.settings.paths.data_root, live).is_file()  # written at refresh
    open_page(browser, site.url + "/")
    canvas = by_css(browser, "#map")[0]
    browser.execute_script("arguments[0].scrollIntoView()", canvas)
    assert "15 of 15 tracks" in by_css(browser, "#map-status")[0].text
    assert len(by_css(browser, "#legend > span")) == 3
    screenshot(browser, "web-map.png", by_css(browser, "section:has(#map)")[0])
    data = json.loads(browser.execute_script("return fetch('/map').then(r => r.text())"))
    x0, y0, x1, y1 = data["bounds"]
    track_id, x, y = data["points"][0][:3]
    size = canvas.size
    px = (12 + (x - x0) / ((x1 - x0) or 1) * (900 - 24)) * size["width"] / 900
    py = (12 + (1 - (y - y0) / ((y1 - y0) or 1)) * (600 - 24)) * size["height"] / 600
    ActionChains(browser).move_to_element_with_offset(
        canvas, px - size["width"] / 2, py - size["height"] / 2
    ).click().perform()
    wait(browser, lambda d: by_css(d, "#player")[0].get_attribute("data-track-id") is not None)
    clicked = by_css(browser, "#player")[0].get_attribute("data-track-id")
    near = [p for p in data["points"] if abs(p[1] - x) < 1e-6 and abs(p[2] - y) < 1e-6]
    assert clicked in {p[0] for p in near} | {track_id}


def test_review_page_shows_both_versions_and_their_players(browser: Any, site: Site) -> None:
    seconds = open_page(browser, site.url + "/review")
    assert seconds < 5.0
    rows = by_css(browser, "#versions tbody tr")
    assert [r.get_attribute("data-version") for r in rows] == [site.challenger, site.champion]
    assert "champion" in rows[1].text and "promoted" in rows[1].text
    assert "challenger" in rows[0].text and "rejected" in rows[0].text
    sides = {s.get_attribute("data-side"): s for s in by_css(browser, "#sides .side")}
    assert sides["champion"].get_attribute("data-version") == site.champion
    assert sides["challenger"].get_attribute("data-version") == site.challenger
    assert "0.610 ± 0.020" in sides["champion"].text and "0.550 ± 0.020" in sides["challenger"].text
    assert "noise" in sides["champion"].text  # the per-style table
    assert browser.execute_script(
        "return [...document.querySelectorAll('#sides img')].every(i => i.complete && i.naturalWidth === 1)"
    )
    examples = by_css(browser, "#examples article")
    assert len(examples) == 3
    for example in examples:
        for version in (site.champion, site.challenger):
            players = example.find_elements("css selector", f"[data-version='{version}'] audio")
            assert len(players) == 5
    screenshot(browser, "web-review.png")
    # promoting without the key is refused, and the champion stays
    button(rows[0], "Promote").click()
    wait(browser, lambda d: "401" in by_css(d, "#admin-status")[0].text)
    assert Registry(site.settings).alias(CHAMPION) == site.champion


def test_admin_routes_always_need_the_key_and_move_the_champion_with_it(site: Site) -> None:
    from fastapi.testclient import TestClient

    promote = f"/admin/models/{site.challenger}/promote"
    open_app = create_app(site.settings, recommender=Recommender(site.index, site.settings, ServingSettings()))
    with TestClient(open_app) as client:  # a server without a key never opens its admin routes
        assert client.post(promote).status_code == 401
        refused = client.post(promote, headers={"X-API-Key": "anything"})
        assert refused.status_code == 403 and "MUSICREC_SERVING_API_KEY" in refused.json()["detail"]
    serving = ServingSettings(serving_alias_ttl_s=0, serving_api_key="k3y")
    keyed = create_app(site.settings, recommender=Recommender(site.index, site.settings, serving))
    registry = Registry(site.settings)
    with TestClient(keyed) as client:
        assert client.post(promote).status_code == 401
        assert client.post("/admin/models/rollback").status_code == 401
        assert client.post(promote, headers={"X-API-Key": "wrong"}).status_code == 403
        assert registry.alias(CHAMPION) == site.champion
        key = {"X-API-Key": "k3y"}
        assert client.post("/admin/models/99/promote", headers=key).status_code == 404
        done = client.post(promote, headers=key)
        assert done.status_code == 200, done.text
        assert done.json()["champion"] == site.challenger and done.json()["previous"] == site.champion
        assert registry.alias(CHAMPION) == site.challenger
        assert registry.version(site.challenger).tags["promoted_by"].startswith("api-key@")
        again = client.post(promote, headers=key)
        assert again.status_code == 422 and "already the champion" in again.json()["detail"]
        back = client.post("/admin/models/rollback", headers=key)
        assert back.status_code == 200 and back.json()["champion"] == site.champion
        assert registry.alias(CHAMPION) == site.champion


def test_review_artifacts_are_served_only_by_listed_name(site: Site) -> None:
    from fastapi.testclient import TestClient

    app = create_app(site.settings, recommender=Recommender(site.index, site.settings, ServingSettings()))
    with TestClient(app) as client:
        image = client.get(f"/models/{site.champion}/artifacts/confusion-catalogue.png")
        assert image.status_code == 200 and image.content == PNG and image.headers["content-type"] == "image/png"
        for name in ("..%2F..%2Fmlflow.db", "%2Fetc%2Fpasswd", "per_style.csv%00.png", "model"):
            response = client.get(f"/models/{site.champion}/artifacts/{name}")
            assert response.status_code == 404, name
        assert client.get("/models/..%2F1/artifacts/per_style.csv").status_code == 404
        examples = client.get("/models/examples", params={"version": [site.champion, "nope"]})
        assert examples.status_code == 404 and "nope" in examples.json()["detail"]


def test_phone_width_and_keyboard_only(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser.set_window_size(390, 844)
    try:
        for page in ("/", "/review"):
            open_page(browser, site.url + page)
            overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{page} is {overflow}px wider than a phone screen"
        open_page(browser, site.url + "/")
        for _ in range(12):  # Tab from the top of the page to the search box, type, Enter
            if browser.switch_to.active_element.get_attribute("id") == "q":
                break
            ActionChains(browser).send_keys(Keys.TAB).perform()
        active = browser.switch_to.active_element
        assert active.get_attribute("id") == "q"
        active.send_keys("high_tones 2", Keys.ENTER)
        wait(browser, lambda d: by_css(d, "#search-status")[0].text == "1 tracks match.")
        play = button(by_css(browser, "#results li")[0], "Play")
        assert play.get_attribute("aria-label") == "Play: high_tones 2 — high_tones-artist-0"
        play.send_keys(Keys.ENTER)
        wait(browser, lambda d: "high_tones 2" in by_css(d, "#now-playing")[0].text)
    finally:
        browser.set_window_size(1280, 1400)
