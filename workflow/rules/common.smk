# Config validation, paths and input functions; stage files hold only rules. Paths come from
# ssltrace.layout, what each run and stage needs from ssltrace.study, the analyses and figures
# from their registries: this file knows no analysis or figure by name.
import json
import shlex
from pathlib import Path

from ssltrace import config as sslconfig
from ssltrace import layout, study
from ssltrace.analysis import registered
from ssltrace.analysis.base import Activations, Artifact, ProbeFile
from ssltrace.checks import check_granted_gpus
from snakemake.logging import logger
from ssltrace.splits import FROM_SPLIT

try:
    # Snakemake merges --configfile presets and --config into config.yaml key by key; redo
    # that merge as `ssltrace check-config` does, where a mapping naming another optimizer
    # (schedule, dataset, ...) replaces the one below it instead of inheriting its keys, and
    # a key given twice in one file is an error instead of silently the last.
    _cli_files = [Path(f) for f in workflow.config_settings.configfiles]
    _base = [Path(f) for f in workflow.configfiles if Path(f) not in _cli_files]
    _merged = sslconfig.merge_files(
        [*_base, *_cli_files], workflow.config_settings.config
    )
    config.clear()
    config.update(_merged)
    # Validated against the package's schema (src/ssltrace/schemas, also workflow/schemas)
    # and checked against the registries: one message naming the key, before anything is
    # planned. Jobs that Snakemake runs in their own process (SLURM) re-read this file: the
    # main process has already built the networks to check layer names, so they skip that.
    CFG = study.checked(config, deep=workflow.is_main_process)
    # The main process's limit (a cluster job's own process sees that job's resources).
    _gpus = workflow.global_resources.get("gpu")
    if workflow.is_main_process and _gpus is not None:
        check_granted_gpus(CFG, _gpus.value)
except sslconfig.ConfigError as error:
    raise WorkflowError(f"invalid configuration: {error}") from None

R = CFG["results_dir"]
LOGS = f"{R}/{layout.LOGS}"
CACHE = f"{R}/{layout.CACHE}"
METHODS = CFG["methods"]
SEEDS = CFG["seeds"]
ANALYSES = registered()
# Random-target networks (seed 004 §5) are runs of the pretrain rule, not studied runs.
TARGET_RUNS = study.target_runs(CFG)
# The study's probe sets, analyses and figures: all of them, except those of novel classes
# in all-classes mode (split.mode: all, seed 004), which are skipped and said so here.
PROBES = study.probe_kinds(CFG)
ANALYSIS_NAMES = study.active_analyses(CFG)
FIGURES = study.active_figures(CFG)
for _name, _why in study.skipped_analyses(CFG).items():
    logger.info(f"skipping analysis {_name} (and its figures): {_why}")


wildcard_constraints:
    method="|".join([*METHODS, *TARGET_RUNS]),
    seed=r"\d+",
    probe="|".join(PROBES),
    analysis="|".join(ANALYSIS_NAMES),
    neural="|".join(study.simulated_neural(CFG)) or "^$",


def path(pattern, **fields):
    """`pattern` of ssltrace.layout under results_dir; unnamed fields stay wildcards."""
    return layout.path(R, pattern, **fields)


def as_json(value):
    """Settings travel to `ssltrace` as one JSON argument; rules quote it with :q."""
    return json.dumps(value, sort_keys=True)


def dataset_file():
    return path(layout.DATASET, dataset=CFG["dataset"]["name"])


def human_file():
    return path(layout.HUMAN, human=CFG["human"]["name"])


def probe_input(kind):
    """A probe set is drawn from the human set or the dataset, and maybe the split."""
    source = human_file() if kind == "human" else dataset_file()
    split = {"split": path(layout.SPLIT)} if kind in FROM_SPLIT else {}
    return {"dataset": source, **split}


def neural_sets():
    """(option, name, file) of every neural and behaviour dataset of the neural probe set."""
    files = [("neural", n, p) for n, p in study.neural_files(CFG).items()]
    return files + [("behaviour", n, p) for n, p in study.behaviour_files(CFG).items()]


def neural_inputs(wildcards):
    return {f"{kind}{i}": p for i, (kind, _, p) in enumerate(neural_sets())}


def neural_args(wildcards):
    return " ".join(f"--{k} {shlex.quote(f'{n}={p}')}" for k, n, p in neural_sets())


def probe_args(wildcards, input):
    return f"--split {shlex.quote(input.split)}" if "split" in input.keys() else ""


def run_settings(w):
    """What the run trains (a param of the rule, so a change retrains); see run_runtime."""
    run = study.run_settings(CFG, w.method, int(w.seed))
    run["train"] = study.split_runtime(run["train"], "train")[0]
    return as_json(run)


def run_runtime(w):
    """Where and how fast it trains: a resource, so a change reruns nothing."""
    train = study.method_train(CFG, w.method)
    return as_json(study.split_runtime(train, "train")[1])


def analysed_epochs(w):
    return " ".join(str(e) for e in study.analysed_epochs(CFG, w.method))


def activations_dir(probe):
    """Activations are temporary unless every epoch is kept (extract.keep)."""
    folder = directory(path(layout.ACTIVATIONS, probe=probe))
    return folder if CFG["extract"]["keep"] == "all" else temp(folder)


def minutes(base):
    """A runtime resource that grows with each retry (SLURM kills jobs past their limit)."""
    return lambda wildcards, attempt: base * attempt


def pretrain_runtime(w, attempt):
    """Minutes for SLURM: a generous per-epoch guess that grows with each retry."""
    epochs = len(study.checkpoint_epochs(CFG, w.method))
    return int((30 + 2 * epochs) * attempt)


