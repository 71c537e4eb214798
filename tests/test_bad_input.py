"""Every bad input of issue 12 gives one line naming the field or file, exit 2, before Ray starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fedsim
from fedsim.cli import main
from fedsim.comparison import load_variants
from fedsim.config import load_config
from fedsim.data.custom import dataset_from_arrays
from fedsim.data.medmnist import load_medmnist
from fedsim.engine.capacity import WORKER_BYTES, check_local_capacity, check_memory
from fedsim.errors import ClusterError, DataError
from fedsim.sweep import load_sweep
from fedsim.yamlio import load_yaml

TINY = ["rounds=2", "data.hospitals=3", "data.source.train_samples=60", "data.source.test_samples=20",
        "data.source.image_size=8", "train.epochs=1", "engine.backend=in_process", "engine.workers=1"]


def medmnist_file(path: Path, test_rows: int = 5, stray: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", test_rows)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1)
    if stray is not None:
        arrays["train_labels"][0, 0] = stray
    np.savez(path, **arrays)
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sets(*assignments: str) -> list[str]:
    return [part for assignment in assignments for part in ("--set", assignment)]


def medmnist_source(path: Path) -> list[str]:
    return sets(f'data.source={{"kind": "medmnist", "path": "{path}"}}')


def bad_run_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_text("train_images,train_labels\n1,2\n")
    (tmp_path / "a_file").write_text("not a directory")
    return {
        "negative seed": (sets("seed=-1"), "seed: "),
        "empty npz": (medmnist_source(tmp_path / "empty.npz"), "empty.npz: the file is empty"),
        "text named npz": (medmnist_source(tmp_path / "text.npz"), "text.npz: not an .npz archive"),
        "empty test split": (medmnist_source(medmnist_file(tmp_path / "notest.npz", test_rows=0)), "the test split is empty"),
        "stray label": (medmnist_source(medmnist_file(tmp_path / "stray.npz", stray=7)), "class(es) 2, 3, 4, 5, 6 have no sample"),
        "out is a file": (["--out", str(tmp_path / "a_file")], "a_file: is a file"),
        "out under a file": (["--out", str(tmp_path / "a_file" / "run")], "lies under"),
        "too many workers": (sets("engine.backend=ray", "engine.workers=1000"), "engine.workers: 1000 workers need about"),
    }


CASES = ["negative seed", "empty npz", "text named npz", "empty test split", "stray label", "out is a file",
         "out under a file", "too many workers"]


@pytest.mark.parametrize("case", CASES)
def test_bad_run_input_is_one_line_and_exit_2(case: str, tmp_path: Path, capsys) -> None:
    extra, expected = bad_run_cases(tmp_path)[case]
    out = [] if "--out" in extra else ["--out", str(tmp_path / "run")]
    code, _, err = run_cli(capsys, "run", "--quiet", *sets(*TINY), *extra, *out)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fedsim: error: ") and expected in lines[0], err
    assert not (tmp_path / "run" / "rounds.parquet").exists()
    assert (tmp_path / "a_file").read_text() == "not a directory"  # nothing lost


def test_too_many_workers_is_refused_before_ray_starts(tmp_path: Path) -> None:
    import ray

    was_running = ray.is_initialized()
    with pytest.raises(ClusterError, match="use at most"):
        fedsim.run(load_config(None, [*TINY, "engine.backend=ray", "engine.workers=1000"]), tmp_path / "run")
    assert ray.is_initialized() == was_running


def test_memory_check_counts_workers_and_cores_only_warn(monkeypatch, capsys) -> None:
    check_memory(4, 4 * WORKER_BYTES, "here")
    with pytest.raises(ClusterError, match="5 workers need about .* use at most 4 workers"):
        check_memory(5, 4.5 * WORKER_BYTES, "here")
    monkeypatch.setattr("fedsim.engine.capacity.os.cpu_count", lambda: 2)
    check_local_capacity(2, 1.0)
    assert capsys.readouterr().err == ""
    check_local_capacity(3, 1.0)
    assert "3 workers x 1 CPU on 2 cores" in capsys.readouterr().err


def test_report_on_a_truncated_part_shows_the_rest_and_names_it(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    fedsim.run(load_config(None, [*TINY, "rounds=3"]), run_dir, quiet=True)
    damaged = run_dir / "rounds.parquet" / "part-000002.parquet"
    damaged.write_bytes(damaged.read_bytes()[:40])
    code, out, err = run_cli(capsys, "report", str(run_dir))
    assert code == 2
    shown = [int(line.split("|")[1].split()[0]) for line in out.splitlines() if line.startswith("|") and line.split("|")[1].strip()[:1].isdigit()]
    assert shown == [1, 3]
    assert f"damaged part skipped (not readable): {damaged}" in out
    assert len(err.strip().splitlines()) == 1 and str(damaged) in err
    with pytest.raises(DataError, match="part-000002.parquet: damaged Parquet part"):
        fedsim.results.RunDirectory(run_dir).read("rounds")


@pytest.mark.parametrize("text, value", [("1e-3", 0.001), ("5E4", 5e4), ("-2.5e+3", -2500.0), (".5", 0.5),
                                         ("3", 3), ("1.0", 1.0), (".inf", float("inf")), ("1e-3x", "1e-3x")])
def test_yaml_reads_scientific_notation(text: str, value: object) -> None:
    loaded = load_yaml(f"x: {text}")["x"]
    assert loaded == value and type(loaded) is type(value)


def test_scientific_notation_in_config_set_sweep_and_variants(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("train:\n  lr: 1e-3\n  weight_decay: 5e-4\n")
    config = load_config(tmp_path / "config.yaml", ["train.momentum=5e-1"])
    assert (config.train.lr, config.train.weight_decay, config.train.momentum) == (0.001, 0.0005, 0.5)
    (tmp_path / "variants.yaml").write_text("small: {train: {lr: 1e-4}}\n")
    [variant] = load_variants(tmp_path / "variants.yaml")
    assert load_config(None, list(variant.overrides)).train.lr == 1e-4
    (tmp_path / "sweep.yaml").write_text("driver_cpus: 5e-1\nset: []\ngrid: {strategy: [fedavg], seed: [0]}\n")
    assert load_sweep(tmp_path / "sweep.yaml").driver_cpus == 0.5


def test_stray_label_in_custom_arrays_needs_an_explicit_class_count() -> None:
    images = np.zeros((6, 8, 8), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 7])
    with pytest.raises(DataError, match=r"inferred as 8 \(max label 7 in train\).*2, 3, 4, 5, 6"):
        dataset_from_arrays((images, labels), (images[:2], labels[:2]))
    assert dataset_from_arrays((images, labels), (images[:2], labels[:2]), classes=8).num_classes == 8
    with pytest.raises(DataError, match=r"expected values in \[0, 2\)"):
        dataset_from_arrays((images, labels), (images[:2], labels[:2]), classes=2)


def test_medmnist_with_every_class_present_still_loads(tmp_path: Path) -> None:
    assert load_medmnist(medmnist_file(tmp_path / "ok.npz")).classes == ("0", "1")


def test_empty_config_file_says_defaults_are_used(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert load_config(tmp_path / "empty.yaml") == load_config(None)
    err = capsys.readouterr().err
    assert err.strip() == f"fedsim: {tmp_path / 'empty.yaml'} is empty; using the default settings"
