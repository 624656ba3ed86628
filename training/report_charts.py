"""Charts of the report as PNG bytes, drawn by matplotlib with a Chinese font.

Figures are built with :class:`matplotlib.figure.Figure` directly instead of
pyplot, so drawing a report changes no global matplotlib state.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from functools import lru_cache

import matplotlib
import numpy as np
from matplotlib import font_manager, ticker
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font

logger = logging.getLogger(__name__)

CJK_FONT_PACKAGE = "fonts-noto-cjk"
# Families tried first, in order. After them, any other installed font that
# covers the sample characters is accepted.
PREFERRED_CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
    "Noto Serif CJK SC",
    "AR PL UMing CN",
)
CJK_SAMPLE = "工单异常处理时长部门"
DPI = 110
BAR_COLOR = "#3b6ea5"
PREDICTED_COLOR = "#d08c2b"


class MissingFontError(RuntimeError):
    """No installed font covers Chinese, so charts would show boxes instead of text."""


def _covers_sample(path: str) -> bool:
    try:
        charmap = FT2Font(path).get_charmap()
    except (OSError, RuntimeError):
        return False
    return all(ord(ch) in charmap for ch in CJK_SAMPLE)


@lru_cache(maxsize=1)
def find_cjk_font() -> str:
    """Return the family name of an installed font that covers Chinese.

    Fonts installed after matplotlib built its font cache are found by scanning
    the system font folders and registering the first one that fits.

    Raises
    ------
    MissingFontError
        If no font covers the sample characters.
    """
    entries = {entry.name: entry.fname for entry in font_manager.fontManager.ttflist}
    for family in PREFERRED_CJK_FAMILIES:
        if family in entries and _covers_sample(entries[family]):
            return family
    for family, path in sorted(entries.items()):
        if _covers_sample(path):
            return family
    known = set(entries.values())
    for path in sorted(font_manager.findSystemFonts()):
        if path not in known and _covers_sample(path):
            font_manager.fontManager.addfont(path)
            return font_manager.FontProperties(fname=path).get_name()
    raise MissingFontError(
        f"no installed font covers Chinese text (checked {len(entries)} fonts known to "
        f"matplotlib {matplotlib.__version__}); install the Debian package "
        f"{CJK_FONT_PACKAGE} (apt-get install {CJK_FONT_PACKAGE}) or another CJK font "
        "and run the report again"
    )


def _new_figure(width: float = 7.5, height: float = 3.8) -> tuple[Figure, object]:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return figure, figure.add_subplot()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _style() -> dict:
    return {
        "font.family": [find_cjk_font()],
        "axes.unicode_minus": False,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }


def bar_chart(
    names: Sequence[str],
    values: Sequence[float],
    title: str,
    xlabel: str,
    ylabel: str,
    horizontal: bool = False,
    colors: Sequence[str] | None = None,
    percent: bool = False,
) -> bytes:
    """Draw a bar chart. Horizontal bars list the first name at the top."""
    with matplotlib.rc_context(_style()):
        height = max(3.2, 0.38 * len(names) + 1.2) if horizontal else 3.8
        figure, axes = _new_figure(height=height)
        colors = list(colors) if colors is not None else BAR_COLOR
        if horizontal:
            positions = np.arange(len(names))[::-1]
            bars = axes.barh(positions, values, color=colors)
            axes.set_yticks(positions, labels=list(names))
        else:
            bars = axes.bar(list(names), values, color=colors)
        labels = [f"{v:.1%}" if percent else f"{v:g}" for v in values]
        axes.bar_label(bars, labels=labels, padding=2, fontsize=8)
        if percent:
            axis = axes.xaxis if horizontal else axes.yaxis
            axis.set_major_formatter(ticker.PercentFormatter(1.0))
        axes.set_title(title)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        return _png(figure)


def hours_histogram(
    hours: Sequence[float],
    title: str,
    xlabel: str,
    ylabel: str,
    bounds: tuple[float, float] | None = None,
    bound_label: str = "",
) -> bytes:
    """Draw a histogram of handling hours on log-spaced bins, leaving out zero hours."""
    values = np.asarray([h for h in hours if h > 0], dtype=float)
    with matplotlib.rc_context(_style()):
        figure, axes = _new_figure()
        if values.size:
            low, high = np.log10(values.min()), np.log10(values.max())
            edges = np.logspace(low, high if high > low else low + 1, 30)
            axes.hist(values, bins=edges, color=BAR_COLOR, edgecolor="white")
            axes.set_xscale("log")
        if bounds is not None:
            for bound in bounds:
                axes.axvline(bound, color="#b23b3b", linestyle="--", linewidth=1)
            axes.plot([], [], color="#b23b3b", linestyle="--", label=bound_label)
            axes.legend(loc="upper right", fontsize=8)
        axes.set_title(title)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        return _png(figure)


def line_chart(
    x: Sequence[str],
    series: dict[str, Sequence[float]],
    title: str,
    xlabel: str,
    ylabel: str,
) -> bytes:
    """Draw one line per series over the same x labels, with gaps at missing values."""
    with matplotlib.rc_context(_style()):
        figure, axes = _new_figure()
        positions = np.arange(len(x))
        for name, values in series.items():
            axes.plot(
                positions, np.asarray(values, dtype=float), marker="o", label=name
            )
        step = max(1, len(x) // 12)
        axes.set_xticks(
            positions[::step], labels=list(x)[::step], rotation=45, ha="right"
        )
        if len(series) > 1:
            axes.legend(fontsize=8)
        axes.set_title(title)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.set_ylim(bottom=0)
        return _png(figure)


__all__ = [
    "CJK_FONT_PACKAGE",
    "MissingFontError",
    "bar_chart",
    "find_cjk_font",
    "hours_histogram",
    "line_chart",
]
