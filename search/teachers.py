"""The mentor's versions a mentee may learn from, and the names of their outputs.

    qualify("epoch20", "layer3")   # 'epoch20/layer3'; the final mentor's keeps its plain name
    unqualify("epoch20/layer3")    # ('epoch20', 'layer3'); ('final', 'layer3') for 'layer3'

A space offers `final` (the trained mentor), `epochN` for each of `mentor.checkpoints` and
`assistant` if it defines `mentor.assistant`. The mentor cache, the loss terms and the mentor
task all read and write outputs by these names, so their format is written here once.
"""

from __future__ import annotations

__all__ = ["FINAL", "ASSISTANT", "checkpoint_name", "qualify", "unqualify"]

FINAL = "final"  # the trained mentor itself, as a teacher (`mentor.teacher`)
ASSISTANT = "assistant"  # the teacher assistant (`mentor.assistant`)


def checkpoint_name(epoch: int) -> str:
    """The mentor version kept at the end of `epoch` (`mentor.checkpoints`): `epoch20`."""
    return f"epoch{epoch}"


def qualify(source: str | None, name: str) -> str:
    """A mentor output of a teacher: `epoch20/layer3`; the final mentor's keeps its plain name."""
    return name if source in (None, FINAL) else f"{source}/{name}"


def unqualify(name: str) -> tuple[str, str]:
    """(teacher, output) of a qualified name: the inverse of `qualify`."""
    source, _, output = name.rpartition("/")
    return source or FINAL, output
