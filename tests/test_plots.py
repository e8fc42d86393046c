"""The workbook's visual language (`replication/plots.py`): one colour per optimizer and per batch size in every
figure, one meaning per marker, one error-bar convention, and no figure that picks its own colours. Every
figure is drawn end to end by the gpu-profile rehearsal (tests/test_gpu_rehearsal.py) and by nbval."""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from replication import plots  # noqa: E402
from replication.verdicts import MIN_STEPS, t_critical  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# A colour chosen inside a figure's code instead of from plots.py: matplotlib's default cycle ("C3"), a colour map
# picked by name, or a map sampled directly.
OWN_COLOUR = re.compile(r"""color=f?["']C\d|color=f["']C\{|["']C\d[-:.o]|plt\.cm\.|get_cmap\(|cmap=["']|["'](viridis|coolwarm|magma|plasma|tab10)""")


def test_no_figure_picks_its_own_colours():
    offenders = []
    for path in [*ROOT.glob("replication/**/*.py"), *ROOT.glob("notebooks/*.ipynb")]:
        if path.name == "plots.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if OWN_COLOUR.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "colours belong in replication/plots.py:\n" + "\n".join(offenders)


def test_a_batch_size_has_one_colour_whatever_else_the_figure_shows():
    assert plots.batch_colour(16) == plots.batch_colour(16.0)
    colours = [plots.batch_colour(b) for b in (1, 2, 4, 16, 64, 256, 1024)]
    assert len(set(colours)) == len(colours)  # distinct, and ordered cold to warm along one map
    assert plots.batch_colour(1) != plots.batch_colour(4096)


def test_optimizers_have_distinct_colours_that_no_other_series_uses():
    optimizer = set(plots.OPTIMIZER_COLOURS.values())
    assert len(optimizer) == len(plots.OPTIMIZER_COLOURS)
    assert not optimizer & set(plots.SERIES_COLOURS)
    assert plots.named_colour("AdamW", 0) == plots.optimizer_colour("adamw") == plots.named_colour("adamw", 3)
    assert plots.named_colour("held-out loss", 1) == plots.series_colour(1)
    assert plots.named_colour("GSM8K (reasoning)", 3) == plots.named_colour("reasoning", 0) != plots.named_colour("knowledge", 0)


def test_each_marker_kind_means_one_thing_and_is_explained():
    assert set(plots.MARKERS) == set(plots.MARKER_WORDS)
    styles = {tuple(sorted((k, str(v)) for k, v in m.items() if k in ("marker", "mfc"))) for m in plots.MARKERS.values()}
    assert len(styles) == len(plots.MARKERS)
    assert plots.cell_kind(MIN_STEPS - 1) == "short" and plots.cell_kind(MIN_STEPS) == "cell"
    assert plots.cell_kind(MIN_STEPS, on_edge=True) == "edge" and plots.cell_kind(10, finite=False) == "diverged"
    _, ax = plt.subplots()
    plots.mark(ax, [1], [1], "k", "edge")
    legend = plots.marker_legend(ax, ["edge", "short"])
    assert [t.get_text() for t in legend.get_texts()] == [plots.MARKER_WORDS["edge"], plots.MARKER_WORDS["short"].format(min_steps=MIN_STEPS)]
    with pytest.raises(ValueError, match="not one of"):
        plots.mark(ax, [1], [1], "k", "hollow")
    plt.close("all")


def test_error_bars_are_the_student_t_interval_of_the_seeds():
    seeds = np.array([4.0, 4.1, 4.3])
    assert plots.seed_interval(seeds) == pytest.approx(t_critical(2) * seeds.std(ddof=1) / np.sqrt(3))
    assert plots.seed_interval([4.0]) == 0.0 and plots.seed_interval([4.0, np.nan]) == 0.0
    se = seeds.std(ddof=1) / np.sqrt(3)
    assert plots.t_interval([se, se], [3, 1]) == pytest.approx([plots.seed_interval(seeds), 0.0])


