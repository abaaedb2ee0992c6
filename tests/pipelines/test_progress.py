"""Progress lines for long stages: counts, percentage and throughput in the log, not only on a terminal."""

from __future__ import annotations

import logging
import re
import threading

from pipelines.progress import ProgressLog

log = logging.getLogger("tests.progress")


def test_lines_report_done_total_percent_and_rate(caplog) -> None:
    caplog.set_level(logging.INFO, logger="tests.progress")
    meter = ProgressLog("import lib", 4, log, unit="files", every_s=0.0)
    meter.add()
    meter.add(2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[-1].startswith("import lib: 3/4 files (75%), ")
    assert re.search(r"\d+\.\d files/s", lines[-1]) and "s left" in lines[-1]


def test_iterate_yields_everything_and_logs_one_final_line(caplog) -> None:
    caplog.set_level(logging.INFO, logger="tests.progress")
    meter = ProgressLog("features", 5, log, every_s=3600.0)  # no interval line within this test
    assert list(meter.iterate(range(5))) == [0, 1, 2, 3, 4]
    meter.finish()  # a second finish adds nothing
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("features: 5/5 tracks (100%)") and "left" not in lines[0]


def test_counts_from_many_threads_add_up() -> None:
    meter = ProgressLog("shards", 4000, log, every_s=3600.0)

    def work() -> None:
        for _ in range(1000):
            meter.add()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert meter.done == 4000 and meter.rate() > 0
