"""Pick a CJK font for matplotlib so that Chinese labels render as text."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)

CJK_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Serif CJK SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Source Han Sans SC",
    "SimHei",
)

# Parts of the file names of the fonts above.
CJK_FILE_MARKS = ("cjk", "wqy", "sourcehan", "simhei")


@lru_cache(maxsize=1)
def use_cjk_font() -> str | None:
    """Configure matplotlib to use an installed CJK font; return its family or None."""
    import matplotlib
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    if not installed & set(CJK_FAMILIES):
        # matplotlib caches its font list, so a font installed after the cache
        # was written is missing from it until the font files are added.
        for path in font_manager.findSystemFonts():
            if any(mark in Path(path).name.lower() for mark in CJK_FILE_MARKS):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue
        installed = {f.name for f in font_manager.fontManager.ttflist}
    for family in CJK_FAMILIES:
        if family in installed:
            matplotlib.rcParams["font.sans-serif"] = [family, "DejaVu Sans"]
            matplotlib.rcParams["font.family"] = "sans-serif"
            matplotlib.rcParams["axes.unicode_minus"] = False
            return family
    logger.warning(
        "no CJK font found; Chinese labels in plots will show as boxes. "
        "Install Debian's fonts-noto-cjk"
    )
    return None
