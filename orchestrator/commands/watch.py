"""`orchestrator watch`: a campaign's runs, one line each, live from the registry; a summary at the end."""
from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone

from orchestrator.commands import DEFAULT_REGISTRY, open_existing


def register(sub) -> None:
    p = sub.add_parser("watch", help="one line per run (step, loss, latest WERs, ETA), live; a summary at the end")
    p.add_argument("--registry", default=DEFAULT_REGISTRY)
    p.add_argument("--since", help="runs started at or after this time (ISO 8601, UTC unless it says; default: all)")
    p.add_argument("--sweep", help="only the runs of this sweep")
    p.add_argument("--every", type=float, default=2.0, help="seconds between looks (default: %(default)s)")
    p.add_argument("--while-pid", type=int, action="append", default=[], metavar="PID",
                   help="watch until these processes have ended (repeatable); default: until no run is running")
    p.add_argument("--once", action="store_true", help="print the lines once and stop")
    p.add_argument("--summary", action="store_true", help="at the end, each run's verdict and the seed groups")


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    from orchestrator.errors import ConfigError

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r} is not an ISO 8601 time", where="--since",
                          fix="e.g. --since 2026-12-07T14:05:00 (UTC), or $(date -u +%FT%T)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (an exited child its parent has not reaped yet counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rpartition(")")[2].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for_registry(args):
    """The registry; while a process it waits for is alive, a registry not made yet is waited for
    (the campaign it watches creates it with its first run)."""
    from orchestrator.errors import RegistryError

    while True:
        try:
            return open_existing(args.registry)
        except RegistryError:
            if args.once or not any(_alive(pid) for pid in args.while_pid):
                raise
            time.sleep(args.every)


def run(args) -> None:
    from orchestrator.registry import RunStatus
    from orchestrator.registry.liveness import settle
    from orchestrator.report.progress import progress_table, summary_table

    since = _since(args.since)
    store = _wait_for_registry(args)
    tty = sys.stdout.isatty()
    drawn, shown, last_print = 0, None, 0.0

    def look():
        runs = store.list_runs(since=since) if args.sweep is None else store.list_runs(sweep_id=args.sweep)
        return [r for r in settle(runs) if since is None or r.started_at >= since]

    try:
        while True:
            runs = look()
            table = progress_table(runs) if runs else "(no run yet)"
            if tty:  # redraw in place
                sys.stdout.write(f"\x1b[{drawn}F\x1b[J" if drawn else "")
                sys.stdout.write(table + "\n")
                drawn = table.count("\n") + 1
            else:  # a log: print when a run moved on (interval, status), or every minute
                state = [(r.id, r.status, len(r.intervals), r.progress_phase) for r in runs]
                if state != shown or time.monotonic() - last_print >= 60:
                    print(table + "\n", flush=True)
                    shown, last_print = state, time.monotonic()
            sys.stdout.flush()
            running = any(r.status == RunStatus.RUNNING for r in runs)
            waiting = any(_alive(pid) for pid in args.while_pid)
            if args.once or not (waiting if args.while_pid else running):
                break
            time.sleep(args.every)
    except KeyboardInterrupt:
        pass
    runs = look()
    if not tty and not args.once:
        print(progress_table(runs) if runs else "(no run)")
    if args.summary and runs:
        print("\n" + summary_table(runs, store))
    store.close()
