"""What every benchmark starts from: the space's dataset and mentor on the fastest
device, the mentor cache for the taps hints use, and the card's name for the results."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from search.data import Splits, load_dataset
from search.mentors import Mentor
from search.spaces import SearchSpace, load_space
from search.train.cache import MentorCache
from search.train.device import pick_device
from search.train.mentor import ensure_mentor


@dataclass
class Bench:
    space: SearchSpace
    card: str
    splits: Splits
    mentor: Mentor
    taps: list[str]
    cache: MentorCache
    shapes: dict[str, tuple[int, ...]]


def setup(space_path: str, taps=("layer3", "layer4")) -> Bench:
    space = load_space(space_path)
    dev = pick_device(None)
    card = torch.cuda.get_device_name() if dev.type == "cuda" else f"cpu-{os.cpu_count()}cores"
    d = space.dataset
    splits = load_dataset(d.name, n_samples=d.n_samples, seed=d.seed).to(dev)
    mentor = ensure_mentor(space.mentor, splits)  # trained and saved on first use
    mentor.model.to(dev)
    taps = list(taps)
    cache = MentorCache.build(mentor, splits.x_train, taps)
    return Bench(space, card, splits, mentor, taps, cache, dict(zip(taps, mentor.tap_shapes(taps))))
