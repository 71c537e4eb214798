"""Plots as matplotlib figures (no pyplot, no GUI): `fedsim plot FOLDER` tells a run directory
(config.yaml), a compare.py output (comparison.parquet) and a sweep (results/) apart and saves
the figures of each as PNG; notebooks show the same figures inline."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from matplotlib.figure import Figure

from fedsim.errors import ConfigError


def figures_for(folder: str | Path) -> list[tuple[str, Figure]]:
    """(file stem, figure) for every plot of `folder`, whichever kind of folder it is."""
    from fedsim.plots import compare, run, sweep

    folder = Path(folder)
    kinds: list[tuple[str, Callable[[Path], list[tuple[str, Figure]]]]] = [
        ("config.yaml", run.figures), ("comparison.parquet", compare.figures), (sweep.RESULTS, sweep.figures),
    ]
    for marker, figures in kinds:
        if (folder / marker).exists():
            return figures(folder)
    raise ConfigError(
        f"{folder}: not a run directory (config.yaml), a comparison (comparison.parquet) "
        f"or a sweep directory ({sweep.RESULTS}/ inside)"
    )


def save_plots(folder: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write the folder's plots as PNG into `out` (default FOLDER/plots); returns their paths."""
    figures = figures_for(folder)
    target = Path(out) if out else Path(folder) / "plots"
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, figure in figures:
        path = target / f"{stem}.png"
        figure.savefig(path, dpi=120)
        paths.append(path)
    return paths
