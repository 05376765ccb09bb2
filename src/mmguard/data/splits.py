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

    def standardize(self) -> Splits:
        """Fit a :class:`Standardizer` on train and apply it to all three splits."""
        if self.standardized:
            return self
        st = Standardizer.fit(self.train)
        return replace(self, train=st.transform(self.train), val=st.transform(self.val),
                       test=st.transform(self.test), standardizer=st, standardized=True)

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
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
        raise DataError(f"fractions must be positive and sum to 1, got {fractions}")
    groups = batch.meta[group_key].detach().cpu().numpy()
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
    sel = [torch.from_numpy(np.isin(groups, p)) for p in parts]
    return Splits(train=batch.select(sel[0]), val=batch.select(sel[1]), test=batch.select(sel[2]))
