"""Load YAML configuration and validate it against the JSON schemas in ``schemas/``.

The same schema files serve the Snakefile (``snakemake.utils.validate``, through the
``workflow/schemas`` links) and Python (:func:`load_dataset_config`). Validation fills in
schema defaults and turns the first error into a message that names the file, the key
path (``data.captions.test[0].sep``) and what was expected.
"""
from __future__ import annotations

import copy
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml
from jsonschema import Draft202012Validator, validators

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """A configuration that does not match its schema, or names a path that does not exist."""


def schema_path(name: str) -> Path:
    """Path of a packaged schema, e.g. ``schema_path("dataset")``."""
    return Path(str(resources.files("facenet_evc") / "schemas" / f"{name}.schema.yaml"))


def load_schema(name: str) -> dict:
    with open(schema_path(name), encoding="utf-8") as f:
        return yaml.safe_load(f)


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _with_defaults(Draft202012Validator)


def key_path(parts) -> str:
    """``['data', 'captions', 'test', 0, 'sep']`` → ``data.captions.test[0].sep``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def validate(instance: dict, schema: dict | str, source: str = "config") -> dict:
    """Validate ``instance`` in place (filling defaults); raise :class:`ConfigError` on error."""
    if isinstance(schema, str):
        schema = load_schema(schema)
    errors = sorted(_DefaultingValidator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        if e.validator == "additionalProperties":
            extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
            allowed = ", ".join(sorted(e.schema.get("properties", {})))
            where = key_path(list(e.absolute_path) + [extra[0]]) if extra else key_path(e.absolute_path)
            raise ConfigError(f"{source}: {where}: unknown key (allowed here: {allowed})")
        expected = e.schema.get("description") or ""
        raise ConfigError(f"{source}: {key_path(e.absolute_path)}: {e.message}" + (f" ({expected})" if expected else ""))
    return instance


def substitute(obj: Any, variables: Mapping[str, Any], where: list | None = None, source: str = "config") -> Any:
    """Replace ``{name}`` in every string of ``obj`` with ``variables[name]``."""
    where = where or []
    if isinstance(obj, str):
        def repl(m: re.Match) -> str:
            if m.group(1) not in variables:
                raise ConfigError(f"{source}: {key_path(where)}: unknown placeholder {{{m.group(1)}}} "
                                  f"(known: {', '.join(sorted(variables)) or 'none'})")
            return str(variables[m.group(1)])
        return _PLACEHOLDER.sub(repl, obj)
    if isinstance(obj, dict):
        return {k: substitute(v, variables, where + [k], source) for k, v in obj.items()}
    if isinstance(obj, list):
        return [substitute(v, variables, where + [i], source) for i, v in enumerate(obj)]
    return obj


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


# Replaced whole rather than merged: another decoder kind accepts other settings keys, so
# an LSTM's hidden/attention sizes must not leak into a Transformer variant.
REPLACED_KEYS = {"decoder_settings"}


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay`` merged in: mappings merge key by key (except
    :data:`REPLACED_KEYS`), anything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if key not in REPLACED_KEYS and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_dataset_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """A dataset config's YAML with ``extends: other.yaml`` (relative to this file) resolved.

    The file's own keys are deep-merged over those of the file it extends (see :func:`deep_merge`),
    so ``config/demo_clip_seed1.yaml`` can be ``extends: demo.yaml`` plus the keys it changes.
    """
    path = Path(path)
    raw = read_yaml(path)
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: extends: expected the path of another dataset config, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in _chain or base_path == path.resolve():
        raise ConfigError(f"{path}: extends: {base} makes a cycle ({' -> '.join(str(p) for p in _chain + (base_path,))})")
    if not base_path.is_file():
        raise ConfigError(f"{path}: extends: {base_path} does not exist")
    return deep_merge(read_dataset_yaml(base_path, _chain + (path.resolve(),)), raw)


def load_dataset_config(path: str | Path, variables: Mapping[str, Any] | None = None) -> dict:
    """Read (resolving ``extends:``), substitute ``{..._root}`` placeholders in, and validate a dataset config."""
    raw = read_dataset_yaml(path)
    cfg = substitute(raw, {k: v for k, v in (variables or {}).items() if k.endswith("_root")}, source=str(path))
    cfg = validate(cfg, "dataset", source=str(path))
    cfg["_source"] = str(path)
    return cfg


def load_workflow_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict:
    cfg = read_yaml(path)
    cfg.update(overrides or {})
    return validate(cfg, "workflow", source=str(path))


def require_paths(cfg: dict, keys: list[str]) -> None:
    """Raise :class:`ConfigError` naming the key of the first listed path that does not exist.

    ``keys`` are dotted key paths; a path that is a list of caption-file records is checked
    record by record (``data.captions.test[1].path``).
    """
    for key in keys:
        value: Any = cfg
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        for where, p in _paths_under(value, key):
            if not Path(p).exists():
                raise ConfigError(f"{cfg.get('_source', 'config')}: {where}: path {p!r} does not exist")


def _paths_under(value: Any, key: str):
    if value is None:
        return
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths_under(v, f"{key}[{i}]")
    elif isinstance(value, dict):
        if "path" in value:
            yield f"{key}.path", value["path"]
        else:
            for k, v in value.items():
                yield from _paths_under(v, f"{key}.{k}")


def load_mapping(value: str | None, what: str) -> dict[str, Any]:
    """A config given as a JSON/YAML file path or as inline JSON/YAML text (``{"d": 300}``)."""
    if not value:
        return {}
    inline = value.lstrip().startswith("{")
    if not inline and Path(value).is_file():
        return read_yaml(value)
    if value.strip().endswith((".json", ".yaml", ".yml")) and "{" not in value:
        raise FileNotFoundError(f"{what}: file {value} not found")
    try:
        # JSON first: YAML 1.1 reads JSON's "1e-06" as a string
        data = json.loads(value)
    except json.JSONDecodeError:
        data = None
    try:
        data = yaml.safe_load(value) if data is None else data
    except yaml.YAMLError as e:
        raise ValueError(f"{what}: neither an existing file nor valid inline JSON/YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what}: expected a mapping (file or inline JSON/YAML), got {value!r}")
    return data


def settings_summary(cfg: Mapping[str, Any]) -> str:
    """The settings a reader compares with the paper's Sec. 4.1, one line each (``validate-config``)."""
    model, train = cfg.get("model", {}), cfg.get("train", {})
    dec = model.get("decoder", "lstm")
    ds = model.get("decoder_settings") or {}
    if dec in ("t5", "opt"):
        targets = ds.get("lora_target_modules", "all-linear")
        decoder = (f"{dec} {ds.get('pretrained', '?')} + LoRA r {ds.get('lora_r', 16)}, alpha {ds.get('lora_alpha', 32)}, "
                   f"dropout {ds.get('lora_dropout', 0.05)}, targets {targets}; weights {ds.get('dtype') or 'as saved'}"
                   f", bf16 autocast on CUDA")
    else:
        decoder = f"{dec} {json.dumps(ds, sort_keys=True)}"
    lines = [
        f"{cfg.get('name', '?')}: decoder {decoder}",
        f"  d {model.get('d')}, queries {model.get('n_queries')}, K {cfg.get('retrieval', {}).get('k')}, "
        f"delta {model.get('delta')}, lambda_e {model.get('lambda_e')}, lambda_cls {model.get('lambda_cls')}",
        f"  GloVe {cfg.get('emotion', {}).get('glove')}; CLIP {cfg.get('clip', {}).get('model')}",
        f"  Adam lr {train.get('lr')}, batch {train.get('batch_size')}, {train.get('lr_schedule')} schedule, "
        f"{train.get('max_steps')} steps, validation on {train.get('val_fraction')} of the training videos every "
        f"{train.get('val_every')} steps{', then refit on all of them' if train.get('refit') else ''}",
        f"  captions {train.get('max_len')} words, beam {train.get('num_beams')}, device {train.get('device')}",
    ]
    return "\n".join(lines)
