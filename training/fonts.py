"""Pick a CJK font for matplotlib so that Chinese labels render as text."""

from __future__ import annotations

import logging
from functools import lru_cache

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


@lru_cache(maxsize=1)
def use_cjk_font() -> str | None:
    """Configure matplotlib to use an installed CJK font; return its family or None."""
    import matplotlib
    from matplotlib import font_manager

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
