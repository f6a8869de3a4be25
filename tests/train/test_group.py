"""Fused groups: padding in depth, width and kernel is exact; cohorts form few groups; schedules."""

import random

import pytest
import torch

from search.config import ArchConfig, MemberConfig, TermConfig, TrainConfig
from search.data import Splits
from search.models import create_mentee, create_template, fuse_class, layer_shapes
from search.taps import tap_shapes
from search.train.cache import MentorCache
from search.train.cohort import train_cohort
from search.train.group import FusedGroup, plan_groups, sample_order
from search.train.mentor import train_mentor
from search.train.optim import SCHEDULES, weight_factor


@pytest.fixture(scope="module")
def mentor(mnist1d_small):
    m, _ = train_mentor(ArchConfig("conv1d", (16, 16, 16), batch_norm=True), mnist1d_small, epochs=2)
    cache = MentorCache.build(m, mnist1d_small.x_train, ["layer3"])
    return cache, {"layer3": m.tap_shapes(["layer3"])[0]}


def cfg(widths, kernel=5, seed=0, lr=1e-2, hint=None, bn=False, schedule="cosine", family="conv1d", epochs=2,
        hint_schedule="constant", ce_schedule="constant"):
    ce = TermConfig("ce", 1.0, {} if ce_schedule == "constant" else {"schedule": ce_schedule})
    params = {"student": hint, "teacher": "layer3", "metric": "rmse"}
    if hint_schedule != "constant":
        params["schedule"] = hint_schedule
    terms = (ce,) + ((TermConfig("hint", 0.1, params),) if hint else ())
    return MemberConfig(ArchConfig(family, tuple(widths), kernel, bn),
                        TrainConfig(epochs=epochs, batch_size=64, lr=lr, seed=seed, schedule=schedule), terms)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.allclose(b[k].float(), v.float(), rtol=1e-4, atol=1e-5), k


@pytest.mark.parametrize("bn", [False, True])
def test_member_padded_in_depth_and_kernel_equals_alone(mnist1d_small, mentor, bn):
    """A 1-layer kernel-3 member fused (one group, forced) with a 3-layer kernel-5 member and a
    2-layer kernel-3 one, each with a hint on its own last layer, its own lr schedule and seed,
    ends with the weights it gets alone: exits, centred kernels and masks change nothing."""
    cache, shapes = mentor
    me = cfg((4,), 3, seed=1, hint="layer1", bn=bn)
    others = [cfg((8, 16, 8), 5, seed=2, lr=2e-2, hint="layer3", bn=bn, schedule="onecycle"),
              cfg((6, 12), 3, seed=3, hint="layer2", bn=bn)]
    timing = {}
    fused = train_cohort([others[0], me, others[1]], mnist1d_small, cache=cache, mentor_shapes=shapes, max_groups=1,
                         timing=timing)
    assert timing["groups"] == 1
    for c, r in zip([others[0], me, others[1]], fused):
        alone, = train_cohort([c], mnist1d_small, cache=cache, mentor_shapes=shapes)
        assert_same_weights(alone.state_dict, r.state_dict)
        assert r.curves["val_acc"] == pytest.approx(alone.curves["val_acc"], abs=1e-6)
        assert r.cost == alone.cost


def test_hints_on_every_depth_share_one_slot(mnist1d_small, mentor):
    """Hints from each member's last layer (layer1, layer2, layer3) to one mentor tap are one loss
    slot in a mixed-depth group, not one per depth: each member's tap pooled to the mentor's 10
    positions and padded to the widest tap's channels (the template's 16 at layer2), its owners
    grouped by the tap they read. The test above shows each member still trains as alone."""
    cache, shapes = mentor
    cfgs = [cfg((4,), 3, seed=1, hint="layer1"), cfg((8, 16, 8), 5, seed=2, hint="layer3"),
            cfg((6, 12), 3, seed=3, hint="layer2"), cfg((6,), 3, seed=4)]
    g = FusedGroup([0, 1, 2, 3], cfgs, mnist1d_small, shapes, torch.device("cpu"))
    assert [t[0] for t in g.terms] == [(), ("layer1",)]  # ce, then the one hint slot
    assert g.merged == [None, (16, 10)]
    assert g.owners[1] is not None and g.owners[1].tolist() == [0, 2, 1]
    g.train_epoch(mnist1d_small, cache, 0)
    assert torch.isfinite(g.loss_hist[0]).all()


