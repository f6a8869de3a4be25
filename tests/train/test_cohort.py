import pytest
import torch
from torch.nn import functional as F

from search.config import ArchConfig, MemberConfig, TermConfig, TrainConfig
from search.taps import forward_with_taps
from search.terms import TERMS, describe_terms, with_source
from search.train.cache import MentorCache
from search.train.cohort import pareto_rank, train_cohort
from search.train.mentor import train_mentor


@pytest.fixture(scope="module")
def mentor(mnist1d_small):
    m, _ = train_mentor(ArchConfig("conv1d", (16, 16, 16), batch_norm=True), mnist1d_small, epochs=2)
    return m


def hint(weight=0.1, student="layer2", teacher="layer3", metric="rmse"):
    return TermConfig("hint", weight, {"student": student, "teacher": teacher, "metric": metric})


def cfg(widths=(8, 8), seed=0, lr=1e-2, hints=(), w_kd=0.0, epochs=2, wd=1e-4, bn=False):
    kd = (TermConfig("kd", w_kd, {"temperature": 4.0}),) if w_kd else ()
    return MemberConfig(arch=ArchConfig("conv1d", widths, 5, bn),
                        train=TrainConfig(epochs=epochs, batch_size=64, lr=lr, weight_decay=wd, seed=seed),
                        terms=(TermConfig("ce", 1.0), *hints, *kd))


def test_terms_compute_what_their_papers_say():
    logits, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    assert torch.equal(TERMS["ce"]({}, {}, {})(logits, {}, y, {}, {}), F.cross_entropy(logits, y))
    t_logits = torch.randn(16, 10)
    kd = TERMS["kd"]({}, {}, {})(logits, {}, y, {"logits": t_logits}, {"temperature": torch.tensor(4.0)})
    want = 16 * F.kl_div(F.log_softmax(logits / 4, -1), F.log_softmax(t_logits / 4, -1), log_target=True,
                         reduction="batchmean")
    assert torch.allclose(kd, want, atol=1e-6)
    h = TERMS["hint"]({"student": "layer2", "teacher": "layer3", "metric": "rmse"}, {"layer2": (4, 5)},
                      {"layer3": (4, 5)})
    f = torch.randn(16, 4, 5)
    with torch.no_grad():  # an identity projection: the hint is the plain RMSE of the maps
        h.proj.map.weight.copy_(torch.eye(4).view(4, 4, 1))
        h.proj.map.bias.zero_()
    assert torch.allclose(h(logits, {"layer2": f}, y, {"layer3": f + 1}, {}), torch.tensor(1.0), atol=1e-5)
    assert TERMS["hint"].describe(hint()) == "layer2->layer3:rmse@0.1"
    assert MemberConfig(ArchConfig("conv1d", (4,)), terms=(TermConfig("ce", 1.0), hint(0.0))).independent
    assert not cfg(hints=[hint(0.1)]).independent and cfg(hints=[hint(0.1)]).twin().independent


def test_attention_transfer_matches_zagoruyko_komodakis():
    """Q = Σ_c |F_c|² flattened and L2-normalised; loss = ‖Q_s − Q_t‖₂. Channel counts may differ,
    zero channels (fused padding) change nothing, and equal maps cost 0."""
    at = TERMS["attention"]({"student": "layer2", "teacher": "layer3"}, {}, {})
    s, t = torch.randn(8, 4, 10), torch.randn(8, 16, 10)
    q = lambda f: F.normalize(f.pow(2).sum(1).flatten(1), dim=1)  # noqa: E731
    want = (q(s) - q(t)).norm(dim=1).mean()
    assert torch.allclose(at(None, {"layer2": s}, None, {"layer3": t}, {}), want, atol=1e-6)
    padded = torch.cat([s, torch.zeros(8, 3, 10)], 1)
    assert torch.allclose(at(None, {"layer2": padded}, None, {"layer3": t}, {}), want, atol=1e-6)
    assert at(None, {"layer2": 2 * t}, None, {"layer3": t}, {}) < 1e-6  # scale-free
    small = at(None, {"layer2": torch.randn(8, 4, 5)}, None, {"layer3": t}, {})  # 5 positions vs 10
    assert small.isfinite() and small > 0


