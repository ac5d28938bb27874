"""Compare two campaign outputs of the same datasets (e.g. two template sets).

``compare_runs(out_a, out_b)`` writes ``compare.csv``, ``plots/gain_scatter.png``,
``plots/gain_bars.png`` and ``compare.html`` into ``compare-<a>-vs-<b>/`` beside ``out_b``
(or ``out``). The winner of a dataset is the run with the higher final dynamic range;
within 2 % (relative to the larger) it is a tie. Only finished runs have a final dynamic
range; when only one run has one it wins; when neither has, it is a tie. A dataset present in
only one run is "not compared".
"""
from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from selfcal_batch.fileio import atomic_write_text

from .aggregate import load_datasets, to_float, with_gains, write_csv
from .figures import colours, message_figure, save
from .html import Linker, render

TIE_TOLERANCE = 0.02
COMPARE_COLUMNS = ("name", "status_a", "status_b", "template_final_a", "template_final_b",
                   "snr_final_a", "snr_final_b", "snr_gain_a", "snr_gain_b", "dr_final_a",
                   "dr_final_b", "dr_gain_a", "dr_gain_b", "winner")


def pick_winner(dr_a: Any, dr_b: Any, tolerance: float = TIE_TOLERANCE) -> str:
    """'a', 'b' or 'tie' by final dynamic range (relative tie tolerance). Pure."""
    a, b = to_float(dr_a), to_float(dr_b)
    if math.isnan(a) and math.isnan(b):
        return "tie"
    if math.isnan(b):
        return "a"
    if math.isnan(a):
        return "b"
    if abs(a - b) <= tolerance * max(abs(a), abs(b)):
        return "tie"
    return "a" if a > b else "b"


def compare_table(ds_a: pd.DataFrame, ds_b: pd.DataFrame) -> pd.DataFrame:
    """Per dataset (union of both runs): final SNR/DR and gains of a and b, and the winner."""
    ga, gb = with_gains(ds_a).set_index("name"), with_gains(ds_b).set_index("name")
    names = list(gb.index) + [n for n in ga.index if n not in gb.index]
    rows = []
    for n in names:
        row: dict[str, Any] = {"name": n}
        for tag, g in (("a", ga), ("b", gb)):
            if n in g.index:
                r = g.loc[n]
                r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
                done = r["status"] == "finished"
                row[f"status_{tag}"] = r["status"]
                row[f"template_final_{tag}"] = r["template_final"]
                for c in ("snr_final", "snr_gain", "dr_final", "dr_gain"):
                    row[f"{c}_{tag}"] = to_float(r[c]) if done else math.nan
            else:
                row.update({f"status_{tag}": "missing", f"template_final_{tag}": ""})
                for c in ("snr_final", "snr_gain", "dr_final", "dr_gain"):
                    row[f"{c}_{tag}"] = math.nan
        # A dataset only one run has cannot be won or tied: nothing was compared.
        missing = "missing" in (row["status_a"], row["status_b"])
        row["winner"] = "not compared" if missing else pick_winner(row["dr_final_a"], row["dr_final_b"])
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


def no_common_problem(names_a: list[str], names_b: list[str], out_a: Path, out_b: Path) -> str:
    """One line when the runs share no dataset name (nothing could be compared), else ''.
    Pure; lists up to three names of each run so a wrong pair of directories shows."""
    if set(map(str, names_a)) & set(map(str, names_b)):
        return ""

    def some(names: list[str]) -> str:
        names = sorted(map(str, names))
        return (", ".join(names[:3]) + (f", ... {len(names) - 3} more" if len(names) > 3 else "")) if names else "none"
    return (f"no dataset in common: {out_a} has {some(names_a)}; {out_b} has {some(names_b)} "
            "(compare compares runs of the same datasets)")


def runs_problem(out_a: str | Path, out_b: str | Path) -> str:
    """:func:`no_common_problem` for two campaign output directories (reads their dataset tables)."""
    names = [list(load_datasets(Path(p), [], write=False)["name"]) for p in (out_a, out_b)]
    return no_common_problem(names[0], names[1], Path(out_a), Path(out_b))


def plot_gain_scatter(t: pd.DataFrame, out_png: Path, label_a: str, label_b: str) -> Path:
    """DR and SNR gains of run b vs run a (log-log, 1:1 line)."""
    fig = Figure(figsize=(10, 4.6))
    drawn = False
    for k, (metric, title) in enumerate((("dr_gain", "dynamic-range gain"), ("snr_gain", "SNR gain"))):
        ax = fig.add_subplot(1, 2, k + 1)
        x = t[f"{metric}_a"].to_numpy(dtype=float)
        y = t[f"{metric}_b"].to_numpy(dtype=float)
        ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
        if ok.any():
            drawn = True
            cmap = colours(list(t["winner"].unique()))
            for w, c in cmap.items():
                m = ok & (t["winner"] == w).to_numpy()
                ax.scatter(x[m], y[m], color=c, label=f"winner {w}", s=40, edgecolor="k", lw=0.5, zorder=3)
            if ok.sum() <= 30:
                for xi, yi, n in zip(x[ok], y[ok], t["name"].to_numpy()[ok], strict=True):
                    ax.annotate(n, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
            lo = min(x[ok].min(), y[ok].min()) / 1.5
            hi = max(x[ok].max(), y[ok].max()) * 1.5
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="1:1")
            ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no dataset finished in both runs", ha="center", transform=ax.transAxes)
        ax.set(title=title, xlabel=f"{label_a} (a)", ylabel=f"{label_b} (b)")
        ax.grid(True, which="both", alpha=0.3)
    if not drawn and t.empty:
        return message_figure(out_png, "Gains a vs b", "no datasets to compare")
    fig.tight_layout()
    return save(fig, out_png)


