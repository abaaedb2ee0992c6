"""The online commands ``recommend``, ``playlist`` and ``serve``, and the ``musicrec`` entry point.

:func:`main` mounts these (and ``mpd radio``) on the offline app of :mod:`pipelines.cli.app`, so there is
one ``musicrec``. Errors are :class:`~pipelines.errors.UserError`, printed as one line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipelines.cli.console import quiet_clients
from pipelines.errors import UserError, one_line

if TYPE_CHECKING:  # serving.service imports librosa and numpy: only load it when a command runs
    import uvicorn

    from pipelines.settings import ServingSettings
    from serving.service import Answer, Filters, Recommender


def _filters(style: str | None, dupes: bool, per_source: int | None, per_artist: int | None) -> Filters:
    from serving.service import Filters

    return Filters(style, not dupes, per_source, per_artist)


_STYLE = typer.Option("--style", help="Only tracks of this style.")
_PER_SOURCE = typer.Option("--max-per-source", help="At most this many tracks per source.")
_PER_ARTIST = typer.Option("--max-per-artist", help="At most this many tracks per artist.")
_DUPES = typer.Option("--duplicates/--no-duplicates", help="Allow exact copies (same sha256) of the query.")


def _print(answer: Answer, header: str) -> None:
    typer.echo(f"{one_line(header)} (collection {answer.collection}, model {answer.model_version}):")
    if not answer.results:
        typer.echo("  no tracks match the filters")
    for rank, rec in enumerate(answer.results, 1):
        title = f"  {one_line(rec.title)}" if rec.title else ""
        typer.echo(f"{rank:>4}  {rec.distance:.4f}  {one_line(rec.style):<18} {one_line(rec.track_id)}{title}")


def _recommender(decoding: bool = False) -> Recommender:
    """Built on demand: importing pymilvus and the front end would slow down every `musicrec --help`.

    ``decoding``: the command will decode audio; the decoding child (seconds of imports and warm-up) starts
    now, while this process imports the Milvus client and looks the collection up. A collection made with
    other feature parameters than the configured ones simply starts its own child.
    """
    from pipelines.settings import get_settings
    from serving.service import Recommender

    rec = Recommender.from_settings(get_settings())
    if decoding:
        rec.decoder.prestart(rec.settings.features)
    quiet_clients()
    return rec


def recommend(
    track_id: Annotated[str | None, typer.Argument(help="A catalogue track id.")] = None,
    audio: Annotated[Path | None, typer.Option("--audio", help="An audio file to find similar tracks to.")] = None,
    k: Annotated[int, typer.Option("-k", help="How many recommendations.")] = 10,
    style: Annotated[str | None, _STYLE] = None,
    max_per_source: Annotated[int | None, _PER_SOURCE] = None,
    max_per_artist: Annotated[int | None, _PER_ARTIST] = None,
    duplicates: Annotated[bool, _DUPES] = False,
    examples: Annotated[
        int,
        typer.Option(
            "--examples", help="Instead: N catalogue tracks (styles in turn) and the same-style share of the top k."
        ),
    ] = 0,
) -> None:
    """Tracks that sound like TRACK_ID (or like --audio FILE), nearest first, with cosine distances."""
    if examples:
        _examples(examples, k)
        return
    if (track_id is None) == (audio is None):
        raise UserError("give either a TRACK_ID or --audio FILE")
    filters = _filters(style, duplicates, max_per_source, max_per_artist)
    rec = _recommender(decoding=audio is not None)
    try:
        if audio is not None:
            _print(rec.similar_file(audio, k, filters), f"similar to {audio}")
        else:
            assert track_id is not None
            _print(rec.similar(track_id, k, filters), f"similar to {track_id}")
    finally:
        rec.close()


def _examples(n: int, k: int) -> None:
    """What `make run` ends with: a few tracks' recommendations, the quality number, how to go on."""
    from pipelines.index import quality

    rec = _recommender()
    try:
        for track_id in quality.example_tracks(rec.index, rec.collection(fresh=True), n):
            _print(rec.similar(track_id, k), f"similar to {track_id}")
            typer.echo("")
        share, tracks = quality.style_agreement(rec.index, rec.collection(fresh=True), k)
        raw = quality.raw_baseline_agreement(rec.settings, rec.collection(fresh=True), k)
        meta = rec.collection()
    finally:
        rec.close()
    typer.echo(
        f"same-style share of the top {k} over all {tracks} tracks: {share:.3f} "
        f"(model {meta.model_version}, collection {meta.name}); raw-MFCC baseline: "
        + (f"{raw:.3f}" if raw is not None else "n/a (its feature version is not in the store)")
    )
    serving = rec.serving
    url = f"http://{serving.serving_host}:{serving.serving_port}"
    typer.echo(f"start the API: musicrec serve   (then {url}/docs, e.g. GET {url}/tracks/{{track_id}}/similar?k=10)")


