"""`ssltrace` command line: one subcommand per stage, called by the workflow's rules.

Each subcommand is a thin wrapper: it parses file paths and one JSON `--settings` mapping
(the rule's params, so a changed setting reruns the rule) and calls one library function.
Every pipeline analysis runs through `ssltrace analyse NAME` (`ssltrace.analysis.base`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ssltrace import layout


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


def _named_paths(items: list[str], option: str) -> dict[str, Path]:
    """NAME=PATH items of a repeatable option, by name (a repeated name: the last wins)."""
    found = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"ssltrace {option} takes NAME=PATH, got {item!r}")
        found[name] = Path(path)
    return found


def cmd_list(args) -> None:
    from ssltrace.analysis import registered
    from ssltrace.data import describe as describe_data
    from ssltrace.figures.table import figure_table
    from ssltrace.methods import describe as describe_methods
    from ssltrace.models import describe as describe_models

    print("Datasets:")
    for name, text in describe_data().items():
        print(f"  {name:16s} {text}")
    print("Methods:")
    for line in describe_methods().splitlines():
        print(f"  {line}")
    print("Architectures (layers extracted; every network adds its head's layers):")
    for name, info in describe_models().items():
        print(f"  {name:14s} {info['description']}")
        print(f"  {'':14s} layers: {', '.join(info['layers'])}")
    print("Analyses:")
    analyses = registered()
    for name in analyses:
        print(f"  {name:12s} {analyses.get(name).summary}")
    print("Figures:")
    for row in figure_table():
        print(f"  {row.stem:44s} {row.paper}")


def cmd_check_config(args) -> None:
    from ssltrace import study

    cfg = study.load(args.config, *args.presets)
    runs = len(cfg["methods"]) * len(cfg["seeds"])
    print(f"config OK: {len(cfg['methods'])} methods x {len(cfg['seeds'])} seeds = {runs} runs")


def cmd_plan(args) -> None:
    from ssltrace import study
    from ssltrace.plan import summary

    # An estimate is wanted before the data is placed: the archives need not be there yet.
    cfg = study.load(args.config, *args.presets, need_data=False)
    print(summary(cfg, images_per_s=args.images_per_s))


def cmd_data(args) -> None:
    from ssltrace.data import prepare_dataset, prepare_human

    prepare = prepare_human if args.human else prepare_dataset
    prepare(args.name, Path(args.data_dir), Path(args.out), **_settings(args.settings))
    _log(f"wrote {args.out}")


def cmd_split(args) -> None:
    from ssltrace.splits import write_split

    s = _settings(args.settings)
    split = write_split(
        Path(args.dataset),
        Path(args.out),
        s["n_known"],
        s["n_novel"],
        s["seed"],
        s.get("mode", "held_out"),
    )
    _log(f"known coarse: {split['known_coarse_names']}")
    _log(f"novel coarse: {split['novel_coarse_names']}")


def cmd_probe(args) -> None:
    from ssltrace.splits import write_probe

    split = Path(args.split) if args.split else None
    write_probe(args.kind, Path(args.dataset), split, Path(args.out), **_settings(args.settings))
    _log(f"wrote {args.out}")


def cmd_simulate_neural(args) -> None:
    from ssltrace.data.neural import simulate_neural, write_neural

    s = _settings(args.settings)
    s["reliability"] = tuple(s.get("reliability", (0.5, 0.9)))
    data = simulate_neural(**s)
    write_neural(args.out, data)
    _log(f"wrote {args.out}: SIMULATED, {data.responses.shape} (repetition, image, neuroid)")


def cmd_neural_probe(args) -> None:
    from ssltrace import io
    from ssltrace.data.neural import neural_probe

    s = _settings(args.settings)
    probe = neural_probe(
        _named_paths(args.neural, "neural-probe --neural"),
        _named_paths(args.behaviour, "neural-probe --behaviour"),
        image_size=s.get("image_size", 32),
        require_ceiling=s.get("require_ceiling", False),
    )
    io.save_npz(args.out, probe)
    _log(f"wrote {args.out}: {len(probe['labels'])} images of {list(probe['class_names'])}")


def cmd_import_neural(args) -> None:
    from ssltrace.data.neural import import_brainio

    data = import_brainio(
        args.assembly,
        args.stimuli,
        args.images,
        out=args.out,
        time_bins=None if args.all_time_bins else tuple(args.time_bins),
        split_column=args.split_column,
        report_values=args.report_values,
        image_size=args.image_size,
        region=args.region,
    )
    regions = {r: int((data.region == r).sum()) for r in data.regions}
    _log(
        f"wrote {args.out}: {data.responses.shape[1]} presentations x {data.n_repetitions} "
        f"repetitions, neuroids per region {regions}"
    )


def cmd_pretrain(args) -> None:
    from ssltrace.training import train_run

    run = _settings(args.settings)
    run["train"] = {**run.get("train", {}), **_settings(args.runtime)}
    train_run(run, Path(args.dataset), Path(args.split), Path(args.out_dir), log=_log)


def cmd_extract(args) -> None:
    from ssltrace.extract import extract_many

    s = {**_settings(args.settings), **_settings(args.runtime)}
    probes = _named_paths(args.probe, "extract --probe")
    out_dir = Path(args.out_dir)
    extract_many(
        layout.epoch_files(args.checkpoints_dir, args.epochs, ".pt"),
        probes,
        {name: layout.epoch_files(out_dir / name, args.epochs) for name in probes},
        layers=s.get("layers"),
        pooling=s.get("pooling", "mean"),
        batch_size=s.get("batch_size", 1000),
        dtype=s.get("dtype", "float32"),
        device=s.get("device", "auto"),
        cache_dir=_optional_path(args.cache_dir),
        keep_epochs=s.get("keep", "all"),
        log=_log,
        projection_dim=s.get("projection_dim"),
        projection_seed=s.get("projection_seed", 0),
        unprojected=s.get("unprojected", ()),
        reduction_kind=s.get("reduction", "projection"),
        reduction_fit_epoch=s.get("reduction_fit_epoch", "last"),
        distortion=s.get("distortion", False),
    )


def cmd_target_labels(args) -> None:
    from ssltrace.targets import write_target_labels

    s = {**_settings(args.settings), **_settings(args.runtime)}
    dirs = _named_paths(args.target, "target-labels --target")
    epochs, last = s.get("epochs", {}), s.get("last_epochs", {})
    lacking = sorted((set(dirs) - set(epochs)) | (set(dirs) - set(last)))
    if lacking:
        raise SystemExit(
            f"ssltrace target-labels: --settings lacks epochs or last_epochs of {lacking[0]!r}"
        )
    write_target_labels(
        {name: layout.epoch_files(folder, epochs[name], ".pt") for name, folder in dirs.items()},
        {name: int(last[name]) for name in dirs},
        Path(args.probe),
        Path(args.out),
        batch_size=s.get("batch_size", 1000),
        device=s.get("device", "auto"),
        cache_dir=_optional_path(args.cache_dir),
        log=_log,
    )


def cmd_analyse(args) -> None:
    from ssltrace.analysis import analysis
    from ssltrace.analysis.base import Job, run_job

    cls = analysis(args.name)
    job = Job(
        method=args.method,
        seed=args.seed,
        epochs=args.epochs,
        inputs=_named_paths(args.input, "analyse --input"),
        cache_dir=_optional_path(args.cache_dir),
        log=_log,
    )
    arrays = _named_paths(args.array, "analyse --array")
    run_job(cls(_settings(args.settings)), job, Path(args.table), arrays)


def cmd_collect(args) -> None:
    from ssltrace.tables import concat

    table = concat([Path(p) for p in args.tables], Path(args.out))
    _log(f"{len(table)} rows -> {args.out}")


def cmd_ttests(args) -> None:
    from ssltrace import io, tables
    from ssltrace.analysis import ttests

    if args.kind == "neural":
        runs = {}
        for name, path in _named_paths(args.input, "ttests --input").items():
            method, _, seed = name.rpartition(":")
            if not method or not seed.isdigit():
                raise ValueError(f"ttests --input {name!r}: expected METHOD:SEED=PATH")
            runs[(method, int(seed))] = path
        arrays = ttests.neural_ttests(runs)
    else:
        if len(args.input) != 1 or "=" in args.input[0]:
            raise ValueError("ttests behaviour takes one --input: the behaviour study table")
        arrays = ttests.behaviour_ttests(tables.read(Path(args.input[0])))
    io.save_npz(Path(args.out), arrays)
    _log(f"{args.kind} t-tests between {len(arrays['methods'])} methods -> {args.out}")


def cmd_figure(args) -> None:
    from ssltrace.figures import draw

    inputs = _named_paths(args.input, "figure --input")
    written = draw(args.name, inputs, Path(args.stem), _settings(args.settings))
    _log("wrote " + ", ".join(map(str, written)))


def _optional_path(value: str | None) -> Path | None:
    return Path(value) if value else None


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


def _stage(sub, name: str, func, help_text: str, settings: str | None = None):
    """A stage subcommand: --threads for all, --settings JSON where the stage takes settings."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=func)
    parser.add_argument("--threads", type=int, help="CPU threads for torch and BLAS")
    if settings is not None:
        parser.add_argument("--settings", default="{}", help=f"JSON {settings}")
    return parser


