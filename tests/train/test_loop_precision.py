"""train_ensemble's precision (docs/devices.md): autocast around the forward passes only, fp32 untouched."""

from __future__ import annotations

import torch
from torch import nn

from mmguard.devices import use_precision
from mmguard.emma.training import EMMA_PRECISION, MLPClassifier, StageSettings, train_classifier
from mmguard.train.ensemble import EnsembleMLP
from mmguard.train.loop import train_ensemble


class Probe(nn.Module):
    """A G = 1 linear model that records the dtype of its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)  # every probe starts from the same weights
        self.lin = nn.Linear(3, 1)
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x)
        self.seen.append(out.dtype)
        return out


def loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return ((model(batch["x"][0]).squeeze(-1) - batch["y"][0]) ** 2).mean().reshape(1)


def fit(model: Probe, **kw):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 3, generator=gen)
    data = {"x": x, "y": x.sum(-1)}
    return train_ensemble(model, loss, data, data, member_stream=torch.zeros(1, dtype=torch.long),
                          stream_seeds=[0], epochs=3, batch_size=16, lr=0.05, **kw)


def test_fp32_by_default_and_bf16_on_request() -> None:
    plain = Probe()
    res = fit(plain)
    assert set(plain.seen) == {torch.float32}
    half = Probe()
    res16 = fit(half, precision="bf16")
    assert set(half.seen) == {torch.bfloat16}  # training and validation forward passes
    for r in (res, res16):  # losses compared and stored in float32, on the CPU
        assert r.best_val.dtype == torch.float32 and r.best_val.device.type == "cpu"
        assert all(v.dtype == torch.float32 for v in r.val_history + r.train_history)
    assert all(p.dtype == torch.float32 for p in half.parameters())  # parameters stay float32
    # the same trajectory up to bf16 rounding: validation losses within 5 %
    torch.testing.assert_close(torch.stack(res16.val_history), torch.stack(res.val_history), rtol=0.05, atol=1e-3)


def test_ambient_precision_and_explicit_override() -> None:
    ambient, explicit = Probe(), Probe()
    with use_precision("bf16"):
        fit(ambient)
        fit(explicit, precision="fp32")
    assert set(ambient.seen) == {torch.bfloat16}
    assert set(explicit.seen) == {torch.float32}


def test_emma_stages_stay_fp32_under_an_ambient_bf16() -> None:
    assert EMMA_PRECISION == "fp32"
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 80, 4, generator=gen)
    streams = {"m0": x[..., :2], "m1": x[..., 2:], "y": (x[..., 0] > 0).long(), "mask": torch.zeros(1, 80, 2).bool()}
    model = MLPClassifier(EnsembleMLP([0], [4, 4, 1]), 2)
    seen: list[torch.dtype] = []
    model.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    with use_precision("bf16"):
        train_classifier(model, streams, streams, member_stream=torch.zeros(1, dtype=torch.long), stream_seeds=[0],
                         weights=torch.ones(2), settings=StageSettings(epochs=2, batch_size=16))
    assert seen and set(seen) == {torch.float32}
