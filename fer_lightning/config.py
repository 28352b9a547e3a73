"""Small helpers shared by the pipeline and the stages: YAML loading, deep merge, imports."""

import importlib
import re
from pathlib import Path

import yaml

from fer_lightning.errors import UserError


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping: PyYAML keeps the last one
    silently, so a stage pasted twice under one name, or a second ``trainer:`` block, would
    quietly replace the first."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<:` merge keys may repeat; a list or mapping as a key is no config key
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' given twice in one mapping (YAML would keep only the last)",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


# PyYAML follows YAML 1.1, where a float needs a dot: `lr: 1e-4` would be the string "1e-4", which
# LightningCLI converts but scikit-learn's estimators (probe classifiers) refuse. As in YAML 1.2
# and jsonargparse, an exponent without a dot is a float.
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                   re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_yaml(text: str, where: str):
    """``text`` parsed by ``StrictLoader``; an error names ``where`` and the line."""
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise UserError(f"{where}: invalid YAML: {at}{e.problem or e.context}")
    except yaml.YAMLError as e:
        raise UserError(f"{where}: invalid YAML: {str(e).splitlines()[0]}")


def load_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    data = parse_yaml(path.read_text(), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    return data


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``. Nested mappings merge, except that a mapping naming a different
    ``class_path`` replaces the old one whole (its ``init_args`` would not fit)."""
    out = dict(base)
    for k, v in over.items():
        b = out.get(k)
        if isinstance(b, dict) and isinstance(v, dict) and b.get("class_path", v.get("class_path")) == \
                v.get("class_path", b.get("class_path")):
            out[k] = deep_merge(b, v)
        else:
            out[k] = v
    return out


def set_dotted(doc: dict, dotted: str, value) -> None:
    """``set_dotted(d, "a.b.c", 1)`` sets ``d["a"]["b"]["c"] = 1``, creating mappings as needed;
    a number indexes a list (``stages.ensemble.inputs.members.1``): an item it has, since a
    ``--set`` edits lists but does not grow them."""
    keys = dotted.split(".")
    for i, k in enumerate(keys):
        if isinstance(doc, list):
            if not (k.isdigit() and int(k) < len(doc)):
                raise UserError(f"--set {dotted}: '{'.'.join(keys[:i])}' is a list of {len(doc)}: "
                                f"'{k}' is no index of it (0 to {len(doc) - 1}); "
                                f"set the whole list to change its length")
            k = int(k)
        elif not isinstance(doc, dict):
            raise UserError(f"--set {dotted}: '{'.'.join(keys[:i])}' is {doc!r}, not a mapping or a list")
        if i == len(keys) - 1:
            doc[k] = value
            return
        nxt = doc[k] if isinstance(doc, list) else doc.get(k)
        if nxt is None:
            nxt = doc[k] = {}
        doc = nxt


def import_object(class_path: str):
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise UserError(f"class_path '{class_path}' cannot be imported")


def instantiate(spec: dict, key: str, *args):
    """Build ``class_path(*args, **init_args)``; ``key`` names the config entry in errors."""
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise UserError(f"{key}: expected a mapping with class_path (and init_args)")
    try:
        cls = import_object(spec["class_path"])
    except UserError as e:
        raise UserError(f"{key}: {e}") from None
    try:
        return cls(*args, **(spec.get("init_args") or {}))
    except (TypeError, ValueError) as e:  # an argument the class does not take, or a value it refuses
        raise UserError(f"{key}: {e}") from None
