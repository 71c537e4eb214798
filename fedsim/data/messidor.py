"""Loader for Messidor (fundus photographs graded for diabetic retinopathy).

Two annotation styles are accepted under ``root``:
- Messidor (original): ``Annotation_*.csv`` / ``.xls`` / ``.xlsx`` with ``Image name`` and
  ``Retinopathy grade`` (0-3); 4 classes.
- Messidor-2: ``messidor_data.csv`` with ``image_id`` and ``adjudicated_dr_grade`` on the
  ICDR scale (0-4), rows with an empty grade (ungradable) skipped; 5 classes.
Images are found by file name anywhere below ``root`` (case-insensitive, since the Messidor-2
CSV and its files disagree on extension case). There is no official split, so a seeded
stratified 20% is held out as test.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np

from fedsim.data.arrays import ImageDataset
from fedsim.data.errors import DataError
from fedsim.data.images import read_rgb_images
from fedsim.data.splits import stratified_split, take

_IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg"}
_EXCEL_ENGINES = {".xls": "xlrd", ".xlsx": "openpyxl"}
_TEST_FRACTION = 0.2
# style -> (name column, grade column, number of grades, empty grade allowed)
_STYLES = {
    "messidor": ("Image name", "Retinopathy grade", 4, False),
    "messidor2": ("image_id", "adjudicated_dr_grade", 5, True),
}


def load_messidor(root: str | Path, image_size: int = 28, seed: int = 0) -> ImageDataset:
    """RGB fundus images resized to image_size, labelled by retinopathy grade."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: Messidor folder not found")
    sources = _annotation_files(root)
    styles = {style for style, _ in sources}
    if len(styles) > 1:
        raise DataError(f"{root}: holds both Messidor (grades 0-3) and Messidor-2 (grades 0-4) annotations; keep one")
    style = styles.pop()
    grades: dict[str, tuple[int, Path, str]] = {}
    for _, path in sources:
        for name, grade in _read_grades(path, style):
            known = grades.setdefault(name.lower(), (grade, path, name))
            if known[0] != grade:
                raise DataError(f"{path}: image {name!r} has grade {grade} but grade {known[0]} in {known[1]}")
    if not grades:
        raise DataError(f"{root}: annotation files list no graded images")
    files = _image_index(root)
    names = sorted(grades)
    for name in names:
        _, path, original = grades[name]
        if name not in files:
            raise DataError(f"{path}: image file {original!r} not found under {root}")
    labels = np.array([grades[name][0] for name in names], dtype=np.int64)
    images = read_rgb_images([files[name] for name in names], image_size)
    keep, held_out = stratified_split(labels, _TEST_FRACTION, seed)
    return ImageDataset(
        name=style,
        classes=tuple(f"grade {grade}" for grade in range(_STYLES[style][2])),
        train=take(images, labels, keep),
        val=None,
        test=take(images, labels, held_out),
    )


def _annotation_files(root: Path) -> list[tuple[str, Path]]:
    found = [("messidor2", path) for path in root.rglob("messidor_data.csv")]
    found += [
        ("messidor", path)
        for path in root.rglob("Annotation_*")
        if path.suffix.lower() in {".csv", *_EXCEL_ENGINES}
    ]
    if not found:
        raise DataError(f"{root}: no annotation files (Annotation_*.csv/.xls/.xlsx or messidor_data.csv)")
    return sorted(found, key=lambda item: str(item[1]))


def _read_grades(path: Path, style: str) -> list[tuple[str, int]]:
    """(image name, grade) rows of one annotation file."""
    name_column, grade_column, num_grades, empty_allowed = _STYLES[style]
    rows = _read_table(path)
    for column in (name_column, grade_column):
        if rows and column not in rows[0]:
            raise DataError(f"{path}: missing column {column!r}")
    result = []
    for line, row in enumerate(rows, start=2):
        name, text = row[name_column].strip(), row[grade_column].strip()
        if not text and empty_allowed:
            continue
        try:
            grade = float(text)
        except ValueError:
            grade = -1.0
        if not name or grade not in range(num_grades):
            raise DataError(
                f"{path}: row {line}: expected an image name and {grade_column} in 0..{num_grades - 1}, "
                f"got {name!r}, {text!r}"
            )
        result.append((name, int(grade)))
    return result


def _read_table(path: Path) -> list[dict[str, str]]:
    """Rows as header -> text; spreadsheets only when their pandas engine is installed."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        # utf-8-sig: spreadsheets exported as "CSV UTF-8" start with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return [{key.strip(): value or "" for key, value in row.items() if key} for row in csv.DictReader(handle)]
    engine = _EXCEL_ENGINES[suffix]
    if importlib.util.find_spec(engine) is None:
        raise DataError(
            f"{path}: reading {suffix} needs the {engine} package; install {engine} or convert the file to CSV"
        )
    import pandas as pd

    frame = pd.read_excel(path, engine=engine, dtype=str, keep_default_na=False)
    frame.columns = [str(column).strip() for column in frame.columns]
    return frame.to_dict("records")


def _image_index(root: Path) -> dict[str, Path]:
    """Lower-cased file name -> path of every image below root; duplicate names are ambiguous."""
    index: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in _IMAGE_SUFFIXES or not path.is_file():
            continue
        other = index.setdefault(path.name.lower(), path)
        if other != path:
            raise DataError(f"{path}: same image name as {other}; cannot tell which one is annotated")
    return index
