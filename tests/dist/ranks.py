"""Starting an executable as N data-parallel ranks on this machine, as torchrun would, for the CLI tests."""
import os
import socket
import subprocess
import sys


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(exe, args, n, per_rank_args=None, port=None):
    """Starts n ranks with torchrun's environment variables, without torchrun."""
    port = port or free_port()
    procs = []
    for r in range(n):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(n), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(n),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        extra = per_rank_args[r] if per_rank_args else []
        procs.append(subprocess.Popen([exe] + args + extra, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def finish(procs, timeout):
    """Waits for every rank; returns (exit codes, outputs). A rank still running after `timeout` fails the test."""
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            sys.exit("FAIL: a rank hung:\n" + (p.communicate()[0] or ""))
        outs.append(out)
    return [p.returncode for p in procs], outs
