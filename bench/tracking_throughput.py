"""MLflow at sweep scale: mentees written per second by the sweep's writer, and reading a 10,000-mentee store back.

    python bench/tracking_throughput.py                      # everything (~10 min on 2 CPU cores)
    python bench/tracking_throughput.py --runs 512 --mentees 2000 --no-postgres    # a quick look

Writes: the driver's writer (`SweepTracker.log_mentees`, which builds each child run and hands them to
`search.tracking.bulk.create_runs`: runs/s over both, and over the time in create_runs alone), in
batches of --batch (256: a cohort) to
  - a sqlite file, directly (one transaction a batch),
  - a real `mlflow server` on sqlite and one on PostgreSQL (started here: `sys.executable -m mlflow server`,
    its whole process group stopped at the end; the REST API from a thread pool),
  - PostgreSQL directly,
each with and without the per-epoch curves (40 epochs x 2 curves: most of the rows). A mentee is what a
sweep records (issue 15): ~18 tags with its config as JSON, ~12 params, mean/std/per-seed accuracies of 3
seeds, the cost axes. PostgreSQL is Debian's `postgresql` server, a throwaway cluster (initdb + pg_ctl as
the `postgres` user when run as root); without its binaries those rows are left out, and said so.

Reads: a store of --mentees mentees written by the same writer; `load_runs` in this process (wall and CPU
seconds), then `mentee pareto` and `mentee pick` as fresh processes, wall seconds from process start
(median of --repeats). The table goes to stdout, the JSON to bench/results/tracking_throughput-<card>.json.
Targets (issue 17): >= 1,000 runs/s to sqlite, >= 200 runs/s to an `mlflow server` on PostgreSQL,
pareto and pick <= 2 s on 10,000 mentees.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from search.config import COST_AXES, ArchConfig, MemberConfig, Status, TermConfig, TrainConfig, WorkKind
from search.mentees import MenteeRecord
from search.tracking import SweepTracker, bulk, load_runs

RESULTS = Path(__file__).parent / "results"
SEEDS = (0, 1, 2)
EPOCHS = 40


def _record(i: int, rnd: random.Random, curves: bool) -> MenteeRecord:
    """A finished mentee of 3 seeds as a sweep records it: a searched config, both arms."""
    widths = tuple(rnd.choice((4, 8, 16, 32, 64)) for _ in range(rnd.randint(2, 4)))
    terms = [TermConfig("ce", 1.0)]
    if i % 2 == 0:  # the mentored arm: a hint and KD
        terms += [TermConfig("hint", rnd.choice((0.05, 0.1, 0.5)),
                             {"student": f"layer{len(widths)}", "teacher": "layer4", "metric": "rmse"}),
                  TermConfig("kd", 0.5, {"temperature": 4.0})]
    config = MemberConfig(ArchConfig("conv1d", widths, rnd.choice((3, 5, 7))),
                          TrainConfig(epochs=EPOCHS, lr=10 ** rnd.uniform(-3.5, -1.5), seed=0), tuple(terms))
    params = sum(a * b * 5 for a, b in zip((1, *widths), widths)) + widths[-1] * 10
    cost = {axis: float(params * (1 + k)) for k, axis in enumerate(COST_AXES)}
    base = min(0.97, 0.4 + 0.1 * len(widths) + 0.002 * sum(widths))
    vals = tuple(base + rnd.gauss(0, 0.02) for _ in SEEDS)
    tests = tuple(v - 0.01 for v in vals)
    curve = {"train_loss": [2.3 / (e + 1) for e in range(EPOCHS)],
             "val_acc": [base * (1 - 0.9 ** (e + 1)) for e in range(EPOCHS)]} if curves else {}
    return MenteeRecord(mentee_id=str(i), kind=WorkKind.SEARCHED, config=config, optuna_number=i,
                        status=Status.FINISHED, seeds=SEEDS, val_accs=vals, test_accs=tests, cost=cost,
                        curves=curve, epochs_run=EPOCHS, seed_epochs=EPOCHS * len(SEEDS),
                        train_seconds=3.0 * len(SEEDS), node_id=f"{rnd.getrandbits(128):032x}")


def _sweep_tags(experiment: str) -> dict[str, str]:
    return {"mentee.space_hash": "0123456789abcdef", "mentee.dataset": "mnist1d",
            "mentee.input_shape": "[1, 40]", "mentee.num_classes": "10", "mentee.arm": "mentored"}


# the root processes of the servers this benchmark started (mlflow server, PostgreSQL's postmaster): the CPU
# their process trees spend per mentee is the capacity a less busy machine would show
_SERVERS: list[int] = []


def _servers_cpu() -> float:
    import psutil  # type: ignore[import-untyped]

    total = 0.0
    for pid in _SERVERS:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for p in (root, *root.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
    return total


def write(uri: str, experiment: str, n: int, batch: int, curves: bool, warm: int) -> dict:
    """Mentees written by the sweep's writer, `batch` a call; runs/s over the whole, and the CPU this
    process and the servers spent per mentee."""
    tracker = SweepTracker(uri, experiment)
    parent = tracker.start_sweep(f"{experiment}-bench", {"budget": n}, {})
    rnd = random.Random(0)
    records = [(_record(i, rnd, curves), _sweep_tags(experiment)) for i in range(n + warm)]
    # not timed: the store's first touch (engine, pool; a server's workers each load their code on
    # their first requests)
    tracker.log_mentees(parent, records[:warm])
    in_bulk = [0.0]  # of the writer's time, the part in bulk.create_runs (the rest builds the runs)
    create_runs = bulk.create_runs

    def timed(*args: object, **kwargs: object) -> list[str]:
        t = time.perf_counter()
        try:
            return create_runs(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            in_bulk[0] += time.perf_counter() - t

    bulk.create_runs = timed
    try:
        t, cpu, servers = time.perf_counter(), time.process_time(), _servers_cpu()
        for start in range(warm, n + warm, batch):
            tracker.log_mentees(parent, records[start:start + batch])
        seconds = time.perf_counter() - t
        cpu, servers = time.process_time() - cpu, _servers_cpu() - servers
    finally:
        bulk.create_runs = create_runs
    tracker.finish_sweep(parent)
    return {"runs": n, "seconds": round(seconds, 3), "runs_per_s": round(n / seconds, 1),
            "create_runs_per_s": round(n / in_bulk[0], 1),
            "writer_cpu_ms_per_run": round(1000 * cpu / n, 2), "servers_cpu_ms_per_run": round(1000 * servers / n, 2)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(backend: str, root: Path) -> Iterator[str]:
    """`mlflow server` on `backend`, as a user would start it, in its own process group."""
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--host", "127.0.0.1",
           "--port", str(port), "--default-artifact-root", str(root / "artifacts")]
    with open(root / f"server-{port}.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    _SERVERS.append(proc.pid)
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                log_text = (root / f"server-{port}.log").read_text()[-2000:]
                raise RuntimeError(f"mlflow server did not come up: {log_text}")
            time.sleep(0.5)
        yield url
    finally:
        _SERVERS.remove(proc.pid)
        os.killpg(proc.pid, signal.SIGTERM)  # its workers outlive a plain kill of the parent
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def postgres(root: Path) -> Iterator[str | None]:
    """A throwaway PostgreSQL cluster (Debian's server binaries) → its URI; None without the binaries."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        yield None
        return
    bin_dir = Path(found[-1]).parent
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # the server refuses root
    pg = Path(tempfile.mkdtemp(prefix="mentee-bench-pg-"))
    if as_user:
        shutil.chown(pg, "postgres")
    port, ctl = _free_port(), [*as_user, str(bin_dir / "pg_ctl"), "-D", str(pg / "data")]
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(pg / "data"), "-U", "mentee", "--auth=trust",
                        "-E", "UTF8"], check=True, capture_output=True)
        subprocess.run([*ctl, "-l", str(pg / "log"), "-w", "-o", f"-p {port} -k {pg} -c listen_addresses=127.0.0.1",
                        "start"], check=True, capture_output=True)
        for db in ("direct", "served"):
            subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mentee", db],
                           check=True, capture_output=True)
        postmaster = int((pg / "data" / "postmaster.pid").read_text().split()[0])
        _SERVERS.append(postmaster)
        yield f"postgresql://mentee@127.0.0.1:{port}"
        _SERVERS.remove(postmaster)
    finally:
        subprocess.run([*ctl, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(pg, ignore_errors=True)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _command_seconds(argv: list[str], repeats: int) -> tuple[float, float, str]:
    """Median wall and CPU seconds of `mentee ARGV` as a fresh process, and its output's last line. On a
    shared machine the CPU seconds are the steadier number."""
    times, cpus, out = [], [], ""
    for _ in range(repeats):
        t, c = time.perf_counter(), _children_cpu()
        done = subprocess.run([sys.executable, "-m", "search.cli", *argv], capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        cpus.append(_children_cpu() - c)
        if done.returncode != 0:
            raise RuntimeError(f"mentee {' '.join(argv)} failed: {done.stderr[-2000:]}")
        out = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    return round(statistics.median(times), 3), round(statistics.median(cpus), 3), out


def read(uri: str, experiment: str, mentees: int, batch: int, repeats: int) -> dict:
    write(uri, experiment, mentees - 2, batch, curves=True, warm=2)
    out: dict = {"mentees": mentees}
    for _ in range(2):  # the second call: the file in the page cache, as for any later command
        t, c = time.perf_counter(), time.process_time()
        frame = load_runs(uri, experiment)
        out["load_runs_s"] = round(time.perf_counter() - t, 3)
        out["load_runs_cpu_s"] = round(time.process_time() - c, 3)
    assert len(frame) == mentees, len(frame)
    common = ["--tracking-uri", uri, "--experiment", experiment]
    out["pareto_s"], out["pareto_cpu_s"], _ = _command_seconds(["pareto", *common], repeats)
    out["pick_s"], out["pick_cpu_s"], out["pick_says"] = _command_seconds(["pick", "--max-params", "20k", *common],
                                                                           repeats)
    out["help_s"], out["help_cpu_s"], _ = _command_seconds(["--help"], repeats)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=4096, help="mentees written per measurement (sqlite, PostgreSQL)")
    ap.add_argument("--server-runs", type=int, default=1024, help="mentees written through each mlflow server")
    ap.add_argument("--batch", type=int, default=256, help="mentees a writer call (a cohort)")
    ap.add_argument("--mentees", type=int, default=10_000, help="the store read back")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    card = f"cpu-{os.cpu_count()}cores"
    results: dict = {"card": card, "batch": args.batch, "load_before": os.getloadavg()[0], "write": {}, "read": {}}
    root = Path(tempfile.mkdtemp(prefix="mentee-bench-tracking-"))
    try:
        with (contextlib.nullcontext(None) if args.no_postgres else postgres(root)) as pg:
            stores: list[tuple[str, contextlib.AbstractContextManager, int]] = [
                ("sqlite", contextlib.nullcontext(f"sqlite:///{root / 'w.db'}"), args.runs),
                ("mlflow server on sqlite", mlflow_server(f"sqlite:///{root / 'srv.db'}", root), args.server_runs)]
            if pg is not None:
                stores += [("postgresql", contextlib.nullcontext(f"{pg}/direct"), args.runs),
                           ("mlflow server on postgresql", mlflow_server(f"{pg}/served", root), args.server_runs)]
            else:
                results["postgresql"] = "left out: no PostgreSQL server binaries (apt-get install -y postgresql)"
            for name, opened, n in stores:
                with opened as uri:
                    for curves in (True, False):
                        key = f"{name}, {'with' if curves else 'without'} curves"
                        results["write"][key] = write(uri, f"w-{len(results['write'])}", n, args.batch, curves,
                                                      warm=min(64, n))
                        print(f"{key:48s} {results['write'][key]['runs_per_s']:9,.1f} runs/s", flush=True)
            results["read"]["sqlite"] = read(f"sqlite:///{root / 'r.db'}", "read", args.mentees, args.batch,
                                             args.repeats)
            if pg is not None:
                results["read"]["postgresql"] = read(f"{pg}/direct", "read", args.mentees, args.batch, args.repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results["load_after"] = os.getloadavg()[0]

    print(f"\nwriter → store, {args.batch} mentees a call ({card}; load average {results['load_before']:.1f})")
    print(f"{'store':44s} {'runs':>6s} {'seconds':>8s} {'runs/s':>9s} {'in bulk':>9s} {'writer CPU':>11s} "
          f"{'servers CPU':>12s}")
    for key, w in results["write"].items():
        print(f"{key:44s} {w['runs']:6d} {w['seconds']:8.2f} {w['runs_per_s']:9,.1f} {w['create_runs_per_s']:9,.1f} "
              f"{w['writer_cpu_ms_per_run']:8.2f} ms {w['servers_cpu_ms_per_run']:9.2f} ms")
    print(f"\nreading back {args.mentees:,} mentees: wall s (CPU s); load_runs in-process, the commands as fresh "
          "processes, from process start")
    print(f"{'store':12s} {'load_runs':>14s} {'pareto':>14s} {'pick':>14s} {'mentee --help':>14s}")
    for key, r in results["read"].items():
        cells = [f"{r[k + '_s']:.2f} ({r[k + '_cpu_s']:.2f})" for k in ("load_runs", "pareto", "pick", "help")]
        print(f"{key:12s} " + " ".join(f"{c:>14s}" for c in cells))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"tracking_throughput-{card}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n{path}")


if __name__ == "__main__":
    main()
