"""Playlists for players: `musicrec playlist --write` as M3U8 and XSPF, and a real MPD loading them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree as ET

import pytest

from pipelines.catalogue.importer import import_catalogue
from pipelines.catalogue.manifest import read_manifest
from pipelines.index.lite_server import free_port
from pipelines.settings import PathSettings, Settings
from serving.playlists import XSPF_NS
from tests import tagged
from tests.pipelines.index.helpers import PARAMS_A, refresh

_MAIN = "from serving.cli_serve import main; main()"
LOW0 = "Ann Arbor/Low Hum/01 Low 0.flac"
HIGH0 = "Bee Sharp/High Notes/01 High 0.ogg"


@dataclass
class Library:
    settings: Settings
    music: Path
    playlists: Path

    def track_id(self, rel: str) -> str:
        df = read_manifest(self.settings.manifest_path)
        return str(df.loc[df["path"] == str(self.music / rel), "track_id"].iloc[0])

    def run(self, *args: str, **extra: str | None) -> subprocess.CompletedProcess[str]:
        """The CLI with this library's settings; ``NAME=None`` leaves ``NAME`` out of the environment."""
        env: dict[str, str | None] = {
            **os.environ,
            "MUSICREC_DATA_ROOT": str(self.settings.paths.data_root),
            "MUSICREC_MILVUS_URI": self.settings.paths.milvus_uri,
            "MUSICREC_MUSIC_FOLDER": str(self.music),
            "MUSICREC_PLAYLIST_DIR": str(self.playlists),
            **extra,
        }
        cmd = [sys.executable, "-c", _MAIN, *args]
        given = {k: v for k, v in env.items() if v is not None}
        return subprocess.run(cmd, capture_output=True, text=True, env=given, check=False, timeout=120)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    root = tmp_path_factory.mktemp("players")
    music = (root / "Music").resolve()
    tagged.tagged_library(music, seconds=3.0)
    settings = Settings(paths=PathSettings(data_root=root / "data", milvus_uri=str(root / "milvus.db")))
    import_catalogue(music, settings, genre_map=tagged.genre_map(root / "genres.csv"))
    refresh(settings, PARAMS_A)
    return Library(settings, music, root / "playlists")


def _m3u8_paths(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]


def test_m3u8_and_xspf_with_caps_and_target_duration(library: Library) -> None:
    seed = library.track_id(LOW0)
    out = library.run("playlist", seed, "-n", "8", "--max-per-artist", "2", "--write", "low", "--format", "m3u8")
    assert out.returncode == 0, out.stderr
    m3u = library.playlists / "low.m3u8"
    paths = _m3u8_paths(m3u)
    assert len(paths) == 6  # three artists, at most two tracks each (the seed is not repeated)
    resolved = [(m3u.parent / p).resolve() for p in paths]
    assert all(p.is_file() for p in resolved) and len(set(resolved)) == len(resolved)
    artists = [p.relative_to(library.music).parts[0] for p in resolved]
    assert max(artists.count(a) for a in set(artists)) == 2
    assert m3u.read_text().startswith("#EXTM3U\n#EXTINF:3,")

    out = library.run(
        "playlist", seed, "--minutes", "0.12", "--write", "short", "--format", "xspf", "--paths", "absolute"
    )
    assert out.returncode == 0, out.stderr
    root = ET.parse(library.playlists / "short.xspf").getroot()
    tracks = root.findall(f"{{{XSPF_NS}}}trackList/{{{XSPF_NS}}}track")
    durations = [int(t.find(f"{{{XSPF_NS}}}duration").text) for t in tracks]
    assert len(tracks) == 3 and sum(durations) >= 7200 and sum(durations[:-1]) < 7200  # 0.12 min = 7.2 s
    locations = [t.find(f"{{{XSPF_NS}}}location").text or "" for t in tracks]
    assert all(loc.startswith("file:///") and Path(unquote(loc[len("file://") :])).is_file() for loc in locations)


