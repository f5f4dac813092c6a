"""`tkcloud export`: one app's events to a file (or stdout), streamed chunk by chunk.

The export runs as an operator, through the same use case as `GET .../events/export`: every
refusal (no such app, Parquet on the Free plan, a bad range) happens before a file is created.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from tkcloud_api.cli.common import command, run, service
from tkcloud_api.container import Container
from tkcloud_api.settings import Settings
from tkcloud_application.analytics.explorer import EventExport, ExportFormat
from tkcloud_domain.identity import OperatorPrincipal

OPERATOR = OperatorPrincipal()
STDOUT = "-"
PROGRESS_INTERVAL = 0.1  # seconds: at most ten redraws a second


def register(sub: Any) -> None:
    p = command(sub, "export", export, "export one app's events (CSV, NDJSON or Parquet)")
    p.add_argument("app_id")
    p.add_argument(
        "--format",
        choices=[f.value for f in ExportFormat],
        default=ExportFormat.CSV.value,
        help="csv (default), json (one event per line) or parquet (Pro plan and above)",
    )
    p.add_argument(
        "--from", dest="start", type=_rfc3339, metavar="RFC3339", help="default: 30 days ago"
    )
    p.add_argument("--to", dest="end", type=_rfc3339, metavar="RFC3339", help="default: now")
    p.add_argument(
        "--output",
        "-o",
        metavar="PATH",
        help="default: the export's own file name in the current folder; '-' for stdout",
    )


def _rfc3339(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an RFC 3339 time such as 2026-01-31T00:00:00Z, got {text!r}"
        ) from None


class Progress:
    """Bytes written and time elapsed on one redrawn stderr line, when stderr is a terminal."""

    def __init__(
        self,
        stream: IO[str],
        *,
        live: bool,
        now: Callable[[], float] = time.monotonic,
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self._stream = stream
        self._live = live
        self._now = now
        self._interval = interval
        self._started = now()
        self._drawn_at: float | None = None
        self.bytes = 0

    @property
    def elapsed(self) -> float:
        return self._now() - self._started

    def add(self, count: int) -> None:
        self.bytes += count
        if not self._live:
            return
        moment = self._now()
        if self._drawn_at is None or moment - self._drawn_at >= self._interval:
            self._drawn_at = moment
            self._stream.write(f"\r{human_size(self.bytes)} written, {self.elapsed:.1f} s\x1b[K")
            self._stream.flush()

    def finish(self, summary: str) -> None:
        if self._live and self._drawn_at is not None:
            self._stream.write("\r\x1b[K")
        self._stream.write(summary + "\n")
        self._stream.flush()


def human_size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


async def _write(chunks: EventExport, sink: IO[bytes], progress: Progress) -> None:
    async for chunk in chunks:
        sink.write(chunk)
        progress.add(len(chunk))
    sink.flush()


def export(args: argparse.Namespace, settings: Settings) -> int:
    progress = Progress(sys.stderr, live=sys.stderr.isatty())
    to_stdout = args.output == STDOUT
    into_folder = args.output is not None and Path(args.output).is_dir()

    async def work(c: Container) -> Path | None:
        explorer = await service(c, "explorer")
        found: EventExport = await explorer.export(
            OPERATOR, args.app_id, args.format, args.start, args.end
        )
        if to_stdout:
            await _write(found, sys.stdout.buffer, progress)
            return None
        target = Path(args.output or found.filename)
        if into_folder:
            target /= found.filename
        # A partial file never takes the final name: a failed export leaves nothing behind.
        partial = target.with_name(f".{target.name}.part")
        try:
            with partial.open("wb") as sink:
                await _write(found, sink, progress)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    try:
        target = run(settings, work)
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): not an error of ours, but not a full export.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # the database's own are ServiceUnavailable by now: this is the file
        print(f"error: cannot write {exc.filename or args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    path = STDOUT if target is None else str(target.resolve())
    where = "stdout" if target is None else path
    progress.finish(
        f"Exported {human_size(progress.bytes)} of {args.format} to {where} "
        f"in {progress.elapsed:.1f} s"
    )
    if args.json:
        data = {"path": path, "bytes": progress.bytes, "format": args.format}
        # With the events on stdout, the report goes to stderr so that the data stays clean.
        print(json.dumps(data, indent=2), file=sys.stderr if to_stdout else sys.stdout)
    return 0
