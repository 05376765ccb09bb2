"""Train/validation/test splits with preprocessing fitted on train only."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from mmguard.data.model import MultimodalBatch
from mmguard.data.preprocessing import Standardizer
from mmguard.errors import DataError


@dataclass(frozen=True)
class Splits:
    """Three splits plus the preprocessing fitted on ``train``.

    ``standardized`` says whether the splits already went through ``standardizer``.
    """

    train: MultimodalBatch
    val: MultimodalBatch
    test: MultimodalBatch
    standardizer: Standardizer | None = None
    standardized: bool = False
    name: str = "data"
    raw: Splits | None = None

    def standardize(self) -> Splits:
        """Fit a :class:`Standardizer` on train and apply it to all three splits.

        The raw splits stay reachable as ``.raw`` (a guard fits on raw data and standardises
        itself, bit-identically: the same statistics of the same training split).
        """
        if self.standardized:
            return self
        st = Standardizer.fit(self.train)
        return replace(self, train=st.transform(self.train), val=st.transform(self.val),
                       test=st.transform(self.test), standardizer=st, standardized=True, raw=self)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def stratified_three_way(
    batch: MultimodalBatch, *, train_fraction: float = 0.67, seed: int = 0, stratify: bool = True
) -> Splits:
    """Stratified split: ``train_fraction`` to train, the rest halved into val and test.

    This is the thesis split (section 6.1, table 6.1): 67 % train, then the remainder split
    50/50, both stratified by class. With HTRU2's 17,898 rows and seed 0 it gives
    11,992 / 2,953 / 2,953 samples with 1,098 / 270 / 271 positives.
    """
    if not 0.0 < train_fraction < 1.0:
        raise DataError(f"train_fraction must be in (0, 1), got {train_fraction}")
    n = len(batch)
    idx = np.arange(n)
    labels = None
    if stratify:
        if batch.target is None:
            raise DataError("stratified split needs a target")
        labels = batch.target.detach().cpu().numpy()
        fractional = np.issubdtype(labels.dtype, np.floating) and not np.all(labels == np.round(labels))
        if labels.ndim != 1 or fractional:
            labels = None  # regression target: fall back to a plain random split
    n_train = int(round(train_fraction * n))  # 0.67 * 17,898 -> 11,992 as in thesis table 6.1
    if n_train < 1 or n - n_train < 2:
        raise DataError(f"cannot split {n} samples with train_fraction {train_fraction}: "
                        "every split needs at least one sample")
    try:
        train_idx, rest = train_test_split(idx, train_size=n_train, random_state=seed,
                                           stratify=labels)
        rest_labels = None if labels is None else labels[rest]
        val_idx, test_idx = train_test_split(rest, test_size=0.5, random_state=seed, stratify=rest_labels)
    except ValueError as exc:  # e.g. a class with a single member cannot be stratified
        raise DataError(f"cannot split {n} samples stratified by class: {str(exc).splitlines()[0]}") from None
    # Decision: the two halves have equal size; when stratification leaves an odd class
    # remainder, it goes to *test* (thesis table 6.1: 270 val / 271 test positives) so the
    # split is the same whatever the seed's tie-breaking.
    if labels is not None and len(val_idx) == len(test_idx):
        if labels[val_idx].sum() > labels[test_idx].sum():
            val_idx, test_idx = test_idx, val_idx
    return Splits(
        train=batch.select(torch.from_numpy(np.sort(train_idx))),
        val=batch.select(torch.from_numpy(np.sort(val_idx))),
        test=batch.select(torch.from_numpy(np.sort(test_idx))),
    )


def split_by_group(
    batch: MultimodalBatch,
    group_key: str = "episode",
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> Splits:
    """Split whole groups (e.g. episodes) so no group leaks across splits."""
    if group_key not in batch.meta:
        raise DataError(f"batch has no meta field {group_key!r} to split by; has {sorted(batch.meta)}")
    sel = [torch.from_numpy(m) for m in group_masks(batch.meta[group_key].detach().cpu().numpy(), group_key,
                                                     fractions=fractions, seed=seed)]
    return Splits(train=batch.select(sel[0]), val=batch.select(sel[1]), test=batch.select(sel[2]))


def group_masks(groups: np.ndarray, group_key: str = "episode", *,
                fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0) -> list[np.ndarray]:
    """Boolean (N,) masks of the train / validation / test rows of :func:`split_by_group` from the
    group column alone (also used for data that stay on disk, :mod:`mmguard.data.stream`)."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
        raise DataError(f"fractions must be positive and sum to 1, got {fractions}")
    uniq = np.unique(groups)
    if len(uniq) < 3:
        raise DataError(f"need at least 3 distinct {group_key} values to split, got {len(uniq)}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(uniq)
    n_train = max(1, int(round(fractions[0] * len(uniq))))
    n_val = max(1, int(round(fractions[1] * len(uniq))))
    n_train = min(n_train, len(uniq) - 2)
    n_val = min(n_val, len(uniq) - n_train - 1)  # keep at least one group for test
    parts = [perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]]
    return [np.isin(groups, p) for p in parts]