def playlist(
    seeds: Annotated[list[str], typer.Argument(help="One or more seed track ids.")],
    length: Annotated[int, typer.Option("--length", "-n", help="Tracks in the playlist.")] = 20,
    style: Annotated[str | None, _STYLE] = None,
    max_per_source: Annotated[int | None, _PER_SOURCE] = None,
    max_per_artist: Annotated[int | None, _PER_ARTIST] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Instead: a path from the one seed to this track through neighbours.")
    ] = None,
    minutes: Annotated[
        float | None, typer.Option("--minutes", min=0.1, help="Target duration: stop once it is reached.")
    ] = None,
    write: Annotated[
        str | None, typer.Option("--write", help="Write the playlist as NAME into MUSICREC_PLAYLIST_DIR.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="m3u8, xspf, or m3u (M3U8 text named for MPD).")] = "m3u8",
    paths: Annotated[
        str | None,
        typer.Option(
            "--paths",
            help="relative (to the playlist file), absolute, or music (relative to MUSICREC_MUSIC_FOLDER); "
            "default: music for m3u (what MPD loads), relative otherwise.",
        ),
    ] = None,
) -> None:
    """A playlist near the SEEDS (each seed in turn adds its nearest unused track; no repeats), or a path."""
    from serving import playlists

    formats: dict[str, playlists.Format] = {"m3u8": "m3u8", "m3u": "m3u", "xspf": "xspf"}
    styles: dict[str, playlists.PathStyle] = {"relative": "relative", "absolute": "absolute", "music": "music"}
    if fmt not in formats:
        raise UserError(f"--format must be m3u8, m3u or xspf, got {fmt!r}")
    if paths is not None and paths not in styles:
        raise UserError(f"--paths must be relative, absolute or music, got {paths!r}")
    rec = _recommender()
    try:
        if to is not None:
            if len(seeds) != 1:
                raise UserError("--to needs exactly one seed (the start of the path)")
            walk = rec.path(seeds[0], to, steps=max(1, min(50, length - 2)))
            ids = [step.track.track_id for step in walk.steps]
            header = f"path from {seeds[0]} to {to}"
            answer = None
        else:
            n = rec.serving.serving_max_playlist if minutes else length
            answer = rec.playlist(seeds, n, _filters(style, False, max_per_source, max_per_artist))
            ids = [r.track_id for r in answer.results]
            header = f"playlist from {', '.join(dict.fromkeys(seeds))}"
        items = playlists.entries(rec.library(), ids)
        if minutes:
            items = playlists.within_duration(items, minutes * 60)
            ids = ids[: len(items)]
        serving = rec.serving
    finally:
        rec.close()
    if answer is not None:
        _print(answer.__class__(**{**answer.__dict__, "results": answer.results[: len(ids)]}), header)
    else:
        typer.echo(f"{header}:")
        for rank, track_id in enumerate(ids, 1):
            typer.echo(f"{rank:>4}  {one_line(track_id)}")
    if minutes or write is not None:
        total = sum(item.duration_s or 0.0 for item in items)
        typer.echo(f"{len(items)} tracks, {total / 60:.1f} min")
    if write is not None:
        target = playlists.write_playlist(
            items,
            serving.playlist_dir,
            write,
            formats[fmt],
            styles[paths] if paths else playlists.default_style(formats[fmt], serving.music_folder),
            serving.music_folder,
        )
        typer.echo(f"wrote {target}")


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (MUSICREC_SERVING_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (MUSICREC_SERVING_PORT).")] = None,
    milvus_server: Annotated[
        bool | None,
        typer.Option(
            "--milvus-server/--no-milvus-server",
            help="Run `milvus-lite server` on the local Milvus Lite folder so refreshes can run meanwhile.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option("--workers", min=1, help="Worker processes (metrics summed over them); all share one Milvus."),
    ] = 1,
) -> None:
    """Start the HTTP API (docs at /docs). Keeps answering while `musicrec index refresh` runs."""
    import uvicorn

    from pipelines.index.lite_server import LiteServer, is_remote, replace_orphan, resolve_uri
    from pipelines.settings import get_settings
    from serving.observability import log_config, prepare_multiprocess_dir

    quiet_clients()
    settings = get_settings()
    serving = settings.serving
    host, port = host or serving.serving_host, port or serving.serving_port
    if not is_loopback(host) and serving.serving_api_key is None:
        raise UserError(
            f"refusing to serve on {host} without an API key: set MUSICREC_SERVING_API_KEY (clients send it as "
            "X-API-Key), or bind a loopback address such as 127.0.0.1"
        )
    start = serving.serving_start_milvus if milvus_server is None else milvus_server
    server = None
    if start and not is_remote(settings.paths.milvus_uri):
        if (orphan := replace_orphan(Path(settings.paths.milvus_uri))) is not None:
            typer.echo(f"stopped milvus-lite server {orphan}, left running by a `musicrec serve` that died")
        if resolve_uri(settings.paths.milvus_uri) == settings.paths.milvus_uri:
            server = LiteServer(Path(settings.paths.milvus_uri))
            typer.echo(f"starting milvus-lite server for {settings.paths.milvus_uri} ...")
            server.start()
            server.keep_alive()
            typer.echo(f"milvus-lite server at {server.uri} (other musicrec commands find it by themselves)")
    if (
        not is_remote(settings.paths.milvus_uri)
        and (address := resolve_uri(settings.paths.milvus_uri)) != settings.paths.milvus_uri
    ):
        # Talk to the server by its address: if it dies, requests get 503 until it is back, instead of
        # this process opening (and locking) the folder itself. Worker processes read it from the environment.
        settings = settings.model_copy(update={"paths": settings.paths.model_copy(update={"milvus_uri": address})})
        os.environ["MUSICREC_MILVUS_URI"] = address
    cleanup = prepare_multiprocess_dir(workers)
    try:
        each = f" with {workers} workers" if workers > 1 else ""
        typer.echo(f"serving on http://{host}:{port}{each} (API docs: http://{host}:{port}/docs); Ctrl+C stops")
        options = {"host": host, "port": port, **server_options(serving), "access_log": False}
        options["log_config"] = log_config(logging.getLogger().getEffectiveLevel())
        if workers > 1:  # each worker process builds its own app from the same environment
            uvicorn.run("serving.api:create_app", factory=True, workers=workers, **options)
        else:
            from serving.api import create_app

            uvicorn.run(create_app(settings, serving), **options)
    finally:
        cleanup()
        if server is not None:
            server.stop()


def server_config(app: object, host: str, port: int, serving: ServingSettings) -> uvicorn.Config:
    """uvicorn's settings for the API: idle keep-alive connections and a stop are both bounded."""
    import uvicorn

    # app is any ASGI app; uvicorn's hint names its own union of app types
    return uvicorn.Config(app, host=host, port=port, **server_options(serving))  # type: ignore[arg-type]


def server_options(serving: ServingSettings) -> dict[str, Any]:
    """uvicorn options every API process gets: idle keep-alive connections, slow request headers and a stop
    are all bounded."""
    from serving.connections import HeaderDeadlineProtocol, set_header_timeout

    set_header_timeout(serving.serving_header_timeout_s)
    return {
        "http": HeaderDeadlineProtocol,
        "log_level": "warning",
        "timeout_keep_alive": serving.serving_keep_alive_s,
        "timeout_graceful_shutdown": serving.serving_graceful_stop_s,
    }


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    """Add the online commands to ``app``."""
    app.command()(recommend)
    app.command()(playlist)
    app.command()(serve)


def musicrec_app() -> typer.Typer:
    """The one ``musicrec`` app: the offline commands of :mod:`pipelines.cli.app` with the online ones added."""
    from pipelines.cli.app import app
    from serving import cli_mpd

    if not any(command.callback is serve for command in app.registered_commands):
        register(app)
        cli_mpd.register(app)
    return app


def main() -> None:
    """The ``musicrec`` entry point."""
    from pipelines.cli.app import run

    run(musicrec_app())