def test_path_playlist_and_bad_input(library: Library) -> None:
    start, end = library.track_id(LOW0), library.track_id(HIGH0)
    out = library.run("playlist", start, "--to", end, "-n", "5", "--write", "walk", "--paths", "music")
    assert out.returncode == 0, out.stderr
    paths = _m3u8_paths(library.playlists / "walk.m3u8")
    assert paths[0] == LOW0 and paths[-1] == HIGH0 and len(paths) <= 5
    for args, words in (
        (["playlist", start, "--write", "../escape"], "plain file name"),
        (["playlist", start, "--write", "x", "--format", "pls"], "--format"),
        (["playlist", start, end, "--to", end], "exactly one seed"),
    ):
        bad = library.run(*args)
        assert bad.returncode == 2 and bad.stderr.startswith("error: ") and words in bad.stderr, bad.stderr
        assert bad.stderr.strip().count("\n") == 0
    # An MPD playlist without knowing MPD's music folder would load nothing: refused, nothing written.
    bad = library.run("playlist", start, "--write", "no-folder", "--format", "m3u", MUSICREC_MUSIC_FOLDER=None)
    assert bad.returncode == 2 and "MUSICREC_MUSIC_FOLDER" in bad.stderr and "MPD" in bad.stderr, bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and not (library.playlists / "no-folder.m3u").exists()


# ---- a real MPD ----------------------------------------------------------------------------------------


@dataclass
class Mpd:
    port: int
    playlists: Path
    conf: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start mpd on ``conf`` and wait until it takes connections."""
        self.proc = subprocess.Popen(
            ["mpd", "--no-daemon", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    err = self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ""
                    raise RuntimeError(f"mpd did not start: {err}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def mpd(library: Library, tmp_path: Path) -> Iterator[Mpd]:
    """Debian's mpd on a free loopback port: the synthetic library, no audio output, state in ``tmp_path``."""
    if shutil.which("mpd") is None:
        pytest.skip("mpd is not installed: `make player-deps`")
    port = free_port()
    playlists = tmp_path / "mpd-playlists"
    playlists.mkdir()
    conf = tmp_path / "mpd.conf"
    conf.write_text(
        f'music_directory "{library.music}"\n'
        f'playlist_directory "{playlists}"\n'
        f'db_file "{tmp_path / "mpd.db"}"\n'
        f'state_file "{tmp_path / "mpd.state"}"\n'
        f'pid_file "{tmp_path / "mpd.pid"}"\n'
        f'log_file "{tmp_path / "mpd.log"}"\n'
        'bind_to_address "127.0.0.1"\n'
        f'port "{port}"\n'
        'auto_update "no"\n'
        'audio_output {\n type "null"\n name "null"\n}\n'
    )
    server = Mpd(port, playlists, conf)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _client(port: int):
    from mpd import MPDClient

    client = MPDClient()
    client.timeout = 10
    client.connect("127.0.0.1", port)
    return client


def _update(client) -> None:
    job = client.update()
    deadline = time.monotonic() + 20
    while "updating_db" in client.status() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "updating_db" not in client.status(), f"mpd update {job} did not finish"


def test_exported_playlist_loads_in_mpd_and_every_entry_resolves(library: Library, mpd: Mpd) -> None:
    seed = library.track_id(LOW0)
    args = ("playlist", seed, "-n", "7", "--write", "for-mpd", "--format", "m3u")  # default paths: what MPD loads
    out = library.run(*args, MUSICREC_PLAYLIST_DIR=str(mpd.playlists))  # MPD's playlist folder
    assert out.returncode == 0, out.stderr
    written = mpd.playlists / "for-mpd.m3u"
    entries = _m3u8_paths(written)
    assert len(entries) == 7
    client = _client(mpd.port)
    try:
        _update(client)
        assert int(client.stats()["songs"]) == 10
        assert "for-mpd" in [p["playlist"] for p in client.listplaylists()]
        client.clear()
        client.load("for-mpd")
        queue = client.playlistinfo()
        assert [song["file"] for song in queue] == entries
        assert all(float(song["duration"]) > 2.5 for song in queue)  # mpd decoded each one: it resolved
    finally:
        client.close()
        client.disconnect()


