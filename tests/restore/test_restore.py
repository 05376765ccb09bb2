"""restore (mmguard's detect-and-restore guard, docs/restore.md): the gate passes unflagged modalities
through bit for bit, a broken modality is detected *as that modality* and rebuilt from the healthy one
better than the input and than the clean autoencoder, ``drop`` rebuilds it from the others only, the
objective trains flagged outputs only, and the gate is calibrated over whole episodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmguard.data.model import MultimodalBatch
from mmguard.data.splits import Splits, make_splits
from mmguard.guard import create_guard
from mmguard.mmssl.config import AutoencoderConfig
from mmguard.restore.guard import flagged_loss
from mmguard.restore.torch_model import FlagConditionedAutoencoder

EPISODES, STEPS = 30, 20
#: a warm-startable config: the restorer shaped exactly as the MMAE (its defaults widen the kinematic
#: path and add the decoder skip)
MMAE_SHAPED = {"sensor_hidden": AutoencoderConfig().sensor_hidden, "sensor_code": AutoencoderConfig().sensor_code}
WARM = {"restoration": {"restorer_init": "detector", "skip": False}, "restorer": MMAE_SHAPED}


def episodes_batch(seed: int = 0) -> MultimodalBatch:
    """Two vector modalities (``a`` 6, ``b`` 5 features), linear maps of one smooth 3-d latent per
    episode plus 5 % noise, at offsets 10/20 and spreads about 2; ``meta['episode']``."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, STEPS)
    phase = rng.uniform(0, 2 * np.pi, size=(EPISODES, 1, 3))
    z = np.sin(t[None, :, None] * np.array([1.0, 2.0, 3.0]) + phase).reshape(-1, 3) * 1.5
    mods = {}
    for i, (name, d) in enumerate((("a", 6), ("b", 5))):
        w = rng.normal(size=(3, d))
        mods[name] = 2.0 * (z @ w) / np.sqrt(3) + 0.05 * rng.normal(size=(len(z), d)) + 10.0 * (i + 1)
    return MultimodalBatch.from_arrays(mods, meta={"episode": np.repeat(np.arange(EPISODES), STEPS)})


@pytest.fixture(scope="module")
def splits() -> Splits:
    return make_splits(episodes_batch(), seed=0)


@pytest.fixture(scope="module")
def guard(splits):
    g = create_guard("restore", {"detector": {"epochs": 40, "patience": None},
                                 "restorer": {"epochs": 40, "patience": None}, "false_alarm_rate": 0.05})
    g.fit(splits, seed=0)
    return g


def broken(batch: MultimodalBatch, name: str, rows: torch.Tensor) -> MultimodalBatch:
    """Modality ``name`` of ``rows`` stuck at a constant 3 spreads above its mean (off the manifold)."""
    x = batch.modalities[name]
    stuck = x.mean(0) + 3 * x.std(0)
    return batch.with_modalities({name: torch.where(rows[:, None], stuck.expand_as(x), x)})


def test_calibration_is_over_episodes_and_reported(guard) -> None:
    cal = guard.calibration_summary()
    assert cal["groups"]["groups"] == len(set(make_splits(episodes_batch(), seed=0).val.meta["episode"].tolist()))
    assert "split-conformal" in cal["rule"]


def test_the_unimodal_detector_names_the_broken_modality(splits) -> None:
    """With one autoencoder per modality (``detector = unimodal``) a fault of ``b`` cannot raise the
    score of ``a``; the default joint detector (the MMAE) carries it into ``a`` on this toy set."""
    g = create_guard("restore", {"detector": {"epochs": 40, "patience": None}, "restorer": {"epochs": 2},
                                 "restoration": {"detector": "unimodal", "classifier": False},
                                 "false_alarm_rate": 0.05})
    g.fit(splits, seed=0)
    rows = torch.arange(len(splits.test)) % 2 == 0
    flags = g.flag(broken(splits.test, "b", rows))
    assert float(flags[rows, 1].float().mean()) > 0.9
    assert float(flags[rows, 0].float().mean()) < 0.2


