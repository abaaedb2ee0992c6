"""Uploads decoded in child processes under a deadline, so a file that hangs or crashes a decoder costs its
request only.

The children are the feature build's (:class:`pipelines.features.worker.EmbedWorker`): the same front end,
the same audio rule, the same verdicts. A few stay alive between requests (starting one costs about a
second); one that runs past the deadline is killed and replaced by the next request that needs it.
Uploaded bytes are written to a private spool folder first, because the child reads files.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from pipelines.audio import AudioRejected, RejectReason
from pipelines.features.frontend import TrackVector
from pipelines.features.params import FeatureParams
from pipelines.features.worker import EmbedWorker
from serving.errors import InsufficientStorage

log = logging.getLogger(__name__)


class DecodePool:
    """At most ``size`` decodes at once, each in a child process and over after ``timeout_s``."""

    def __init__(self, max_bytes: int, timeout_s: float, size: int = 2, spool_dir: Path | None = None) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[EmbedWorker] = []
        self._own_spool = spool_dir is None
        self._spool = spool_dir
        self.timeouts = 0
        self._warming: list[tuple[EmbedWorker, threading.Thread]] = []

    def spool(self) -> Path:
        """The folder uploads are written to (private to this user)."""
        with self._lock:
            if self._spool is None:
                self._spool = Path(tempfile.mkdtemp(prefix="musicrec-uploads-"))
            self._spool.mkdir(mode=0o700, parents=True, exist_ok=True)
            return self._spool

    def prestart(self, params: FeatureParams) -> None:
        """Start a child for ``params`` in the background now (imports and warm-up take seconds), so that a
        one-shot command's first decode finds it ready while the command meanwhile talks to Milvus."""
        worker = EmbedWorker(params, self.max_bytes, self.timeout_s)
        thread = threading.Thread(target=self._warm, args=(worker,), name="decode-prestart", daemon=True)
        with self._lock:
            self._warming.append((worker, thread))
        thread.start()

    @staticmethod
    def _warm(worker: EmbedWorker) -> None:
        try:
            worker.start()
        except Exception as exc:  # the decode starts a child itself then, and reports what fails
            log.info("decoding child did not start ahead of use: %s", exc)

    def _take(self, params: FeatureParams) -> EmbedWorker:
        warming = None
        with self._lock:
            for i, worker in enumerate(self._idle):
                if worker.params == params:
                    return self._idle.pop(i)
            for i, (worker, _) in enumerate(self._warming):
                if worker.params == params:
                    warming = self._warming.pop(i)
                    break
        if warming is not None:
            warming[1].join()
            return warming[0]
        return EmbedWorker(params, self.max_bytes, self.timeout_s)

    def _give(self, worker: EmbedWorker) -> None:
        with self._lock:
            self._idle.append(worker)
            extra = self._idle[: max(0, len(self._idle) - self.size)]
            del self._idle[: len(extra)]
        for old in extra:
            old.close()

    def vector_of_file(self, path: Path, params: FeatureParams) -> TrackVector:
        """The front-end vector of ``path``; :class:`AudioRejected` for bad audio or a decode over the deadline."""
        with self._slots:
            worker = self._take(params)
            try:
                outcome = worker.embed(str(path))
            finally:
                self._give(worker)
        if outcome.ok:
            assert outcome.vector is not None
            return TrackVector(outcome.vector, outcome.frames_real)
        if outcome.reason == RejectReason.TIMEOUT:
            self.timeouts += 1
        raise AudioRejected(RejectReason(outcome.reason), outcome.detail)

    def vector_of_bytes(self, data: bytes, params: FeatureParams) -> TrackVector:
        """:meth:`vector_of_file` for uploaded bytes (spooled to a file that is removed afterwards)."""
        spool = self.spool()
        name = ""
        try:
            fd, name = tempfile.mkstemp(dir=spool, suffix=".upload")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            if name:
                Path(name).unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage(
                    f"no room to spool the upload ({len(data)} bytes) in {spool}: the disk is full; "
                    "free space there or set MUSICREC_SERVING_UPLOAD_DIR to a folder with room"
                ) from None
            raise
        try:
            return self.vector_of_file(Path(name), params)
        finally:
            Path(name).unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            warming, self._warming = self._warming, []
        for worker, thread in warming:
            thread.join()
            worker.close()
        for worker in idle:
            worker.close()
        if self._own_spool and self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
