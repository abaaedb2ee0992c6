"""``musicrec mpd radio``: keep a running MPD's queue topped up with similar tracks (see serving.cli_serve)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Annotated, Any

import typer

from pipelines.errors import UserError

log = logging.getLogger(__name__)


def _connect(client: Any, host: str, port: int, password: str | None) -> None:
    client.connect(host, port)
    if password:
        client.password(password)


def radio(
    host: Annotated[str | None, typer.Option(help="MPD host (default $MPD_HOST or localhost).")] = None,
    port: Annotated[int | None, typer.Option(help="MPD port (default $MPD_PORT or 6600).", min=1, max=65535)] = None,
    ahead: Annotated[int, typer.Option("--ahead", help="Songs to keep queued after the current one.")] = 5,
    max_per_artist: Annotated[
        int, typer.Option("--max-per-artist", help="At most this many songs by one artist from the current on.")
    ] = 2,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between checks of the queue.")] = 2.0,
) -> None:
    """Queue songs that sound like the one MPD is playing, after it; no repeats; stop with Ctrl-C or SIGTERM."""
    from mpd import ConnectionError as MpdConnectionError
    from mpd import MPDClient

    from pipelines.cli.console import quiet_clients
    from pipelines.settings import get_settings
    from serving import radio as station
    from serving.service import Recommender

    if interval <= 0:
        raise UserError(f"--interval must be above 0, got {interval}")
    serving = get_settings().serving
    if serving.music_folder is None:
        raise UserError("set MUSICREC_MUSIC_FOLDER to MPD's music_directory: songs are matched by path under it")
    host = host or os.environ.get("MPD_HOST", "localhost")
    password = None
    if "@" in host:  # MPD_HOST=password@host, as mpc reads it
        password, host = host.split("@", 1)
    if port is None:
        raw = os.environ.get("MPD_PORT", "6600")
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise UserError(f"MPD_PORT must be a port number, got {raw!r}")
        port = int(raw)
    client = MPDClient()
    client.timeout = 10
    try:
        _connect(client, host, port, password)
    except (MpdConnectionError, OSError) as exc:
        raise UserError(f"cannot connect to MPD at {host}:{port}: {exc}") from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def reconnect() -> None:
        with contextlib.suppress(MpdConnectionError, OSError):
            client.disconnect()
        _connect(client, host, port, password)

    quiet_clients()
    if not logging.getLogger().isEnabledFor(logging.INFO):  # without -v: still say what it queued and reconnects
        logging.getLogger(station.__name__).setLevel(logging.INFO)
    recommender = Recommender.from_settings(get_settings(), serving)
    try:
        session = station.Radio(client, recommender, serving.music_folder, ahead, max_per_artist)
        typer.echo(f"radio on MPD {host}:{port}: keeping {ahead} similar songs queued; Ctrl-C to stop")
        station.run(session, stop, interval, reconnect)
    finally:
        recommender.close()
        with contextlib.suppress(MpdConnectionError, OSError):
            client.close()
            client.disconnect()
        log.info("disconnected from MPD %s:%d", host, port)
    typer.echo(f"radio stopped: {session.queued} songs queued, MPD connection closed")


def register(app: typer.Typer) -> None:
    mpd_app = typer.Typer(help="MPD: a radio that follows what is playing.", no_args_is_help=True)
    mpd_app.command("radio")(radio)
    app.add_typer(mpd_app, name="mpd")
