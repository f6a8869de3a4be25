"""WHAT BOTH SIDES SHARE: the loss-term registry and the built-in terms.

    from search.terms import TERMS, describe_terms
    TERMS["kd"].suggest(section, pick, depth)   # the driver: a space section → TermConfigs
    TERMS["kd"](params, student_shapes, mentor_shapes)(logits, feats, y, mentor, p)  # the trial

    registry   TERMS, the LossTerm base class, hint metrics, teachers' names in terms; imports no term
    builtin    the label loss, hints, KD, attention transfer
    dkd        decoupled KD (Zhao et al. 2022): target and non-target parts weighted apart
    dist       DIST (Huang et al. 2022): correlation of soft outputs, for large teacher-mentee gaps

The registry never imports its plug-ins (as timm's never imports its models); the plug-ins
register when this package is imported. Spaces, the driver, tracking and the trial read the
registry here; `search.train` keeps the fused computation.
"""

from search.terms import builtin as builtin  # noqa: F401  (registers ce, hint, kd, attention)
from search.terms import dist as dist  # noqa: F401
from search.terms import dkd as dkd  # noqa: F401
from search.terms.registry import (
    METRICS,
    NORMALISE,
    SCHEDULES,
    TERMS,
    LossTerm,
    Pick,
    TermSpace,
    cache_names,
    describe_suffix,
    describe_terms,
    label_scaled,
    register_metric,
    register_term,
    two_stage,
    weight_text,
    with_source,
)

__all__ = ["TERMS", "METRICS", "SCHEDULES", "LossTerm", "register_term", "register_metric", "describe_terms",
           "two_stage", "Pick", "with_source", "cache_names", "TermSpace", "describe_suffix",
           "weight_text", "label_scaled", "NORMALISE"]
