"""report: the paper's tables with our measured numbers beside the paper's, as Markdown and JSON,
plus a confusion-matrix PNG for each row of the first table.

Inputs: a mapping ``{source name: <stage>.metrics}``. A source that is a list (the copies of a
``foreach`` stage, e.g. cross-validation folds) is shown as mean ± standard deviation over the
copies; its confusion matrix is their sum.
Params:
  title: heading of the report.
  splits: the splits to show, e.g. ``[test, private_test]`` (missing ones show as —).
  split_labels: how to name splits in the tables, e.g. ``{test: "test (Public+Private)"}``; they
          describe the pipeline file's dataset, so ``--data`` with another kind drops them.
  tables: a list of ``{title, columns: [acc | precision | recall | f1], rows: [{label, source,
          paper: {column: value}}]}``; ``source`` is a path into the metrics, e.g. ``cnn1``,
          ``score_fusion/mean`` or ``probe/cnn1/svm``.
  per_class: optional ``{title, rows: [{label, source, paper: [7 values in CLASS_NAMES order]}]}``:
          per-class accuracy (recall, from the confusion matrix) on the first split.
  spread_over: a foreach dimension, e.g. ``seed``: a row's ± is then the standard deviation over
          that dimension of each value's mean over the other copies (over a seeds × folds grid:
          each seed's fold mean, then their spread over seeds, not the subjects' spread over all
          copies); a row whose copies do not loop over it shows its mean without a ±.
"""

from fer_lightning import CLASS_NAMES
from fer_lightning.artifacts import atomic_write_json, atomic_write_text, load_json_object
from fer_lightning.errors import UserError
from fer_lightning.plots import plot_confusion
from fer_lightning.tracking import log_stage

OUTPUTS = {"report": "report.md", "json": "report.json"}
PARAMS = ("title", "notes", "splits", "split_labels", "tables", "per_class", "spread_over")  # what params may hold
DATASET_PARAMS = ("split_labels",)  # dropped when --data swaps in another kind of dataset
SPLIT_NAMES = {"private_test": "PrivateTest", "public_test": "PublicTest"}  # params.split_labels adds more


def _lookup(metrics: dict, source: str, ctx_name: str):
    node = metrics
    for part in source.split("/"):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"stages.{ctx_name}.params: source '{source}' not found in the inputs' metrics")
        node = node[part]
    return node


def _pct(x):
    return "—" if x is None else f"{100 * x:.2f}"


def aggregate(runs: list):
    """Metrics of several runs → the same structure with means, ``<metric>_std`` (sample standard
    deviation, when there are two runs or more) and ``copies``; confusion matrices and counts are
    summed."""
    import numpy as np

    if not all(isinstance(r, dict) for r in runs):
        return None
    out = {"copies": sum(r.get("copies", 1) for r in runs)}
    for k in runs[0]:
        vals = [r.get(k) for r in runs]
        if k == "copies" or any(v is None for v in vals):
            continue
        if k == "confusion":
            out[k] = np.sum(vals, axis=0).tolist()
        elif k == "n":
            out[k] = int(sum(vals))
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[k] = float(np.mean(vals))
            if len(vals) > 1:  # one copy has no spread: no "± 0.00"
                out[f"{k}_std"] = float(np.std(vals, ddof=1))
        elif all(isinstance(v, dict) for v in vals):
            out[k] = aggregate(vals)
    return out


def _without_std(metrics: dict) -> dict:
    return {k: _without_std(v) if isinstance(v, dict) else v for k, v in metrics.items() if not k.endswith("_std")}


def aggregate_copies(runs: list, loops: list, spread_over: str | None = None):
    """``aggregate`` of a stage's foreach copies (``loops``: each copy's ``{dimension: value}``);
    with ``spread_over``, the copies of each value of that dimension are averaged first, and the
    ``_std`` is the spread of those means (copies that do not loop over it: no ``_std``)."""
    if spread_over is None:
        return aggregate(runs)
    if any(spread_over not in at for at in loops):
        return _without_std(aggregate(runs))
    groups = {}
    for r, at in zip(runs, loops):
        groups.setdefault(repr(at[spread_over]), []).append(r)
    return aggregate([_without_std(aggregate(g)) for g in groups.values()])


def _cell(values: dict, column: str) -> str:
    if f"{column}_std" in values:
        return f"{_pct(values[column])} ± {_pct(values[column + '_std'])}"
    return _pct(values[column])