def plot_gain_bars(t: pd.DataFrame, out_png: Path, label_a: str, label_b: str) -> Path:
    """Per-dataset dynamic-range gain of both runs (grouped bars, log y)."""
    if t.empty:
        return message_figure(out_png, "Dynamic-range gain per dataset", "no datasets to compare")
    fig = Figure(figsize=(max(6.0, 0.8 * len(t) + 2), 4.5))
    ax = fig.add_subplot()
    x = np.arange(len(t))
    a = np.nan_to_num(t["dr_gain_a"].to_numpy(dtype=float), nan=0.0)
    b = np.nan_to_num(t["dr_gain_b"].to_numpy(dtype=float), nan=0.0)
    ax.bar(x - 0.2, a, 0.4, label=f"a: {label_a}", color="tab:blue")
    ax.bar(x + 0.2, b, 0.4, label=f"b: {label_b}", color="tab:orange")
    for xi, w, top in zip(x, t["winner"], np.maximum(a, b), strict=True):
        ax.text(xi, top if top > 0 else 1.0, w, ha="center", va="bottom", fontsize=8)
    if (a > 0).any() or (b > 0).any():
        ax.set_yscale("log")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(x, list(t["name"]), rotation=45, ha="right")
    ax.set(title="Dynamic-range gain per dataset (label = winner)", ylabel="final / initial DR")
    ax.legend()
    fig.tight_layout()
    return save(fig, out_png)


def _median(s: pd.Series) -> float:
    v = pd.to_numeric(s, errors="coerce").dropna()
    return float(v.median()) if len(v) else math.nan


def default_compare_dir(out_a: Path, out_b: Path) -> Path:
    """A folder of its own beside run b: ``<parent of b>/compare-<a>-vs-<b>`` (never inside
    either campaign output, whose report and tables it would mix with)."""
    return out_b.parent / f"compare-{out_a.name or 'a'}-vs-{out_b.name or 'b'}"


def compare_problem(dest: Path, runs: list[Path]) -> str | None:
    """Why ``dest`` may not receive a comparison (inside or equal to a compared run, a
    campaign output or a measurement set), or None."""
    dest = dest.resolve()
    for r in runs:
        r = r.resolve()
        if dest == r or r in dest.parents:
            return f"--out {dest} is inside the compared run {r}: choose a folder of its own"
    if (dest / "table.dat").exists():
        return f"--out {dest} is a measurement set"
    if (dest / "campaign.json").exists() or (dest / "datasets").is_dir():
        return f"--out {dest} is a campaign output directory: choose a folder of its own"
    return None


def compare_runs(out_a: str | Path, out_b: str | Path, out: str | Path | None = None) -> Path:
    """Write the comparison of two campaign outputs; returns the path of compare.html."""
    out_a, out_b = Path(out_a).resolve(), Path(out_b).resolve()
    dest = Path(out).resolve() if out else default_compare_dir(out_a, out_b)
    dest.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    la, lb = out_a.name or str(out_a), out_b.name or str(out_b)
    if la == lb:
        la, lb = f"{la} (a)", f"{lb} (b)"
    frames = {}
    for tag, path, label in (("a", out_a, la), ("b", out_b, lb)):
        run_notes: list[str] = []
        if not path.is_dir():
            run_notes.append(f"output directory {path} does not exist")
        frames[tag] = load_datasets(path, run_notes, write=False)
        notes += [f"{tag} ({label}): {n}" for n in run_notes]
    t = compare_table(frames["a"], frames["b"])
    write_csv(t, dest / "compare.csv")
    only = {tag: list(t.loc[t[f"status_{other}"] == "missing", "name"])
            for tag, other in (("a", "b"), ("b", "a"))}
    for tag in ("a", "b"):
        if only[tag]:
            notes.append(f"only in run {tag}: {', '.join(only[tag])}")
    plots: list[tuple[str, Path]] = []
    for title, fn, fname in (("Gains a vs b", plot_gain_scatter, "gain_scatter.png"),
                             ("Dynamic-range gain per dataset", plot_gain_bars, "gain_bars.png")):
        try:
            plots.append((title, fn(t, dest / "plots" / fname, la, lb)))
        except Exception as exc:  # noqa: BLE001 - a broken plot is reported, not fatal
            notes.append(f"plot {fname} failed: {type(exc).__name__}: {exc}")
    linker = Linker(dest)
    wins = {w: int((t["winner"] == w).sum()) for w in ("a", "b", "tie")}
    runs = [{"tag": tag, "label": label, "path": str(path),
             "report": linker.link(path / "survey" / "report.html"),
             "median_dr_gain": _median(t[f"dr_gain_{tag}"]),
             "median_snr_gain": _median(t[f"snr_gain_{tag}"]),
             "finished": int((t[f"status_{tag}"] == "finished").sum()),
             "failed": int((t[f"status_{tag}"] == "failed").sum())}
            for tag, label, path in (("a", la, out_a), ("b", lb, out_b))]
    html = render("compare.html.j2", title=f"selfcal-batch comparison: {la} (a) vs {lb} (b)",
                  generated=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                  runs=runs, wins=wins, rows=t.to_dict("records"), tolerance=TIE_TOLERANCE,
                  plots=[(title, linker.link(p)) for title, p in plots if linker.link(p)],
                  csv=linker.link(dest / "compare.csv"), notes=notes)
    return atomic_write_text(dest / "compare.html", html)
