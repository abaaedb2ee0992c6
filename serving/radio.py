"""MPD radio: keep MPD's queue topped up with catalogue tracks that sound like the song playing.

MPD names songs by path relative to its music folder; musicrec matches them to its tracks by the same
path under ``MUSICREC_MUSIC_FOLDER``. Each :meth:`Radio.step` looks at the current song and, when fewer
than ``ahead`` songs follow it, appends its nearest neighbours: never a file played or queued earlier in
the session, and at most ``max_per_artist`` songs by one artist from the current song onwards.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pipelines.errors import UserError
from serving.errors import NotFound
from serving.service import Filters, Recommender

log = logging.getLogger(__name__)


class MpdClient(Protocol):
    """The few python-mpd2 ``MPDClient`` commands the radio uses."""

    def status(self) -> dict[str, str]: ...
    def playlistinfo(self) -> list[dict[str, Any]]: ...
    def add(self, uri: str) -> None: ...


class Radio:
    """One radio session on one MPD connection; :meth:`step` does one top-up and returns the files added."""

    def __init__(
        self,
        client: MpdClient,
        recommender: Recommender,
        music_folder: Path,
        ahead: int = 5,
        max_per_artist: int | None = 2,
    ) -> None:
        if ahead < 1:
            raise UserError(f"--ahead must be at least 1, got {ahead}")
        if max_per_artist is not None and max_per_artist < 1:
            raise UserError(f"--max-per-artist must be at least 1, got {max_per_artist}")
        self.client = client
        self.recommender = recommender
        self.music_folder = Path(music_folder).expanduser().resolve()
        self.ahead = ahead
        self.max_per_artist = max_per_artist
        self.seen: set[str] = set()  # MPD files played or queued in this session
        self.queued = 0
        self._unknown: set[str] = set()
        self._by_file: tuple[Any, dict[str | None, str]] | None = None

    def _files(self, library: Any) -> dict[str | None, str]:
        """MPD file name -> track id, rebuilt only when the recommender re-reads the manifest."""
        if self._by_file is None or self._by_file[0] is not library:
            paths = zip(library.index, library["path"], strict=True)
            self._by_file = (library, {self._file(str(p)): t for t, p in paths})
        return self._by_file[1]

    def _file(self, path: str) -> str | None:
        """``path`` relative to the music folder (MPD's name for it), or None when it lies outside."""
        try:
            return Path(path).relative_to(self.music_folder).as_posix()
        except ValueError:
            return None

    def step(self) -> list[str]:
        """Top the queue up after the current song; nothing when nothing plays or the song is not in the catalogue."""
        status = self.client.status()
        queue = self.client.playlistinfo()
        if "song" not in status or not queue:
            return []
        pos = int(status["song"])
        files = [str(song["file"]) for song in queue]
        if pos >= len(files):  # the queue changed between the two commands; the next step sees it settled
            return []
        self.seen.update(files)
        current, upcoming = files[pos], files[pos + 1 :]
        need = self.ahead - len(upcoming)
        if need <= 0:
            return []
        try:
            track_id = self.recommender.resolve(current)
        except NotFound:
            if current not in self._unknown:
                log.warning("the song playing (%s) is not in the catalogue: nothing to queue after it", current)
                self._unknown.add(current)
            return []
        library = self.recommender.library()
        by_file = self._files(library)
        artists: dict[str, int] = {}
        for song in queue[pos:]:
            tid = by_file.get(str(song["file"]))
            artist = library.at[tid, "artist"] if tid is not None else song.get("artist")
            if isinstance(artist, str) and artist:
                artists[artist] = artists.get(artist, 0) + 1
        k = min(self.recommender.serving.serving_max_k, 4 * need + len(self.seen) + 8)
        added: list[str] = []
        for rec in self.recommender.similar(track_id, k, Filters()).results:
            if rec.track_id not in library.index:
                continue
            file = self._file(str(library.at[rec.track_id, "path"]))
            if file is None or file in self.seen:
                continue
            if rec.artist and self.max_per_artist is not None and artists.get(rec.artist, 0) >= self.max_per_artist:
                continue
            self.client.add(file)
            self.seen.add(file)
            added.append(file)
            if rec.artist:
                artists[rec.artist] = artists.get(rec.artist, 0) + 1
            if len(added) == need:
                break
        self.queued += len(added)
        if added:
            log.info("queued after %s: %s", current, ", ".join(added))
        return added


def run(
    radio: Radio,
    stop: threading.Event,
    interval_s: float,
    reconnect: Callable[[], None],
    max_retry_s: float = 30.0,
) -> None:
    """Step every ``interval_s`` until ``stop`` is set; a lost connection is re-opened with ``reconnect``.

    Losing MPD is one warning and getting it back one info line: while it is down the attempts back off
    (doubling from ``interval_s`` up to ``max_retry_s``) and are logged only at debug level.
    """
    from mpd import ConnectionError as MpdConnectionError

    lost_at: float | None = None
    wait = interval_s
    while not stop.is_set():
        try:
            if lost_at is not None:
                reconnect()
                log.info("reconnected to MPD after %.1f s", time.monotonic() - lost_at)
                lost_at, wait = None, interval_s
            radio.step()
        except (MpdConnectionError, OSError) as exc:
            if lost_at is None:
                log.warning("lost MPD (%s); reconnecting in the background", exc)
                lost_at = time.monotonic()
            else:
                log.debug("MPD is still unreachable: %s", exc)
                wait = min(max_retry_s, max(wait, interval_s) * 2)
        stop.wait(wait if lost_at is not None else interval_s)
