#!/usr/bin/env python3
"""scripts/tb_export.py end to end, read back with TensorBoard's own EventAccumulator.

usage: check_tb_export.py <scripts/tb_export.py> <work dir>

1. A sweep folder with two fabricated runs, exported once: every scalar (tag, step, value) is in <run>/tb/;
   exporting again adds nothing.
2. --follow while lines are appended: a resumed run re-logging two steps with other values, new steps, a new run
   directory and a partial last line. The new values arrive, the re-logged steps hold the resumed values once,
   the new run is picked up, the partial line is not read; once completed, it is.
3. --logdir puts the events elsewhere; bad paths exit 2 with one line.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import time

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TOOL, WORK = sys.argv[1], sys.argv[2]
shutil.rmtree(WORK, ignore_errors=True)
SWEEP = os.path.join(WORK, "sweep")


def f32(x):
    """What a float becomes in an event's simple_value."""
    return struct.unpack("f", struct.pack("f", x))[0]


def record(kind, step, **fields):
    return json.dumps({"kind": kind, "step": step, **fields}) + "\n"


def train(step, loss):
    return record("train", step, epoch=step // 50, loss=loss, lr=1e-3 * step, pred_std=0.06 + step * 1e-5,
                  note="strings are not scalars")


def append(run, text):
    os.makedirs(os.path.join(SWEEP, run), exist_ok=True)
    with open(os.path.join(SWEEP, run, "metrics.jsonl"), "a") as f:
        f.write(text)


def expected_of(lines):
    """{tag: {step: value}} as the exporter should write it: later records of a step replace earlier ones."""
    out = {}
    for line in lines:
        r = json.loads(line)
        for k, v in r.items():
            if k in ("kind", "step") or isinstance(v, (str, bool)):
                continue
            if isinstance(v, dict):
                for k2, v2 in v.items():
                    out.setdefault(f"{r['kind']}/{k}/{k2}", {})[r["step"]] = f32(v2)
            else:
                out.setdefault(f"{r['kind']}/{k}", {})[r["step"]] = f32(v)
    return out


def read_back(tb_dir):
    acc = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    acc.Reload()
    got = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        assert len(steps) == len(set(steps)), f"{tb_dir} {tag}: a step appears twice: {steps}"
        got[tag] = {e.step: e.value for e in events}
    return got


def check(run, lines, tb_dir=None):
    tb_dir = tb_dir or os.path.join(SWEEP, run, "tb")
    got, want = read_back(tb_dir), expected_of(lines)
    assert got == want, f"{run}: read back\n{got}\nexpected\n{want}"
    return sum(len(v) for v in got.values())


def export(*args, expect=0):
    p = subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == expect, f"tb_export {args}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


# 1. one-shot export of two runs below a sweep folder
a_lines = [record("eval", 0, knn_mean_top1=44.5, knn_last_top1=23.6)] + [train(s, -0.5 - s / 1000) for s in
                                                                          (25, 50, 75, 100)]
b_lines = [train(s, -0.4 - s / 1000) for s in (25, 50)] + [record("eval", 50, top1=71.2, per_class={"0": 80.5})]
append("a", "".join(a_lines))
append("b", "".join(b_lines))
export(SWEEP)
n_a = check("a", a_lines)
check("b", b_lines)
assert n_a == 2 + 4 * 4, n_a
export(SWEEP)  # again: nothing new, nothing duplicated
check("a", a_lines)
check("b", b_lines)
print("one-shot export: every scalar read back; a second export adds nothing")

# 2. --follow while the runs go on
follower = subprocess.Popen([sys.executable, TOOL, SWEEP, "--follow", "--interval", "0.2", "--max-seconds", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
time.sleep(1.5)
# Run a was killed after step 100 and resumed from its checkpoint at step 50: it logs 75 and 100 again (other
# values, as a GPU run may) and goes on; its next line is still being written.
resumed = [train(75, -0.61), train(100, -0.62), train(125, -0.63)]
append("a", "".join(resumed))
partial = train(150, -0.64)
append("a", partial[:25])
append("c", "".join(c_lines := [train(25, -0.3), record("eval", 25, top1=12.5)]))
time.sleep(1.0)
append("b", "".join(b_more := [train(75, -0.47)]))
out, err = follower.communicate(timeout=30)
assert follower.returncode == 0, f"--follow: exit {follower.returncode}\n{out}\n{err}"
check("a", a_lines + resumed)
check("b", b_lines + b_more)
check("c", c_lines)
assert "following" in out and os.path.join(SWEEP, "c") in out, out
print("--follow: appended lines, the resumed run's re-logged steps and a new run arrived; the partial line did not")

append("a", partial[25:])
export(os.path.join(SWEEP, "a"))  # a run directory itself is a PATH too
check("a", a_lines + resumed + [partial])
print("the completed line arrived on the next export")

# 3. --logdir, bad input
logdir = os.path.join(WORK, "tb_all")
export(SWEEP, "--logdir", logdir)
check("a", a_lines + resumed + [partial], os.path.join(logdir, "sweep", "a"))
check("c", c_lines, os.path.join(logdir, "sweep", "c"))
for args, says in (([os.path.join(WORK, "missing")], "no such directory"),
                   ([os.path.join(SWEEP, "a", "tb")], "no metrics.jsonl")):
    p = export(*args, expect=2)
    assert p.stderr.count("\n") == 1 and says in p.stderr, p.stderr
print("--logdir and bad paths: OK")
