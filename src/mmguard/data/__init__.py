"""Multimodal data model, splits, preprocessing and dataset loaders."""

from mmguard.data.arrays import load_arrays, save_arrays
from mmguard.data.htru2 import download_htru2, htru2_splits, load_htru2
from mmguard.data.locate import find_dataset_file, user_cache_dir
from mmguard.data.model import (
    ModalityKind,
    ModalitySpec,
    MultimodalBatch,
    MultimodalDataset,
    collate,
    concat_batches,
    infer_spec,
)
from mmguard.data.preprocessing import Standardizer
from mmguard.data.registry import dataset_info, describe_dataset, known_datasets, load_dataset
from mmguard.data.splits import Splits, split_by_group, stratified_three_way
from mmguard.data.synthetic import make_manifold, make_shared_latent
from mmguard.data.tabular import load_tabular, read_tabular

__all__ = [
    "ModalityKind",
    "ModalitySpec",
    "MultimodalBatch",
    "MultimodalDataset",
    "Splits",
    "Standardizer",
    "collate",
    "concat_batches",
    "dataset_info",
    "describe_dataset",
    "download_htru2",
    "find_dataset_file",
    "htru2_splits",
    "infer_spec",
    "known_datasets",
    "load_arrays",
    "load_dataset",
    "load_htru2",
    "load_tabular",
    "make_manifold",
    "make_shared_latent",
    "read_tabular",
    "save_arrays",
    "split_by_group",
    "stratified_three_way",
    "user_cache_dir",
]
