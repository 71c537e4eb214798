"""Loaders: real MedMNIST files where present, and tiny made-up trees in the official layouts."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedsim.data import DataError, load_isic2018, load_medmnist, load_messidor

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ISIC_CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def solid_image(path: Path, label: int, tag: int = 128, size: int = 8) -> None:
    """A flat image: red encodes the label (checks image/label pairing), green tells images apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size + 2), (30 * label + 10, tag, 200)).save(path)


def red_levels(images: np.ndarray) -> np.ndarray:
    return images[:, 0].mean(axis=(1, 2))


def write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


# MedMNIST ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sizes", "train_counts"),
    [("pneumoniamnist", (4708, 524, 624), [1214, 3494]), ("breastmnist", (546, 78, 156), [147, 399])],
)
def test_real_medmnist_files(name: str, sizes: tuple[int, int, int], train_counts: list[int]) -> None:
    path = SHARED_DATA / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"real MedMNIST data not available: {path} is absent")
    dataset = load_medmnist(path)
    assert dataset.name == name
    assert dataset.classes == ("0", "1")
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == sizes
    assert dataset.train.images.shape == (sizes[0], 1, 28, 28)
    assert dataset.channels == 1 and dataset.image_size == 28
    assert dataset.train.labels.dtype == np.int64
    assert np.bincount(dataset.train.labels).tolist() == train_counts


def fake_medmnist(path: Path, rgb: bool = True, label_columns: int = 1, drop: str | None = None) -> dict:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 5)):
        shape = (n, 28, 28, 3) if rgb else (n, 28, 28)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 3, size=(n, label_columns), dtype=np.uint8)
    arrays["train_labels"][:3, 0] = [0, 1, 2]
    if drop:
        del arrays[drop]
    np.savez(path, **arrays)
    return arrays


def test_made_up_rgb_medmnist(tmp_path: Path) -> None:
    arrays = fake_medmnist(tmp_path / "dermamnist.npz")
    dataset = load_medmnist(tmp_path / "dermamnist.npz")
    assert dataset.name == "dermamnist"
    assert dataset.classes == ("0", "1", "2")
    assert dataset.channels == 3
    assert dataset.val.images.shape == (4, 3, 28, 28)
    assert np.array_equal(dataset.test.images, arrays["test_images"].transpose(0, 3, 1, 2))
    assert np.array_equal(dataset.train.labels, arrays["train_labels"][:, 0].astype(np.int64))


def test_multi_label_medmnist_is_rejected(tmp_path: Path) -> None:
    fake_medmnist(tmp_path / "chestmnist.npz", rgb=False, label_columns=14)
    with pytest.raises(DataError, match=r"chestmnist\.npz.*multi-label"):
        load_medmnist(tmp_path / "chestmnist.npz")


def test_medmnist_missing_key_or_file(tmp_path: Path) -> None:
    fake_medmnist(tmp_path / "partial.npz", drop="val_labels")
    with pytest.raises(DataError, match=r"partial\.npz: missing key 'val_labels'"):
        load_medmnist(tmp_path / "partial.npz")
    with pytest.raises(DataError, match=r"absent\.npz"):
        load_medmnist(tmp_path / "absent.npz")


# ISIC 2018 --------------------------------------------------------------------------------


def isic_split(root: Path, split: str, labels: list[int], first_id: int = 0) -> None:
    rows = [["image", *ISIC_CLASSES]]
    for number, label in enumerate(labels, start=first_id):
        name = f"ISIC_{number:07d}"
        solid_image(root / f"ISIC2018_Task3_{split}_Input" / f"{name}.jpg", label, tag=5 * number % 256)
        rows.append([name, *("1.0" if c == label else "0.0" for c in range(len(ISIC_CLASSES)))])
    write_csv(root / f"ISIC2018_Task3_{split}_GroundTruth" / f"ISIC2018_Task3_{split}_GroundTruth.csv", rows)


def test_isic_training_only_carves_stratified_test(tmp_path: Path) -> None:
    labels = [0] * 10 + [1] * 20 + [4] * 5
    isic_split(tmp_path, "Training", labels)
    dataset = load_isic2018(tmp_path, image_size=16, seed=3)
    assert dataset.classes == tuple(ISIC_CLASSES)
    assert dataset.val is None
    assert dataset.train.images.shape == (28, 3, 16, 16)
    assert np.bincount(dataset.test.labels, minlength=7).tolist() == [2, 4, 0, 0, 1, 0, 0]
    for split in (dataset.train, dataset.test):
        assert np.allclose(red_levels(split.images), 30 * split.labels + 10, atol=3)
    again = load_isic2018(tmp_path, image_size=16, seed=3)
    other = load_isic2018(tmp_path, image_size=16, seed=4)
    assert np.array_equal(again.test.images, dataset.test.images)
    assert not np.array_equal(other.test.images, dataset.test.images)


def test_isic_with_validation_and_test_pairs(tmp_path: Path) -> None:
    isic_split(tmp_path, "Training", [0, 1, 2, 3, 4, 5, 6])
    isic_split(tmp_path, "Validation", [6, 5], first_id=100)
    isic_split(tmp_path, "Test", [1, 1, 0], first_id=200)
    dataset = load_isic2018(tmp_path, image_size=8)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (7, 2, 3)
    assert dataset.val.labels.tolist() == [6, 5]
    assert np.allclose(red_levels(dataset.test.images), [40, 40, 10], atol=3)