@pytest.mark.parametrize("family,shape", [("conv1d", (1, 40)), ("conv1d", (3, 23)), ("conv2d", (1, 9, 10)),
                                           ("mlp", (1, 40))])
def test_tap_shapes_by_arithmetic_are_those_of_a_forward_pass(family, shape):
    """Groups take their members' tap shapes from `layer_shapes` (no net built or run): every tap's,
    for kernels 3 to 6 and 1-3 layers, equals a forward pass through the net and its template."""
    for kernel in (3, 4, 5, 6):
        for widths in [(4,), (8, 3), (5, 16, 7)]:
            arch = ArchConfig(family, widths, kernel)
            for net in (create_mentee(arch, shape, 10), create_template(arch, shape, 10, exits=(1, len(widths)))):
                assert layer_shapes(arch, shape, 10) == dict(zip(net.taps, tap_shapes(net, net.taps, shape)))


def test_mlp_members_of_mixed_depth_equal_alone(mnist1d_small):
    cfgs = [cfg((16, 8, 8), family="mlp", seed=0), cfg((5,), family="mlp", seed=1, lr=3e-2)]
    fused = train_cohort(cfgs, mnist1d_small, max_groups=1)
    for c, r in zip(cfgs, fused):
        alone, = train_cohort([c], mnist1d_small)
        assert_same_weights(alone.state_dict, r.state_dict)


def test_padding_never_moves(mnist1d_small, mentor):
    """Padded entries get exactly zero gradient: after training they, and Adam's moments there,
    are still exactly 0 (a masked weight that drifted would be harmless in the forward pass but
    would mean the mask leaks)."""
    cache, shapes = mentor
    cfgs = [cfg((8, 8, 8), 5, seed=0, hint="layer3"), cfg((4,), 3, seed=1, hint="layer1"), cfg((2, 4), 3, seed=2)]
    g = FusedGroup([0, 1, 2], cfgs, mnist1d_small, shapes, torch.device("cpu"))
    assert g.multi and g.exits == (1, 2, 3) and g.template_arch.kernel == 5
    for e in range(2):
        g.train_epoch(mnist1d_small, cache, e)
    pad = g.mask == 0
    assert pad.any() and (g.mask[0] == 0).any()  # the widest member has zeros too (exits, other slots)
    assert g.flat.detach()[pad].abs().max() == 0
    assert g.m[pad].abs().max() == 0 and g.v[pad].abs().max() == 0
    assert (g.flat.detach()[~pad] != 0).float().mean() > 0.9  # the real weights did train
    assert torch.isfinite(g.loss_hist).all() and (g.val_hist > 0).all()


def test_kernel_centred_in_larger_kernel_computes_the_same():
    """The padding scheme's premise: kernel 3 centred in kernel 5 (zeros outside) gives the same
    outputs and lengths through stride-2 layers and the flat head, for 1-D and 2-D convs."""
    torch.manual_seed(0)
    for family, shape in [("conv1d", (2, 23)), ("conv2d", (1, 9, 10))]:
        small = create_mentee(ArchConfig(family, (3, 4), 3), shape, 5)
        big = create_template(ArchConfig(family, (3, 4, 6), 5), shape, 5, exits=(2, 3))
        with torch.no_grad():
            for p in big.parameters():
                p.zero_()
            for name, p in small.named_parameters():
                q = big.get_parameter(name.replace("head.", "head.at2."))
                if name.endswith("weight") and p.dim() > 2:
                    q[(slice(None), slice(0, p.shape[1])) + (slice(1, 4),) * (p.dim() - 2)] = p
                elif "head" in name and p.dim() == 2:
                    q.view(q.shape[0], -1, *big.head.at2.layout[1:])[:, :small.head.layout[0]] = \
                        p.view(p.shape[0], *small.head.layout)
                else:
                    q[tuple(slice(0, s) for s in p.shape)] = p
        x = torch.randn(7, *shape)
        assert torch.allclose(big(x), small(x), atol=1e-6)