def test_attention_member_fused_equals_alone(mnist1d_small, mentor):
    taps = ["layer2"]
    cache = MentorCache.build(mentor, mnist1d_small.x_train, taps)
    at = TermConfig("attention", 100.0, {"student": "layer2", "teacher": "layer2"})
    me = MemberConfig(ArchConfig("conv1d", (4, 6)), TrainConfig(epochs=2, batch_size=64, seed=1),
                      (TermConfig("ce", 1.0), at))
    other = cfg((8, 8), seed=2)
    alone, = train_cohort([me], mnist1d_small, cache=cache, mentor_shapes={})
    fused = train_cohort([other, me], mnist1d_small, cache=cache, mentor_shapes={})
    for k, v in alone.state_dict.items():
        assert torch.allclose(fused[1].state_dict[k], v, rtol=1e-4, atol=1e-5), k
    plain, = train_cohort([me.twin()], mnist1d_small)
    assert not torch.equal(plain.state_dict["layer1.0.weight"], alone.state_dict["layer1.0.weight"])


def test_cache_equals_live_mentor(mentor, mnist1d_small):
    x = mnist1d_small.x_train
    cache = MentorCache.build(mentor, x, ["layer2", "layer3"], batch=100)
    logits, feats = forward_with_taps(mentor.model.eval(), x, ["layer2", "layer3"])
    assert torch.allclose(cache.logits, logits, atol=1e-5)
    for name, f in zip(["layer2", "layer3"], feats):
        assert cache.feats[name].dtype == torch.float16  # half the memory
        assert torch.allclose(cache.feats[name].float(), f, rtol=2e-3, atol=2e-3)


def test_same_seed_same_weights(mnist1d_small):
    a, = train_cohort([cfg(seed=3)], mnist1d_small)
    b, = train_cohort([cfg(seed=3)], mnist1d_small)
    c, = train_cohort([cfg(seed=4)], mnist1d_small)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert not torch.equal(a.state_dict["layer1.0.weight"], c.state_dict["layer1.0.weight"])


@pytest.mark.parametrize("bn", [False, True])
def test_cohort_member_equals_training_alone(mnist1d_small, mentor, bn):
    """A member fused with wider members, other seeds, lrs and loss weights ends where it
    would alone: padding, stacking and per-member optimiser state change nothing."""
    taps = ["layer3"]
    cache = MentorCache.build(mentor, mnist1d_small.x_train, taps)
    shapes = dict(zip(taps, mentor.tap_shapes(taps)))
    me = cfg((4, 6), seed=1, lr=5e-3, hints=[hint(0.1)], bn=bn)
    others = [cfg((8, 8), seed=2, lr=2e-2, hints=[hint(0.5)], bn=bn, wd=1e-2),
              cfg((5, 8), seed=3, lr=1e-2, hints=[hint(0.05)], bn=bn)]
    alone, = train_cohort([me], mnist1d_small, cache=cache, mentor_shapes=shapes)
    fused = train_cohort([others[0], me, others[1]], mnist1d_small, cache=cache, mentor_shapes=shapes)
    assert fused[1].config == me
    for k, v in alone.state_dict.items():
        assert torch.allclose(fused[1].state_dict[k].float(), v.float(), rtol=1e-4, atol=1e-5), k
    assert fused[1].curves["val_acc"] == pytest.approx(alone.curves["val_acc"], abs=1e-6)
    assert fused[1].cost == alone.cost and fused[1].cost["params"] < fused[0].cost["params"]


def test_independent_and_mentored_in_one_cohort(mnist1d_small, mentor):
    taps = ["layer3"]
    cache = MentorCache.build(mentor, mnist1d_small.x_train, taps)
    m = cfg(hints=[hint(0.1)], w_kd=0.5)
    res = train_cohort([m, m.twin()], mnist1d_small, cache=cache, mentor_shapes={"layer3": (16, 10)})
    alone, = train_cohort([m.twin()], mnist1d_small)
    assert [r.status for r in res] == ["finished", "finished"]
    # the twin beside a mentored member (hint and KL terms weighted 0 for it) trains as alone
    for k, v in alone.state_dict.items():
        assert torch.allclose(res[1].state_dict[k], v, rtol=1e-4, atol=1e-5), k
    assert not torch.equal(res[0].state_dict["layer1.0.weight"], alone.state_dict["layer1.0.weight"])


