"""DKD and DIST compute what their reference code computes, train fused exactly as alone, and every
mentor term's weight may be relative to the label loss."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from search.config import ArchConfig, MemberConfig, TermConfig, TrainConfig
from search.terms import TERMS, describe_terms, label_scaled
from search.train.cache import MentorCache
from search.train.cohort import train_cohort
from search.train.mentor import train_mentor


def mdistiller_dkd(zs, zt, y, alpha, beta, T):
    """megvii-research/mdistiller's dkd_loss, re-written directly (scatter masks, kl_div summed / B)."""
    gt = torch.zeros_like(zs).scatter_(1, y.unsqueeze(1), 1).bool()
    other = ~gt
    ps, pt = F.softmax(zs / T, 1), F.softmax(zt / T, 1)
    bs = torch.cat([(ps * gt).sum(1, keepdim=True), (ps * other).sum(1, keepdim=True)], 1)
    bt = torch.cat([(pt * gt).sum(1, keepdim=True), (pt * other).sum(1, keepdim=True)], 1)
    tckd = F.kl_div(torch.log(bs), bt, reduction="sum") * T ** 2 / y.shape[0]
    pt2 = F.softmax(zt / T - 1000.0 * gt, 1)
    log_ps2 = F.log_softmax(zs / T - 1000.0 * gt, 1)
    nckd = F.kl_div(log_ps2, pt2, reduction="sum") * T ** 2 / y.shape[0]
    return alpha * tckd + beta * nckd


def hunto_dist(zs, zt, beta, gamma, T):
    """hunto/DIST_KD's DIST loss, re-written directly."""
    def pearson(a, b):
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)
    ys, yt = (zs / T).softmax(1), (zt / T).softmax(1)
    inter = T ** 2 * (1 - pearson(ys, yt).mean())
    intra = T ** 2 * (1 - pearson(ys.t(), yt.t()).mean())
    return beta * inter + gamma * intra


@pytest.mark.parametrize("T,alpha,beta", [(4.0, 1.0, 8.0), (1.0, 0.5, 2.0), (2.0, 0.0, 1.0)])
def test_dkd_is_mdistillers_dkd(T, alpha, beta):
    g = torch.Generator().manual_seed(0)
    zs, zt, y = torch.randn(16, 10, generator=g) * 3, torch.randn(16, 10, generator=g) * 3, torch.arange(16) % 10
    p = {"temperature": torch.tensor(T), "alpha": torch.tensor(alpha), "beta": torch.tensor(beta)}
    got = TERMS["dkd"]({}, {}, {})(zs, {}, y, {"logits": zt}, p)
    assert torch.allclose(got, mdistiller_dkd(zs, zt, y, alpha, beta, T), rtol=1e-5, atol=1e-6)
    assert TERMS["dkd"]({}, {}, {})(zt, {}, y, {"logits": zt}, p).abs() < 1e-5  # the teacher itself costs 0


@pytest.mark.parametrize("T,beta,gamma", [(1.0, 1.0, 1.0), (4.0, 2.0, 2.0), (2.0, 1.0, 0.0)])
def test_dist_is_huntos_dist(T, beta, gamma):
    g = torch.Generator().manual_seed(1)
    zs, zt, y = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g) * 2, torch.arange(16) % 10
    p = {"temperature": torch.tensor(T), "beta": torch.tensor(beta), "gamma": torch.tensor(gamma)}
    got = TERMS["dist"]({}, {}, {})(zs, {}, y, {"logits": zt}, p)
    assert torch.allclose(got, hunto_dist(zs, zt, beta, gamma, T), rtol=1e-5, atol=1e-6)
    assert TERMS["dist"]({}, {}, {})(zt, {}, y, {"logits": zt}, p).abs() < 1e-4  # the teacher itself costs 0