def build_tables(metrics: dict, tables: list, splits: list, ctx_name: str) -> list:
    out = []
    for t in tables:
        rows = []
        for r in t["rows"]:
            per_split = _lookup(metrics, r["source"], ctx_name)
            ours = {s: {k: v for k, v in per_split[s].items() if k.removesuffix("_std") in t["columns"]}
                    if s in per_split else None for s in splits}
            rows.append({"label": r["label"], "source": r["source"], "paper": r.get("paper", {}),
                         "ours": ours})
        out.append({"title": t["title"], "columns": t["columns"], "rows": rows})
    return out


def to_markdown(title: str, tables: list, splits: list, notes: str = "", labels=SPLIT_NAMES,
                spread_over: str | None = None) -> str:
    lines = [f"# {title}", ""]
    if notes:
        lines += [notes.strip(), ""]
    for t in tables:
        cols = t["columns"]
        paper_cols = [c for c in cols if any(c in r["paper"] for r in t["rows"])]  # none: no paper columns
        head = ["Method"] + [f"paper {c}" for c in paper_cols]
        for s in splits:
            head += [f"ours {c} [{labels.get(s, s)}]" for c in cols]
        lines += [f"## {t['title']}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in t["rows"]:
            cells = [r["label"]] + [f"{r['paper'][c]:.2f}" if c in r["paper"] else "—" for c in paper_cols]
            for s in splits:
                cells += [_cell(r["ours"][s], c) if r["ours"][s] else "—" for c in cols]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Accuracy is micro-averaged; precision, recall and F1 are macro averages over the "
                 "classes that occur among a split's labels or predictions (all 7 on FER2013), in percent; "
                 + ("a ± is the standard deviation over a stage's foreach copies." if spread_over is None else
                    f"a ± is the standard deviation over {spread_over} of each {spread_over}'s mean over a stage's "
                    f"other foreach copies; a row without a ± does not loop over {spread_over}."))
    return "\n".join(lines) + "\n"


def per_class_table(metrics: dict, spec: dict, split: str, ctx_name: str) -> dict:
    """Per-class accuracy (recall) of each row, from its (possibly summed) confusion matrix."""
    rows = []
    for r in spec.get("rows", []):
        m = _lookup(metrics, r["source"], ctx_name).get(split)
        ours = None
        if m and "confusion" in m:
            ours = [row[i] / max(sum(row), 1) for i, row in enumerate(m["confusion"])]
        rows.append({"label": r["label"], "source": r["source"], "paper": r.get("paper"), "ours": ours})
    return {"title": spec.get("title", "Per-class accuracy [%]"), "split": split, "rows": rows}


