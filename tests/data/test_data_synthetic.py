"""Synthetic generators: the thesis section 4.3 manifolds and the shared-latent toy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from mmguard.data import make_manifold, make_shared_latent
from mmguard.errors import SpecError


def test_wave_equations() -> None:
    x, t = make_manifold("wave", 500, seed=1, return_t=True)
    assert x.shape == (500, 2) and x.dtype == torch.float32
    assert float(t.min()) >= 0.0 and float(t.max()) <= 2 * math.pi
    assert torch.allclose(x[:, 0], t - math.pi, atol=1e-5)
    assert torch.allclose(x[:, 1], torch.sin(t), atol=1e-5)


def test_circle_equations() -> None:
    x, t = make_manifold("circle", 500, seed=2, return_t=True)
    assert torch.allclose(x[:, 0], 3 * torch.sin(t), atol=1e-5)
    assert torch.allclose(x[:, 1], 3 * torch.cos(t), atol=1e-5)
    assert torch.allclose(x.norm(dim=1), torch.full((500,), 3.0), atol=1e-5)


def test_manifold_determinism_and_noise() -> None:
    assert torch.equal(make_manifold("wave", 50, seed=7), make_manifold("wave", 50, seed=7))
    assert not torch.equal(make_manifold("wave", 50, seed=7), make_manifold("wave", 50, seed=8))
    noisy = make_manifold("circle", 2000, seed=0, noise=0.1)
    assert 0.05 < float((noisy.norm(dim=1) - 3).std()) < 0.15
    t_uniform = make_manifold("circle", 4000, seed=0, return_t=True)[1]
    assert abs(float(t_uniform.mean()) - math.pi) < 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "spiral", "n": 5}, "unknown manifold 'spiral'"),
        ({"name": "wave", "n": 0}, "must be positive"),
        ({"name": "wave", "n": 5, "noise": -1.0}, "noise must be"),
    ],
)
def test_manifold_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        make_manifold(**kwargs)


def test_shared_latent_shapes_and_defaults() -> None:
    b = make_shared_latent(300)
    assert b.names == ("m0", "m1", "m2")
    assert [s.shape for s in b.specs] == [(4,), (6,), (3,)]
    assert b.target.dtype == torch.int64 and set(b.target.tolist()) == {0, 1}
    assert all(x.dtype == torch.float32 for x in b.modalities.values())
    b.check_finite()


def test_shared_latent_determinism() -> None:
    a = make_shared_latent(100, seed=4)
    b = make_shared_latent(100, seed=4)
    assert torch.equal(a.concat_flat(), b.concat_flat()) and torch.equal(a.target, b.target)
    c = make_shared_latent(100, seed=5)
    assert not torch.equal(a.concat_flat(), c.concat_flat())
    d = make_shared_latent(100, seed=4, map_seed=1)
    assert not torch.equal(a.concat_flat(), d.concat_flat())  # another task: other maps


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_classes_are_balanced(num_classes: int) -> None:
    b = make_shared_latent(3000, num_classes=num_classes, seed=0)
    frac = torch.bincount(b.target, minlength=num_classes).double() / len(b)
    assert torch.all((frac - 1 / num_classes).abs() < 0.05), frac


def test_one_dimensional_latent_is_balanced() -> None:
    b = make_shared_latent(3000, latent_dim=1, num_classes=4, seed=0)
    frac = torch.bincount(b.target, minlength=4).double() / len(b)
    assert torch.all((frac - 0.25).abs() < 0.05)


def knn_accuracy(redundancy: float, modality: str = "m1") -> float:
    train = make_shared_latent(1500, redundancy=redundancy, noise=0.05, seed=0)
    test = make_shared_latent(500, redundancy=redundancy, noise=0.05, seed=1)  # same task (map_seed)
    clf = KNeighborsClassifier(15).fit(train.flat(modality).numpy(), train.target.numpy())
    return float(clf.score(test.flat(modality).numpy(), test.target.numpy()))


def test_redundancy_controls_what_a_modality_knows() -> None:
    assert knn_accuracy(1.0) > 0.85  # each modality alone sees the shared latent
    assert knn_accuracy(0.0) < 0.62  # only private latents: chance level


def test_per_modality_redundancy_and_names() -> None:
    b = make_shared_latent(200, modality_dims=(2, 3), redundancy=(1.0, 0.0), names=("left", "right"))
    assert b.names == ("left", "right")


def test_six_modalities_and_episodes() -> None:
    b = make_shared_latent(95, modality_dims=(1, 2, 3, 4, 5, 6), episode_length=10, seed=0)
    assert b.num_modalities == 6 and b.spec("m5").shape == (6,)
    assert b.meta["episode"].tolist()[-5:] == [9] * 5 and b.meta["t"].tolist()[:3] == [0, 1, 2]
    x = b.modalities["m5"].numpy()
    step = np.abs(np.diff(x, axis=0))[b.meta["t"].numpy()[1:] != 0].mean()
    assert step < np.abs(x - x.mean(0)).mean()  # consecutive steps are correlated within an episode


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"modality_dims": (4,)}, "need 2 to 6 modalities"),
        ({"modality_dims": (1,) * 7}, "need 2 to 6 modalities"),
        ({"modality_dims": (4, 0)}, "must be positive"),
        ({"redundancy": 1.5}, r"redundancy must be in \[0, 1\]"),
        ({"redundancy": (0.5, 0.5)}, "one per modality"),
        ({"num_classes": 1}, "num_classes must be at least 2"),
        ({"noise": -0.1}, "noise must be"),
        ({"latent_dim": 0}, "latent_dim must be positive|n and latent_dim"),
        ({"names": ("a", "a", "b")}, "distinct modality names"),
        ({"episode_length": 0}, "episode_length must be positive"),
    ],
)
def test_shared_latent_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        make_shared_latent(10, **kwargs)
