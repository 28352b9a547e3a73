"""report: the paper's tables with our measured numbers beside the paper's, as Markdown and JSON,
plus a confusion-matrix PNG for each row of the first table.

Inputs: a mapping ``{source name: <stage>.metrics}``.
Params:
  title: heading of the report.
  splits: the splits to show, e.g. ``[test, private_test]`` (missing ones show as —).
  tables: a list of ``{title, columns: [acc | precision | recall | f1], rows: [{label, source,
          paper: {column: value}}]}``; ``source`` is a path into the metrics, e.g. ``cnn1``,
          ``score_fusion/mean`` or ``probe/cnn1/svm``.
"""

import json
from pathlib import Path

from fer_lightning import CLASS_NAMES
from fer_lightning.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text
from fer_lightning.errors import UserError
from fer_lightning.tracking import log_stage

OUTPUTS = {"report": "report.md", "json": "report.json"}
SPLIT_NAMES = {"test": "test (Public+Private)", "private_test": "PrivateTest",
               "public_test": "PublicTest", "val": "val"}


def _lookup(metrics: dict, source: str, ctx_name: str):
    node = metrics
    for part in source.split("/"):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"stages.{ctx_name}.params: source '{source}' not found in the inputs' metrics")
        node = node[part]
    return node


def _pct(x):
    return "—" if x is None else f"{100 * x:.2f}"


def build_tables(metrics: dict, tables: list, splits: list, ctx_name: str) -> list:
    out = []
    for t in tables:
        rows = []
        for r in t["rows"]:
            per_split = _lookup(metrics, r["source"], ctx_name)
            ours = {s: {c: per_split[s][c] for c in t["columns"]} if s in per_split else None for s in splits}
            rows.append({"label": r["label"], "source": r["source"], "paper": r.get("paper", {}),
                         "ours": ours})
        out.append({"title": t["title"], "columns": t["columns"], "rows": rows})
    return out


def to_markdown(title: str, tables: list, splits: list, notes: str = "") -> str:
    lines = [f"# {title}", ""]
    if notes:
        lines += [notes.strip(), ""]
    for t in tables:
        cols = t["columns"]
        head = ["Method"] + [f"paper {c}" for c in cols]
        for s in splits:
            head += [f"ours {c} [{SPLIT_NAMES.get(s, s)}]" for c in cols]
        lines += [f"## {t['title']}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in t["rows"]:
            cells = [r["label"]] + [f"{r['paper'][c]:.2f}" if c in r["paper"] else "—" for c in cols]
            for s in splits:
                cells += [_pct(r["ours"][s][c]) if r["ours"][s] else "—" for c in cols]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Accuracy is micro-averaged; precision, recall and F1 are macro averages over the "
                 "7 classes, in percent.")
    return "\n".join(lines) + "\n"


def plot_confusion(confusion, title: str, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = np.asarray(confusion, dtype=float)
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ConfusionMatrixDisplay(cm, display_labels=CLASS_NAMES).plot(ax=ax, values_format=".2f",
                                                                 colorbar=False, cmap="Blues")
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def run(ctx):
    if not isinstance(ctx.inputs, dict) or not ctx.inputs:
        raise UserError(f"stages.{ctx.name}.inputs: map source names to '<stage>.metrics'")
    metrics = {name: json.loads(Path(p).read_text()) for name, p in ctx.inputs.items()}
    splits = ctx.config.get("splits", ["test"])
    tables = build_tables(metrics, ctx.config.get("tables", []), splits, ctx.name)
    title = ctx.config.get("title", f"{ctx.pipeline} report")
    md = to_markdown(title, tables, splits, ctx.config.get("notes", ""))
    images = []
    if tables:
        split = splits[0]
        for r in tables[0]["rows"]:
            m = _lookup(metrics, r["source"], ctx.name)
            if split in m and "confusion" in m[split]:
                name = "confusion_" + "".join(ch if ch.isalnum() else "_" for ch in r["label"]).lower() + ".png"
                plot_confusion(m[split]["confusion"], f"{r['label']} — {SPLIT_NAMES.get(split, split)}",
                               ctx.out_dir / name)
                images.append(name)
    if images:
        md += "\n## Confusion matrices (row-normalised)\n\n" + "\n".join(f"![{i}]({i})" for i in images) + "\n"
    atomic_write_json(ctx.output("json"), {"title": title, "splits": splits, "tables": tables})
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