def test_mixed_cohorts_form_at_most_three_groups():
    rng = random.Random(0)
    cfgs = []
    for i in range(256):
        depth, width, growth = rng.choice([1, 2, 3]), rng.choice([4, 8, 16, 32]), rng.choice([1, 2])
        cfgs.append(cfg([width * growth ** j for j in range(depth)], rng.choice([3, 5]), seed=i,
                        schedule=rng.choice(["cosine", "onecycle"]),
                        hint=f"layer{depth}" if i % 2 else None, hint_schedule=rng.choice(SCHEDULES)))
    parts = plan_groups(cfgs, (1, 40), 10)
    assert 1 <= len(parts) <= 3
    assert sorted(i for p in parts for i in p) == list(range(256))
    small = plan_groups(cfgs[:8], (1, 40), 10)
    assert len(small) <= 3
    # groups are cut by size: no group mixes the largest architecture with the smallest
    widest = max(range(256), key=lambda i: sum(cfgs[i].arch.widths))
    narrowest = min(range(256), key=lambda i: sum(cfgs[i].arch.widths))
    assert len(parts) == 1 or not any(widest in p and narrowest in p for p in parts)
    # a kernel of the other parity cannot be centred: it is another class
    assert fuse_class(ArchConfig("conv1d", (4,), 3)) != fuse_class(ArchConfig("conv1d", (4,), 4))
    parts = plan_groups([cfg((4,), 3), cfg((4,), 4), cfg((8, 8), 5)], (1, 40), 10)
    assert [1] in parts and len(parts) <= 3


def test_weight_schedules():
    total = 10
    table = {s: [weight_factor(s, i, total) for i in range(total)] for s in SCHEDULES}
    assert table["constant"] == [1.0] * 10
    assert table["early"] == [1.0] * 5 + [0.0] * 5 and table["late"] == [0.0] * 5 + [1.0] * 5
    assert table["warmup"][0] == 0 and table["warmup"][3:] == [1.0] * 7 and 0 < table["warmup"][1] < 1
    assert table["decay"][0] == 1 and table["decay"] == sorted(table["decay"], reverse=True) and table["decay"][-1] > 0


def test_late_mentor_term_contributes_nothing_in_the_first_half(mnist1d_small, mentor):
    """Two-stage style schedules in the fused step: a `late` hint is weighted 0 for the first half
    of training, so after epoch 1 of 2 the member equals its independent twin exactly; then the
    hint switches on and they part. Members with different schedules share one group."""
    cache, shapes = mentor
    late = cfg((8, 8), seed=4, hint="layer2", hint_schedule="late")
    early = cfg((8, 8), seed=4, hint="layer2", hint_schedule="early", ce_schedule="late")
    twin = late.twin()
    g = FusedGroup([0, 1, 2], [late, twin, early], mnist1d_small, shapes, torch.device("cpu"))
    real = create_mentee(late.arch, mnist1d_small.input_shape, mnist1d_small.num_classes)
    g.train_epoch(mnist1d_small, cache, 0)
    assert all(torch.equal(a, b) for a, b in zip(g.crop(0, real).values(), g.crop(1, real).values()))
    assert not torch.equal(g.crop(0, real)["layer1.0.weight"], g.crop(2, real)["layer1.0.weight"])
    g.train_epoch(mnist1d_small, cache, 1)
    assert not torch.equal(g.crop(0, real)["layer1.0.weight"], g.crop(1, real)["layer1.0.weight"])
    # the fused group computes what the member computes alone
    res = train_cohort([late, twin, early], mnist1d_small, cache=cache, mentor_shapes=shapes, timing=(t := {}))
    assert t["groups"] == 1
    alone, = train_cohort([early], mnist1d_small, cache=cache, mentor_shapes=shapes)
    assert_same_weights(alone.state_dict, res[2].state_dict)


