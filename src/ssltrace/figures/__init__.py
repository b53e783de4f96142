"""Publication figures; each module draws one figure family from metric tables and matrix files.

`FIGURES` maps a figure name to a function `draw(inputs, stem, settings) -> list[Path]`:
`inputs` maps input roles (e.g. "table", "matrices") to file paths, `stem` is the output path
without extension, `settings` the `figures` config (formats, dpi, ...) plus figure options.
A module registers its figures with `@FIGURES.register("name")`; every module of this package
is imported at the first lookup in `FIGURES` (not at import: the Snakefile reads the figure
table, `ssltrace.figures.table`, without drawing), so adding a figure never touches this file
or the CLI.
"""

from __future__ import annotations

from ssltrace.registry import Registry

FIGURES: Registry = Registry("figure", package=__name__)


def draw(name: str, inputs: dict, stem, settings: dict) -> list:
    """Draw figure `name` with the study's statistics (`settings['band']`, default ±1 SD)."""
    from ssltrace.figures import style

    style.use_band(settings.get("band", "sd"))
    try:
        return FIGURES.get(name)(inputs, stem, settings)
    finally:
        style.use_band("sd")
