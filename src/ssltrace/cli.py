"""`ssltrace` command line: one subcommand per stage, called by the workflow's rules.

Each subcommand is a thin wrapper: it parses file paths and one JSON `--settings` mapping
(the rule's params, so a changed setting reruns the rule) and calls one library function.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _settings(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"ssltrace: --settings is not JSON ({exc}): {text[:200]!r}") from None
    if not isinstance(value, dict):
        raise SystemExit("ssltrace: --settings must be a JSON object")
    return value


def cmd_list(args) -> None:
    from ssltrace.analysis import registered
    from ssltrace.data import describe as describe_data
    from ssltrace.methods import describe as describe_methods
    from ssltrace.models import describe as describe_models

    print("Datasets:")
    for name, text in describe_data().items():
        print(f"  {name:16s} {text}")
    print("Methods:")
    for line in describe_methods().splitlines():
        print(f"  {line}")
    print("Architectures (layers extracted; every network adds head_fc1):")
    for name, info in describe_models().items():
        print(f"  {name:14s} {info['description']}")
        print(f"  {'':14s} layers: {', '.join(info['layers'])}")
    print("Analyses:")
    analyses = registered()
    for name in analyses:
        print(f"  {name:22s} {analyses.get(name)}")


def cmd_check_config(args) -> None:
    from ssltrace import config

    cfg = config.load(args.config, *args.presets)
    runs = sum(len(cfg["seeds"]) for _ in cfg["methods"])
    print(f"config OK: {len(cfg['methods'])} methods x {len(cfg['seeds'])} seeds = {runs} runs")


def cmd_plan(args) -> None:
    from ssltrace import config
    from ssltrace.plan import summary

    cfg = config.load(args.config, *args.presets)
    print(summary(cfg, images_per_s=args.images_per_s))


def cmd_data(args) -> None:
    from ssltrace.data import prepare_dataset, prepare_human

    prepare = prepare_human if args.human else prepare_dataset
    prepare(args.name, Path(args.data_dir), Path(args.out), **_settings(args.settings))
    _log(f"wrote {args.out}")


def cmd_split(args) -> None:
    from ssltrace.splits import write_split

    s = _settings(args.settings)
    split = write_split(Path(args.dataset), Path(args.out), s["n_known"], s["n_novel"], s["seed"])
    _log(f"known coarse: {split['known_coarse_names']}")
    _log(f"novel coarse: {split['novel_coarse_names']}")


def cmd_probe(args) -> None:
    from ssltrace.splits import write_probe

    split = Path(args.split) if args.split else None
    write_probe(args.kind, Path(args.dataset), split, Path(args.out), **_settings(args.settings))
    _log(f"wrote {args.out}")


def _threads(args) -> None:
    """Use exactly the threads Snakemake granted: oversubscribed torch/BLAS threads on a busy
    machine were measured 5-20x slower than one thread each. Set in the environment, which
    torch and the BLAS libraries read when they load, so that a stage without torch (the
    clustering) does not import it (~3 s per job) just to set its threads."""
    threads = getattr(args, "threads", None)
    if not threads:
        return
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)  # libraries loaded already (main() called in-process)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def cmd_pretrain(args) -> None:
    from ssltrace.training import train_run

    train_run(
        _settings(args.settings), Path(args.dataset), Path(args.split), Path(args.out_dir), log=_log
    )


def cmd_extract(args) -> None:
    from ssltrace.extract import extract_many

    s = _settings(args.settings)
    probes = _named_paths(args.probe, "extract: --probe", "NAME=FILE")
    outputs = {name: _epoch_files(Path(args.out_dir) / name, args.epochs) for name in probes}
    extract_many(
        _epoch_files(args.checkpoints_dir, args.epochs, ".pt"),
        probes,
        outputs,
        layers=s.get("layers"),
        pooling=s.get("pooling", "mean"),
        batch_size=s.get("batch_size", 1000),
        dtype=s.get("dtype", "float32"),
        device=s.get("device", "auto"),
        cache_dir=_cache(args),
        keep_epochs=s.get("keep", "all"),
        log=_log,
    )


def _run_options(args) -> dict:
    """The keyword arguments a per-run driver of `ssltrace.metrics` takes from the options the
    analysis subcommands share; --probe and --cache-dir only where the subcommand has them,
    as only those drivers accept them."""
    options = dict(method=args.method, seed=args.seed, settings=_settings(args.settings), log=_log)
    if "probe" in vars(args):
        options["probe"] = args.probe
    if "cache_dir" in vars(args):
        options["cache_dir"] = _cache(args)
    return options


def cmd_fewshot(args) -> None:
    from ssltrace.metrics import fewshot_run

    activations = _epoch_files(args.activations_dir, args.epochs)
    fewshot_run(activations, Path(args.table), Path(args.matrices), **_run_options(args))


def cmd_human(args) -> None:
    from ssltrace.metrics import human_run

    activations = _epoch_files(args.activations_dir, args.epochs)
    outputs = Path(args.table), Path(args.matrices)
    human_run(activations, Path(args.probe_file), *outputs, **_run_options(args))


def cmd_cluster(args) -> None:
    from ssltrace.metrics import clustering_run

    paths = Path(args.matrices), Path(args.table), Path(args.clusters)
    clustering_run(*paths, **_run_options(args))


def cmd_trajectory(args) -> None:
    from ssltrace.metrics import trajectory_run

    activations = _epoch_files(args.activations_dir, args.epochs)
    trajectory_run(activations, Path(args.table), Path(args.rdms), **_run_options(args))


def cmd_geometry(args) -> None:
    from ssltrace.metrics import geometry_run

    known = _epoch_files(args.known_dir, args.epochs)
    sample = _epoch_files(args.sample_dir, args.epochs)
    geometry_run(known, sample, Path(args.table), **_run_options(args))


def cmd_collect(args) -> None:
    from ssltrace.tables import concat

    table = concat([Path(p) for p in args.tables], Path(args.out))
    _log(f"{len(table)} rows -> {args.out}")


def cmd_figure(args) -> None:
    from ssltrace.figures import FIGURES

    inputs = _named_paths(args.input, "figure: --input", "ROLE=PATH")
    written = FIGURES.get(args.name)(inputs, Path(args.stem), _settings(args.settings))
    _log("wrote " + ", ".join(map(str, written)))


def _named_paths(items: list[str], option: str, form: str) -> dict[str, Path]:
    """NAME=PATH items of a repeatable option, by name (a repeated name: the last wins)."""
    found = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"ssltrace {option} takes {form}, got {item!r}")
        found[name] = Path(path)
    return found


def epoch_file(epoch: int, suffix: str) -> str:
    return f"epoch_{epoch:03d}{suffix}"


def _epoch_files(folder: str | Path, epochs: list[int], suffix: str = ".npz") -> list[Path]:
    return [Path(folder) / epoch_file(e, suffix) for e in epochs]


def _cache(args) -> Path | None:
    return Path(args.cache_dir) if getattr(args, "cache_dir", None) else None


def _add(sub, name: str, func, help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=func)
    return parser


# Option helpers: an option several subcommands share is declared once. Each subcommand calls
# them in its own order, which is the order of its --help.


def _required(parser, *flags: str) -> None:
    """Options without help text that every rule passes (mostly input and output paths)."""
    for flag in flags:
        parser.add_argument(flag, required=True)


def _config_args(parser) -> None:
    parser.add_argument("config")
    parser.add_argument("presets", nargs="*", help="preset files merged on top, in order")


def _epochs_option(parser) -> None:
    parser.add_argument("--epochs", nargs="+", type=int, required=True)


def _run_args(parser, probe: bool = True, described: bool = True) -> None:
    """--method and --seed (and --probe): the run (and probe set) a table's rows belong to.

    `described=False` leaves out the help texts, as the human, trajectory and geometry
    subcommands always have."""
    helps = {
        "method": "method name of the run",
        "seed": "seed of the run",
        "probe": "probe-set name (novel, human, ...)",
    }
    helps = helps if described else {}
    parser.add_argument("--method", required=True, help=helps.get("method"))
    parser.add_argument("--seed", required=True, type=int, help=helps.get("seed"))
    if probe:
        parser.add_argument("--probe", required=True, help=helps.get("probe"))


def _threads_option(parser, blas: bool = True) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch and BLAS" if blas else "CPU threads for torch",
    )


def _settings_option(parser, help_text: str, required: bool = True) -> None:
    """--settings: the rule's params as JSON; optional ones default to no settings."""
    parser.add_argument(
        "--settings", required=required, default=None if required else "{}", help=help_text
    )


