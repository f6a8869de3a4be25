"""Faults of the cluster a sweep runs on, each told in one line with what to do.

    try:
        tuner.fit()
    except Exception as e:
        raise_if_node_died(e)     # the driver's Ray node died: SweepInterrupted, exit 75, says --resume
        raise
    warn_if_unauthenticated(address)   # after ray.init: one line if the cluster takes anyone's jobs
    watch_for_node_death()             # before ray.init: Ray's C++ side may end the process itself

When the driver's own Ray node dies (its raylet or object store killed), Ray's C++ core usually ends
the driver process at once ("the connection to the plasma store is failed. Terminate the process"):
no Python handler runs, the sweep exits 1 with Ray's log lines and no word of what to do. So the sweep
runs in a child process; its parent, which holds no Ray, turns such an end into the same one line.

A dead node loses nothing: every result is journaled and in MLflow, and `--resume` (on a Ray that
lives) trains what was asked but never recorded, as after an MLflow outage (search/tracking/retry.py).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import sys

from search.errors import SweepInterrupted

__all__ = ["NodeDied", "node_died", "raise_if_node_died", "warn_if_unauthenticated", "watch_for_node_death",
           "check_cluster_fits", "NODE_DIED"]

NODE_DIED = ("interrupted: the sweep's Ray node died (its raylet or object store went away); nothing recorded "
             "is lost: continue with `mentee sweep ... --resume` once Ray runs again")


class NodeDied(SweepInterrupted):
    """The Ray node this driver runs on died (its raylet killed, the machine out of memory)."""

    exit_code = 75  # EX_TEMPFAIL, as an MLflow outage: nothing is lost, try again with --resume


# Ray's words for a node it lost, in the messages of the errors it raises then (a Tune error wraps them)
_SIGNS = ("raylet", "node died", "has been marked dead", "node was terminated", "local node", "gcs server",
          "failed to connect to gcs", "connection to the gcs", "grpc", "socket closed", "connection reset")


def node_died(e: BaseException) -> bool:
    """Did `e` (from `tuner.fit()`) come from the loss of Ray's own processes, not from our code?"""
    import ray.exceptions as rex

    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        x = stack.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, (rex.LocalRayletDiedError, rex.NodeDiedError, rex.RaySystemError, rex.RpcError)):
            return True
        if isinstance(x, (rex.RayError, ConnectionError, RuntimeError)) and \
                any(s in str(x).lower() for s in _SIGNS):
            return True
        stack += [x.__cause__, x.__context__]
    return False


def raise_if_node_died(e: BaseException) -> None:
    """Raise NodeDied (one line, exit 75) if `e` says the driver's Ray node is gone; else return."""
    if node_died(e):
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise NodeDied(f"the Ray node of this sweep died ({type(e).__name__}: {first}); nothing recorded is lost: "
                       "continue with `mentee sweep ... --resume` once Ray runs again") from e


def warn_if_unauthenticated(address: str | None) -> bool:
    """One line on stderr when this driver joined a running cluster (`address`; None: the one this machine's
    last `ray start` left, "local": a Ray the sweep started itself) without token authentication:
    anyone who reaches its ports can run code there. A Ray this sweep starts itself has it on.
    Returns whether it warned."""
    if address == "local":
        return False
    where = f"at {address}" if address else "this machine runs (`ray start`)"
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:  # a Ray before token authentication (2.52): nothing to ask
        return False
    if is_token_auth_enabled():  # joining a cluster that requires a token fails without one
        return False
    print(f"warning: the Ray cluster {where} runs without token authentication: anyone who reaches its "
          "ports can run code on it; start it with RAY_AUTH_MODE=token (README, On a cluster)", file=sys.stderr)
    return True


def _a_command() -> bool:
    """Is this process `mentee` itself (the console script or `python -m search.cli`)? Only then may it
    fork: in-process (a test's CliRunner, a notebook) the parent's exit would end the caller."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return os.path.basename(sys.argv[0]) == "mentee" or getattr(spec, "name", "") in ("search.cli.__main__",
                                                                                     "search.cli")


def watch_for_node_death() -> None:
    """Fork: the child returns and runs the sweep; the parent waits for it and exits with its code, or,
    when the child ended without going through Python's exit (Ray's C++ side ended it, or a signal),
    prints NODE_DIED and exits 75. Killing the parent kills the child (PR_SET_PDEATHSIG), so a killed
    `mentee sweep` still stops its driver at once. Linux only; elsewhere it does nothing."""
    if not sys.platform.startswith("linux") or not _a_command():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the sweep
        os.close(read_end)
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the parent
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        atexit.register(os.write, write_end, b"x")  # runs on every Python-level exit, whatever its code
        return
    os.close(write_end)
    # Ctrl-C reaches both (one process group): the child stops its sweep cleanly, the parent waits for it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    told: list[int] = []  # a SIGTERM the parent got and passed on: the child's end is then no node's death

    def forward(signum, _frame):
        told.append(signum)
        os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:  # pragma: no cover - reaped elsewhere
            status = 1 << 8
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            continue
    through_python = os.read(read_end, 1) == b"x"
    code = os.waitstatus_to_exitcode(status)
    if not through_python and code != 0 and not told:
        print(NODE_DIED, file=sys.stderr, flush=True)
        os._exit(NodeDied.exit_code)
    os._exit(code if code >= 0 else 128 - code)


def check_cluster_fits(budget, resources: dict[str, float], where: str) -> None:
    """Raise UserError when the space asks a trial for more CPUs or GPUs than the whole Ray cluster has:
    Ray would keep the trial pending and the sweep would hang without a word. Call it right after
    joining Ray, before the mentor's task or any store is touched."""
    from search.errors import UserError

    for key, kind in (("cpus_per_trial", "CPU"), ("gpus_per_trial", "GPU")):
        asked = getattr(budget, key)
        have = resources.get(kind, 0.0)
        if isinstance(asked, (int, float)) and asked > have:
            raise UserError(f"{where}: key 'budget.{key}': {asked:g} {kind} per trial, but the Ray cluster has "
                            f"{have:g}; expected at most {have:g} (or a cluster with more)")