def test_broken_modality_is_flagged_and_restored(guard, splits) -> None:
    test = splits.test
    rows = torch.arange(len(test)) % 2 == 0
    bad = broken(test, "b", rows)
    flags = guard.flag(bad)
    assert float(flags[rows, 1].float().mean()) > 0.9  # detected
    fixed = guard.transform(bad)
    # unflagged modalities pass bit for bit
    keep_a = ~flags[:, 0]
    assert torch.equal(fixed.modalities["a"][keep_a], bad.modalities["a"][keep_a])
    clean_b = test.modalities["b"][rows]
    err_fixed = float((fixed.modalities["b"][rows] - clean_b).pow(2).mean())
    err_input = float((bad.modalities["b"][rows] - clean_b).pow(2).mean())
    recon = guard.model.detector(guard.standardizer.transform(bad).modalities)  # the clean MMAE alone
    mmae = guard.standardizer.inverse(bad.with_modalities(recon)).modalities["b"][rows]
    err_mmae = float((mmae - clean_b).pow(2).mean())
    assert err_fixed < 0.05 * err_input, (err_fixed, err_input)
    assert err_fixed < 0.5 * err_mmae, (err_fixed, err_mmae)


def test_clean_samples_mostly_pass_untouched(guard, splits) -> None:
    fixed = guard.transform(splits.test)
    same = torch.stack([(fixed.modalities[n] == splits.test.modalities[n]).all(1) for n in ("a", "b")], 1).all(1)
    assert float(same.float().mean()) > 0.8


def test_drop_reads_nothing_of_a_flagged_modality() -> None:
    from mmguard.data.model import infer_spec

    specs = (infer_spec("a", torch.zeros(1, 6)), infer_spec("b", torch.zeros(1, 5)))
    torch.manual_seed(0)
    net = FlagConditionedAutoencoder(specs, AutoencoderConfig(), drop_flagged=True)
    x = {"a": torch.randn(8, 6), "b": torch.randn(8, 5)}
    flags = torch.tensor([[0.0, 1.0]]).expand(8, 2)
    out1 = net(x, flags)
    out2 = net({**x, "b": 100 * torch.randn(8, 5)}, flags)
    for n in ("a", "b"):
        assert torch.equal(out1[n], out2[n])
    keep = FlagConditionedAutoencoder(specs, AutoencoderConfig(), drop_flagged=False)
    assert not torch.equal(keep(x, flags)["b"], keep({**x, "b": 100 * torch.randn(8, 5)}, flags)["b"])


def test_the_skip_carries_what_the_bottleneck_cannot() -> None:
    """``skip``: a vector modality's decoder reads [z, x̃_m]. Through a 1-d latent the plain restorer
    cannot return a 6-d modality of independent channels (its error stays near the variance it
    cannot encode); with the skip the same training returns it almost exactly."""
    from mmguard.data.model import infer_spec

    specs = (infer_spec("a", torch.zeros(1, 6)), infer_spec("b", torch.zeros(1, 5)))
    cfg = AutoencoderConfig(latent_dim=1)
    gen = torch.Generator().manual_seed(0)
    x = {"a": torch.randn(512, 6, generator=gen), "b": torch.randn(512, 5, generator=gen)}
    flags = torch.tensor([[1.0, 0.0]]).expand(512, 2)
    errors = {}
    for skip in (False, True):
        torch.manual_seed(0)
        net = FlagConditionedAutoencoder(specs, cfg, drop_flagged=False, skip=skip)
        assert net.skipped == ({"a", "b"} if skip else set())
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(300):
            opt.zero_grad()
            loss = (net(x, flags)["a"] - x["a"]).pow(2).mean()
            loss.backward()
            opt.step()
        errors[skip] = loss.item()
    # a linear 1-d code leaves 5/6 of the variance; a nonlinear one fitted to 512 points a little less
    assert errors[False] > 0.4, errors
    assert errors[True] < 0.05 * errors[False], errors


