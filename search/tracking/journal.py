"""Results on their way to MLflow, kept on the driver's disk until MLflow has them.

    journal = ResultJournal(work / "journal" / parent_run_id)
    journal.add([(item, result, node_id), ...])     # a cohort's results: one fsynced append
    ...MLflow write...
    journal.done_all([item.member_id, ...])         # written (a weights file goes with its last member)
    for item, result, node_id in journal.pending(): # after a crash or an outage: what MLflow lacks
        ...

The driver writes every result here first, so neither an MLflow server that stops answering
nor a killed driver loses a trained mentee: `mentee sweep --resume` writes what is pending
before it trains anything. One JSON line per event (`result`, `done`) in `results.jsonl`,
each `add`'s weights beside it in one file, `<n>.pt` (one save and one fsync a cohort, whatever
its size); a line cut off by a kill is dropped. When everything is written the directory is
removed (`clear`).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from search.config import MemberResult, WorkItem

__all__ = ["ResultJournal"]


class ResultJournal:
    """Append-only, fsynced; safe to call from the driver thread and the writer thread."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / "results.jsonl"
        self._lock = threading.Lock()
        self._pending: dict[str, dict[str, Any]] = {}  # member id → its `result` line, until `done`
        self._files = 0
        for entry in self._read():
            if entry["op"] == "result":
                self._pending[entry["member_id"]] = entry
                if entry["weights"]:
                    self._files = max(self._files, int(entry["weights"].split(".")[0]))
            else:
                self._pending.pop(entry["member_id"], None)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, results: Iterable[tuple[WorkItem, MemberResult, str]]) -> None:
        """Keep these results (weights included) durably, before anything is sent to MLflow."""
        results = list(results)
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._files += 1
            weights = f"{self._files}.pt"
            states = {item.member_id: res.state_dict for item, res, _ in results if res.state_dict is not None}
            if states:
                _save(states, self.dir / weights)  # before the lines that point at it
            lines: list[dict[str, Any]] = [
                {"op": "result", "member_id": item.member_id, "item": item.to_dict(), "result": res.to_dict(),
                 "node_id": node_id, "weights": weights if item.member_id in states else None}
                for item, res, node_id in results]
            self._pending.update((e["member_id"], e) for e in lines)
            self._append(lines)

    def done(self, member_id: str) -> None:
        """MLflow has it: forget it here."""
        self.done_all([member_id])

    def done_all(self, member_ids: Iterable[str]) -> None:
        """MLflow has these (a bulk write): forget them here, in one append."""
        with self._lock:
            entries = [e for e in (self._pending.pop(m, None) for m in member_ids) if e is not None]
            self._append([{"op": "done", "member_id": e["member_id"]} for e in entries])
            files = {e["weights"] for e in entries if e["weights"]}
            for f in files - {e["weights"] for e in self._pending.values()}:
                (self.dir / f).unlink(missing_ok=True)  # the last of its cohort written

    def pending(self) -> list[tuple[WorkItem, MemberResult, str]]:
        """What MLflow does not have yet, in the order it was kept."""
        with self._lock:
            entries = list(self._pending.values())
        files: dict[str, dict[str, Any]] = {}
        out = []
        for e in entries:
            state = None
            if e["weights"]:
                if e["weights"] not in files:
                    import torch  # here, not at import: the driver's start-up and reading back need none

                    files[e["weights"]] = torch.load(self.dir / e["weights"], weights_only=True)
                state = files[e["weights"]][e["member_id"]]
            out.append((WorkItem.from_dict(e["item"]), MemberResult.from_dict(e["result"], state), e["node_id"]))
        return out

    def clear(self) -> None:
        """Remove the journal once nothing is pending (a sweep whose results are all in MLflow)."""
        with self._lock:
            if not self._pending:
                shutil.rmtree(self.dir, ignore_errors=True)

    def _append(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        with open(self.path, "ab") as f:
            f.write("".join(json.dumps(e) + "\n" for e in entries).encode())
            f.flush()
            os.fsync(f.fileno())

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]
        if len(whole) < len(data):  # a kill cut the last append: drop it, or the next line would be glued to it
            with open(self.path, "rb+") as f:
                f.truncate(len(whole))
        return [json.loads(line) for line in whole.splitlines() if line.strip()]


def _save(states: dict[str, dict[str, Any]], path: Path) -> None:
    import torch  # here, not at import: the driver's start-up and reading back need none

    tmp = path.with_suffix(".tmp")
    torch.save({m: {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in s.items()} for m, s in states.items()},
               tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)  # a weights file is whole or absent: its line is written after it
