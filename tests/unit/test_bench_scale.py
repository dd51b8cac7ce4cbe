"""The scale benchmark's bookkeeping (bench/scale.py): reading logs from a mark, /proc readings, the lines."""

from __future__ import annotations

import os
from pathlib import Path

from bench.scale import LogCursor, Stage, lines, usage_of


def test_a_log_cursor_reads_only_what_was_appended_and_waits_for_a_half_written_line(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    log.write_text('{"n": 1}\n')
    cursor = LogCursor(log)
    with log.open("a") as out:
        out.write('{"n": 2}\n{"n": ')

    assert cursor.read() == [{"n": 2}]

    with log.open("a") as out:
        out.write("3}\n")
    assert cursor.read() == [{"n": 3}]
    assert cursor.read() == []


def test_usage_of_this_process_reads_peak_rss_at_least_current_rss() -> None:
    usage = usage_of(os.getpid())

    assert usage.peak_rss_bytes >= usage.rss_bytes > 0
    assert usage.cpu_seconds > 0


def test_lines_give_per_object_costs_and_the_rss_slope_between_sizes(tmp_path: Path) -> None:
    stage = Stage(world=None, work=tmp_path, sizes=(1000, 3000))  # type: ignore[arg-type]
    stage.record("converge_1000", peak_rss_mb=200.0, writes_to_converge=4000, aws_calls=3000)
    stage.record("converge_3000", peak_rss_mb=300.0, writes_to_converge=9000, aws_calls=9000)

    found = {line.name: line for line in lines(stage)}

    assert found["scale.writes_per_created_1000"].ours == 4.0
    assert not found["scale.writes_per_created_1000"].met
    assert found["scale.writes_per_created_3000"].met
    assert found["scale.aws_calls_per_created_3000"].ours == 3.0
    # (300 - 200) MB over 2,000 objects: 50 KB per object, against a target of 10.
    slope = found["scale.rss_slope_1000_3000"]
    assert (slope.ours, slope.unit, slope.met) == (50.0, "KB/object", False)
