"""probe: scikit-learn classifiers on saved last-fc features (paper 000, Table 4: SVM and KNN
with k = 5). Features are standardised (fitted on the training split) before each classifier.

Inputs: ``features``: a mapping ``{model name: <stage>.features}``.
Params: ``classifiers``: ``{name: {class_path, init_args}}`` (default: LinearSVC, 5-NN);
``train_split`` (default ``train``); ``eval_splits`` (default: every other split present).
"""

from fer_lightning.artifacts import atomic_write_json, load_npz
from fer_lightning.config import instantiate
from fer_lightning.errors import UserError
from fer_lightning.tracking import log_stage

OUTPUTS = {"metrics": "metrics.json"}
DEFAULT_CLASSIFIERS = {
    "svm": {"class_path": "sklearn.svm.LinearSVC", "init_args": {"C": 0.1}},
    "knn": {"class_path": "sklearn.neighbors.KNeighborsClassifier", "init_args": {"n_neighbors": 5}},
}


def run(ctx):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fer_lightning.metrics import score  # imports torch: only when the stage runs

    features = ctx.inputs.get("features") if isinstance(ctx.inputs, dict) else None
    if not isinstance(features, dict) or not features:
        raise UserError(f"stages.{ctx.name}.inputs.features: map model names to '<stage>.features'")
    classifiers = ctx.config.get("classifiers", DEFAULT_CLASSIFIERS)
    train_split = ctx.config.get("train_split", "train")
    metrics = {}
    for model_name, path in features.items():
        z = load_npz(path)
        if f"{train_split}_features" not in z:
            raise UserError(f"{path}: no '{train_split}' split to fit the probes on")
        x_train, y_train = z[f"{train_split}_features"], z[f"{train_split}_labels"]
        present = [k[: -len("_features")] for k in z if k.endswith("_features")]
        splits = ctx.config.get("eval_splits") or [s for s in present if s != train_split]
        metrics[model_name] = {}
        for clf_name, spec in classifiers.items():
            clf = make_pipeline(StandardScaler(), instantiate(spec, f"stages.{ctx.name}.params.classifiers.{clf_name}"))
            clf.fit(x_train, y_train)
            metrics[model_name][clf_name] = {
                s: score(clf.predict(z[f"{s}_features"]), z[f"{s}_labels"]) for s in splits if f"{s}_features" in z
            }
    atomic_write_json(ctx.output("metrics"), metrics)
    summary = {f"{m}/{c}/{s}/acc": v["acc"] for m, cs in metrics.items() for c, ss in cs.items()
               for s, v in ss.items()}
    log_stage(ctx, summary, {n: ctx.output(n) for n in OUTPUTS})
    return summary
