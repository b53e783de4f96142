"""The figure table (`figures.yaml` beside this module): one row per figure.

The workflow generates one rule per row (workflow/rules/figures.smk) and the report shows each
row's caption; `ssltrace list` prints the stems. A row names its drawing (a function
registered in `FIGURES`), the paper figure it reproduces, its report category, its inputs and
the config settings it labels. Input specs:

    table ANALYSIS           the study table tables/ANALYSIS.tsv (role as given)
    runs ANALYSIS/ARRAY      that analysis's matrix file of every run (ROLE:METHOD:SEED)
    runs train_log           every run's training log (ROLE:METHOD:SEED)
    study ANALYSIS/ARRAY     the study matrix file tables/ANALYSIS_ARRAY.npz (e.g. the t-tests
                             between methods, ssltrace.analysis.ttests)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

from ssltrace import layout


@dataclass(frozen=True)
class FigureInput:
    per_run: bool
    pattern: str  # relative to results_dir; per-run patterns hold {method} and {seed}
    analysis: str | None  # the analysis whose output it is (None: training logs)


@dataclass(frozen=True)
class FigureRow:
    stem: str
    draw: str
    paper: str
    category: str
    caption: str
    inputs: dict[str, FigureInput]
    settings: dict[str, str] = field(default_factory=dict)  # name -> dotted config key
    mem_mb: int = 2000

    @property
    def rule(self) -> str:
        return f"figure_{self.draw}"

    def config_settings(self, cfg: dict) -> dict[str, Any]:
        """The values of this row's `settings` keys in the (validated) config."""
        out = {}
        for name, key in self.settings.items():
            value = cfg
            for part in key.split("."):
                value = value[part]
            out[name] = value
        return out


def parse_input(spec: str) -> FigureInput:
    kind, _, what = spec.partition(" ")
    if kind == "table" and what:
        return FigureInput(False, layout.fill(layout.STUDY_TABLE, analysis=what), what)
    if kind == "runs" and what == "train_log":
        return FigureInput(True, layout.TRAIN_LOG, None)
    analysis, _, array = what.partition("/")
    if kind == "study" and analysis and array:
        pattern = layout.fill(layout.STUDY_ARRAYS, analysis=analysis, array=array)
        return FigureInput(False, pattern, analysis)
    if kind == "runs" and analysis and array:
        pattern = layout.fill(layout.METRIC_ARRAYS, analysis=analysis, array=array)
        return FigureInput(True, pattern, analysis)
    raise ValueError(
        f"figure input {spec!r}: expected 'table ANALYSIS', 'runs ANALYSIS/ARRAY', "
        "'study ANALYSIS/ARRAY' or 'runs train_log'"
    )


@cache
def _load() -> dict:
    text = (resources.files("ssltrace.figures") / "figures.yaml").read_text()
    return yaml.safe_load(text)


def figure_table() -> list[FigureRow]:
    """Every row of the table, in report order; names and categories are checked."""
    data = _load()
    rows = []
    for raw in data["figures"]:
        row = dict(raw)
        row["category"] = data["categories"][row["category"]]
        row["inputs"] = {role: parse_input(spec) for role, spec in row["inputs"].items()}
        row["caption"] = row["caption"].strip()
        rows.append(FigureRow(**row))
    rules = [r.rule for r in rows]
    duplicated = sorted({r for r in rules if rules.count(r) > 1})
    if duplicated:
        raise ValueError(f"figures.yaml draws {duplicated[0]!r} in two rows")
    return rows
