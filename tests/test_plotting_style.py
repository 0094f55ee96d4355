"""The compendium's plotting style: colour-blind-safe colours, readable labels, figure formats and resolution."""
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib as mpl  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from PIL import Image  # noqa: E402

from histo_utils import figures, plotting, survival  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_style():
    rc, out = mpl.rcParams.copy(), dict(plotting._output)
    yield
    mpl.rcParams.update(rc)
    plotting._output.clear()
    plotting._output.update(out)
    plt.close("all")


def _figure(title_pt=7):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 0, 2])
    ax.set(xlabel="x", ylabel="y")
    ax.set_title("a small title", fontsize=title_pt)
    return fig


def _table():
    return pd.DataFrame({"x": [0, 1, 2], "y": [1, 0, 2]})


def test_save_figure_writes_svg_and_pdf_beside_the_png_at_the_asked_dpi(tmp_path):
    png = plotting.save_figure(_figure(), _table(), tmp_path, "nb", "f", figure_format="svg,pdf", dpi=300)
    d = png.parent
    assert sorted(p.name for p in d.iterdir()) == ["f.csv", "f.pdf", "f.png", "f.svg"]
    assert (d / "f.pdf").read_bytes().startswith(b"%PDF")
    svg = (d / "f.svg").read_text()
    assert "<svg" in svg and "a small title" in svg  # text kept as text (svg.fonttype none)
    dpi = Image.open(png).info["dpi"]
    assert dpi == pytest.approx((300, 300), abs=0.5)
    png110 = plotting.save_figure(_figure(), _table(), tmp_path, "nb", "g")
    assert Image.open(png110).info["dpi"] == pytest.approx((110, 110), abs=0.5)
    assert not (d / "g.svg").exists() and not (d / "g.pdf").exists()
    # three times the resolution, three times the pixels
    assert Image.open(png).size[0] / Image.open(png110).size[0] == pytest.approx(300 / 110, rel=0.05)


def test_set_style_makes_the_runs_format_and_dpi_the_default(tmp_path):
    plotting.set_style(figure_format="pdf", dpi=150)
    png = plotting.save_figure(_figure(), _table(), tmp_path, "nb", "f")
    assert (png.parent / "f.pdf").exists() and not (png.parent / "f.svg").exists()
    assert Image.open(png).info["dpi"] == pytest.approx((150, 150), abs=0.5)
    assert [c.lower() for c in mpl.rcParams["axes.prop_cycle"].by_key()["color"]] == \
        [c.lower() for c in plotting.CATEGORICAL]
    assert mpl.rcParams["image.cmap"] == plotting.SEQUENTIAL


def test_bad_format_or_dpi_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"'tiff'.*Available: \['png', 'svg', 'pdf'\]"):
        plotting.figure_formats("svg,tiff")
    with pytest.raises(ValueError, match="figure_dpi"):
        plotting.set_style(dpi=5)
    assert plotting.figure_formats("PDF, svg") == ("png", "pdf", "svg")
    assert plotting.figure_formats("png") == ("png",)


def test_vector_files_are_the_same_bytes_each_time(tmp_path):
    a = plotting.save_figure(_figure(), _table(), tmp_path / "a", "nb", "f", figure_format="svg,pdf")
    b = plotting.save_figure(_figure(), _table(), tmp_path / "b", "nb", "f", figure_format="svg,pdf")
    for ext in ("png", "svg", "pdf"):
        assert a.with_suffix(f".{ext}").read_bytes() == b.with_suffix(f".{ext}").read_bytes(), ext


def test_small_titles_are_raised_to_the_minimum(tmp_path):
    fig = _figure(title_pt=6)
    fig.suptitle("overall", fontsize=7)
    plotting.save_figure(fig, _table(), tmp_path, "nb", "f")
    assert fig.axes[0].title.get_fontsize() == plotting.MIN_TITLE_PT
    assert fig._suptitle.get_fontsize() == plotting.MIN_TITLE_PT
    big = _figure(title_pt=12)
    plotting.save_figure(big, _table(), tmp_path, "nb", "g")
    assert big.axes[0].title.get_fontsize() == 12


def _deuteranope(hex_colour):
    """Machado et al. (2009) simulation of deuteranopia (severity 1) of an sRGB colour, back in sRGB."""
    c = np.array(to_rgb(hex_colour))
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]])
    sim = np.clip(m @ lin, 0, 1)
    return np.where(sim <= 0.0031308, 12.92 * sim, 1.055 * sim ** (1 / 2.4) - 0.055)


def _closest_pair(colours):
    return min(np.linalg.norm(_deuteranope(a) - _deuteranope(b)) for a, b in itertools.combinations(colours, 2))


def test_categorical_colours_stay_apart_for_a_deuteranope():
    # matplotlib's tab10 has the red/green pair the style avoids: it fails the same check
    assert _closest_pair(["tab:red", "tab:green"]) < 0.12
    assert _closest_pair(plotting.CATEGORICAL[:6]) > 0.12
    assert _closest_pair([plotting.HIGHLIGHT, plotting.MUTED]) > 0.3


def _overlaps(labels, renderer):
    boxes = [t.get_window_extent(renderer) for t in labels if t.get_text()]
    return [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]


def test_confusion_matrix_class_names_do_not_run_into_each_other():
    classes = ["Adipose Tissue", "Liver", "Muscle", "Pancreas", "Thyroid"]
    cm = pd.DataFrame(np.diag([350, 349, 413, 374, 316]), index=classes, columns=classes)
    fig = figures.confusion_heatmaps({"tile": cm, "slide": cm // 40})
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == classes
        assert not _overlaps(ax.get_xticklabels(), r) and not _overlaps(ax.get_yticklabels(), r)
        assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"


def test_kaplan_meier_panels_have_both_axis_labels():
    rng = np.random.default_rng(0)
    idx = [f"s{i}" for i in range(40)]
    months = pd.Series(rng.exponential(30, 40), index=idx)
    event = pd.Series(rng.random(40) < 0.7, index=idx).astype(int)
    groups = pd.Series(np.arange(40) % 2 == 0, index=idx)
    res = survival.logrank_comparisons(pd.DataFrame({"months": months, "OS": event}), [("HTI high vs low", groups)])
    fig, ax = plt.subplots()
    figures.km_panel(ax, res.table.iloc[0], res.curves)
    assert ax.get_xlabel() == "months" and ax.get_ylabel() == "survival probability"
    assert res.table.n_low[0] == 20 and res.table.n_high[0] == 20
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["low (n = 20)", "high (n = 20)"]


def test_thumbnail_with_tiles_has_a_legend_naming_mask_and_tiles():
    fig, ax = plt.subplots()
    thumb = np.full((20, 30, 3), 230, np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:15, 5:25] = True
    tiles = pd.DataFrame({"x": [50, 150], "y": [50, 50], "size0": [100, 100]})
    plotting.show_tiles_on_thumbnail(ax, thumb, tiles, scale=10, mask=mask, title="slide")
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["tissue mask", "kept tiles (2)"]
    assert ax.title.get_fontsize() >= plotting.MIN_TITLE_PT
