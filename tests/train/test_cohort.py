import dataclasses

import pytest
import torch
from torch.nn import functional as F

from search.config import ArchConfig, HintConfig, MemberConfig, TrainConfig
from search.models import forward_with_taps
from search.train.cache import MentorCache
from search.train.cohort import train_cohort
from search.train.losses import member_loss
from search.train.mentor import train_mentor


@pytest.fixture(scope="module")
def mentor(mnist1d_small):
    m, _ = train_mentor(ArchConfig("conv1d", (16, 16, 16), batch_norm=True), mnist1d_small, epochs=2)
    return m


def cfg(widths=(8, 8), seed=0, lr=1e-2, hints=(), w_kd=0.0, epochs=2, wd=1e-4, bn=False):
    return MemberConfig(arch=ArchConfig("conv1d", widths, 5, bn),
                        train=TrainConfig(epochs=epochs, batch_size=64, lr=lr, weight_decay=wd, seed=seed),
                        hints=tuple(hints), w_kd=w_kd)


def test_loss_is_plain_ce_when_mentor_weights_are_zero():
    logits, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    preds, targets = [torch.randn(16, 4, 5)], [torch.randn(16, 4, 5)]
    w = {"ce": torch.tensor(1.0), "hint": torch.tensor([0.0]), "kd": torch.tensor(0.0), "T": torch.tensor(4.0)}
    loss = member_loss(logits, preds, y, torch.randn(16, 10), targets, ["rmse"], w)
    assert torch.equal(loss, F.cross_entropy(logits, y))
    w["hint"] = torch.tensor([0.5])
    assert loss < member_loss(logits, preds, y, None, targets, ["rmse"], w)


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
    hint = HintConfig("layer2", "layer3", "rmse", 0.1)
    taps = ["layer3"]
    cache = MentorCache.build(mentor, mnist1d_small.x_train, taps)
    shapes = dict(zip(taps, mentor.tap_shapes(taps)))
    me = cfg((4, 6), seed=1, lr=5e-3, hints=[hint], bn=bn)
    others = [cfg((8, 8), seed=2, lr=2e-2, hints=[dataclasses.replace(hint, weight=0.5)], bn=bn, wd=1e-2),
              cfg((5, 8), seed=3, lr=1e-2, hints=[dataclasses.replace(hint, weight=0.05)], bn=bn)]
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
    m = cfg(hints=[HintConfig("layer2", "layer3", "rmse", 0.1)], w_kd=0.5)
    res = train_cohort([m, m.twin()], mnist1d_small, cache=cache, mentor_shapes={"layer3": (16, 10)})
    alone, = train_cohort([m.twin()], mnist1d_small)
    assert [r.status for r in res] == ["finished", "finished"]
    # the twin beside a mentored member (hint and KL terms weighted 0 for it) trains as alone
    for k, v in alone.state_dict.items():
        assert torch.allclose(res[1].state_dict[k], v, rtol=1e-4, atol=1e-5), k
    assert not torch.equal(res[0].state_dict["layer1.0.weight"], alone.state_dict["layer1.0.weight"])


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
