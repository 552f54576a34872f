"""Loading `get_config()` files and applying `--config.a.b=value` overrides."""
from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import sys

import ml_collections


class ConfigError(ValueError):
    pass


def load_python_file(path: str, prefix: str, import_roots) -> object:
    """Executes a Python file as a module; `import_roots` go on sys.path first, since config and sweep files
    import their bases (`experiments.common`) by package path."""
    for p in import_roots:
        if p not in sys.path:
            sys.path.insert(0, p)
    spec = importlib.util.spec_from_file_location(f"{prefix}_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(path: str, **context) -> ml_collections.ConfigDict:
    """The file's `get_config()`, locked. `context` (e.g. the demo's `step_scale`) goes to the keyword
    arguments of the same names that `get_config` declares, and no further: a config that does not
    depend on it takes none."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    module = load_python_file(path, "_config", (os.path.dirname(root), root, os.getcwd()))
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} has no get_config()")
    accepted = inspect.signature(module.get_config).parameters
    config = module.get_config(**{k: v for k, v in context.items() if k in accepted})
    config.lock()  # unknown keys in overrides are errors, not silently new fields
    return config


def _parse(value: str, current):
    if isinstance(current, str):
        return value
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    if isinstance(current, bool) and isinstance(parsed, str):
        low = parsed.lower()
        if low in ("true", "false"):
            return low == "true"
    if isinstance(current, float) and isinstance(parsed, int) and not isinstance(parsed, bool):
        return float(parsed)
    if isinstance(current, tuple) and isinstance(parsed, list):
        return tuple(parsed)
    if isinstance(current, tuple) and isinstance(parsed, (int, float)):
        return (parsed,)
    return parsed


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> ml_collections.ConfigDict:
    """`["--config.train.steps=40", "--config.mesh.fsdp=4"]` → config with those fields set (type-checked)."""
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise ConfigError(f"override {item!r} must look like --config.section.field=value")
        key, value = item[len("--config."):].split("=", 1)
        parts = key.split(".")
        node = config
        for p in parts[:-1]:
            if p not in node:
                raise ConfigError(f"unknown config section {p!r} in {item!r}")
            node = node[p]
        field = parts[-1]
        if field not in node:
            raise ConfigError(f"unknown config field {key!r}; known in this section: {', '.join(sorted(node.keys()))}")
        current = node[field]
        try:
            node[field] = _parse(value, current)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bad value for {key}: {value!r} ({e})") from e
    return config