def test_pareto_rank_zero_is_the_reports_front_and_each_rank_the_front_of_what_is_left():
    import random

    import pandas as pd

    from search.pareto import pareto_front

    rng = random.Random(0)
    acc = [rng.choice([0.5, 0.6, 0.7, 0.8, 0.9]) for _ in range(60)]  # ties in both axes on purpose
    cost = [rng.choice([100, 200, 400, 800]) for _ in range(60)]
    rank = pareto_rank(acc, cost)
    df = pd.DataFrame({"run_id": [f"{i:02d}" for i in range(60)], "status": "finished", "val_acc": acc,
                       "params": cost, "rank": rank})
    for r in range(max(rank) + 1):
        left = df[df["rank"] >= r]
        front = pareto_front(left)  # keeps one of exact duplicates; the rank gives all of them r
        on = left[left["rank"] == r]
        assert set(zip(front.val_acc, front.params)) == set(zip(on.val_acc, on.params))
    assert pareto_rank([], []) == []


def test_pruned_members_never_finish(mnist1d_small):
    cfgs = [cfg((w, w), seed=s, epochs=4) for s, w in enumerate([4, 4, 8, 8, 16, 16])]
    res = train_cohort(cfgs, mnist1d_small, rungs=[1], eta=3)
    status = [r.status for r in res]
    assert status.count("finished") == 2 and status.count("pruned") == 4
    for r in res:
        assert r.epochs_run == (4 if r.status == "finished" else 1)
        assert (r.state_dict is None) == (r.status == "pruned")


def test_nan_loss_fails_the_member_only(mnist1d_small):
    res = train_cohort([cfg(lr=1e30, seed=0), cfg(seed=1)], mnist1d_small)
    assert res[0].status == "failed" and "nan" in res[0].error.lower() or "inf" in res[0].error.lower()
    assert res[1].status == "finished"


def test_snapshots_are_the_weights_at_that_epoch(mnist1d_small):
    """A member's snapshot at epoch 1 of 3 is where a 1-epoch run of it ends (a constant learning
    rate: the schedule is the only thing the number of epochs changes), fused or alone; none unasked."""
    def constant(epochs, seed=1):
        c = cfg((4, 6), seed=seed, epochs=epochs)
        return MemberConfig(c.arch, TrainConfig(epochs=epochs, batch_size=64, lr=1e-2, schedule="constant",
                                                seed=seed), c.terms)
    short, = train_cohort([constant(1)], mnist1d_small)
    alone, = train_cohort([constant(3)], mnist1d_small, snapshot_at=[1, 2])
    fused = train_cohort([cfg((8, 8), seed=2, epochs=3), constant(3)], mnist1d_small, snapshot_at=[1])
    assert sorted(alone.snapshots) == [1, 2] and sorted(fused[1].snapshots) == [1]
    for k, v in short.state_dict.items():
        assert torch.allclose(alone.snapshots[1][k], v, rtol=1e-4, atol=1e-5), k
        assert torch.allclose(fused[1].snapshots[1][k], v, rtol=1e-4, atol=1e-5), k
    assert not torch.equal(alone.snapshots[1]["layer1.0.weight"], alone.state_dict["layer1.0.weight"])
    assert not train_cohort([constant(2)], mnist1d_small)[0].snapshots


# --------------------------------------------- teachers: early-stopped checkpoints, an assistant

