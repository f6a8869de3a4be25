"""The search side, without Ray: the two arms at equal effort, and the mentorship methods a space offers
(weight schedules, two-stage training) turned into loss terms."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import optuna
import pytest

from search.config import LABEL_TERM
from search.errors import UserError
from search.models import create_mentee
from search.spaces import parse_space
from search.sweep.suggest import ARCH_PARAMS, ArmBalance, make_sampler, suggest_member
from search.terms import SCHEDULES, describe_terms

SPACE = {
    "name": "arms",
    "dataset": {"name": "mnist1d", "n_samples": 300},
    "mentee": {"family": "conv1d", "depth": [1, 2, 3], "width": [4, 8, 16], "growth": [1, 2], "kernel": [3, 5]},
    "terms": {"hint": {"taps": {"last": ["none", "layer3"]}}, "kd": {"enabled": [False, True]}},
    "train": {"epochs": 2, "lr": {"low": 1e-3, "high": 1e-1, "log": True}, "weight_decay": [0.0, 1e-4]},
}


def params_of(arch) -> int:
    return sum(p.numel() for p in create_mentee(arch, (1, 40), 10).parameters())


def new_study(space) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(space))


def ask_many(arms: ArmBalance, study, space, n: int, seed: int = 0) -> list:
    """n asks as the driver makes them (the config stored on the trial), each told a made-up result at
    once, so that TPE leaves its random start-up phase."""
    rng, out = random.Random(seed), []
    for _ in range(n):
        trial, cfg = arms.ask(study, space)
        trial.set_user_attr("config", cfg.to_dict())
        out.append((trial, cfg))
        study.tell(trial, [rng.random(), params_of(cfg.arch)])
    return out


def test_arms_alternate_pair_architectures_and_balance_every_size_band():
    space = parse_space(SPACE)
    study = new_study(space)
    asked = ask_many(ArmBalance.for_space(space), study, space, 41)

    arms = [t.params["arm"] for t, _ in asked]
    assert arms == ["independent", "mentored"] * 20 + ["independent"]  # the driver chose, never the sampler
    for (ti, ind), (tm, men) in zip(asked[::2], asked[1::2]):
        assert men.arch == ind.arch  # the mentored ask copied its partner's architecture...
        assert {k: tm.params[k] for k in ARCH_PARAMS if k in tm.params} == \
            {k: ti.params[k] for k in ARCH_PARAMS if k in ti.params}
        assert not any(k.startswith(("hint", "kd", "two_stage")) for k in ti.params)  # ...the other arm had none
        assert ind.independent and [t.kind for t in ind.terms] == [LABEL_TERM]
    # each ask drew its own optimiser settings from the same ranges
    lrs = {arm: [c.train.lr for t, c in asked if t.params["arm"] == arm] for arm in ("independent", "mentored")}
    assert all(1e-3 <= lr <= 1e-1 for v in lrs.values() for lr in v)
    assert sum(a != b for a, b in zip(lrs["independent"], lrs["mentored"])) >= 15
    assert sum(not c.independent for t, c in asked if t.params["arm"] == "mentored") >= 5  # mentor terms searched

    # equal counts per arm in every size band (log2 of params), within one
    bands = Counter((t.params["arm"], params_of(c.arch).bit_length()) for t, c in asked)
    for band in {b for _, b in bands}:
        assert abs(bands["independent", band] - bands["mentored", band]) <= 1, bands
    assert len({b for _, b in bands}) >= 3  # the sampler moved around: the balance is not trivial


def test_a_resumed_balance_finishes_the_open_pair_and_asks_what_was_left_waiting():
    space = parse_space(SPACE)
    study = new_study(space)
    ask_many(ArmBalance.for_space(space), study, space, 3)  # independent, mentored, independent: a pair is open

    again = ArmBalance.for_space(space)  # a new driver after an interruption
    assert again.arm(study, 2) == "independent" and again.arm(study, 1) == "mentored"
    ((t3, _),) = ask_many(again, study, space, 1)
    assert t3.params["arm"] == "mentored"
    assert {k: t3.params[k] for k in ARCH_PARAMS if k in t3.params} == \
        {k: study.trials[2].params[k] for k in ARCH_PARAMS if k in study.trials[2].params}

    # a trial enqueued by a driver killed before asking it is asked first, as it was, and none is left waiting
    study.enqueue_trial({"arm": "independent"})
    third = ArmBalance.for_space(space)
    asked = ask_many(third, study, space, 4)
    assert [t.params["arm"] for t, _ in asked] == ["independent", "mentored", "independent", "mentored"]
    assert asked[1][1].arch == asked[0][1].arch and asked[3][1].arch == asked[2][1].arch
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))


def test_a_space_without_mentor_terms_has_one_arm():
    space = parse_space({**SPACE, "terms": {"ce": {}}})
    study = new_study(space)
    asked = ask_many(ArmBalance.for_space(space), study, space, 4)
    assert all("arm" not in t.params and c.independent for t, c in asked)
    assert len(study.trials) == 4  # nothing enqueued


# ------------------------------------------------------- schedules and two-stage training

METHODS = {**SPACE, "terms": {
    "ce": {"two_stage": [False, True]},
    "hint": {"taps": {"last": ["layer3"]}, "schedule": ["constant", "warmup", "decay"]},
    "kd": {"enabled": [False, True], "schedule": ["constant", "warmup", "decay"]},
    "attention": {"enabled": [False, True], "taps": {"last": ["layer3"]}, "schedule": "decay"},
}}


def test_schedules_and_two_stage_are_searched_choices():
    space = parse_space(METHODS)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    seen, two_stage = Counter(), 0
    for _ in range(300):
        trial = study.ask()
        cfg = suggest_member(trial, space)
        study.tell(trial, [0.5, 1.0])
        ce = next(t for t in cfg.terms if t.kind == LABEL_TERM)
        mentor = [t for t in cfg.terms if t.uses_mentor]
        if trial.params["arm"] == "independent":
            assert not mentor and "schedule" not in ce.params and "two_stage" not in trial.params
            continue
        assert all(t.params.get("schedule", "constant") in SCHEDULES for t in cfg.terms)
        if trial.params["two_stage"]:  # hints first, then labels: every schedule replaced
            two_stage += 1
            assert ce.params["schedule"] == "late" and all(t.params["schedule"] == "early" for t in mentor)
            assert "~early" in describe_terms(cfg.terms)
            continue
        assert "schedule" not in ce.params
        for t in mentor:
            s = t.params.get("schedule", "constant")
            seen[t.kind, s] += 1
            assert ("schedule" in t.params) == (s != "constant")  # constant is the default, left out
            assert (f"~{s}" in describe_terms([t])) == (s != "constant")
            if t.kind == "attention":
                assert s == "decay"  # fixed in the space
    assert two_stage >= 30
    for kind in ("hint", "kd"):
        assert all(seen[kind, s] >= 3 for s in ("constant", "warmup", "decay")), seen


@pytest.mark.parametrize("section, msg", [
    ({"hint": {"schedule": "sometimes"}}, "hint.schedule: unknown schedule 'sometimes'; expected one of"),
    ({"kd": {"schedule": []}}, "kd.schedule: empty list of schedules"),
    ({"attention": {"schedule": ["warmup", "linear"]}}, "attention.schedule: unknown schedule 'linear'"),
    ({"ce": {"two_stage": []}}, "ce.two_stage: empty list"),
])
def test_bad_schedules_are_one_line_errors(section, msg):
    with pytest.raises(UserError, match=re.escape(msg)) as e:
        parse_space({**SPACE, "terms": section}, "space.yaml")
    assert str(e.value).startswith("space.yaml: ") and "\n" not in str(e.value)


def test_a_partner_dropped_before_training_opens_no_pair():
    """An independent ask told at once, untrained (a target device's budget refused it): the next ask leads
    a new pair instead of copying an architecture nobody trains."""
    space = parse_space(SPACE)
    study = new_study(space)
    arms = ArmBalance.for_space(space)
    trial, _ = arms.ask(study, space)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)  # no config stored: never handed out
    (t1, _), (t2, c2) = ask_many(arms, study, space, 2)
    assert t1.params["arm"] == "independent" and t2.params["arm"] == "mentored"


# ------------------------------------------------------------------------------- teachers

TEACHERS = {**METHODS, "mentor": {"epochs": 30, "checkpoints": [20], "assistant": {"widths": [16, 32, 32, 32]},
                                  "teacher": ["final", "epoch20", "assistant"]}}


def test_every_teacher_is_drawn_and_every_mentor_term_learns_from_it():
    space = parse_space(TEACHERS)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=2))
    drawn = Counter()
    for _ in range(200):
        trial = study.ask()
        cfg = suggest_member(trial, space)
        study.tell(trial, [0.5, 1.0])
        mentor = [t for t in cfg.terms if t.uses_mentor]
        if not mentor:  # the independent arm, or a mentored ask that drew no mentor term: no teacher
            assert "teacher" not in trial.params
            continue
        teacher = trial.params["teacher"]
        drawn[teacher] += 1
        sources = {t.params.get("source") for t in mentor}
        assert sources == ({None} if teacher == "final" else {teacher})  # the final mentor is left out
        assert "source" not in next(t for t in cfg.terms if not t.uses_mentor).params
        assert (f"<{teacher}" in describe_terms(cfg.terms)) == (teacher != "final")
    assert all(drawn[t] >= 20 for t in ("final", "epoch20", "assistant")), drawn


def test_a_fixed_teacher_is_no_param_and_the_default_changes_nothing():
    fixed = parse_space({**TEACHERS, "mentor": {**TEACHERS["mentor"], "teacher": "epoch20"}})
    plain = parse_space(METHODS)
    for space, source in ((fixed, "epoch20"), (plain, None)):
        study = optuna.create_study(directions=["maximize", "minimize"],
                                    sampler=optuna.samplers.RandomSampler(seed=3))
        for _ in range(30):
            trial = study.ask()
            cfg = suggest_member(trial, space)
            study.tell(trial, [0.5, 1.0])
            assert "teacher" not in trial.params
            assert all(t.params.get("source") == source for t in cfg.terms if t.uses_mentor)


# --------------------------------------------- which methods pay: the ledger and what it withholds

from search.config import ArchConfig, MemberConfig, TermConfig  # noqa: E402
from search.sweep.ledger import WITHHELD, MethodLedger, methods_of, size_band  # noqa: E402
from search.sweep.suggest import withholding_params  # noqa: E402

KD = TermConfig("kd", 0.5, {"temperature": 4.0})
HINT = TermConfig("hint", 0.1, {"student": "layer3", "teacher": "layer3", "metric": "cosine", "source": "epoch20"})


def mentee(arch: ArchConfig, *terms: TermConfig) -> MemberConfig:
    return MemberConfig(arch, terms=(TermConfig(LABEL_TERM, 1.0), *terms))


def test_methods_are_the_choices_a_config_made():
    arch = ArchConfig("conv1d", (4, 4, 4), 3)
    assert methods_of(mentee(arch)) == frozenset() and methods_of(mentee(arch, TermConfig("kd", 0.0))) == frozenset()
    assert methods_of(mentee(arch, KD, HINT)) == {"kd", "teacher:final", "hint:cosine", "teacher:epoch20"}
    staged = TermConfig("dist", 1.0, {"schedule": "early"})
    assert methods_of(mentee(arch, staged)) == {"dist", "teacher:final", "two-stage"}
    assert size_band(arch) < size_band(ArchConfig("conv1d", (8, 8, 8), 3)) < size_band(ArchConfig("conv1d", (32,) * 3))


def test_a_method_that_loses_clearly_at_a_size_is_withheld_there_and_only_there():
    small, other_small, big = ArchConfig("conv1d", (4, 4, 4), 3), ArchConfig("conv1d", (3, 4, 4), 3), \
        ArchConfig("conv1d", (32, 32, 32), 3)
    assert size_band(small) == size_band(other_small) != size_band(big)
    ledger = MethodLedger()
    for arch in (small, big):
        ledger.observe(mentee(arch), {0: 0.60, 1: 0.62, 2: 0.58})
    ledger.observe(mentee(small, KD), {0: 0.50, 1: 0.53, 2: 0.47})  # -10 points a seed
    assert ledger.withheld(small) == {}  # 3 pairs: not enough to say
    ledger.observe(mentee(small, KD), {0: 0.52, 1: 0.50, 2: float("nan")})  # a seed that failed is left out
    ledger.observe(mentee(small, KD), {0: 0.51, 1: 0.53, 2: 0.49})
    ledger.observe(mentee(big, KD), {0: 0.61, 1: 0.63, 2: 0.59})  # +1 at the big size
    ledger.observe(mentee(big, KD), {0: 0.60, 1: 0.62, 2: 0.58})
    ledger.observe(mentee(big, KD), {0: 0.59, 1: 0.61, 2: 0.57})
    why = ledger.withheld(other_small)  # another architecture of the same band
    assert set(why) == {"kd", "teacher:final"}
    assert why["kd"].startswith("kd loses -9.6 pts [") and "over 8 seed pairs" in why["kd"]
    assert ledger.withheld(big) == {}
    # a loss smaller than the margin is noise, however narrow its interval
    near = MethodLedger(margin=12.0)
    for row in ledger._mentored:
        near._mentored.append(row)
    near._independent = ledger._independent
    assert near.withheld(small) == {}


def test_earlier_sweeps_teach_the_ledger_through_their_records():
    arch = ArchConfig("conv1d", (4, 4, 4), 3)
    rows = [{"status": "finished", "config": json.dumps(mentee(arch).to_dict()), "seeds": (0, 1, 2),
             "val_accs": (0.6, 0.62, 0.58)}]
    rows += [{"status": "finished", "config": json.dumps(mentee(arch, KD).to_dict()), "seeds": (0, 1, 2),
              "val_accs": (0.5, 0.51, 0.49)}] * 2
    rows += [{"status": "failed", "config": json.dumps(mentee(arch).to_dict()), "seeds": (), "val_accs": ()}]
    assert set(MethodLedger.from_runs(rows).withheld(arch)) == {"kd", "teacher:final"}


def test_withholding_switches_a_term_off_or_picks_another_choice():
    space = parse_space(TEACHERS)
    rng = random.Random(0)
    out = withholding_params(space, {"kd", "teacher:epoch20"}, rng)
    assert out["kd"] is False and out["teacher"] in {"final", "assistant"} and len(out) == 2
    assert withholding_params(space, {"teacher:epoch20", "teacher:final"}, rng)["teacher"] == "assistant"
    assert withholding_params(space, set(), rng) == {}
    assert withholding_params(parse_space(METHODS), {"two-stage"}, rng)["two_stage"] is False


def test_mentored_asks_are_not_offered_what_loses_and_say_why():
    space = parse_space(SPACE)
    ledger = MethodLedger()
    m = space.mentee
    for depth in m.depth:
        for width in m.width:
            for growth in m.growth:
                for kernel in m.kernel:
                    arch = ArchConfig("conv1d", tuple(max(1, min(m.max_width, round(width * growth ** i)))
                                                      for i in range(depth)), kernel)
                    ledger.observe(mentee(arch), {0: 0.6, 1: 0.6, 2: 0.6})
                    for d in (0.1, 0.12):
                        ledger.observe(mentee(arch, KD), {0: 0.6 - d, 1: 0.61 - d, 2: 0.59 - d})
    study = new_study(space)
    asked = ask_many(ArmBalance.for_space(space, ledger), study, space, 30)
    mentored = [(t, c) for t, c in asked if t.params["arm"] == "mentored"]
    assert mentored and all(not any(x.kind == "kd" for x in c.terms) for _, c in mentored)
    assert all("kd loses" in json.loads(t.user_attrs[WITHHELD])["kd"] for t, _ in mentored)
    assert all(WITHHELD not in t.user_attrs for t, _ in asked if t.params["arm"] == "independent")
    # without the ledger's verdict the same search does offer KD
    free = ask_many(ArmBalance.for_space(space), new_study(space), space, 30)
    assert any(x.kind == "kd" for t, c in free for x in c.terms)


def test_the_ledger_reads_a_real_sweeps_records_paired_by_seed(ray_local, tmp_path, monkeypatch):
    """A tiny sweep on the CPU (both arms, 2 seeds a mentee, MLflow on sqlite): the ledger built from
    its records holds, for every mentored mentee, its seeds' val accuracy minus the mean of the
    independents of its architecture with the same seed — computed here by hand from the frame."""
    from search.sweep.run import run_sweep
    from search.tracking import load_runs

    monkeypatch.chdir(tmp_path)
    space = parse_space({
        "name": "ledger", "dataset": {"name": "mnist1d", "n_samples": 300},
        "mentor": {"arch": {"widths": [8, 8, 8]}, "epochs": 2, "path": str(tmp_path / "m.pt")},
        "mentee": {"depth": [1, 2], "width": [4, 8], "kernel": 5},
        "terms": {"kd": {"enabled": True, "weight": 0.5, "normalise": True}},
        "train": {"epochs": 2}, "budget": {"mentees": 8, "cohort_size": 8, "seeds": 2}})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = run_sweep(space, tracking_uri=uri, workdir=tmp_path / "runs", show_progress=False)
    runs = load_runs(uri, parent_run_id=summary.parent_run_id)
    ledger = MethodLedger.from_runs(runs)
    want: dict[int, list[float]] = {}
    done = runs[runs.status == "finished"]
    for _, r in done.iterrows():
        cfg = MemberConfig.from_dict(json.loads(r.config))
        if cfg.independent:
            continue
        ind = done[(done.arch_key == r.arch_key) & done.config.map(
            lambda c: MemberConfig.from_dict(json.loads(c)).independent)]
        for s, v in zip(r.seeds, r.val_accs):
            same = [dict(zip(i.seeds, i.val_accs))[s] for _, i in ind.iterrows() if s in i.seeds]
            if same:
                want.setdefault(size_band(cfg.arch), []).append(100 * (v - sum(same) / len(same)))
    assert want, "the sweep recorded no mentored mentee with an independent of its architecture"
    for band, gains in want.items():
        assert sorted(ledger.gains(band)["kd"]) == pytest.approx(sorted(gains))


def test_a_term_with_min_width_is_kept_from_narrower_mentees():
    space = parse_space({**SPACE, "terms": {"kd": {"enabled": True, "min_width": 8},
                                            "hint": {"taps": {"last": ["layer3"]}}}})
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        study.enqueue_trial({"arm": "mentored"})
        trial = study.ask()
        cfg = suggest_member(trial, space)
        kinds = {t.kind for t in cfg.terms}
        assert ("kd" in kinds) == (min(cfg.arch.widths) >= 8) and "hint" in kinds and LABEL_TERM in kinds
        seen.add(min(cfg.arch.widths) >= 8)
        study.tell(trial, [0.5, 1.0])
    assert seen == {False, True}
    assert "min_width" not in parse_space(SPACE).terms["kd"].model_dump()  # unset: the space's hash is as before