def _runtime_option(parser) -> None:
    """--runtime: settings that say where and how fast, not what (config x-runtime-only)."""
    parser.add_argument("--runtime", default="{}", help="JSON {device, ...}, merged on top")


def _paths(parser, *flags: str) -> None:
    for flag in flags:
        parser.add_argument(flag, required=True, metavar="PATH")


def _config_args(parser) -> None:
    parser.add_argument("config")
    parser.add_argument("presets", nargs="*", help="preset files merged on top, in order")


def _add_study_commands(sub) -> None:
    p = sub.add_parser("list", help="print datasets, methods, architectures, analyses, figures")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("check-config", help="validate a config (+ presets) and exit")
    p.set_defaults(func=cmd_check_config)
    _config_args(p)
    p = sub.add_parser("plan", help="summarise a study before it starts: jobs, GPU-hours, disk")
    p.set_defaults(func=cmd_plan)
    _config_args(p)
    p.add_argument(
        "--images-per-s", type=float, help="measured training images/s (default: the logs)"
    )


def _add_data_commands(sub) -> None:
    p = _stage(
        sub, "data", cmd_data, "write a dataset's .npz (download/verify or generate)", "options"
    )
    p.add_argument("--name", required=True, help="dataset name (see `ssltrace list`)")
    p.add_argument("--human", action="store_true", help="the human-comparison set")
    p.add_argument("--data-dir", default="resources", help="where archives are downloaded")
    _paths(p, "--out")
    p = _stage(sub, "split", cmd_split, "seeded known/novel split", "{n_known, n_novel, seed}")
    _paths(p, "--dataset", "--out")
    p = _stage(sub, "probe", cmd_probe, "select the images of a probe set", "probe options")
    p.add_argument("--kind", required=True, choices=[k for k in layout.PROBES if k != "neural"])
    _paths(p, "--dataset", "--out")
    p.add_argument("--split", metavar="PATH", help="the split (probe kinds of the dataset)")