def per_run(pattern):
    """`pattern` (with {method} and {seed}) filled for every (method, seed) run."""
    return [path(pattern, method=m, seed=s) for m in METHODS for s in SEEDS]


def run_named_args(wildcards, input):
    """`--input METHOD:SEED=PATH` of each run's file, `input` being `per_run` of a pattern."""
    names = [f"{m}:{s}" for m in METHODS for s in SEEDS]
    return named_args("input", zip(names, input, strict=True))


def get_final_output():
    figures = [
        path(layout.FIGURE, stem=row.stem, fmt=fmt)
        for row in FIGURES
        for fmt in CFG["figures"]["formats"]
    ]
    tables = [path(layout.STUDY_TABLE, analysis=name) for name in ANALYSIS_NAMES]
    tables += [
        path(layout.STUDY_ARRAYS, analysis=name, array="ttests")
        for name in ("predictivity", "behaviour")
        if name in ANALYSIS_NAMES
    ]
    return figures + tables + per_run(layout.TRAIN_LOG)


# Helpers of the analysis rules (workflow/rules/metrics.smk).


def analysis_inputs(cls):
    """{role: path pattern} of an analysis's declared inputs (ssltrace.analysis.base)."""
    return {role: path(spec.pattern()) for role, spec in cls.inputs.items()}


def analysis_outputs(cls):
    table = path(layout.METRIC_TABLE, analysis=cls.name)
    arrays = {
        a: path(layout.METRIC_ARRAYS, analysis=cls.name, array=a) for a in cls.arrays
    }
    return {"table": table, **arrays}


def job_resources(resources):
    """A declared {mem_mb, runtime[, gpu]}, the runtime growing with each retry."""
    return {**resources, "runtime": minutes(resources["runtime"])}


def named_args(option, items):
    """`--option NAME=PATH` for each item, quoted for the shell."""
    return " ".join(f"--{option} {shlex.quote(f'{name}={p}')}" for name, p in items)


def analysis_args(cls):
    """The --input and --array options of `ssltrace analyse` for one job."""

    def args(wildcards, input, output):
        arrays = [(name, output[name]) for name in cls.arrays]
        return f"{named_args('input', input.items())} {named_args('array', arrays)}"

    return args


# Helpers of the figure rules (workflow/rules/figures.smk).


def figure_inputs(row):
    """Study tables by role; per-run files as ROLE:METHOD:SEED (ssltrace.figures.readers)."""
    inputs = {}
    for role, spec in row.inputs.items():
        if not spec.per_run:
            inputs[role] = path(spec.pattern)
            continue
        for method in METHODS:
            for seed in SEEDS:
                inputs[f"{role}:{method}:{seed}"] = path(
                    spec.pattern, method=method, seed=seed
                )
    return inputs


def figure_outputs(row):
    """{fmt: path} for every configured format, the viewable one wrapped in report()."""
    formats = CFG["figures"]["formats"]
    shown = next((f for f in ("png", "svg") if f in formats), formats[0])
    outputs = {}
    for fmt in formats:
        out = path(layout.FIGURE, stem=row.stem, fmt=fmt)
        if fmt == shown:
            out = report(out, caption="../report/figure.rst", category=row.category)
        outputs[fmt] = out
    return outputs


def figure_log(row):
    return f"{LOGS}/figures/{row.rule}.log"


def figure_args(wildcards, input):
    return named_args("input", input.items())


def figure_stem(wildcards, output):
    """Output path without its format extension (every output shares it)."""
    return str(Path(output[0]).with_suffix(""))


def figure_settings(row):
    """The `figures` config, the layer order (study tables sort layers alphabetically;
    figures draw them input -> output) and the config values the row labels."""
    settings = {**CFG["figures"], "layer_order": study.analysed_layers(CFG)}
    return as_json({**settings, **row.config_settings(CFG)})


# Helpers of the random-target rule (workflow/rules/targets.smk).


def target_checkpoints():
    """{network: checkpoints folder} of every target run (seed `random_targets.seed`)."""
    seed = CFG["random_targets"]["seed"]
    return {
        net: path(layout.CHECKPOINTS, method=run, seed=seed)
        for run, net in TARGET_RUNS.items()
    }


def target_labels_settings():
    """(what the labels depend on, where they are computed) of `ssltrace target-labels`."""
    section = CFG["random_targets"]
    what = {
        "epochs": {n: study.target_epochs(CFG, r) for r, n in TARGET_RUNS.items()},
        "last_epochs": {
            n: study.checkpoint_epochs(CFG, r)[-1] for r, n in TARGET_RUNS.items()
        },
        "batch_size": section["batch_size"],
    }
    return what, {"device": section["device"]}


def figure_caption(row):
    """The row's caption for this study (study.figure_caption): the RDM stimuli (the CIFAR
    stand-in, named as such, or the user's folder), the band drawn and the seed count.
    """
    return study.figure_caption(row, CFG)


# Helpers of the pretrain rule: several processes per run (train.processes, training/ddp.py).


def run_processes(w):
    """The run's processes = the GPUs its job asks for (resources: gpu)."""
    return study.method_train(CFG, w.method)["processes"]


def run_launcher(w):
    """`ssltrace`, or torchrun starting train.processes copies of it on this node.

    torchrun replaces the job's shell (`exec`): the job's process is then torchrun, whose
    ranks die with it (their parent-death signal, ssltrace.cli.die_with_parent). Behind a
    shell, a killed shell left torchrun and its ranks training on as orphans, rewriting the
    outputs Snakemake had just removed (torchrun has no parent-death signal of its own).
    """
    n = run_processes(w)
    if n == 1:
        return "ssltrace"
    return f"exec torchrun --standalone --nproc-per-node {n} -m ssltrace.cli"
