"""What the Snakefile's parse imports: it runs at every dry run and in every cluster job, so
the registries it reads (analyses, figures, methods) must not pull in the analyses' and
figures' heavy dependencies; those are imported where they are used."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ["scipy.stats", "scipy.spatial", "scipy.optimize", "sklearn", "matplotlib", "umap"]

# What common.smk does at parse in a cluster job (deep=False: no network built).
PARSE = f"""
import json, sys
from ssltrace import study
from ssltrace.analysis import registered
cfg = study.load({str(ROOT / "config.yaml")!r}, {str(ROOT / "presets/ci.yaml")!r})
cfg = study.checked(cfg, deep=False)
registered()
study.active_analyses(cfg), study.active_figures(cfg)
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def test_the_snakefile_parse_imports_no_analysis_or_figure_dependency():
    out = subprocess.run(
        [sys.executable, "-c", PARSE], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert json.loads(out.stdout.splitlines()[-1]) == []
