"""YAML read safely: plain data only, and bounded, so a wrong or hostile file is one line of error.

    data = read_yaml(path, text, like="a space like spaces/mnist1d.yaml")   # UserError on a bad file

Spaces and device profiles are read through it. The caps turn deep nesting, an alias bomb
("billion laughs") or malformed YAML into a `UserError` naming the file (and the line), instead
of a hang, an out-of-memory or a RecursionError traceback. `like` says what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from search.errors import UserError

__all__ = ["read_yaml", "MAX_DEPTH", "MAX_NODES"]

MAX_DEPTH = 32  # nested lists/mappings; a real space nests 4 deep
MAX_NODES = 100_000  # values once aliases are expanded ("billion laughs" has 10^9)

# yaml.safe_load's loader (plain data only, never Python objects), in libyaml's C build where there is one:
# the pure-Python parser needs ~15 s for a 1 MiB file on a small CPU.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(p: Path, text: str, *, like: str) -> Any:
    """yaml.safe_load of `text` (read from `p`), with the caps checked before anything is built."""
    try:
        return _guarded_load(p, text, like)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{p}: malformed YAML{where}: {problem}") from None


def _guarded_load(p: Path, text: str, like: str) -> Any:
    # yaml.safe_load in three steps, so the checks run before anything is built. The parser keeps its own
    # stack, but the composer and constructor recurse once per nesting level: check the events first.
    depth = events = 0
    for event in yaml.parse(text, Loader=_SafeLoader):
        events += 1
        if events > 2 * MAX_NODES:  # stop early: this many events are more values than allowed
            raise UserError(f"{p}: more than {MAX_NODES:,} values; expected {like}")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise UserError(f"{p}: nested more than {MAX_DEPTH} levels deep at line "
                                f"{event.start_mark.line + 1}; expected {like}")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        # An alias shares its anchor's node, so a few lines can stand for 10^9 values or a deep chain:
        # measure what the nodes expand to (memoised, a bomb takes a few steps) before the constructor
        # and pydantic walk every copy.
        memo: dict[int, tuple[int, int]] = {}  # id(node) → (values, levels of nesting) with aliases expanded

        def expand(n: yaml.Node, above: int) -> tuple[int, int]:  # `above`: lists/mappings around n
            if id(n) not in memo and above <= MAX_DEPTH:
                memo[id(n)] = (MAX_NODES + 1, 0)  # a node that contains itself expands without end
                kids = [x for kv in n.value for x in kv] if isinstance(n, yaml.MappingNode) else \
                    n.value if isinstance(n, yaml.SequenceNode) else []
                sub = [expand(k, above + 1) for k in kids]
                levels = 1 + max((lv for _, lv in sub), default=0) if isinstance(n, yaml.CollectionNode) else 0
                memo[id(n)] = (1 + sum(v for v, _ in sub), levels)
            values, levels = memo.get(id(n), (0, 1))  # not expanded (already too deep): one level more, raises
            if above + levels > MAX_DEPTH:
                raise UserError(f"{p}: nested more than {MAX_DEPTH} levels deep once its aliases (*name) "
                                "are expanded; expected {like}")
            if values > MAX_NODES:
                raise UserError(f"{p}: more than {MAX_NODES:,} values once its aliases (*name) are "
                                "expanded; expected {like}")
            return values, levels

        if node is not None:
            expand(node, 0)
        return None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()
