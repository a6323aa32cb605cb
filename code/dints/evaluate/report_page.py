"""The results page of a run: ``<search run>/report/``, a static folder that opens from disk with no network (no
external scripts, styles or fonts; every image a file beside ``index.html``).

Sections, each from what the run has written so far (a stage that has not run is named as missing):

- the task and the configuration, with where each value came from (default, preset, command line);
- the searched architecture's picture, its decoded and expected memory ratios, the seeded searches it was chosen
  among (SEARCH_SEEDS), and the search's progress;
- each fold's retraining progress and best validation Dice;
- each fold's mean validation Dice, the mean over folds beside the Dice of the fold the search ran on (the only
  fold whose validation cases the search did not train on: :func:`search_exposure`), and why;
- the validation table per case and class (Dice, HD95), with mean and spread per class and a box plot per class;
- overlays of the best and the worst validation case of each fold (:mod:`dints.evaluate.overlay`);
- the final label maps, each with its original grid.

The page checks itself when a browser opens it: once loaded, ``<html data-images="L/N">`` says how many of its N
images loaded.
"""

from __future__ import annotations

import csv
import html
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import nibabel as nib
import numpy as np

matplotlib.use("Agg")  # draw to files only
import matplotlib.pyplot as plt  # noqa: E402

from dints.data.msd import Task, image_files  # noqa: E402
from dints.evaluate.metrics import defined_mean  # noqa: E402
from dints.evaluate.overlay import overlay, save_overlay  # noqa: E402
from dints.io import atomic_write  # noqa: E402
from dints.run.settings import RECORD_KEYS  # noqa: E402
from dints.run import layout  # noqa: E402

