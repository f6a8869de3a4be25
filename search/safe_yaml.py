"""YAML read safely: plain data only, and bounded, so a wrong or hostile file is one line of error.

    data = read_yaml(path, text, like="a space like spaces/mnist1d.yaml")   # UserError on a bad file

Spaces and device profiles are read through it. The caps turn deep nesting, an alias bomb
("billion laughs"), a number thousands of digits long, a key given twice or malformed YAML into a
`UserError` naming the file (and the line or key), instead of a hang, an out-of-memory, a
RecursionError traceback or a silently dropped value. `like` says what was expected. Every message
is ours: a parser's own words for the same problem change from release to release.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from search.errors import UserError

__all__ = ["read_yaml", "MAX_DEPTH", "MAX_NODES", "MAX_DIGITS"]

MAX_DEPTH = 32  # nested lists/mappings; a real space nests 4 deep
MAX_NODES = 100_000  # values once aliases are expanded ("billion laughs" has 10^9)
MAX_DIGITS = 100  # characters of one number: 1e308 fits, a 5,000-digit integer (a traceback in int()) does not

# yaml.safe_load's loader (plain data only, never Python objects), in libyaml's C build where there is one:
# the pure-Python parser needs ~15 s for a 1 MiB file on a small CPU.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


def read_yaml(p: Path, text: str, *, like: str) -> Any:
    """yaml.safe_load of `text` (read from `p`), with the caps checked before anything is built."""
    try:
        return _guarded_load(p, text, like)
    except yaml.YAMLError as e:
        # PyYAML ≥ 6.0.4 (libyaml 0.2.6) refuses ~1,000 levels of nesting itself, in its own words and
        # before our event check sees level 33: tell that case apart by reading the text ourselves
        depth, line = rough_depth(text)
        if depth > MAX_DEPTH:
            raise UserError(_too_deep(p, line, like)) from None
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        lines = text.splitlines()
        if mark and mark.line < len(lines) and "\t" in lines[mark.line][:len(lines[mark.line]) - len(
                lines[mark.line].lstrip())]:  # the commonest slip, said in our words
            problem = "a tab in the indentation; YAML indents with spaces"
        raise UserError(f"{p}: malformed YAML{where}: {problem}") from None


def _too_deep(p: Path, line: int, like: str) -> str:
    return f"{p}: nested more than {MAX_DEPTH} levels deep at line {line}; expected {like}"


def rough_depth(text: str) -> tuple[int, int]:
    """(deepest nesting, its line) as indentation, `- ` entries and brackets show it, read without a
    YAML parser: an estimate (quotes and comments are skipped, block scalars are not), used only to
    name the problem of a file the parser refused."""
    deepest, at, flow = 0, 1, 0
    indents: list[int] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        body = line.lstrip(" ")
        col = len(line) - len(body)
        if flow == 0 and body and not body.startswith("#"):
            while indents and indents[-1] >= col:
                indents.pop()
            indents.append(col)
            while body.startswith("- ") or body == "-":  # "- - - x": each dash one sequence deeper
                body, col = body[2:], col + 2
                indents.append(col)
        quote = ""
        for i, ch in enumerate(body):
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "#" and (i == 0 or body[i - 1] in " \t"):
                break
            elif ch in "[{":
                flow += 1
                if len(indents) + flow > deepest:
                    deepest, at = len(indents) + flow, lineno
            elif ch in "]}":
                flow = max(0, flow - 1)
        if len(indents) + flow > deepest:
            deepest, at = len(indents) + flow, lineno
    return deepest, at


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
                raise UserError(_too_deep(p, event.start_mark.line + 1, like))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        # An alias shares its anchor's node, so a few lines can stand for 10^9 values or a deep chain:
        # measure what the nodes expand to (memoised, a bomb takes a few steps) before the constructor
        # and pydantic walk every copy. The same walk refuses a key given twice (YAML would keep the last
        # silently) and a number too long to be one.
        memo: dict[int, tuple[int, int]] = {}  # id(node) → (values, levels of nesting) with aliases expanded

        def expand(n: yaml.Node, above: int, key: str) -> tuple[int, int]:  # `above`: lists/mappings around n
            if id(n) not in memo and above <= MAX_DEPTH:
                memo[id(n)] = (MAX_NODES + 1, 0)  # a node that contains itself expands without end
                _check_node(p, n, key)
                if isinstance(n, yaml.MappingNode):
                    kids = [(x, key if x is k else _dotted(key, k)) for k, v in n.value for x in (k, v)]
                elif isinstance(n, yaml.SequenceNode):
                    kids = [(x, key) for x in n.value]
                else:
                    kids = []
                sub = [expand(k, above + 1, where) for k, where in kids]
                levels = 1 + max((lv for _, lv in sub), default=0) if isinstance(n, yaml.CollectionNode) else 0
                memo[id(n)] = (1 + sum(v for v, _ in sub), levels)
            values, levels = memo.get(id(n), (0, 1))  # not expanded (already too deep): one level more, raises
            if above + levels > MAX_DEPTH:
                raise UserError(f"{p}: nested more than {MAX_DEPTH} levels deep once its aliases (*name) "
                                f"are expanded; expected {like}")
            if values > MAX_NODES:
                raise UserError(f"{p}: more than {MAX_NODES:,} values once its aliases (*name) are "
                                f"expanded; expected {like}")
            return values, levels

        if node is not None:
            expand(node, 0, "")
        return None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


def _dotted(key: str, k: yaml.Node) -> str:
    name = k.value if isinstance(k, yaml.ScalarNode) else "?"
    return f"{key}.{name}" if key else str(name)


def _check_node(p: Path, n: yaml.Node, key: str) -> None:
    """A key given twice in one mapping, or a number longer than MAX_DIGITS characters: one line each."""
    field = f"key '{key}': " if key else ""
    if isinstance(n, yaml.ScalarNode) and n.tag in _NUMBER_TAGS and len(n.value) > MAX_DIGITS:
        raise UserError(f"{p}: {field}a number {len(n.value):,} characters long at line {n.start_mark.line + 1}; "
                        f"expected at most {MAX_DIGITS} (a space's numbers are bounded far below that)")
    if isinstance(n, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for k, _ in n.value:
            if not isinstance(k, yaml.ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges, later keys override it on purpose
            line = k.start_mark.line + 1
            if (k.tag, k.value) in seen:
                raise UserError(f"{p}: key '{_dotted(key, k)}' given twice (lines {seen[k.tag, k.value]} and {line}); "
                                "YAML would keep only the last: give each key once")
            seen[k.tag, k.value] = line