def test_a_weight_relative_to_the_label_loss_is_that_loss_in_size_and_the_term_in_direction():
    zs = torch.randn(16, 10, requires_grad=True)
    zt, y = torch.randn(16, 10), torch.arange(16) % 10
    p = {"temperature": torch.tensor(4.0), "normalise": torch.tensor(1.0)}
    kd = TERMS["kd"]({}, {}, {})
    scaled = kd(zs, {}, y, {"logits": zt}, p)
    assert torch.allclose(scaled, F.cross_entropy(zs, y), atol=1e-6)  # weight 1 = as large as the label loss
    raw = kd(zs, {}, y, {"logits": zt}, {**p, "normalise": torch.tensor(0.0)})
    g_scaled, = torch.autograd.grad(scaled, zs)
    g_raw, = torch.autograd.grad(raw, zs)
    assert torch.allclose(g_scaled, g_raw * (F.cross_entropy(zs, y) / raw).detach(), atol=1e-6)
    assert torch.equal(label_scaled(raw, zs, y, 0.0), raw)  # off: exactly the raw loss
    assert TERMS["kd"].member_params["normalise"] == 0.0 and "normalise" not in TERMS["ce"].member_params


def test_descriptions_name_every_number():
    dkd = TermConfig("dkd", 0.5, {"temperature": 4.0, "alpha": 1.0, "beta": 8.0, "normalise": 1.0})
    dist = TermConfig("dist", 0.2, {"temperature": 1.0, "beta": 1.0, "gamma": 2.0, "source": "epoch20"})
    assert describe_terms((TermConfig("ce", 1.0), dkd, dist)) == "dkd@0.5ce/T4/a1b8;dist@0.2/T1/b1g2<epoch20"


@pytest.fixture(scope="module")
def cache(mnist1d_small):
    m, _ = train_mentor(ArchConfig("conv1d", (16, 16, 16), batch_norm=True), mnist1d_small, epochs=2)
    return MentorCache.build(m, mnist1d_small.x_train, [])


def member(term: TermConfig, widths=(4, 6), seed=1) -> MemberConfig:
    return MemberConfig(ArchConfig("conv1d", widths), TrainConfig(epochs=2, batch_size=64, lr=5e-3, seed=seed),
                        (TermConfig("ce", 1.0), term))


@pytest.mark.parametrize("kind,params", [("dkd", {"temperature": 4.0, "alpha": 1.0, "beta": 8.0}),
                                         ("dist", {"temperature": 1.0, "beta": 1.0, "gamma": 1.0})])
def test_logit_term_fused_equals_alone(mnist1d_small, cache, kind, params):
    """Fused beside members with other numbers of the same term (one slot) and a KD member, a member
    ends where it would alone; and the term changes what it learns."""
    me = member(TermConfig(kind, 0.5, params))
    other = member(TermConfig(kind, 1.0, {**params, "temperature": 2.0, "normalise": 1.0}), (8, 8), seed=2)
    kd = member(TermConfig("kd", 0.5, {"temperature": 4.0}), (5, 8), seed=3)
    alone, = train_cohort([me], mnist1d_small, cache=cache, mentor_shapes={})
    fused = train_cohort([other, me, kd], mnist1d_small, cache=cache, mentor_shapes={})
    for k, v in alone.state_dict.items():
        assert torch.allclose(fused[1].state_dict[k], v, rtol=1e-4, atol=1e-5), k
    plain, = train_cohort([me.twin()], mnist1d_small)
    assert not torch.equal(plain.state_dict["layer1.0.weight"], alone.state_dict["layer1.0.weight"])


def test_a_space_offers_dkd_and_dist_with_their_numbers_searched_and_weights_relative_to_the_label_loss():
    import optuna

    from search.spaces import parse_space
    from search.sweep.suggest import suggest_member

    space = parse_space({
        "dataset": {"name": "mnist1d", "n_samples": 300}, "mentee": {"depth": [3], "width": [4]},
        "terms": {"dkd": {"enabled": [False, True], "beta": {"low": 1.0, "high": 8.0}, "normalise": True},
                  "dist": {"enabled": True, "weight": 0.5, "temperature": [1.0, 4.0]}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        study.enqueue_trial({"arm": "mentored"})
        trial = study.ask()
        terms = {t.kind: t for t in suggest_member(trial, space).terms}
        assert terms["dist"].weight == 0.5 and "normalise" not in terms["dist"].params
        assert terms["dist"].params["temperature"] == trial.params["dist.temperature"]
        if "dkd" in terms:
            p = terms["dkd"].params
            assert p["normalise"] == 1.0 and p["alpha"] == 1.0 and p["beta"] == trial.params["dkd.beta"]
            assert 1.0 <= p["beta"] <= 8.0
        seen.add("dkd" in terms)
        study.tell(trial, 0.5)
    assert seen == {False, True}