def _add_neural_commands(sub) -> None:
    p = _stage(
        sub, "simulate-neural", cmd_simulate_neural, "write the simulated neural set", "options"
    )
    _paths(p, "--out")
    p = _stage(
        sub,
        "neural-probe",
        cmd_neural_probe,
        "the neural probe set: images of the neural and behaviour datasets",
        "{image_size, require_ceiling}",
    )
    p.add_argument("--neural", action="append", default=[], help="NAME=FILE, repeatable")
    p.add_argument("--behaviour", action="append", default=[], help="NAME=FILE, repeatable")
    _paths(p, "--out")
    p = sub.add_parser(
        "import-neural",
        help="convert a Brain-Score/brainio assembly into a neural-data file",
        description="Convert a Brain-Score/brainio assembly (NetCDF, presentation x neuroid "
        "[x time_bin], with repetitions), its stimulus-set CSV and image zip into the "
        "neural-data file that `neural.datasets` names (README, 'Neural data').",
    )
    p.set_defaults(func=cmd_import_neural)
    _paths(p, "--assembly", "--stimuli", "--images", "--out")
    p.add_argument(
        "--time-bins",
        nargs=2,
        type=float,
        default=[70.0, 170.0],
        metavar=("START", "END"),
        help="average the time bins inside START-END ms (default 70 170, as MajajHong2015)",
    )
    p.add_argument("--all-time-bins", action="store_true", help="average every time bin")
    p.add_argument("--split-column", help="stimulus column choosing the fit/report split")
    p.add_argument(
        "--report-values", nargs="+", default=[], help="values of --split-column reported"
    )
    p.add_argument("--image-size", type=int, help="resize images to this square size")
    p.add_argument("--region", help="region of every neuroid if the assembly has none")


