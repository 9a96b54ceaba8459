#!/usr/bin/env python3
"""Exports runs' metrics.jsonl to TensorBoard event files, once or following the files while the runs train.

    python scripts/tb_export.py runs/ --follow          # every run under runs/, new lines and new runs as they come
    tensorboard --logdir runs/                           # serves them (both in the setup.sh venv)

A PATH is a run directory (it holds metrics.jsonl) or any folder above run directories (a sweep, runs/): every
metrics.jsonl below it is one run (a fine-tune inside its pretraining run is a run of its own). Each record
{"kind": K, "step": S, KEY: VALUE, ...} becomes one scalar per numeric KEY, tagged K/KEY (train/loss, train/lr,
eval/knn_last_top1, ...) at step S; nested objects give K/KEY/SUBKEY; strings, lists, booleans and null (how the
C++ writer spells NaN) are not scalars and are left out. A record without an integer step is reported and
skipped, as is a complete line that is not JSON.

Events go to <run>/tb/ (so `tensorboard --logdir runs/` shows every run), or with --logdir DIR to
DIR/<PATH's folder name>/<run's path below PATH>/. The exporter owns those folders: one events file per run, appended
to by later exports, with its progress in .tb_export_state.json beside it, so exporting again (once or
following) writes only what is new and never duplicates a point. Only complete lines are read: a partial last
line waits until its newline arrives. A resumed run logs again the steps after its checkpoint: when a tag's step
does not advance, the exporter writes a SessionLog START at that step first, TensorBoard's own way of saying a
job restarted there, and TensorBoard drops the older points from that step on (the resumed run's values win).
A metrics.jsonl that became shorter than what was exported (a run directory started over) is exported anew.

Uses the tensorboard package's own record writer and Event protos (no TensorFlow, no torch).
"""
import argparse
import json
import os
import socket
import sys
import time

try:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter
except ImportError:
    sys.exit("tb_export: the tensorboard package is missing: use the venv of scripts/setup.sh "
             "(~/.cache/nepa/venv/bin/python) or pip install tensorboard")

STATE_FILE = ".tb_export_state.json"
SKIP_DIRS = {"tb", "checkpoints"}  # never hold a run's own metrics.jsonl; skipping them keeps scans cheap


def log(message):
    print(f"tb_export: {message}", flush=True)


def warn(message):
    print(f"tb_export: warning: {message}", file=sys.stderr, flush=True)


def find_runs(root):
    """Run directories at or below root: the folders holding a metrics.jsonl."""
    runs = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        if "metrics.jsonl" in files:
            runs.append(folder)
    return runs


def scalars(record, prefix):
    """(tag, value) for every numeric field of record under prefix, nested objects flattened with '/'."""
    for key, value in record.items():
        tag = f"{prefix}/{key}"
        if isinstance(value, dict):
            yield from scalars(value, tag)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield tag, float(value)