def test_images_keep_the_plain_decoder_under_skip() -> None:
    from mmguard.data.model import infer_spec
    from mmguard.mmssl.autoencoder import VectorDecoder

    specs = (infer_spec("camera", torch.zeros(1, 3, 16, 16)), infer_spec("b", torch.zeros(1, 5)))
    net = FlagConditionedAutoencoder(specs, AutoencoderConfig(image_channels=[4, 8]), drop_flagged=False, skip=True)
    assert net.skipped == {"b"}
    assert not isinstance(net.decoders["camera"], VectorDecoder)
    out = net({"camera": torch.randn(2, 3, 16, 16), "b": torch.randn(2, 5)}, torch.ones(2, 2))
    assert out["camera"].shape == (2, 3, 16, 16) and out["b"].shape == (2, 5)


def test_objective_trains_flagged_outputs_only() -> None:
    clean = {"a": torch.zeros(4, 3), "b": torch.zeros(4, 2)}
    out = {"a": torch.ones(4, 3), "b": 2 * torch.ones(4, 2)}
    flags = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # a: flagged in rows 0 and 3 (error 1 each); b: rows 2 and 3 (error 4 each); mean over the 4 rows
    assert float(flagged_loss(out, clean, flags, ("a", "b"))) == pytest.approx(2 / 4 + 8 / 4)


def test_score_is_the_max_of_the_scaled_residual_and_classifier(guard, splits) -> None:
    model = guard.model
    assert model.classifier is not None  # the default detector has both parts
    x = guard.standardizer.transform(splits.test).modalities
    parts = model.parts(x)
    assert parts.shape == (len(splits.test), 2, 2)
    expected = torch.maximum(parts[:, 0] / model.scales[0], parts[:, 1] / model.scales[1])
    torch.testing.assert_close(model.scores(x), expected)
    # the scales are (1 − α) quantiles on clean training data: about α of clean training samples exceed 1
    train = guard.standardizer.transform(splits.train).modalities
    above = (model.parts(train) / model.scales.unsqueeze(0) > 1).float().mean(0)
    assert float(above.max()) < 0.1


def test_the_classifier_alone_catches_a_trained_family(guard, splits) -> None:
    """Half the channels of a modality lost (set to the training mean, the trained ``missing`` family):
    the classifier's part of the score, trained on the fault mix, exceeds its clean quantile on its own,
    and the calibrated gate flags the modality."""
    from mmguard.faults import apply_faults
    from mmguard.faults.builders import single_fault_spec

    st = guard.standardizer
    lost_std = apply_faults(st.transform(splits.test), single_fault_spec("b", "missing", {"fraction": 0.5}), seed=3)
    parts = guard.model.parts(lost_std.modalities) / guard.model.scales
    by_residual = float((parts[:, 0, 1] > 1).float().mean())
    by_classifier = float((parts[:, 1, 1] > 1).float().mean())
    assert by_classifier > 0.8, by_classifier
    assert float(guard.flag(st.inverse(lost_std))[:, 1].float().mean()) > 0.8, by_residual


def test_scales_on_validation_are_the_clean_validation_quantiles(splits) -> None:
    from mmguard.restore.guard import clean_quantiles

    g = create_guard("restore", {"detector": {"epochs": 3, "patience": None}, "restorer": {"epochs": 1},
                                 "restoration": {"scales_on": "validation"}, "false_alarm_rate": 0.05})
    g.fit(splits, seed=0)
    val = g.standardizer.transform(splits.val)
    torch.testing.assert_close(g.model.scales, clean_quantiles(g.model, val, 0.95))
    train = g.standardizer.transform(splits.train)
    assert not torch.allclose(g.model.scales, clean_quantiles(g.model, train, 0.95))