#: The page's folder inside the search run folder, and its page.
FOLDER, INDEX = "report", "index.html"
#: Options not worth a row of the configuration table (where the run is, logging, the record's own bookkeeping).
HIDDEN = {"config", "sources", "stage", "debug", "log_interval", "device", "resume"}

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0; }
.missing { color: #a33; } .note { color: #555; font-size: 0.9em; }
"""
CHECK = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.documentElement.setAttribute("data-images", loaded + "/" + images.length);
});
"""


@dataclass
class Page:
    """The page being written: its folder, its HTML parts, the sections it has and those it lacks."""

    folder: Path
    parts: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def section(self, title: str) -> None:
        self.sections.append(title)
        self.parts.append(f'<h2 id="{_anchor(title)}">{html.escape(title)}</h2>')

    def text(self, words: str, cls: str = "") -> None:
        self.parts.append(f'<p{f" class={cls!r}" if cls else ""}>{words}</p>')

    def lacking(self, what: str, how: str) -> None:
        self.missing.append(what)
        self.text(f"Not yet: {html.escape(what)} ({html.escape(how)}).", "missing")

    def image(self, name: str, alt: str) -> None:
        self.images.append(name)
        self.parts.append(f'<img src="{html.escape(name)}" alt="{html.escape(alt)}">')

    def copy(self, src: Path, name: str, alt: str) -> bool:
        if not src.is_file():
            return False
        shutil.copyfile(src, self.folder / name)
        self.image(name, alt)
        return True

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f'<td class="num">{"" if math.isnan(v) else f"{v:.4f}"}</td>'
    if isinstance(v, int) and not isinstance(v, bool):
        return f'<td class="num">{v}</td>'
    return f"<td>{html.escape('' if v is None else str(v))}</td>"


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


@dataclass(frozen=True)
class SearchExposure:
    """Which validation cases the search could have seen, from the run's records.

    The search trains on its fold's training cases (weights on one half, architecture on the other), and those are
    the validation cases of every other fold; only its own fold's validation cases are unseen by it (they monitor
    the search, and with several seeded searches they rank them).

    Attributes:
        fold: the fold the search ran on (its ``config_search.json``); None when unknown.
        seeds: the seeds a choice among seeded searches was made among (SEARCH_SEEDS >= 2), else None.
        arch: the ``--arch`` the retraining used instead of the search's ``arch.json``, if any.
    """

    fold: int | None
    seeds: list[int] | None = None
    arch: str | None = None


def search_exposure(run: Path, folds: list[int]) -> SearchExposure:
    """:class:`SearchExposure` of the run in ``run`` (``folds``: the folds whose retraining records to read)."""
    record = _json(run / layout.config_record("search"))
    fold = record.get("config", {}).get("fold") if isinstance(record, dict) else None
    seeds = record.get("search_seeds") if isinstance(record, dict) else None
    arch = None
    for k in folds:
        retrain = _json(layout.retrain_dir(run, k) / layout.config_record("retrain"))
        if retrain is not None and retrain.get("config", {}).get("arch"):
            arch = retrain["config"]["arch"]
            break
    return SearchExposure(fold if isinstance(fold, int) else None, seeds or None, arch)


def fold_dice(run: Path, folds: list[int]) -> dict[int, float]:
    """Stage 3's mean foreground Dice of each of ``folds`` that has one (``val-fold<k>/summary.json``)."""
    out = {}
    for k in folds:
        s = _json(layout.eval_dir(run, "val", k) / layout.SUMMARY)
        if s is not None and isinstance(s.get("mean_dice"), (int, float)):
            out[k] = float(s["mean_dice"])
    return out


def dice_summary(run: Path, folds: list[int]) -> tuple[str, str] | None:
    """The mean over folds with the search fold's Dice on its own, and the note that says why, as plain text:
    ``("mean over 5 folds 0.8500 (fold 0, unseen by the search: 0.8300)", "The search trained on ...")``; None
    before any fold is evaluated."""
    dice = fold_dice(run, folds)
    if not dice:
        return None
    seen = search_exposure(run, folds)
    line = f"mean over {len(dice)} fold{'s' if len(dice) != 1 else ''} {sum(dice.values()) / len(dice):.4f}"
    if seen.arch is not None:
        return line, (f"The retraining used the architecture {seen.arch} (--arch), not this run's search: which "
                      "validation cases chose it is not known here.")
    if seen.fold is None:
        return line, ("No record of the search (config_search.json): which fold it ran on, and so which validation "
                      "cases it saw, is not known here.")
    f = seen.fold
    own = f"{dice[f]:.4f}" if f in dice else "not evaluated"
    if seen.seeds:
        line += f" (fold {f}, not trained on by the search but used to choose among its {len(seen.seeds)} seeds: {own})"
    else:
        line += f" (fold {f}, unseen by the search: {own})"
    note = (f"The search trained on fold {f}'s training cases (its weights on one half, its architecture on the "
            f"other), which are the validation cases of every other fold: their Dice is measured on cases the "
            "architecture was chosen with. ")
    if seen.seeds:
        note += (f"Only fold {f}'s validation cases were not trained on by the search; but with "
                 f"SEARCH_SEEDS={len(seen.seeds)} its seeded searches were ranked by the supernet's Dice on them, so "
                 f"fold {f}'s Dice is the least touched by that selection, though not entirely free of it.")
    else:
        note += (f"Only fold {f}'s validation cases were unseen by the search, so fold {f}'s Dice is the one figure "
                 "free of that selection.")
    return line, note


def _val_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _source(key: str, sources: dict[str, str]) -> str:
    if sources.get(key) == "command line":
        return "command line"
    if key in sources:
        return f"preset {sources[key]}"
    return "dataset.json" if key in ("in_channels", "num_classes") else "default"


def _configuration(page: Page, run: Path, folds: list[int]) -> None:
    page.section("Configuration")
    record = _json(run / layout.config_record("search"))
    if record is None:
        page.lacking("the search's record", f"{run / layout.config_record('search')}; stage 1 writes it")
        return
    config = record["config"]
    sources = config.get("sources", {})
    decisive = RECORD_KEYS["search"]
    page.text("The options that decide the search's result (<code>config_search.json</code>), and where each value "
              "came from:")
    page.table(["option", "value", "from"], [[k, json.dumps(config.get(k)), _source(k, sources)] for k in decisive])
    retrain = next((_json(layout.retrain_dir(run, k) / layout.config_record("retrain")) for k in folds
                    if (layout.retrain_dir(run, k) / layout.config_record("retrain")).is_file()), None)
    if retrain is not None:
        rc, rs = retrain["config"], retrain["config"].get("sources", {})
        diff = [[k, json.dumps(rc.get(k)), _source(k, rs)] for k in RECORD_KEYS["retrain"]
                if k != "fold" and rc.get(k) != config.get(k)]
        page.text("The retraining's, where they differ from the search's:")
        page.table(["option", "value", "from"], diff)
    rest = [[k, json.dumps(v), _source(k, sources)] for k, v in sorted(config.items())
            if k not in HIDDEN and k not in decisive]
    page.parts.append("<details><summary>Every other option of the search</summary>")
    page.table(["option", "value", "from"], rest)
    page.parts.append("</details>")
    env = record.get("environment", {})
    page.text(html.escape(", ".join(f"{k} {v}" for k, v in env.items())), "note")


def _architecture(page: Page, run: Path) -> None:
    page.section("Searched architecture")
    summary = _json(run / layout.SUMMARY)
    if summary is None:
        page.lacking("the search", "bash code/main.sh 1")
    else:
        page.text(f"Memory ratio (usage / full) of the decoded architecture {summary['mem_ratio']:.3f}, of the "
                  f"search's distribution {summary['mem_ratio_expected']:.3f}, budget {summary['mem_budget']:g}; "
                  f"{summary['iterations']} iterations ({html.escape(str(summary.get('mode', '')))}).")
        if not page.copy(run / "arch.png", "arch.png", "the searched architecture"):
            page.text("No picture of the architecture (graphviz's <code>dot</code> was missing when the search "
                      "ended); <code>code/visualize.py</code> draws it.", "note")
        _choice(page, run)
    if not page.copy(run / layout.PROGRESS, "search_progress.png", "the search's progress"):
        page.lacking("the search's progress picture", "the search draws it at each validation")


def _choice(page: Page, run: Path) -> None:
    """The choice among seeded searches (``search_choice.json``), where the run made one."""
    choice = _json(run / layout.SEARCH_CHOICE)
    record = _json(run / layout.config_record("search"))
    if choice is None or record is None or not record.get("search_seeds"):
        return
    page.text(f"Chosen among {len(choice['seeds'])} seeded searches (SEARCH_SEEDS; each in "
              f"<code>{layout.SEEDS}/seed&lt;s&gt;/</code>): {html.escape(choice['reason'])}. The rule: "
              f"{html.escape(choice['rule'])}.")
    page.table(["seed", "supernet validation Dice", "memory ratio (decoded)", "arch.json sha256", ""],
               [[c["seed"], c["val_dice"], c["mem_ratio"], c["arch_sha256"][:12],
                 "chosen" if c["seed"] == choice["chosen_seed"] else ""] for c in choice["candidates"]])


def _retraining(page: Page, run: Path, folds: list[int]) -> None:
    page.section("Retraining")
    rows = []
    for k in folds:
        s = _json(layout.retrain_dir(run, k) / layout.SUMMARY)
        rows.append([k, None if s is None else s["best_dice"], None if s is None else s["best_iteration"],
                     "finished" if s else "not finished"])
    page.table(["fold", "best validation Dice", "at iteration", ""], rows)
    for k in folds:
        if not page.copy(layout.retrain_dir(run, k) / layout.PROGRESS, f"fold{k}_progress.png",
                         f"retraining progress of fold {k}"):
            page.lacking(f"fold {k}'s retraining", "bash code/main.sh 2")


def _boxplot(path: Path, values: dict[str, list[float]]) -> None:
    fig, ax = plt.subplots(figsize=(1.8 + 1.4 * len(values), 3.6))
    data = [[v for v in vs if not math.isnan(v)] for vs in values.values()]
    ax.boxplot([d if d else [math.nan] for d in data], tick_labels=list(values), showmeans=True)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice")
    ax.set_title("validation Dice per class (every fold's cases)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def _fold_means(page: Page, run: Path, folds: list[int]) -> None:
    summary = dice_summary(run, folds)
    if summary is None:
        return
    dice, seen = fold_dice(run, folds), search_exposure(run, folds)

    def exposure(k: int) -> str:
        if seen.fold is None or seen.arch is not None:
            return ""
        if k == seen.fold and seen.seeds:
            return f"not trained on by the search (the fold it ran on); ranked its {len(seen.seeds)} seeds"
        if k == seen.fold:
            return "unseen by the search (the fold it ran on)"
        return f"seen by the search (training cases of fold {seen.fold})"

    page.table(["fold", "mean Dice", "these validation cases"], [[k, dice.get(k), exposure(k)] for k in folds])
    page.text(f"<strong>Validation Dice, {html.escape(summary[0])}.</strong>")
    page.text(html.escape(summary[1]), "note")


def _validation(page: Page, run: Path, task: Task, folds: list[int], channel: int) -> list[dict]:
    page.section("Validation")
    _fold_means(page, run, folds)
    names = [task.labels[c] for c in range(1, task.num_classes)]
    cases = []
    for k in folds:
        f = layout.eval_dir(run, "val", k) / layout.METRICS
        if not f.is_file():
            page.lacking(f"fold {k}'s validation", "bash code/main.sh 3")
            continue
        for r in _val_rows(f):
            dice = [_num(r.get(f"dice_{n}")) for n in names]
            cases.append({"fold": k, "case": r["case"], "dice": dice, "hd95": [_num(r.get(f"hd95_{n}")) for n in names],
                          "mean": defined_mean(dice)})
    if not cases:
        return cases
    page.text("Per case and class, on the original label grids: Dice, and the 95% Hausdorff distance in mm (empty "
              "where undefined: a class absent from both, or from one, of reference and prediction).")
    page.table(["fold", "case", *[f"Dice {n}" for n in names], *[f"HD95 {n}" for n in names]],
               [[c["fold"], c["case"], *c["dice"], *c["hd95"]] for c in cases])
    stats = []
    for i, n in enumerate(names):
        d = np.array([c["dice"][i] for c in cases if not math.isnan(c["dice"][i])])
        h = np.array([c["hd95"][i] for c in cases if not math.isnan(c["hd95"][i])])
        stats.append([n, float(d.mean()) if d.size else math.nan, float(d.std()) if d.size else math.nan, int(d.size),
                      float(h.mean()) if h.size else math.nan, float(h.std()) if h.size else math.nan])
    page.table(["class", "Dice mean", "Dice sd", "cases", "HD95 mean (mm)", "HD95 sd (mm)"], stats)
    _boxplot(page.folder / "dice_boxplot.png", {n: [c["dice"][i] for c in cases] for i, n in enumerate(names)})
    page.image("dice_boxplot.png", "validation Dice per class")
    _overlays(page, run, task, folds, cases, channel)
    return cases


def _overlays(page: Page, run: Path, task: Task, folds: list[int], cases: list[dict], channel: int) -> None:
    page.section("Best and worst validation cases")
    page.text("Three orthogonal slices through the reference's largest foreground component, on the original image's "
              f"grid (channel {channel} of a multi-channel image), reference and prediction contours.", "note")
    for k in folds:
        mine = sorted((c for c in cases if c["fold"] == k and not math.isnan(c["mean"])), key=lambda c: c["mean"])
        if not mine:
            continue
        picks = [("worst", mine[0]), ("best", mine[-1])] if len(mine) > 1 else [("only", mine[0])]
        for which, c in picks:
            pred = layout.eval_dir(run, "val", k) / f"{c['case']}.nii.gz"
            if not pred.is_file():
                page.lacking(f"the predicted labels of {c['case']}", f"{pred}; stage 3 writes them")
                continue
            entry = task.case(c["case"])
            name = f"fold{k}_{which}_{c['case']}.png"
            title = f"fold {k}, {which}: {c['case']} (mean Dice {c['mean']:.3f})"
            files = image_files(entry)  # nnU-Net: one file per channel
            image, at = (files[channel], 0) if len(files) > 1 else (files[0], channel)
            save_overlay(overlay(image, entry["label"], pred, at), page.folder / name, title)
            page.image(name, title)


def _final(page: Page, run: Path, task: Task) -> None:
    page.section("Final label maps")
    summary = _json(run / layout.FINAL_SUMMARY)
    if not task.test:
        page.text("dataset.json lists no test images: there is nothing to predict.")
        return
    if summary is None:
        page.lacking("the final label maps", "bash code/main.sh 4 5 6")
        return
    rows = []
    for name in summary["files"]:
        path = Path(summary["folder"]) / name
        if not path.is_file():
            rows.append([name, "missing", "", ""])
            continue
        img = nib.load(str(path))
        rows.append([name, " x ".join(map(str, img.shape)), " x ".join(f"{z:.3g}" for z in img.header.get_zooms()[:3]),
                     "".join(nib.aff2axcodes(img.affine))])
    page.text(f"In <code>{html.escape(summary['folder'])}</code>, on each test image's own grid and header:")
    page.table(["file", "shape", "voxel size (mm)", "orientation"], rows)


def build(run: Path, task: Task, folds: list[int], channel: int = 0) -> Page:
    """Write ``<run>/report/`` (replacing an older one) and return what it holds.

    Args:
        run: the search run folder.
        task: the task (labels, cases, test images).
        folds: the folds to show.
        channel: the channel of a multi-channel image the overlays draw.
    """
    out = run / FOLDER
    tmp = run / f".{FOLDER}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    page = Page(tmp)
    page.parts.append(f"<h1>DiNTS results: {html.escape(task.name)}</h1>")
    page.text(f"Run folder <code>{html.escape(str(run))}</code>; {len(task.training)} training cases, "
              f"{len(task.test)} test images, classes: "
              f"{html.escape(', '.join(f'{k} {v}' for k, v in task.labels.items()))}.")
    _configuration(page, run, folds)
    _architecture(page, run)
    _retraining(page, run, folds)
    _validation(page, run, task, folds, channel)
    _final(page, run, task)
    if page.missing:
        page.parts.insert(2, f'<p class="missing">This run is not finished: {len(page.missing)} part(s) are '
                             "missing and named below.</p>")
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>DiNTS results: {html.escape(task.name)}</title><style>{CSS}</style>"
           f"<script>{CHECK}</script></head><body>\n" + "\n".join(page.parts) + "\n</body></html>\n")
    (tmp / INDEX).write_text(doc)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    page.folder = out
    return page