def test_excluded_cells_do_not_set_the_axis():
    _, ax = plt.subplots()
    ax.plot([1, 2, 3], [4.0, 4.2, 9.0])  # the 9.0 is a short cell, drawn but not read
    plots.visible_range(ax, [4.0, 4.2])
    low, high = ax.get_ylim()
    assert low < 4.0 and 4.2 < high < 5.0
    ax.set_yscale("log")
    plots.visible_range(ax, [1e-3, 1e-1])
    assert 5e-4 < ax.get_ylim()[0] < 1e-3 and 1e-1 < ax.get_ylim()[1] < 2e-1
    plt.close("all")


def test_captions_say_how_many_seeds_each_cell_has():
    runs = pd.DataFrame({"optimizer.name": ["adamw"] * 5, "batch_size": [1, 1, 1, 4, 16], "optimizer.lr": [1e-3] * 5,
                         "seed": [0, 1, 2, 0, 0], "status": ["ok"] * 5, "tokens": [1000] * 5})
    assert plots.seed_words(runs) == "3 seeds at 1 cell, 1 at 2 others"
    assert plots.seed_words(runs[runs["batch_size"] == 1]) == "3 seeds per cell"
    assert plots.seed_words(runs.drop(columns="status")) == ""  # not a run table: says nothing rather than something wrong


def test_every_figure_module_draws_through_the_shared_helpers():
    """Each paper module that draws a figure takes its colours from plots.py (a module that imports matplotlib
    but never `plots` would have to choose its own)."""
    for path in ROOT.glob("replication/papers/**/*.py"):
        text = path.read_text()
        if "plt.subplots(" in text:  # its panels drawn by plots.py's helpers, or by a paper's shared ones that use them
            assert "from replication import plots" in text or "protocol.plot_" in text, path


def test_series_side_by_side_are_shifted_symmetrically_and_slightly():
    shifts = [plots.dodge(i, 4) for i in range(4)]
    assert shifts == sorted(shifts) and np.prod(shifts) == pytest.approx(1.0)
    assert 0.9 < shifts[0] < 1 < shifts[-1] < 1.1 and plots.dodge(0, 1) == 1.0


def test_series_are_ordered_by_the_size_their_name_starts_with():
    assert sorted(["1.2B", "w128", "85M", "all (4.6 T^-0.51)", "151M", "w32"], key=plots.size_order) == \
        ["w32", "w128", "85M", "151M", "1.2B", "all (4.6 T^-0.51)"]
    assert sorted(["PIQA (pattern)", "GSM8K (reasoning)"], key=plots.size_order) == ["GSM8K (reasoning)", "PIQA (pattern)"]


def test_neighbours_off_the_grid_are_judged_on_the_grid():
    """B / B* is not a grid, batch sizes are: a line joins two points only where their batch sizes are neighbours."""
    fig, ax = plt.subplots()
    plots.connect_neighbours(ax, [2, 4, 8, 16], [0.3, 0.6, 2.4], [1.0, 0.5, 0.2], at=[2, 4, 16])
    assert [tuple(line.get_xdata()) for line in ax.lines] == [(0.3, 0.6)]  # 4 -> 16 skips the 8 this series lacks
    plt.close(fig)


def test_a_best_cell_at_the_end_of_its_grid_is_a_diamond():
    runs = pd.DataFrame([{"batch_size": b, "optimizer.lr": lr, "seed": 0, "steps": 300, "final_val_loss": loss}
                         for b, losses in ((1, (3.0, 3.1, 3.2)), (4, (3.2, 3.0, 3.1))) for lr, loss in zip((1e-3, 2e-3, 4e-3), losses)])
    fig, ax = plt.subplots()
    kinds = plots.loss_by_batch_size(ax, runs, "optimizer.lr")
    diamonds = [line for line in ax.lines if line.get_marker() == plots.MARKERS["edge"]["marker"]]
    assert kinds == {"cell", "edge"} and [(d.get_xdata()[0], d.get_ydata()[0]) for d in diamonds] == [(1e-3, 3.0)]
    plt.close(fig)