def _add_run_commands(sub) -> None:
    p = _stage(sub, "pretrain", cmd_pretrain, "train one run; resumes from its last epoch", "run")
    _paths(p, "--dataset", "--split", "--out-dir")
    _runtime_option(p)
    p = _stage(sub, "extract", cmd_extract, "activations of every layer per checkpoint", "extract")
    p.add_argument("--probe", action="append", required=True, help="NAME=FILE, repeatable")
    _paths(p, "--checkpoints-dir", "--out-dir")
    p.add_argument("--epochs", nargs="+", type=int, required=True)
    p.add_argument("--cache-dir", help="per-epoch cache (omit: none)")
    _runtime_option(p)
    p = _stage(
        sub,
        "target-labels",
        cmd_target_labels,
        "class predictions of random-target networks at each epoch (seed 004 §5)",
        "{epochs: {NAME: [E...]}, last_epochs: {NAME: T}, batch_size}",
    )
    p.add_argument("--target", action="append", required=True, help="NAME=CHECKPOINTS_DIR")
    _paths(p, "--probe", "--out")
    p.add_argument("--cache-dir", help="per-checkpoint cache (omit: none)")
    _runtime_option(p)
    p = _stage(sub, "analyse", cmd_analyse, "run one pipeline analysis on one run", "settings")
    p.add_argument("name", help="analysis name (see `ssltrace list`)")
    p.add_argument("--input", action="append", default=[], help="ROLE=PATH, repeatable")
    p.add_argument("--epochs", nargs="+", type=int, required=True)
    _paths(p, "--table")
    p.add_argument("--array", action="append", default=[], help="NAME=PATH, repeatable")
    p.add_argument("--method", required=True)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--cache-dir", help="per-epoch cache (omit: none)")


def _add_output_commands(sub) -> None:
    p = _stage(sub, "collect", cmd_collect, "stack per-run tidy tables into one study table")
    _paths(p, "--out")
    p.add_argument("tables", nargs="*")
    p = _stage(
        sub,
        "ttests",
        cmd_ttests,
        "t-test matrices between methods (seed 003 ED Figs. 1, 8) into a study matrix file",
    )
    p.add_argument("kind", choices=("neural", "behaviour"))
    p.add_argument(
        "--input",
        action="append",
        default=[],
        help="neural: METHOD:SEED=PATH of each run's predictivity scores file (repeatable); "
        "behaviour: the behaviour study table",
    )
    _paths(p, "--out")
    p = _stage(sub, "figure", cmd_figure, "draw one registered figure", "figure settings")
    p.add_argument("--name", required=True, help="figure drawing (see ssltrace.figures)")
    p.add_argument("--input", action="append", default=[], help="ROLE=PATH, repeatable")
    _paths(p, "--stem")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssltrace",
        description="Trace how self-supervised representations form. Each subcommand is one "
        "stage of the Snakemake workflow (data -> split -> pretrain -> extract -> analyse -> "
        "figures); run `snakemake --cores all` to run a whole study.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_study_commands,
        _add_data_commands,
        _add_neural_commands,
        _add_run_commands,
        _add_output_commands,
    ):
        add(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe a mistake in input or environment: shown as one message."""
    from ssltrace.config import ConfigError
    from ssltrace.data import DataFormatError, DataUnavailableError
    from ssltrace.io import ArtifactReadError, ArtifactWriteError

    return (
        ConfigError,
        FloatingPointError,  # a diverging run (ssltrace.training): one line saying what to try
        DataFormatError,
        DataUnavailableError,
        ArtifactReadError,
        ArtifactWriteError,
    )


def die_with_parent() -> None:
    """Ask Linux to end this process when its parent (the job's shell) dies.

    A stage killed with its job must not go on writing: an orphaned trainer recreated the
    checkpoints Snakemake had just deleted, and the next run took them for complete.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before the request took effect
        raise SystemExit("ssltrace: the job that started this stage has ended")


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
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