@pytest.fixture(scope="module")
def teachers(mnist1d_small, tmp_path_factory):
    """A mentor trained 2 epochs keeping epoch 1, and a teacher assistant distilled from it."""
    from search.mentors import load_mentor
    from search.spaces import AssistantSpec, MentorArch, MentorSpec
    from search.train.mentor import train_assistant

    path = tmp_path_factory.mktemp("teachers") / "m.pt"
    final, _ = train_mentor(ArchConfig("conv1d", (16, 16, 16), batch_norm=True), mnist1d_small, epochs=2,
                            checkpoints=[1], out=path)
    spec = MentorSpec(path=str(path), arch=MentorArch(widths=[16, 16, 16]), epochs=2, checkpoints=[1],
                      assistant=AssistantSpec(widths=[8, 8, 8], epochs=1))
    assistant, _ = train_assistant(spec, final, mnist1d_small)
    versions = {"epoch1": load_mentor(path, version="epoch1"), "assistant": assistant}
    names = ["layer3", "epoch1/layer3", "epoch1/logits", "assistant/layer3", "assistant/logits"]
    cache = MentorCache.build(final, mnist1d_small.x_train, names, versions=versions)
    shapes = {n: (versions[n.split("/")[0]] if "/" in n else final).tap_shapes([n.split("/")[-1]])[0]
              for n in names if not n.endswith("logits")}
    return cache, shapes


def taught(source, widths=(4, 6), seed=1, w_hint=0.1, w_kd=0.5):
    terms = cfg(widths, seed=seed, lr=5e-3, hints=[hint(w_hint)], w_kd=w_kd).terms
    return MemberConfig(ArchConfig("conv1d", widths), TrainConfig(epochs=2, batch_size=64, lr=5e-3, seed=seed),
                        with_source(terms, source))


def test_teacher_outputs_are_qualified_and_other_teachers_are_other_slots(teachers):
    cache, shapes = teachers
    final, early = taught("final"), taught("epoch1")
    assert [t.params for t in final.terms] == [t.params for t in cfg(hints=[hint()], w_kd=0.5).terms]  # unchanged
    kd_f, kd_e = final.terms[2], early.terms[2]
    assert TERMS["kd"].mentor_outputs(kd_f.params) == ("logits",)
    assert TERMS["kd"].mentor_outputs(kd_e.params) == ("epoch1/logits",)
    assert TERMS["hint"].mentor_outputs(early.terms[1].params) == ("epoch1/layer3",)
    assert TERMS["kd"].slot(kd_f) != TERMS["kd"].slot(kd_e)
    assert TERMS["hint"].slot(final.terms[1]) != TERMS["hint"].slot(early.terms[1])
    assert describe_terms(early.terms) == "layer2->layer3:rmse@0.1<epoch1;kd@0.5/T4<epoch1"
    assert "<" not in describe_terms(final.terms)
    assert cache.feats["epoch1/logits"].dtype == torch.float32 and cache.feats["epoch1/layer3"].dtype == torch.float16
    assert shapes["assistant/layer3"][0] == 8 and shapes["layer3"][0] == 16  # the assistant is narrower
    assert not torch.equal(cache["epoch1/logits"], cache["logits"])
    assert not torch.equal(cache["assistant/logits"], cache["logits"])


@pytest.mark.parametrize("source", ["epoch1", "assistant"])
def test_member_taught_by_another_teacher_fused_equals_alone(mnist1d_small, teachers, source):
    """Fused beside members taught by the final mentor and by the other teacher, a member ends where
    it would alone: each teacher's slots read that teacher's targets and no one else's."""
    cache, shapes = teachers
    me = taught(source)
    other = "assistant" if source == "epoch1" else "epoch1"
    mates = [taught("final", (8, 8), seed=2, w_hint=0.5), taught(other, (5, 8), seed=3, w_kd=1.0)]
    alone, = train_cohort([me], mnist1d_small, cache=cache, mentor_shapes=shapes)
    fused = train_cohort([mates[0], me, mates[1]], mnist1d_small, cache=cache, mentor_shapes=shapes)
    for k, v in alone.state_dict.items():
        assert torch.allclose(fused[1].state_dict[k], v, rtol=1e-4, atol=1e-5), k
    by_final, = train_cohort([taught("final")], mnist1d_small, cache=cache, mentor_shapes=shapes)
    assert not torch.equal(by_final.state_dict["layer1.0.weight"], alone.state_dict["layer1.0.weight"])
