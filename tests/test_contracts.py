"""The architecture's contracts (docs/ARCHITECTURE.md): one source of config truth, analyses
and figures as declared plug-ins, one layout module, and imports that only go downwards."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from ssltrace import config, layout
from ssltrace.analysis import registered
from ssltrace.analysis.base import (
    Activations,
    Analysis,
    Artifact,
    Checkpoints,
    ProbeFile,
    TargetLabels,
)
from ssltrace.figures import FIGURES
from ssltrace.figures.table import figure_table, parse_input

PACKAGE = Path(config.__file__).parent

# Import layers, lowest first (docs/ARCHITECTURE.md): a module may import from its own layer
# and the layers below, never above. Keys are top-level module or package names.
LAYERS = [
    {"__init__", "registry", "io", "layout", "store", "tables", "device", "distributed"},
    {"config"},
    {"data", "models", "losses", "augment", "analysis", "kmeans", "projection", "reduction"},
    {"methods", "splits", "probesets"},
    {"network"},
    {"training", "extract", "targets"},
    {"figures"},
    {"study", "checks", "plan"},
    {"cli"},
]


def _layer(name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def _imports(path: Path) -> set[str]:
    """Top-level ssltrace modules imported anywhere in a file (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "ssltrace":
                names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
                found.update(names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "ssltrace" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_every_module_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()}
    names = {n for n in names if not n.startswith(("_", ".")) or n == "__init__"}
    names -= {"schemas", "py"}
    assert names <= set().union(*LAYERS), sorted(names - set().union(*LAYERS))


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_imports_only_go_downwards(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    above = {name for name in _imports(path) if _layer(name) > _layer(own)}
    assert not above, f"{path.relative_to(PACKAGE)} imports {sorted(above)} from a higher layer"


def test_config_loads_no_training_analysis_or_torch():
    code = (
        "import sys, ssltrace.config\n"
        "print(sorted(m for m in sys.modules if m.startswith(('ssltrace.', 'torch'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['ssltrace.config']"


# ---- one source of config truth -------------------------------------------------------------


def _properties(schema: dict, root: dict, prefix: str = ""):
    """(dotted key, property schema) of every named property below `schema`."""
    while "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    for key, sub in schema.get("properties", {}).items():
        yield f"{prefix}{key}", sub
        yield from _properties(sub, root, f"{prefix}{key}.")


def test_every_config_key_is_documented_or_has_a_default():
    schema = config.load_schema()
    bare = [
        key
        for key, sub in _properties(schema, schema)
        if not ({"description", "default"} & set(sub))
        and "$ref" not in sub  # a reference is documented where it points
    ]
    # Self-explanatory leaves inside documented mappings.
    allowed = {"dataset.name", "human.name", "probes.rdm.seed"}
    assert set(bare) <= allowed, bare


def test_defaults_are_valid_values_of_their_own_keys():
    schema = config.load_schema()
    properties = dict(_properties(schema, schema))
    defaults = config.defaults()

    def walk(value, prefix=""):
        for key, item in value.items():
            dotted = f"{prefix}{key}"
            if isinstance(item, dict) and "properties" in properties[dotted]:
                walk(item, f"{dotted}.")  # a mapping: its keys one by one (no `required`)
            else:
                jsonschema.validate(
                    item, {"definitions": schema["definitions"], **properties[dotted]}
                )

    walk(defaults)
    assert defaults["train"]["batch_size"] == 512 and defaults["fewshot"]["shots"] == 5


def test_the_engine_has_no_defaults_of_its_own():
    from ssltrace.training import engine

    assert not [name for name in dir(engine) if name.endswith("_DEFAULTS")]
    assert set(config.defaults()["train"]) == set(
        engine.check_complete.__globals__["defaults"]()["train"]
    )


# ---- analyses and figures as declared plug-ins ----------------------------------------------


@pytest.mark.parametrize("name", registered().names())
def test_analysis_declarations_are_complete_and_consistent(name):
    cls = registered().get(name)
    assert issubclass(cls, Analysis) and cls.name == name and cls.summary
    schema = config.load_schema()["properties"]
    assert cls.sections and all(section in schema for section in cls.sections)
    assert {"mem_mb", "runtime"} <= set(cls.resources)
    for role, spec in cls.inputs.items():
        assert isinstance(spec, Activations | ProbeFile | Artifact | TargetLabels | Checkpoints), (
            role
        )
        if isinstance(spec, Activations):
            assert spec.probe in layout.PROBES
        elif isinstance(spec, ProbeFile):
            assert spec.kind in layout.PROBES
        elif isinstance(spec, TargetLabels):
            assert spec.pattern() == layout.TARGET_LABELS
        elif isinstance(spec, Checkpoints):
            assert spec.pattern() == layout.CHECKPOINTS
        else:
            assert spec.array in registered().get(spec.analysis).arrays


def test_figure_table_rows_name_registered_drawings_and_analyses():
    rows = figure_table()
    analyses = registered()
    assert len({row.stem for row in rows}) == len(rows)
    for row in rows:
        assert row.draw in FIGURES and row.caption and row.paper and row.category
        for role, spec in row.inputs.items():
            if spec.analysis is not None:
                assert spec.analysis in analyses, (row.stem, role)
            if "{array}" not in spec.pattern and spec.per_run and spec.analysis:
                array = spec.pattern.rsplit("_", 1)[1].removesuffix(".npz")
                assert array in analyses.get(spec.analysis).arrays, (row.stem, role)
        for key in row.settings.values():
            node = config.defaults()
            for part in key.split("."):
                node = node[part]  # a KeyError names a setting the config does not have


def test_figure_inputs_parse_and_bad_specs_are_named():
    assert parse_input("table fewshot").pattern == "tables/fewshot.tsv"
    assert parse_input("runs train_log").pattern == layout.TRAIN_LOG
    per_run = parse_input("runs human/confusion")
    assert per_run.per_run and per_run.pattern == "metrics/human/{method}/seed{seed}_confusion.npz"
    with pytest.raises(ValueError, match="'runs fewshot'"):
        parse_input("runs fewshot")


# ---- names and paths --------------------------------------------------------------------------


def test_layout_fills_given_fields_and_keeps_wildcards():
    assert layout.fill(layout.ACTIVATIONS, probe="rdm") == "activations/{method}/seed{seed}/rdm"
    assert layout.path("res", layout.CHECKPOINTS, method="simclr", seed=3) == (
        "res/runs/simclr/seed3/checkpoints"
    )
    assert layout.epoch_file(7, ".pt") == "epoch_007.pt"
    assert [p.name for p in layout.epoch_files("x", [0, 12])] == ["epoch_000.npz", "epoch_012.npz"]
