"""mmugan (pix2pix: U-Net generator with skips, conditional PatchGAN for images, dense for sensors): the
twin camera's shapes go through, every U-Net level uses its skip, the PatchGAN learns to tell real from
generated (input, output) pairs (a fresh one cannot), and a noise-replaced modality is restored."""

from __future__ import annotations

import torch
from baselines_testutil import error, half, replaced_by_noise

from contract.test_guard_contract import image_batch
from mmguard.baselines.mmugan import PatchDiscriminator, Pix2pixModule, UNetImageDecoder, encode_with_skips
from mmguard.data.splits import make_splits
from mmguard.eval.metrics import binary_auroc
from mmguard.faults import apply_faults
from mmguard.faults.scenarios import training_spec
from mmguard.guard import create_guard
from mmguard.mmssl.autoencoder import ImageEncoder


def test_unet_on_the_twin_camera_uses_every_skip() -> None:
    torch.manual_seed(0)
    channels = [16, 32, 64]
    enc, dec = ImageEncoder((3, 64, 64), channels, 64), UNetImageDecoder((3, 64, 64), channels, 20)
    x = torch.randn(2, 3, 64, 64)
    code, skips = encode_with_skips(enc, x)
    assert torch.equal(code, enc(x))  # the same encoder as the MMAE's, skips read on the way
    assert [tuple(s.shape[1:]) for s in skips] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    z = torch.randn(2, 20)
    y = dec(z, skips)
    assert y.shape == (2, 3, 64, 64)
    for i in range(3):
        changed = list(skips)
        changed[i] = changed[i] + torch.randn_like(changed[i])
        assert not torch.allclose(dec(z, changed), y), i
    patches = PatchDiscriminator(3, channels)(x, y)
    assert patches.shape == (2, 64)  # one logit per cell of the 8x8 patch grid


def test_the_patch_discriminator_learns_to_spot_generated_images() -> None:
    splits = make_splits(image_batch(), seed=0)
    guard = create_guard("mmugan", {"autoencoder": {"image_channels": [4, 8]}}, quick=True)
    report = guard.fit(splits, seed=0)
    assert len(report["discriminator_loss"]) == report["train"]["epochs_run"]
    val = guard.standardizer.transform(splits.val)
    bad = apply_faults(val, training_spec(val), seed=5)
    model: Pix2pixModule = guard.model
    torch.manual_seed(123)
    fresh = Pix2pixModule(guard.specs, guard.config.autoencoder, guard.config.adversarial)
    labels = torch.cat([torch.ones(len(val)), torch.zeros(len(val))]).bool()
    aurocs = {}
    with torch.no_grad():
        fake = model.generator(bad.modalities)["camera"]
        for label, m in (("trained", model), ("fresh", fresh)):
            disc = m.discriminators["camera"]
            logits = torch.cat([disc(bad.modalities["camera"], val.modalities["camera"]).mean(1),
                                disc(bad.modalities["camera"], fake).mean(1)])
            aurocs[label] = float(binary_auroc(logits.double(), labels)[0])
    assert aurocs["trained"] >= 0.8 and aurocs["fresh"] <= 0.65, aurocs


def test_translates_a_noise_replaced_modality_back(correlated) -> None:
    guard = create_guard("mmugan", quick=True)
    guard.fit(correlated, seed=0)
    test = correlated.test
    rows = half(len(test))
    bad = replaced_by_noise(test, "a", rows)
    fixed = guard.transform(bad).modalities["a"][rows]
    truth, broken = test.modalities["a"][rows], bad.modalities["a"][rows]
    assert error(fixed, truth) <= 0.5 * error(broken, truth)
