"""Chinese text in plots renders with a CJK font, never as boxes."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from training.fonts import CJK_FILE_MARKS, use_cjk_font


def cjk_font_files() -> list[str]:
    from matplotlib import font_manager

    return [
        path
        for path in font_manager.findSystemFonts()
        if any(mark in Path(path).name.lower() for mark in CJK_FILE_MARKS)
    ]


@pytest.mark.skipif(not cjk_font_files(), reason="no CJK font installed (fonts-noto-cjk)")
def test_chinese_title_draws_without_missing_glyphs(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert use_cjk_font() is not None
    figure, axes = plt.subplots()
    axes.set_title("系统故障的处理时长")
    axes.set_xlabel("月份")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure.savefig(tmp_path / "plot.png")
    plt.close(figure)