def test_warm_started_restorer_is_the_clean_autoencoder_before_training(splits) -> None:
    """``restorer_init: detector``: before its own training, R(x, f) = MMAE(x) for any flags f."""
    from mmguard.restore.guard import warm_start

    g = create_guard("restore", WARM)
    g.specs = splits.train.specs
    model = g._build_model({})
    x = {n: torch.randn(7, *s.shape) for n, s in zip(splits.train.names, splits.train.specs, strict=True)}
    flags = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1], [1, 0], [0, 0], [1, 1]], dtype=torch.float)
    before = model.restorer(x, flags)
    warm_start(model)
    after, ref = model.restorer(x, flags), model.detector(x)
    for n in x:
        torch.testing.assert_close(after[n], ref[n], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(before[n], ref[n], atol=1e-3)  # the copy, not a coincidence


@pytest.mark.parametrize(("update", "names"), [
    ({**WARM, "restoration": {**WARM["restoration"], "detector": "unimodal"}}, "detector 'joint'"),
    ({**WARM, "restorer": {**MMAE_SHAPED, "latent_dim": 9}}, "differ in latent_dim"),
    ({**WARM, "detector": {"image_channels": [8, 16]}}, "differ in image_channels"),
    ({**WARM, "restoration": {**WARM["restoration"], "skip": True}}, "skip false"),
    ({"restoration": {"restorer_init": "detector"}}, "skip false.*differ in sensor_hidden, sensor_code")])
def test_an_incompatible_warm_start_is_refused_when_the_config_is_read(update, names) -> None:
    """The config error comes at ``create_guard`` (CLI: before any training), naming the field."""
    from mmguard.errors import SpecError

    with pytest.raises(SpecError, match=f"restorer_init.*{names}"):
        create_guard("restore", update)


def test_warm_start_compatibility_covers_every_architecture_field() -> None:
    """Every AutoencoderConfig field either shapes the network (compared) or schedules training."""
    from mmguard.mmssl.config import AutoencoderConfig
    from mmguard.restore.guard import ARCHITECTURE

    schedule = {"epochs", "batch_size", "lr", "patience"}
    assert set(ARCHITECTURE) | schedule == set(AutoencoderConfig.model_fields)
    assert not set(ARCHITECTURE) & schedule
    create_guard("restore", {**WARM, "restorer": {**MMAE_SHAPED, "epochs": 3, "lr": 0.01}})


def test_warm_start_itself_refuses_an_incompatible_model(splits) -> None:
    """Defence in depth for models built without a validated config (``model_construct``)."""
    from mmguard.errors import SpecError
    from mmguard.restore.guard import RestoreConfig, warm_start

    g = create_guard("restore")
    g.config = RestoreConfig.model_construct(**{**dict(g.config), "restorer": g.config.restorer.model_copy(
        update={"latent_dim": 9})})
    g.specs = splits.train.specs
    with pytest.raises(SpecError, match="restorer_init"):
        warm_start(g._build_model({}))


def test_a_partial_restorer_config_keeps_the_restorers_own_defaults() -> None:
    """``restorer: {epochs: 5}`` changes the schedule only: the restorer's wider kinematic path
    (``RESTORER_DEFAULTS``, not the MMAE's) stays; a field the user names wins."""
    from mmguard.restore.guard import RESTORER_DEFAULTS

    assert RESTORER_DEFAULTS != MMAE_SHAPED  # otherwise this test could not tell the two apart
    cfg = create_guard("restore", {"restorer": {"epochs": 5}}).config.restorer
    assert cfg.epochs == 5
    assert {k: getattr(cfg, k) for k in RESTORER_DEFAULTS} == RESTORER_DEFAULTS
    assert create_guard("restore", {"restorer": {"sensor_hidden": 16}}).config.restorer.sensor_hidden == 16
    assert create_guard("restore", quick=True).config.restorer.sensor_code == RESTORER_DEFAULTS["sensor_code"]