def test_isic_malformed_one_hot_row(tmp_path: Path) -> None:
    isic_split(tmp_path, "Training", [0, 1, 2])
    csv_path = tmp_path / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    lines = csv_path.read_text().splitlines()
    lines[2] = "ISIC_0000001,1.0,1.0,0.0,0.0,0.0,0.0,0.0"
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"ISIC2018_Task3_Training_GroundTruth\.csv: row 3"):
        load_isic2018(tmp_path)


def test_isic_missing_image_or_half_pair(tmp_path: Path) -> None:
    isic_split(tmp_path, "Training", [0, 1, 2])
    (tmp_path / "ISIC2018_Task3_Validation_Input").mkdir()
    with pytest.raises(DataError, match="ISIC2018_Task3_Validation_GroundTruth.csv"):
        load_isic2018(tmp_path)
    (tmp_path / "ISIC2018_Task3_Validation_Input").rmdir()
    (tmp_path / "ISIC2018_Task3_Training_Input" / "ISIC_0000002.jpg").unlink()
    with pytest.raises(DataError, match=r"ISIC_0000002\.jpg"):
        load_isic2018(tmp_path)


# Messidor ---------------------------------------------------------------------------------


def messidor_base(root: Path, base: str, grades: list[int], first_id: int) -> None:
    rows = [["Image name", "Ophthalmologic department", "Retinopathy grade", "Risk of macular edema "]]
    for number, grade in enumerate(grades, start=first_id):
        name = f"20051020_{number:05d}_0100_PP.tif"
        solid_image(root / base / name, grade)
        rows.append([name, "Service Ophtalmologie Lariboisiere", str(grade), "0"])
    write_csv(root / base / f"Annotation_{base}.csv", rows)


def test_messidor_csv_annotations(tmp_path: Path) -> None:
    messidor_base(tmp_path, "Base11", [0, 0, 1, 2, 3] * 2, first_id=0)
    messidor_base(tmp_path, "Base12", [0, 1, 2, 3, 0] * 2, first_id=100)
    bom_csv = tmp_path / "Base12" / "Annotation_Base12.csv"  # as Excel's "CSV UTF-8" export writes it
    bom_csv.write_text(bom_csv.read_text(), encoding="utf-8-sig")
    dataset = load_messidor(tmp_path, image_size=12, seed=0)
    assert dataset.name == "messidor"
    assert dataset.classes == ("grade 0", "grade 1", "grade 2", "grade 3")
    assert (len(dataset.train), len(dataset.test)) == (16, 4)
    assert dataset.val is None
    assert dataset.test.images.shape == (4, 3, 12, 12)
    labels = np.concatenate([dataset.train.labels, dataset.test.labels])
    assert np.bincount(labels).tolist() == [8, 4, 4, 4]
    for split in (dataset.train, dataset.test):
        assert np.allclose(red_levels(split.images), 30 * split.labels + 10, atol=1)
    assert np.array_equal(load_messidor(tmp_path, image_size=12, seed=0).test.images, dataset.test.images)


def test_messidor_missing_image_names_it(tmp_path: Path) -> None:
    messidor_base(tmp_path, "Base11", [0, 1, 2, 3], first_id=0)
    (tmp_path / "Base11" / "20051020_00002_0100_PP.tif").unlink()
    with pytest.raises(DataError, match=r"Annotation_Base11\.csv: image file '20051020_00002_0100_PP\.tif'"):
        load_messidor(tmp_path)


def test_messidor_bad_grade_names_file_and_row(tmp_path: Path) -> None:
    messidor_base(tmp_path, "Base11", [0, 1, 2, 3], first_id=0)
    path = tmp_path / "Base11" / "Annotation_Base11.csv"
    path.write_text(path.read_text().replace("PP.tif,Service Ophtalmologie Lariboisiere,3", "PP.tif,Service,4"))
    with pytest.raises(DataError, match=r"Annotation_Base11\.csv: row 5"):
        load_messidor(tmp_path)


def test_messidor_xls_without_engine_asks_for_xlrd_or_csv(tmp_path: Path) -> None:
    if importlib.util.find_spec("xlrd") is not None:
        pytest.skip("xlrd is installed, so the missing-engine error cannot occur")
    solid_image(tmp_path / "Base11" / "20051020_00000_0100_PP.tif", 0)
    (tmp_path / "Base11" / "Annotation_Base11.xls").write_bytes(b"not really a spreadsheet")
    with pytest.raises(DataError, match=r"Annotation_Base11\.xls: .*install xlrd or convert"):
        load_messidor(tmp_path)


def test_messidor2_csv_skips_ungradable_and_matches_extension_case(tmp_path: Path) -> None:
    rows = [["image_id", "adjudicated_dr_grade", "adjudicated_dme", "adjudicated_gradable"]]
    grades = [0, 1, 2, 3, 4, None] * 3
    for number, grade in enumerate(grades):
        solid_image(tmp_path / "IMAGES" / f"IM{number:06d}.JPG", grade or 0)
        rows.append([f"IM{number:06d}.jpg", "" if grade is None else f"{grade}.0", "0", "0" if grade is None else "1"])
    write_csv(tmp_path / "messidor_data.csv", rows)
    dataset = load_messidor(tmp_path, image_size=8)
    assert dataset.name == "messidor2"
    assert dataset.num_classes == 5
    assert len(dataset.train) + len(dataset.test) == 15
    assert np.allclose(red_levels(dataset.train.images), 30 * dataset.train.labels + 10, atol=3)


def test_messidor_without_annotations(tmp_path: Path) -> None:
    solid_image(tmp_path / "Base11" / "a.tif", 0)
    with pytest.raises(DataError, match="no annotation files"):
        load_messidor(tmp_path)
