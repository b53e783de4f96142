# Config validation, paths and input functions; stage files hold only rules.
import json
import os
import shlex
from pathlib import Path

from snakemake.utils import validate

from ssltrace import config as sslconfig

# Snakemake merges --configfile presets and --config into config.yaml key by key; redo that
# merge as `ssltrace check-config` does, where a mapping naming another optimizer (schedule,
# dataset, ...) replaces the one below it instead of inheriting its keys.
_cli_files = [Path(f) for f in workflow.config_settings.configfiles]
if _cli_files or workflow.config_settings.config:
    _base = [Path(f) for f in workflow.configfiles if Path(f) not in _cli_files]
    _merged = sslconfig.merge_files(_base + _cli_files, workflow.config_settings.config)
    config.clear()
    config.update(_merged)

try:
    # ssltrace's own check first: one message naming the key, before anything is planned.
    # Jobs that Snakemake runs in their own process (SLURM) re-read this file: the main process
    # has already built the networks to check layer names, so they skip that.
    CFG = sslconfig.validate(config, semantic=workflow.is_main_process)
except sslconfig.ConfigError as error:
    raise WorkflowError(f"invalid configuration: {error}") from None
validate(config, schema="../schemas/config.schema.yaml")

R = CFG["results_dir"]
LOGS = f"{R}/logs"
METHODS = CFG["methods"]
SEEDS = CFG["seeds"]
PROBES = ["novel", "human", "rdm", "known", "sample"]
ANALYSES = ["fewshot", "clustering", "human", "trajectory", "geometry"]


wildcard_constraints:
    method="|".join(METHODS),
    seed=r"\d+",
    probe="|".join(PROBES),
    analysis="|".join(ANALYSES),


# Cheap bookkeeping runs where Snakemake runs (downloads need the login node's network).
localrules:
    dataset,
    human_dataset,
    split,
    probe_novel,
    probe_human,
    probe_rdm,
    probe_known,
    collect_table,


def as_json(value):
    """Settings travel to `ssltrace` as one JSON argument; rules quote it with :q."""
    return json.dumps(value, sort_keys=True)


def dataset_file():
    return f"{R}/data/{CFG['dataset']['name']}.npz"


def human_file():
    return f"{R}/data/human_{CFG['human']['name']}.npz"


def run_dir(w):
    return f"{R}/runs/{w.method}/seed{w.seed}"


def run_settings(w):
    return as_json(sslconfig.run_settings(CFG, w.method, int(w.seed)))


def analysed_epochs(w):
    return " ".join(str(e) for e in sslconfig.analysed_epochs(CFG, w.method))


CACHE = f"{R}/cache"


def activations_dir(probe):
    """Activations are temporary unless every epoch is kept (extract.keep)."""
    path = directory(f"{R}/activations/{{method}}/seed{{seed}}/{probe}")
    return path if CFG["extract"]["keep"] == "all" else temp(path)


def extract_settings():
    layers = CFG["extract"]["layers"]
    keys = ("pooling", "batch_size", "device", "dtype", "keep")
    settings = {k: CFG["extract"][k] for k in keys}
    settings["layers"] = None if layers == "all" else layers
    return as_json(settings)


def minutes(base):
    """A runtime resource that grows with each retry (SLURM kills jobs past their limit)."""
    return lambda wildcards, attempt: base * attempt


def pretrain_runtime(w, attempt):
    """Minutes for SLURM: a generous per-epoch guess that grows with each retry."""
    epochs = len(sslconfig.checkpoint_epochs(CFG, w.method))
    return int((30 + 2 * epochs) * attempt)


def per_run(pattern, probe=None):
    """`pattern` expanded over every (method, seed) run of the study."""
    paths = []
    for method in METHODS:
        for seed in SEEDS:
            paths.append(pattern.format(R=R, method=method, seed=seed, probe=probe))
    return paths


def get_final_output():
    # FIGURE_STEMS is filled by the figure rules (rules/figures.smk), one stem per figure.
    figures = [
        f"{R}/figures/{stem}.{fmt}"
        for stem in FIGURE_STEMS
        for fmt in CFG["figures"]["formats"]
    ]
    tables = [f"{R}/tables/{name}.tsv" for name in ANALYSES]
    logs = per_run("{R}/runs/{method}/seed{seed}/train_log.tsv")
    return figures + tables + logs


# Helpers of the figure rules (workflow/rules/figures.smk).
SEED000 = "Seed 000: few-shot structure and human errors"
SEED001 = "Seed 001: representational trajectories"
SEED004 = "Seed 004: clustering geometry"
TRAINING = "Training"

# Stems of every figure rule below, for get_final_output().
FIGURE_STEMS = []


def figure_outputs(stem, caption, category):
    """{fmt: path} for every configured format, the viewable one wrapped in report()."""
    formats = CFG["figures"]["formats"]
    shown = next((f for f in ("png", "svg") if f in formats), formats[0])
    FIGURE_STEMS.append(stem)
    outputs = {}
    for fmt in formats:
        path = f"{R}/figures/{stem}.{fmt}"
        if fmt == shown:
            path = report(path, caption=f"../report/{caption}", category=category)
        outputs[fmt] = path
    return outputs


def figure_runs(role, pattern):
    """Inputs named ROLE:METHOD:SEED, one per run (see ssltrace.figures.readers)."""
    return {
        f"{role}:{method}:{seed}": pattern.format(R=R, method=method, seed=seed)
        for method in METHODS
        for seed in SEEDS
    }


def figure_args(wildcards, input):
    """`--input ROLE=PATH` for every named input of the rule."""
    return " ".join(
        f"--input {shlex.quote(f'{role}={path}')}" for role, path in input.items()
    )


def figure_stem(wildcards, output):
    """Output path without its format extension (every output shares it)."""
    return os.path.splitext(output[0])[0]


# Study tables sort layers alphabetically; figures draw them input -> output.
FIGURE_LAYERS = sslconfig.analysed_layers(CFG)


def figure_settings(**extra):
    """The `figures` config plus the layer order and any analysis setting a figure labels."""
    return as_json({**CFG["figures"], "layer_order": FIGURE_LAYERS, **extra})


FIGURE_SHELL = (
    "ssltrace figure --name {params.name} {params.inputs} --stem {params.stem:q} "
    "--settings {params.settings:q} > {log:q} 2>&1"
)
