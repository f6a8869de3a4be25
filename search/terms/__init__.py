"""WHAT BOTH SIDES SHARE: the loss-term registry and the built-in terms.

    from search.terms import TERMS, describe_terms
    TERMS["kd"].suggest(section, pick, depth)   # the driver: a space section → TermConfigs
    TERMS["kd"](params, student_shapes, mentor_shapes)(logits, feats, y, mentor, p)  # the trial

    registry   TERMS, the LossTerm base class, hint metrics, teachers' names in terms; imports no term
    builtin    the label loss, hints, KD, attention transfer

The registry never imports its plug-ins (as timm's never imports its models); the plug-ins
register when this package is imported. Spaces, the driver, tracking and the trial read the
registry here; `search.train` keeps the fused computation.
"""

from search.terms import builtin as builtin  # noqa: F401  (registers ce, hint, kd, attention)
from search.terms.registry import (
    METRICS,
    SCHEDULES,
    TERMS,
    LossTerm,
    Pick,
    TermSpace,
    cache_names,
    describe_suffix,
    describe_terms,
    register_metric,
    register_term,
    two_stage,
    with_source,
)

__all__ = ["TERMS", "METRICS", "SCHEDULES", "LossTerm", "register_term", "register_metric", "describe_terms",
           "two_stage", "Pick", "with_source", "cache_names", "TermSpace", "describe_suffix"]
