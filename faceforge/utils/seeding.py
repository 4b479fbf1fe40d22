"""Seeds derived from the run's seed, so that every random draw of a run is a function of what it is for.

A faceforge run draws randomness in a few places: the order of the training samples, each sample's augmentation,
the clip offsets of video models, the network's dropout masks. Each draw takes its own seed from
:func:`derive_seed` over ``(run seed, stream, epoch, index, ...)`` instead of advancing a shared generator, so a
draw does not depend on how many draws happened before it, in which process (DataLoader workers, persistent or
not), or whether the run was stopped and resumed in between. The ``stream`` tags below keep the uses apart.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np

__all__ = ["AUGMENT", "CLIP", "DROPOUT", "SHUFFLE", "VOLUME_AUGMENT", "derive_seed", "item_rng",
           "seed_transform"]

#: Stream tags: the second key of every derived seed (one per kind of draw).
SHUFFLE = 1
AUGMENT = 2
CLIP = 3
VOLUME_AUGMENT = 4
DROPOUT = 5


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that is a fixed function of ``keys`` (through NumPy's ``SeedSequence``).

    Args:
        keys: non-negative integers (the run seed first, then a stream tag, the epoch, the sample index, ...).
            Negative values are mapped to their 64-bit two's complement, so ``-1`` is accepted too.

    Returns:
        An ``int`` in ``[0, 2**63)``: usable by ``torch.manual_seed``, ``torch.Generator.manual_seed``,
        ``numpy.random.default_rng`` and ``random.Random``. Different keys give unrelated seeds.
    """
    entropy = [int(k) & 0xFFFF_FFFF_FFFF_FFFF for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]) >> 1


def item_rng(*keys: int) -> np.random.Generator:
    """``numpy.random.default_rng(derive_seed(*keys))``: the generator of one draw (one sample of one epoch)."""
    return np.random.default_rng(derive_seed(*keys))


def seed_transform(transform: Any, seed: int) -> None:
    """Seed a data transform for one call.

    albumentations (>= 1.4.18) transforms keep their own generators: they are reseeded with ``set_random_seed``.
    Other callables are assumed to draw from the global ``random`` and ``numpy.random`` modules (older
    albumentations does), which are seeded instead.

    Args:
        transform: the transform (None does nothing).
        seed: from :func:`derive_seed`.
    """
    if transform is None:
        return
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(int(seed) % 2**32)
        return
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
