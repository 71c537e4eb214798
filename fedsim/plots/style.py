"""What every fedsim figure shares: markers that keep coincident lines visible, a mean ± std
band, integer round axes."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


def line_style(index: int) -> dict[str, Any]:
    """The index-th line's colour, marker and dash: lines exactly on top of each other still show."""
    return {"color": f"C{index % 10}", "marker": MARKERS[index % len(MARKERS)],
            "linestyle": LINESTYLES[index % len(LINESTYLES)], "markersize": 4}


def mean_std_band(ax: Axes, curve: pd.DataFrame, index: int, label: str) -> None:
    """A line of curve["mean"] over its index with a ± curve["std"] band (NaN std: no band)."""
    style = line_style(index)
    ax.plot(curve.index, curve["mean"], label=label, **style)
    spread = curve["std"].fillna(0)
    ax.fill_between(curve.index, curve["mean"] - spread, curve["mean"] + spread, color=style["color"], alpha=0.15)


def round_axis(ax: Axes) -> None:
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