def per_class_markdown(t: dict, labels=SPLIT_NAMES) -> str:
    head = ["Method", ""] + list(CLASS_NAMES) + ["mean"]
    lines = [f"## {t['title']} [{labels.get(t['split'], t['split'])}]", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in t["rows"]:
        for who, fmt in (("paper", "{:.2f}".format), ("ours", _pct)):  # paper: percent; ours: fractions
            v = r[who]
            cells = [fmt(x) for x in v] + [fmt(sum(v) / len(v))] if v else ["—"] * (len(CLASS_NAMES) + 1)
            lines.append("| " + " | ".join([r["label"] if who == "paper" else "", who] + cells) + " |")
    return "\n".join(lines) + "\n"


COLUMNS = ("acc", "precision", "recall", "f1")


def check(name: str, config: dict, inputs) -> None:
    """The tables' shape, columns and sources (by input name), checked before the pipeline's
    first stage runs: a typo here would otherwise surface after everything upstream trained."""
    if not isinstance(inputs, dict) or not inputs:
        raise UserError(f"stages.{name}.inputs: map source names to '<stage>.metrics'")
    where = f"stages.{name}.params"
    if not isinstance(config.get("spread_over", ""), str):
        raise UserError(f"{where}.spread_over: expected the name of a foreach dimension, e.g. seed")
    if not isinstance(config.get("splits", ["test"]), list):
        raise UserError(f"{where}.splits: expected a list of split names, e.g. [test]")
    tables = config.get("tables", [])
    per_class = config.get("per_class")
    if not isinstance(tables, list) or (per_class is not None and not isinstance(per_class, dict)):
        raise UserError(f"{where}: 'tables' must be a list and 'per_class' a mapping (see stages/report.py)")
    for i, t in enumerate(tables + ([per_class] if per_class else [])):
        at = f"{where}.tables[{i}]" if i < len(tables) else f"{where}.per_class"
        if not isinstance(t, dict) or not isinstance(t.get("rows"), list):
            raise UserError(f"{at}: expected a mapping with a list of rows")
        bad = [c for c in t.get("columns", []) if c not in COLUMNS] if i < len(tables) else []
        if i < len(tables) and (bad or not t.get("columns") or "title" not in t):
            raise UserError(f"{at}: needs a title and columns from {', '.join(COLUMNS)}"
                            + (f" (unknown: {', '.join(map(str, bad))})" if bad else ""))
        if set(t) - {"title", "columns", "rows"}:
            raise UserError(f"{at}: unknown key(s) {', '.join(sorted(set(t) - {'title', 'columns', 'rows'}))} "
                            f"(a table has title, columns, rows)")
        for r in t["rows"]:
            if not isinstance(r, dict) or "label" not in r or not isinstance(r.get("source"), str) \
                    or set(r) - {"label", "source", "paper"}:
                raise UserError(f"{at}.rows: each row has a label, a source and optionally paper numbers, "
                                f"got {r!r}")
            if r["source"].split("/")[0] not in inputs:
                raise UserError(f"{at}: row '{r['label']}': source '{r['source']}' names no input "
                                f"(inputs: {', '.join(inputs)})")


def run(ctx):
    check(ctx.name, ctx.config, ctx.inputs)
    spread_over = ctx.config.get("spread_over")
    if spread_over and not any(spread_over in ctx.input_loops.get(q, {}) for p in ctx.inputs.values()
                               if isinstance(p, list) for q in p):
        dims = sorted({d for at in ctx.input_loops.values() for d in at})
        raise UserError(f"stages.{ctx.name}.params.spread_over: no input loops over '{spread_over}' "
                        f"(they loop over: {', '.join(dims) or 'nothing'})")
    metrics = {name: aggregate_copies([load_json_object(q) for q in p], [ctx.input_loops.get(q, {}) for q in p],
                                      spread_over) if isinstance(p, list)
               else load_json_object(p) for name, p in ctx.inputs.items()}
    splits = ctx.config.get("splits", ["test"])
    tables = build_tables(metrics, ctx.config.get("tables", []), splits, ctx.name)
    title = ctx.config.get("title", f"{ctx.pipeline} report")
    labels = {**SPLIT_NAMES, **(ctx.config.get("split_labels") or {})}
    md = to_markdown(title, tables, splits, ctx.config.get("notes", ""), labels, spread_over)
    per_class = None
    if ctx.config.get("per_class"):
        per_class = per_class_table(metrics, ctx.config["per_class"], splits[0], ctx.name)
        md += "\n" + per_class_markdown(per_class, labels)
    images = []
    if tables:
        split = splits[0]
        for r in tables[0]["rows"]:
            m = _lookup(metrics, r["source"], ctx.name)
            if split in m and "confusion" in m[split]:
                name = "confusion_" + "".join(ch if ch.isalnum() else "_" for ch in r["label"]).lower() + ".png"
                plot_confusion(m[split]["confusion"], f"{r['label']} — {labels.get(split, split)}",
                               ctx.out_dir / name)
                images.append(name)
    if images:
        md += "\n## Confusion matrices (row-normalised)\n\n" + "\n".join(f"![{i}]({i})" for i in images) + "\n"
    atomic_write_json(ctx.output("json"), {"title": title, "splits": splits, "tables": tables,
                                           "per_class": per_class})
    atomic_write_text(ctx.output("report"), md)
    print(md)
    def tables_and_images(run):
        import wandb

        for t in tables:
            cols = ["method"] + [f"{c}/{s}" for s in splits for c in t["columns"]]
            data = [[r["label"]] + [r["ours"][s][c] if r["ours"][s] else None for s in splits
                                    for c in t["columns"]] for r in t["rows"]]
            run.log({t["title"]: wandb.Table(columns=cols, data=data)})
        run.log({f"confusion/{i}": wandb.Image(str(ctx.out_dir / i)) for i in images})

    log_stage(ctx, {}, {n: ctx.output(n) for n in OUTPUTS}, extra=tables_and_images)
    return {"tables": len(tables)}
