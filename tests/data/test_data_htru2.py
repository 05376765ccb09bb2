"""HTRU2 against the real file: both CSV formats, validation, thesis table 6.1 splits, download."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import torch

from mmguard.data import download_htru2, htru2_splits, load_htru2
from mmguard.data import htru2 as htru2_mod
from mmguard.data.locate import find_dataset_file, user_cache_dir
from mmguard.errors import DataError


def headerless_copy(src: Path, dest: Path, *, crlf: bool = False) -> Path:
    lines = src.read_text(encoding="utf-8").splitlines()[1:]
    dest.write_bytes(("\r\n" if crlf else "\n").join(lines).encode() + b"\n")
    return dest


def test_real_file_is_the_documented_one(htru2_csv: Path) -> None:
    if htru2_csv.name == "pulsar.csv":
        assert hashlib.md5(htru2_csv.read_bytes()).hexdigest() == htru2_mod.PULSAR_CSV_MD5


def test_load_htru2_structure(htru2_batch) -> None:
    b = htru2_batch
    assert len(b) == 17_898 and b.names == ("ip", "dm")
    assert b.spec("ip").shape == (4,) and b.spec("dm").shape == (4,)
    assert b.spec("ip").channels[0] == "Mean of the integrated profile"
    assert b.spec("dm").channels[3] == "Skewness of the DM-SNR curve"
    assert b.target.dtype == torch.int64 and int(b.target.sum()) == 1_639
    assert b.modalities["ip"].dtype == torch.float32
    assert b.modalities["ip"][0, 0].item() == pytest.approx(140.5625)
    assert b.modalities["dm"][0, 3].item() == pytest.approx(74.24222492)
    b.check_finite()


def test_load_via_env_var(data_env: Path) -> None:
    b = load_htru2()
    assert len(b) == 17_898


def test_thesis_table_6_1_splits(data_env: Path) -> None:
    s = htru2_splits(seed=0)
    assert s.name == "htru2"
    assert s.sizes() == {"train": 11_992, "val": 2_953, "test": 2_953}
    assert [int(p.target.sum()) for p in (s.train, s.val, s.test)] == [1_098, 270, 271]
    assert htru2_mod.split_summary(s) == htru2_mod.TABLE_6_1


def test_standardize_uses_train_statistics(data_env: Path) -> None:
    s = htru2_splits().standardize()
    assert torch.allclose(s.train.modalities["ip"].mean(0), torch.zeros(4), atol=1e-4)
    assert s.standardizer.mean["ip"].shape == (4,)


def test_headerless_uci_original(tmp_path: Path, htru2_csv: Path, htru2_batch) -> None:
    uci = headerless_copy(htru2_csv, tmp_path / "HTRU_2.csv", crlf=True)
    b = load_htru2(uci, verify=True)
    assert torch.equal(b.modalities["ip"], htru2_batch.modalities["ip"])
    assert torch.equal(b.target, htru2_batch.target)
    assert b.spec("ip").channels == htru2_mod.CHANNELS[:4]  # canonical names without a header
    # found by folder too, under either name
    assert len(load_htru2(tmp_path)) == 17_898
    assert len(load_htru2(data_dir=tmp_path)) == 17_898


def test_content_digest_is_format_independent(tmp_path: Path, htru2_csv: Path) -> None:
    headed, _ = htru2_mod.read_htru2_csv(htru2_csv)
    plain, _ = htru2_mod.read_htru2_csv(headerless_copy(htru2_csv, tmp_path / "HTRU_2.csv"))
    expected = htru2_mod.HTRU2_CONTENT_SHA256
    assert htru2_mod.content_digest(headed) == htru2_mod.content_digest(plain) == expected


def write_rows(path: Path, rows: list[str], header: bool = True) -> Path:
    head = ",".join([*htru2_mod.CHANNELS, "target_class"]) + "\n" if header else ""
    path.write_text(head + "\n".join(rows) + "\n")
    return path


GOOD = "1,2,3,4,5,6,7,8,0"


@pytest.mark.parametrize(
    ("rows", "header", "match"),
    [
        ([GOOD, "1,2,3,4,5,6,7,8"], True, r"row 1 \(line 3\) has 8 columns, expected 9"),
        ([GOOD, "1,2,3,x,5,6,7,8,1"], True, r"column 'Skewness of the integrated profile' row 1 \(line 3\) "
                                             r"is not a number: 'x'"),
        ([GOOD, "1,2,nan,4,5,6,7,8,1"], False, r"row 1 \(line 2\) is not finite: nan"),
        ([GOOD, "1,2,3,4,5,6,7,8,2"], True, r"must be 0 or 1, row 1 \(line 3\) is 2.0"),
        ([], True, "no data rows"),
    ],
)
def test_malformed_files(tmp_path: Path, rows: list[str], header: bool, match: str) -> None:
    f = write_rows(tmp_path / "pulsar.csv", rows, header)
    with pytest.raises(DataError, match=match) as info:
        load_htru2(f)
    assert "\n" not in str(info.value)


def test_wrong_header_width(tmp_path: Path) -> None:
    f = tmp_path / "pulsar.csv"
    f.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="expected 9 columns"):
        load_htru2(f)


def test_verify_rejects_a_subset(tmp_path: Path) -> None:
    f = write_rows(tmp_path / "pulsar.csv", [GOOD, "1,2,3,4,5,6,7,8,1"])
    assert len(load_htru2(f)) == 2
    with pytest.raises(DataError, match="not the canonical HTRU2 data"):
        load_htru2(f, verify=True)


def test_missing_data_names_where_it_looked(no_data_env: Path, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(DataError, match="looked for pulsar.csv or HTRU_2.csv in .*mmguard/htru2") as info:
        load_htru2()
    assert "MMGUARD_DATA_DIR" in str(info.value)
    monkeypatch.setenv("MMGUARD_DATA_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="elsewhere/htru2, .*cache/mmguard/htru2"):
        load_htru2()
    with pytest.raises(DataError, match="does not exist"):
        load_htru2(tmp_path / "nope.csv")


def test_location_order(no_data_env: Path, tmp_path: Path, htru2_csv: Path, monkeypatch) -> None:
    cache = no_data_env / "htru2"
    cache.mkdir(parents=True)
    headerless_copy(htru2_csv, cache / "HTRU_2.csv")
    assert user_cache_dir() == no_data_env
    assert find_dataset_file("htru2", htru2_mod.FILENAMES) == cache / "HTRU_2.csv"
    env = tmp_path / "env"
    (env / "htru2").mkdir(parents=True)
    (env / "htru2" / "pulsar.csv").write_bytes(htru2_csv.read_bytes())
    monkeypatch.setenv("MMGUARD_DATA_DIR", str(env))
    assert find_dataset_file("htru2", htru2_mod.FILENAMES) == env / "htru2" / "pulsar.csv"
    explicit = tmp_path / "explicit"
    (explicit / "htru2").mkdir(parents=True)
    with pytest.raises(DataError, match="explicit/htru2, .*explicit$"):  # explicit dirs: no fallback
        find_dataset_file("htru2", htru2_mod.FILENAMES, data_dir=explicit)


def test_default_cache_without_xdg(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / ".cache" / "mmguard"


# ---------------------------------------------------------------------------- download (no network)
def fake_zip(csv_bytes: bytes, name: str = "HTRU_2.csv") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("Readme.txt", "HTRU2")
        zf.writestr(name, csv_bytes)
    return buf.getvalue()


@pytest.fixture
def uci_bytes(htru2_csv: Path, tmp_path: Path) -> bytes:
    return headerless_copy(htru2_csv, tmp_path / "uci.csv", crlf=True).read_bytes()


def test_download_verifies_and_caches(monkeypatch, uci_bytes: bytes, no_data_env: Path) -> None:
    calls: list[str] = []

    def fetch(url: str, timeout: float = 60.0) -> bytes:
        calls.append(url)
        return fake_zip(uci_bytes)

    monkeypatch.setattr(htru2_mod, "_fetch", fetch)
    path = download_htru2()
    assert path == no_data_env / "htru2" / "HTRU_2.csv" and calls == [htru2_mod.HTRU2_URL]
    assert path.read_bytes() == uci_bytes
    sidecar = path.with_name("HTRU_2.csv.sha256").read_text().split()[0]
    assert sidecar == hashlib.sha256(uci_bytes).hexdigest()
    assert not list(path.parent.glob(".*tmp"))  # atomic write leaves no temporary files
    assert len(load_htru2()) == 17_898  # found in the cache without configuration
    assert download_htru2() == path and len(calls) == 1  # verified cache reused
    download_htru2(force=True)
    assert len(calls) == 2


def test_corrupted_cache_is_detected_and_replaced(monkeypatch, tmp_path: Path, uci_bytes: bytes) -> None:
    monkeypatch.setattr(htru2_mod, "_fetch", lambda url, timeout=60.0: fake_zip(uci_bytes))
    path = download_htru2(tmp_path / "c")
    path.write_bytes(uci_bytes.replace(b"140.5625", b"140.5626", 1))
    with pytest.raises(DataError, match="does not match its recorded sha256"):
        load_htru2(path)
    assert download_htru2(tmp_path / "c") == path
    assert path.read_bytes() == uci_bytes


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"not a zip", "not a zip archive"),
        ("no-csv", "holds no CSV file"),
        ("tampered", "content digest"),
        ("short", "expected 17898 rows"),
    ],
)
def test_download_rejects_bad_archives(monkeypatch, tmp_path: Path, uci_bytes: bytes, payload,
                                       match: str) -> None:
    if payload == "no-csv":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("Readme.txt", "x")
        payload = buf.getvalue()
    elif payload == "tampered":
        payload = fake_zip(uci_bytes.replace(b"140.5625", b"140.5626", 1))
    elif payload == "short":
        payload = fake_zip(b"\n".join(uci_bytes.splitlines()[:100]))
    monkeypatch.setattr(htru2_mod, "_fetch", lambda url, timeout=60.0: payload)
    with pytest.raises(DataError, match=match):
        download_htru2(tmp_path / "c")
    assert not (tmp_path / "c" / "htru2" / "HTRU_2.csv").exists()


def test_fetch_failure_is_one_line(monkeypatch, tmp_path: Path) -> None:
    import urllib.error

    def boom(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(htru2_mod.urllib.request, "urlopen", boom)
    with pytest.raises(DataError, match=r"^cannot download https://.*htru2.zip: no route to host$"):
        download_htru2(tmp_path / "c")