def test_mpd_radio_queues_similar_songs_after_the_current_one(library: Library, mpd: Mpd) -> None:
    from pipelines.settings import ServingSettings
    from serving.radio import Radio
    from serving.service import Recommender

    client = _client(mpd.port)
    try:
        _update(client)
        client.clear()
        client.add(LOW0)
        client.play(0)
        client.pause(1)  # the current song stays put while the steps run
        rec = Recommender.from_settings(library.settings, ServingSettings(music_folder=library.music))
        try:
            radio = Radio(client, rec, library.music, ahead=3, max_per_artist=3)
            added = radio.step()
            queue = [s["file"] for s in client.playlistinfo()]
            assert queue == [LOW0, *added] and len(added) == 3
            artists = [f.split("/")[0] for f in queue]
            # The nearest songs are the other low tones, until the cap (3 per artist) sends it elsewhere.
            assert artists[:3] == ["Ann Arbor"] * 3 and artists[3] != "Ann Arbor"
            assert radio.step() == []  # three songs already follow the current one
            client.next()
            more = radio.step()
            queue = [s["file"] for s in client.playlistinfo()]
            assert len(more) == 1 and queue == [LOW0, *added, *more] and len(set(queue)) == len(queue)
            window = [f.split("/")[0] for f in queue[int(client.status()["song"]) :]]
            assert max(window.count(a) for a in window) <= 3
        finally:
            rec.close()

        client.clear()
        client.add(HIGH0)
        client.play(0)
        client.pause(1)  # resumed once the radio has queued: then three-second songs move on while it runs
        env = {
            **os.environ,
            "MUSICREC_DATA_ROOT": str(library.settings.paths.data_root),
            "MUSICREC_MILVUS_URI": library.settings.paths.milvus_uri,
            "MUSICREC_MUSIC_FOLDER": str(library.music),
        }
        args = ["mpd", "radio", "--port", str(mpd.port), "--host", "127.0.0.1", "--ahead", "2"]
        args += ["--max-per-artist", "2", "--interval", "0.2"]
        proc = subprocess.Popen([sys.executable, "-c", _MAIN, *args], env=env, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(client.playlistinfo()) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        client.pause(0)
        time.sleep(3.5)  # at least one song change
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "MPD connection closed" in out, out
        queue = [s["file"] for s in client.playlistinfo()]
        # Two queued at first; a fourth means it topped up again once the song changed.
        assert queue[0] == HIGH0 and len(queue) >= 4 and len(set(queue)) == len(queue), queue
        assert queue[1].startswith("Bee Sharp/")  # the nearest song to a high tone is another high tone
        assert all((library.music / f).is_file() for f in queue)
    finally:
        client.close()
        client.disconnect()


def test_mpd_radio_bad_input_is_one_line(library: Library) -> None:
    for args, words in (
        (["mpd", "radio", "--port", str(free_port()), "--host", "127.0.0.1"], "cannot connect to MPD"),
        (["mpd", "radio", "--interval", "0"], "--interval"),
    ):
        bad = library.run(*args)
        assert bad.returncode == 2 and bad.stderr.startswith("error: ") and words in bad.stderr, bad.stderr
        assert bad.stderr.strip().count("\n") == 0
    env = {k: v for k, v in os.environ.items() if k != "MUSICREC_MUSIC_FOLDER"}
    env["MUSICREC_DATA_ROOT"] = str(library.settings.paths.data_root)
    cmd = [sys.executable, "-c", _MAIN, "mpd", "radio"]
    bad = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=60)
    assert bad.returncode == 2 and "MUSICREC_MUSIC_FOLDER" in bad.stderr, bad.stderr


def test_mpd_radio_says_once_that_it_lost_mpd_and_once_that_it_is_back(library: Library, mpd: Mpd) -> None:
    env = {
        **os.environ,
        "MUSICREC_DATA_ROOT": str(library.settings.paths.data_root),
        "MUSICREC_MILVUS_URI": library.settings.paths.milvus_uri,
        "MUSICREC_MUSIC_FOLDER": str(library.music),
    }
    args = ["mpd", "radio", "--port", str(mpd.port), "--host", "127.0.0.1", "--interval", "0.05"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _MAIN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and "radio on MPD" in proc.stdout.readline()
        mpd.stop()
        time.sleep(2.0)  # forty intervals with MPD down
        mpd.start()
        client = _client(mpd.port)
        try:  # once the radio is back, a song playing gets songs queued after it
            _update(client)
            client.clear()
            client.add(LOW0)
            client.play(0)
            client.pause(1)
            deadline = time.monotonic() + 60
            while len(client.playlistinfo()) < 2 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
            assert len(client.playlistinfo()) > 1, "the radio did not come back"
        finally:
            client.close()
            client.disconnect()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert err.count("lost MPD") == 1, err
    assert err.count("reconnected to MPD after") == 1, err
    assert "still unreachable" not in err and "Traceback" not in err, err