def _cache_option(parser) -> None:
    parser.add_argument("--cache-dir", help="per-epoch result cache (omit: no cache)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssltrace",
        description="Trace how self-supervised representations form. Each subcommand is one "
        "stage of the Snakemake workflow (data -> split -> pretrain -> extract -> metrics -> "
        "figures); run `snakemake --cores all` to run a whole study.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add(
        sub,
        "list",
        cmd_list,
        "print registered datasets, methods, architectures (with layer names) and analyses",
    )

    p = _add(sub, "check-config", cmd_check_config, "validate a config (+ presets) and exit")
    _config_args(p)

    p = _add(
        sub, "plan", cmd_plan, "summarise a study before it starts: jobs per rule, GPU-hours, disk"
    )
    _config_args(p)
    p.add_argument(
        "--images-per-s",
        type=float,
        help="measured training throughput (default: the study's own train logs)",
    )

    p = _add(sub, "data", cmd_data, "download/verify or generate a dataset and write its .npz")
    p.add_argument("--name", required=True, help="dataset name (see `ssltrace list`)")
    p.add_argument("--human", action="store_true", help="the human-comparison set")
    p.add_argument("--data-dir", default="resources", help="where archives are downloaded")
    _required(p, "--out")
    _settings_option(p, "JSON dataset options", required=False)
    _threads_option(p)

    p = _add(sub, "split", cmd_split, "seeded split of coarse classes into known and novel")
    _required(p, "--dataset", "--out")
    _settings_option(p, 'JSON {"n_known","n_novel","seed"}')
    _threads_option(p)

    p = _add(sub, "probe", cmd_probe, "select the images of a probe set")
    p.add_argument("--kind", required=True, choices=["novel", "human", "rdm", "known", "sample"])
    _required(p, "--dataset")
    p.add_argument("--split")
    _required(p, "--out")
    _settings_option(p, "JSON probe options")
    _threads_option(p)

    p = _add(
        sub,
        "pretrain",
        cmd_pretrain,
        "train one run (method x seed), a checkpoint per "
        "epoch; resumes from the last finished epoch",
    )
    _required(p, "--dataset", "--split", "--out-dir")
    _threads_option(p, blas=False)
    _settings_option(p, "JSON run settings")

    p = _add(sub, "extract", cmd_extract, "activations of every layer for each checkpoint")
    p.add_argument(
        "--probe", action="append", required=True, help="NAME=FILE of a probe set, repeatable"
    )
    _required(p, "--checkpoints-dir")
    _epochs_option(p)
    p.add_argument("--out-dir", required=True, help="writes OUT_DIR/NAME/epoch_EEE.npz")
    _threads_option(p, blas=False)
    _settings_option(p, "JSON {layers, pooling, batch_size, device}", required=False)
    _cache_option(p)

    p = _add(
        sub,
        "fewshot",
        cmd_fewshot,
        "pairwise m-shot prototype error matrices per epoch and layer (seed 000 §2.4)",
    )
    _required(p, "--activations-dir")
    _epochs_option(p)
    _threads_option(p, blas=False)
    _required(p, "--table", "--matrices")
    _run_args(p)
    _settings_option(p, "JSON {shots, trials, distance, seed}")
    _cache_option(p)

    p = _add(
        sub,
        "human",
        cmd_human,
        "multi-class few-shot confusion vs CIFAR-10H human confusion, Spearman per layer "
        "(seed 000 §2.5)",
    )
    _required(p, "--activations-dir")
    _epochs_option(p)
    p.add_argument("--probe-file", required=True, help="the human probe set (.npz)")
    _required(p, "--table", "--matrices")
    _run_args(p, probe=False, described=False)
    _threads_option(p, blas=False)
    _settings_option(p, "JSON {shots, trials, distance, seed, permutations}")
    _cache_option(p)

    p = _add(
        sub,
        "cluster",
        cmd_cluster,
        "hierarchical clustering of error matrices vs "
        "coarse classes, mutual information (seed 000 §2.6)",
    )
    _required(p, "--matrices", "--table", "--clusters")
    _run_args(p)
    _settings_option(p, "JSON {linkage, permutations, seed}")
    _threads_option(p)

    p = _add(
        sub,
        "trajectory",
        cmd_trajectory,
        "RDMs along training: epoch-to-epoch stability, within/between-group dissimilarity "
        "(seed 001)",
    )
    p.add_argument("--activations-dir", required=True, help="activations of the rdm probe")
    _epochs_option(p)
    _required(p, "--table", "--rdms")
    _run_args(p, probe=False, described=False)
    _settings_option(p, "JSON {rdm_metric, compare}")
    _threads_option(p)
    _cache_option(p)

    p = _add(
        sub,
        "geometry",
        cmd_geometry,
        "NCC / linear-probe accuracy, CDNV and class spread per layer, epoch and label level "
        "(seed 004)",
    )
    p.add_argument("--known-dir", required=True, help="activations of the known probe")
    p.add_argument("--sample-dir", required=True, help="activations of the sample probe")
    _epochs_option(p)
    _required(p, "--table")
    _run_args(p, probe=False, described=False)
    _threads_option(p, blas=False)
    _settings_option(p, "JSON {levels, probes}")
    _cache_option(p)

    p = _add(sub, "collect", cmd_collect, "stack per-run tidy tables into one study table")
    _required(p, "--out")
    p.add_argument("tables", nargs="*")

    p = _add(sub, "figure", cmd_figure, "draw one registered figure from tables/matrices")
    p.add_argument("--name", required=True, help="figure name (registered in ssltrace.figures)")
    p.add_argument("--input", action="append", default=[], help="ROLE=PATH, repeatable")
    p.add_argument("--stem", required=True, help="output path without extension")
    _settings_option(p, "JSON {formats, dpi, ...}")
    _threads_option(p)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe a mistake in input or environment: shown as one message."""
    from ssltrace.config import ConfigError
    from ssltrace.data import DataFormatError, DataUnavailableError
    from ssltrace.io import ArtifactReadError, ArtifactWriteError

    return (
        ConfigError,
        DataFormatError,
        DataUnavailableError,
        ArtifactReadError,
        ArtifactWriteError,
    )


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while waiting collapse when jobs share cores (measured: SimCLR
    # on 2 threads beside other jobs, 17 images/s spinning vs 145 passive). Set before torch
    # loads; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    _threads(args)  # here, so that no stage with --threads can forget it
    try:
        args.func(args)
    except _user_errors() as error:
        print(f"ssltrace {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