def test_sample_order_is_a_permutation_of_seed_and_epoch():
    seeds = torch.tensor([0, 1, 0, 2**32 - 1])
    o = sample_order(seeds, 0, 100)
    assert all(sorted(r.tolist()) == list(range(100)) for r in o)
    assert torch.equal(o[0], o[2]) and not torch.equal(o[0], o[1])
    assert not torch.equal(sample_order(seeds, 1, 100)[0], o[0])
    assert torch.equal(sample_order(seeds[1:2], 0, 100)[0], o[1])  # independent of the cohort


def test_conv2d_padded_members_equal_alone():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0, :4].mean((1, 2)) > 0).long()
    s = Splits("tiny2d", x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:], 4, (1, 8, 8))
    cfgs = [cfg((4, 6), 5, seed=0, family="conv2d", epochs=1), cfg((3,), 3, seed=1, family="conv2d", epochs=1)]
    fused = train_cohort(cfgs, s, max_groups=1)
    for c, r in zip(cfgs, fused):
        alone, = train_cohort([c], s)
        assert_same_weights(alone.state_dict, r.state_dict)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_epochs_need_no_host_sync(mnist1d_small, mentor):
    """On CUDA a mixed cohort replays captured steps and evaluations: the same numbers as eager
    (bf16, so close, not equal), and once captured an epoch never waits for the device."""
    from search.train.device import on_stream

    splits, dev = mnist1d_small.to("cuda"), torch.device("cuda")
    cache, shapes = mentor[0].to("cuda"), mentor[1]
    cfgs = [cfg((4 * (1 + i % 3),) * (1 + i % 3), 3 + 2 * (i % 2), seed=i, epochs=5,
                hint=f"layer{1 + i % 3}" if i % 2 else None, hint_schedule=SCHEDULES[i % 5]) for i in range(12)]
    eager = train_cohort(cfgs, splits, cache=cache, mentor_shapes=shapes, use_graph=False)
    graph = train_cohort(cfgs, splits, cache=cache, mentor_shapes=shapes)
    again = train_cohort(cfgs, splits, cache=cache, mentor_shapes=shapes)  # slots on side streams: no races
    for a, b, c in zip(eager, graph, again):
        assert a.status == b.status == "finished"
        for k in a.state_dict:
            assert torch.allclose(a.state_dict[k], b.state_dict[k], rtol=1e-2, atol=1e-3), k
            assert torch.allclose(c.state_dict[k], b.state_dict[k], rtol=1e-5, atol=1e-6), k
    groups = [FusedGroup(ix, [cfgs[i] for i in ix], splits, shapes, dev)
              for ix in plan_groups(cfgs, splits.input_shape, splits.num_classes)]
    for e in range(3):  # two eager epochs, then capture (which synchronises)
        for g in groups:
            with on_stream(g, dev):
                g.train_epoch(splits, cache, e)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for e in range(3, 5):
            for g in groups:
                with on_stream(g, dev):
                    g.train_epoch(splits, cache, e)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    assert all(torch.isfinite(g.val_hist).all() and g.test_acc is not None for g in groups)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_adamw_kernel_equals_torch_ops():
    from search.train import optim

    g = torch.Generator(device="cuda").manual_seed(0)
    K, P = 5, 3001
    p, grad, m, v = (torch.randn(K, P, device="cuda", generator=g) for _ in range(4))
    v, grad[:, :7] = v.abs(), 0.0
    lr, wd = torch.rand(K, 1, device="cuda", generator=g) * 1e-2, torch.rand(K, 1, device="cuda", generator=g)
    decay, t = (torch.rand(1, P, device="cuda", generator=g) > 0.5).float(), torch.tensor(3, device="cuda")
    ref = [x.clone() for x in (p, m, v)]
    kernel, optim._triton_adamw = optim._triton_adamw, None
    try:
        optim.adamw_flat_(*ref[:1], grad, *ref[1:], t, lr, wd, decay)
    finally:
        optim._triton_adamw = kernel
    optim.adamw_flat_(p, grad, m, v, t, lr, wd, decay)
    for a, b in zip((p, m, v), ref):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