def _holdout(batch: MultimodalBatch, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (keep, held-out) masks: a ``fraction`` of samples held out, stratified by class if possible."""
    n = len(batch)
    idx = np.arange(n)
    labels = None
    if batch.target is not None and batch.target.ndim == 1:
        y = batch.target.detach().cpu().numpy()
        if not np.issubdtype(y.dtype, np.floating) or np.all(y == np.round(y)):
            labels = y
    n_out = max(1, int(round(fraction * n)))
    if n - n_out < 1:
        raise DataError(f"cannot hold out {fraction:.0%} of {n} samples for validation")
    try:
        _keep, out = train_test_split(idx, test_size=n_out, random_state=seed, stratify=labels)
    except ValueError:  # a class too small to stratify: plain random hold-out
        _keep, out = train_test_split(idx, test_size=n_out, random_state=seed)
    held = torch.zeros(n, dtype=torch.bool)
    held[torch.from_numpy(np.sort(out))] = True
    return ~held, held


def split_by_values(
    batch: MultimodalBatch,
    group_key: str,
    *,
    train: list[float],
    test: list[float],
    val: list[float] | None = None,
    val_fraction: float = 0.15,
    id_test_fraction: float = 0.0,
    seed: int = 0,
) -> Splits:
    """Explicit group split, e.g. train on batches 1–2 and test on 3–6 of a drifting sensor array.

    ``id_test_fraction`` > 0 also moves that fraction of the training groups' samples (stratified
    by class when possible) into the test split: an in-distribution test part, recognisable by its
    group value, against which drift and adaptation are measured (docs/drift.md).

    Decision (docs/data.md): without ``val`` groups the validation split is a random
    ``val_fraction`` of the *training groups'* samples (stratified by class when the target is
    a class label), i.e. in-distribution validation; the test groups are never seen in fitting.
    Groups listed nowhere are left out. A group listed twice, or one absent from the data, is
    a one-line error.
    """
    if group_key not in batch.meta:
        raise DataError(f"batch has no meta field {group_key!r} to split by; has {sorted(batch.meta)}")
    groups = batch.meta[group_key].detach().cpu().numpy()
    present = set(np.unique(groups).tolist())
    parts = {"train": list(train), "test": list(test), "val": list(val or [])}
    seen: dict[float, str] = {}
    for part, values in parts.items():
        for v in values:
            if v not in present:
                raise DataError(f"{group_key} {v:g} ({part}) does not occur in the data; "
                                f"present: {sorted(present)}")
            if v in seen:
                raise DataError(f"{group_key} {v:g} is in both the {seen[v]} and the {part} groups")
            seen[v] = part
    if not parts["train"] or not parts["test"]:
        raise DataError("an explicit split needs at least one train and one test group")
    sel = {part: torch.from_numpy(np.isin(groups, values)) for part, values in parts.items()}
    if parts["val"]:
        train_mask, val_mask = sel["train"], sel["val"]
    else:
        keep, held = _holdout(batch.select(sel["train"]), val_fraction, seed)
        rows = sel["train"].nonzero().squeeze(1)
        train_mask = torch.zeros(len(batch), dtype=torch.bool)
        val_mask = torch.zeros(len(batch), dtype=torch.bool)
        train_mask[rows[keep]] = True
        val_mask[rows[held]] = True
    test_mask = sel["test"].clone()
    if id_test_fraction > 0:
        if not 0 < id_test_fraction < 1 - (0 if parts["val"] else val_fraction):
            raise DataError(f"the in-distribution test fraction must be in (0, {1 - val_fraction:g}), "
                            f"got {id_test_fraction:g}")
        rows = train_mask.nonzero().squeeze(1)
        total = int(sel["train"].sum())
        keep, held = _holdout(batch.select(train_mask), id_test_fraction * total / len(rows), seed + 1)
        train_mask = torch.zeros(len(batch), dtype=torch.bool)
        train_mask[rows[keep]] = True
        test_mask[rows[held]] = True
    return Splits(train=batch.select(train_mask), val=batch.select(val_mask), test=batch.select(test_mask))


def make_splits(
    batch: MultimodalBatch,
    *,
    split_by: str | None = "auto",
    train_groups: list[float] | None = None,
    val_groups: list[float] | None = None,
    test_groups: list[float] | None = None,
    id_test_fraction: float = 0.0,
    seed: int = 0,
) -> Splits:
    """The split the CLI asks for (``--split-by``, ``--train-groups``/``--val-groups``/``--test-groups``).

    * explicit groups → :func:`split_by_values` (``split_by`` names the group column);
    * ``split_by=KEY`` → :func:`split_by_group` (70/15/15 of the groups, no group in two splits);
    * ``"auto"`` (default) → by ``episode`` when the data carry episodes (a twin: frames of one
      episode are strongly correlated, so a random split would leak), else
      :func:`stratified_three_way` (stratified by class for class targets);
    * ``None`` / ``"random"`` → :func:`stratified_three_way`.
    """
    explicit = train_groups is not None or test_groups is not None or val_groups is not None
    if explicit:
        key = split_by if split_by not in (None, "auto", "random") else "episode"
        return split_by_values(batch, key, train=train_groups or [], test=test_groups or [],
                               val=val_groups, id_test_fraction=id_test_fraction, seed=seed)
    if id_test_fraction:
        raise DataError("--id-test holds out part of the training groups: it needs an explicit group split "
                        "(--train-groups/--test-groups)")
    if split_by == "auto":
        split_by = "episode" if "episode" in batch.meta else None
    if split_by in (None, "random"):
        classified = batch.target is not None and batch.target.ndim == 1 and not (
            batch.target.is_floating_point() and not bool((batch.target == batch.target.round()).all())
        )
        return stratified_three_way(batch, seed=seed, stratify=classified)
    return split_by_group(batch, split_by, seed=seed)