class RunExporter:
    """One run: its metrics.jsonl read from the last exported byte, appended to its events file."""

    def __init__(self, run_dir, out_dir):
        self.metrics = os.path.join(run_dir, "metrics.jsonl")
        self.out_dir = out_dir
        self.state_path = os.path.join(out_dir, STATE_FILE)
        self.writer = None
        self.state = self._load_state()

    def _load_state(self):
        try:
            with open(self.state_path) as f:
                state = json.load(f)
            events = os.path.join(self.out_dir, state["events_file"])
            if os.path.getsize(events) >= state["events_bytes"]:
                # Bytes past the recorded length were written after the last saved state (the exporter was
                # killed in between): cut them, so that they are written again exactly once.
                os.truncate(events, state["events_bytes"])
                return state
            warn(f"{events} is shorter than {self.state_path} says: exporting {self.metrics} anew")
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            warn(f"{self.state_path} is unreadable ({e}): exporting {self.metrics} anew")
        return self._fresh_state()

    def _fresh_state(self):
        """Removes this exporter's earlier events files and starts a new one with its file-version header."""
        if self.writer:
            self.writer.close()
            self.writer = None
        os.makedirs(self.out_dir, exist_ok=True)
        for name in os.listdir(self.out_dir):
            if ".tfevents." in name or name == STATE_FILE:
                os.remove(os.path.join(self.out_dir, name))
        now = time.time()
        name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.tb_export"
        with open(os.path.join(self.out_dir, name), "wb") as f:
            RecordWriter(f).write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        state = {"events_file": name, "events_bytes": os.path.getsize(os.path.join(self.out_dir, name)),
                 "offset": 0, "line": 0, "last_step": {}}
        self._save_state(state)
        return state

    def _save_state(self, state):
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.state_path)

    def poll(self):
        """Exports the complete lines added since the last poll; returns how many scalars were written."""
        try:
            size = os.path.getsize(self.metrics)
        except FileNotFoundError:
            return 0
        if size < self.state["offset"]:
            warn(f"{self.metrics} is shorter than what was exported ({size} < {self.state['offset']} bytes): "
                 "the run started over, exporting it anew")
            self.state = self._fresh_state()
        if size == self.state["offset"]:
            return 0
        with open(self.metrics, "rb") as f:
            f.seek(self.state["offset"])
            chunk = f.read(size - self.state["offset"])
        end = chunk.rfind(b"\n")
        if end < 0:
            return 0  # only a partial line so far
        if self.writer is None:
            self.file = open(os.path.join(self.out_dir, self.state["events_file"]), "ab")
            self.writer = RecordWriter(self.file)
        written, last_step = 0, self.state["last_step"]
        for raw in chunk[: end + 1].split(b"\n")[:-1]:
            self.state["line"] += 1
            where = f"{self.metrics}:{self.state['line']}"
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as e:
                warn(f"{where}: not JSON ({e}), skipped")
                continue
            step = record.get("step") if isinstance(record, dict) else None
            if not isinstance(step, int) or isinstance(step, bool):
                warn(f"{where}: no integer \"step\", skipped")
                continue
            kind = record.get("kind", "metrics")
            values = list(scalars({k: v for k, v in record.items() if k not in ("kind", "step")}, str(kind)))
            if any(last_step.get(tag, -1) >= step for tag, _ in values):
                # A resumed run logging again from its checkpoint: TensorBoard drops what it had from here on.
                self.writer.write(event_pb2.Event(wall_time=time.time(), step=step, session_log=event_pb2.SessionLog(
                    status=event_pb2.SessionLog.START)).SerializeToString())
                for tag in [t for t, s in last_step.items() if s >= step]:
                    del last_step[tag]
            if values:
                summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t, simple_value=v)
                                                     for t, v in values])
                self.writer.write(event_pb2.Event(wall_time=time.time(), step=step,
                                                  summary=summary).SerializeToString())
            for tag, _ in values:
                last_step[tag] = step
            written += len(values)
        self.writer.flush()
        os.fsync(self.file.fileno())  # the events on disk before the state that counts them
        self.state["offset"] += end + 1
        self.state["events_bytes"] = os.path.getsize(os.path.join(self.out_dir, self.state["events_file"]))
        self._save_state(self.state)
        return written

    def close(self):
        if self.writer:
            self.writer.close()
            self.writer = None


def out_dir_for(root, run, logdir):
    if logdir is None:
        return os.path.join(run, "tb")
    base = os.path.basename(os.path.abspath(root))
    rel = os.path.relpath(run, root)
    return os.path.normpath(os.path.join(logdir, base, rel))


def main(argv=None):
    parser = argparse.ArgumentParser(description="metrics.jsonl -> TensorBoard event files (see the module doc)")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run directory or a folder above run directories")
    parser.add_argument("--logdir", help="write events under this folder instead of each run's tb/")
    parser.add_argument("--follow", action="store_true", help="keep exporting new lines and new runs until killed")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls with --follow")
    parser.add_argument("--max-seconds", type=float, default=0.0,
                        help="with --follow: stop after this many seconds (0 = never; for tests)")
    args = parser.parse_args(argv)
    for p in args.paths:
        if not os.path.isdir(p):
            print(f"tb_export: {p}: no such directory", file=sys.stderr)
            return 2
    if args.interval <= 0 or args.max_seconds < 0:
        print("tb_export: --interval must be positive and --max-seconds non-negative", file=sys.stderr)
        return 2

    exporters = {}

    def scan():
        for root in args.paths:
            for run in find_runs(root):
                key = os.path.realpath(run)
                if key not in exporters:
                    exporters[key] = RunExporter(run, out_dir_for(root, run, args.logdir))
                    if args.follow:
                        log(f"following {exporters[key].metrics} -> {exporters[key].out_dir}")

    def poll_all():
        total = 0
        for e in exporters.values():
            n = e.poll()
            total += n
            if n and not args.follow:
                log(f"{e.metrics}: {n} scalars -> {e.out_dir}")
        return total

    scan()
    if not exporters and not args.follow:
        print(f"tb_export: no metrics.jsonl under {', '.join(args.paths)}", file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        written = poll_all()
        if not args.follow:
            log(f"{len(exporters)} runs, {written} new scalars")
        while args.follow and not (args.max_seconds and time.monotonic() - start >= args.max_seconds):
            time.sleep(args.interval)
            scan()
            poll_all()
    except KeyboardInterrupt:
        pass  # Ctrl-C ends --follow; everything exported so far is flushed and recorded
    finally:
        for e in exporters.values():
            e.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
