"""The SLURM and workstation profiles, run for real.

SLURM tests bring up a single-node SLURM on localhost (tests/slurm_harness.py) with a fake GPU
and submit through profiles/slurm with snakemake-executor-plugin-slurm: a small DAG of the real
workflow (CPU rules and the GPU rule `pretrain`), and a two-rule workflow (a CPU job, then a GPU
job whose first attempt fails) for CPU requests and retries. What SLURM was asked for is read
back with `scontrol show job`. The workstation profile's `gpu` resource is run for real too.
"""

import os
import re
import shutil
import time

import pandas as pd
import pytest
import slurm_harness
from snakemake.profiles import ProfileConfigFileParser

from ssltrace import io, study

ROOT = slurm_harness.ROOT

SLURM_PROFILE = ROOT / "profiles" / "slurm"
LOCAL_PROFILE = ROOT / "profiles" / "local"
GPU_TYPE = "testgpu"
SNAKEMAKE_TIMEOUT_S = 480
# Speed-ups for the test only: the cluster has no accounting database (sacct unusable), and
# jobs here take seconds, so the first status check need not wait the plugin's 40 s.
FAST_POLLING = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
]


def profile_args(profile, **env):
    """The command-line arguments Snakemake makes of a profile under the given environment."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("SSLTRACE_") or k in env}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        with open(profile / "config.yaml") as stream:
            return dict(ProfileConfigFileParser().parse(stream))
    finally:
        for key in list(os.environ):
            if key.startswith("SSLTRACE_") or key in env:
                del os.environ[key]
        os.environ.update(saved)


def cluster_env(cluster, **settings):
    env = {k: v for k, v in cluster.env().items() if not k.startswith("SSLTRACE_")}
    env.pop("SNAKEMAKE_PROFILE", None)
    return {**env, **settings}


def time_limit_minutes(value):
    """SLURM's [D-]HH:MM:SS -> minutes."""
    days, _, clock = value.rpartition("-")
    hours, minutes, seconds = (int(x) for x in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + minutes + seconds / 60


# ---- profile contents (no SLURM needed) ------------------------------------------------------


def gpu_rules() -> set[str]:
    """The workflow's rules that declare a GPU: the training, extraction and target-label
    stages and every registered analysis whose `resources` ask for one (the profile must list
    exactly these)."""
    from ssltrace.analysis import registered

    analyses = registered()
    return {"pretrain", "extract", "target_labels"} | {
        name for name in analyses if analyses.get(name).resources.get("gpu")
    }


def test_slurm_profile_passes_no_cluster_settings_unless_given():
    args = profile_args(SLURM_PROFILE)
    assert args["executor"] == "slurm"
    assert args["default-resources"] == []  # default partition, guessed account
    assert not any("partition" in a or "gpu_model" in a for a in args["set-resources"])
    listed = {a.split(":")[0] for a in args["set-resources"]}
    assert listed == gpu_rules()
    for rule in gpu_rules():
        assert f"{rule}:cpus_per_gpu=threads" in args["set-resources"]
    assert int(args["retries"]) >= 1 and int(args["latency-wait"]) >= 10


def test_slurm_profile_takes_partition_account_and_gpu_model_from_environment():
    args = profile_args(
        SLURM_PROFILE,
        SSLTRACE_SLURM_PARTITION="cpu",
        SSLTRACE_SLURM_GPU_PARTITION="gpu",
        SSLTRACE_SLURM_ACCOUNT="lab1",
        SSLTRACE_SLURM_GPU_MODEL="a100",
    )
    assert args["default-resources"] == ["slurm_partition=cpu", "slurm_account=lab1"]
    for rule in gpu_rules():
        assert f"{rule}:slurm_partition=gpu" in args["set-resources"]
        assert f"{rule}:gpu_model=a100" in args["set-resources"]


def test_slurm_profile_can_run_gpu_rules_on_cpus():
    args = profile_args(
        SLURM_PROFILE, SSLTRACE_SLURM_PARTITION="cpu", SSLTRACE_SLURM_GPUS="0",
        SSLTRACE_SLURM_GPU_MODEL="a100",
    )  # fmt: skip
    assert "pretrain:gpu=0" in args["set-resources"]
    assert "pretrain:slurm_partition=cpu" in args["set-resources"]  # GPU partition falls back
    assert not any("gpu_model" in a for a in args["set-resources"])  # no --gpus=a100:0


@pytest.mark.parametrize(
    ("profile", "name", "value"),
    [(SLURM_PROFILE, "SSLTRACE_SLURM_GPUS", "two"), (LOCAL_PROFILE, "SSLTRACE_GPUS", "0")],
)
def test_profiles_reject_a_bad_gpu_count_by_name(profile, name, value):
    with pytest.raises(Exception, match=f"{name} must be a whole number"):
        profile_args(profile, **{name: value})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CUDA_VISIBLE_DEVICES": ""}, 1),  # no card: GPU rules still run, one at a time
        ({"CUDA_VISIBLE_DEVICES": "0,1,3"}, 3),
        ({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, 1),  # CUDA ignores ids after an invalid one
        ({"CUDA_VISIBLE_DEVICES": "0,1", "SSLTRACE_GPUS": "4"}, 4),
    ],
)
def test_local_profile_counts_the_visible_gpus(env, expected):
    args = profile_args(LOCAL_PROFILE, **env)
    assert args["resources"] == [f"gpu={expected}"]


# ---- workstation profile: the gpu resource, for real -------------------------------------------

GPU_PAIR_SNAKEFILE = """
rule all:
    input: "a.txt", "b.txt"

rule gpu_job:
    output: "{name}.txt"
    params: other=lambda w: "b" if w.name == "a" else "a"
    resources: gpu=1
    shell:
        # wait (bounded) for the other GPU job to start: only possible if both run at once
        "start=$(date +%s.%N); touch {wildcards.name}.started; "
        "for i in $(seq $(( {config[wait_s]} * 10 ))); do "
        "[ -e {params.other}.started ] && break; sleep 0.1; done; "
        "echo $start $(date +%s.%N) > {output}"
"""


def run_gpu_pair(tmp_path, *extra, wait_s):
    (tmp_path / "Snakefile").write_text(GPU_PAIR_SNAKEFILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSLTRACE_")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    log = tmp_path / "snakemake.log"
    args = ["--profile", str(LOCAL_PROFILE), "--snakefile", str(tmp_path / "Snakefile")]
    args += ["--directory", str(tmp_path), "--cores", "2"]
    code, output = slurm_harness.run_snakemake(
        [*args, "--config", f"wait_s={wait_s}", *extra], env, log, timeout_s=120
    )
    assert code == 0, output[-3000:]
    spans = [tuple(map(float, (tmp_path / f"{n}.txt").read_text().split())) for n in "ab"]
    return sorted(spans)


def test_local_profile_runs_one_gpu_job_at_a_time_on_one_card(tmp_path):
    (first_start, first_end), (second_start, _) = run_gpu_pair(tmp_path, wait_s=2)
    assert second_start >= first_end  # 2 cores free, yet the second waited for the card


def test_local_profile_runs_gpu_jobs_side_by_side_given_more_cards(tmp_path):
    (first_start, first_end), (second_start, _) = run_gpu_pair(
        tmp_path, "--resources", "gpu=2", wait_s=60
    )
    assert second_start < first_end  # both held a card at the same time


# ---- a real single-node SLURM --------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_harness.unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = slurm_harness.LocalSlurm(tmp_path_factory.mktemp("slurm"), gpu_type=GPU_TYPE)
    cluster.start()
    yield cluster
    print(cluster.stop())


def job_resources_from_log(output, rule):
    """The resources Snakemake printed for the (first) job of `rule`."""
    block = re.search(rf"\nrule {rule}:\n(.*?)\n\n", output + "\n\n", re.S)
    assert block, f"no job block for rule {rule} in the Snakemake log"
    return dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"resources: (.*)", block[1])[1]))


@pytest.mark.slurm
@pytest.mark.slow
def test_real_workflow_runs_through_slurm_with_a_gpu_for_pretrain(cluster, tmp_path):
    work = tmp_path / "study"
    work.mkdir()
    shutil.copy(ROOT / "config.yaml", work / "config.yaml")
    # One run of the `untrained` method (the pretrain rule, with its GPU, writing the epoch-0
    # checkpoint). Through SLURM every job of this workflow costs 30-60 s on the busy 2-core test
    # machine (two Snakemake starts inside the job plus status polling), so the pretrain job's
    # inputs are made on the workstation first and only `pretrain` is submitted; CPU jobs
    # through SLURM are tested below with a lighter Snakefile.
    small = work / "small.yaml"
    small.write_text(f"methods: [untrained]\nseeds: [0]\nresults_dir: {work / 'results'}\n")
    run = work / "results" / "runs" / "untrained" / "seed0"
    env = cluster_env(
        cluster,
        SSLTRACE_SLURM_PARTITION="debug",
        SSLTRACE_SLURM_GPU_PARTITION="gpu",
        SSLTRACE_SLURM_GPU_MODEL=GPU_TYPE,
    )
    target = str(run / "train_log.tsv")
    workflow = [
        "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
        "--configfile", str(ROOT / "presets" / "ci.yaml"), str(small),
    ]  # fmt: skip
    prep = [*workflow, "--profile", str(LOCAL_PROFILE), "--cores", "2"]
    code, output = slurm_harness.run_snakemake(
        [*prep, str(work / "results" / "splits" / "split.json")], env, tmp_path / "prep.log", 300
    )
    assert code == 0, f"making the inputs failed:\n{output[-5000:]}"

    args = [
        "--profile", str(SLURM_PROFILE), *workflow, *FAST_POLLING,
        "--max-threads", "2",  # pretrain asks for 4 threads; this node has 2 CPUs
        target,
    ]  # fmt: skip
    started = time.monotonic()
    code, output = slurm_harness.run_snakemake(
        args, env, tmp_path / "snakemake.log", SNAKEMAKE_TIMEOUT_S
    )
    print(f"pretrain through SLURM: {time.monotonic() - started:.0f} s")
    assert code == 0, f"snakemake ended with {code}:\n{output[-5000:]}"

    # the one job left went to SLURM once, completed, and asked for what the rule declares
    (jobid,) = slurm_harness.submitted_jobs(output)["pretrain"]
    assert re.findall(r"^(?:local)?rule (\w+):$", output, re.M) == ["pretrain"]
    gpu_job = cluster.job(jobid)
    assert gpu_job["JobState"] == "COMPLETED", gpu_job
    logged = job_resources_from_log(output, "pretrain")
    assert gpu_job["MinMemoryNode"] == f"{logged['mem_mb']}M"
    assert time_limit_minutes(gpu_job["TimeLimit"]) == int(logged["runtime"])
    assert gpu_job["Partition"] == "gpu"  # SSLTRACE_SLURM_GPU_PARTITION
    assert gpu_job["TresPerJob"] == f"gres:gpu:{GPU_TYPE}:1"  # sbatch --gpus=testgpu:1
    assert gpu_job["CpusPerTres"] == "gres:gpu:2"  # --cpus-per-gpu = the rule's threads

    cfg = study.load(ROOT / "config.yaml", ROOT / "presets" / "ci.yaml", small)
    epochs = study.checkpoint_epochs(cfg, "untrained")
    names = sorted(p.name for p in (run / "checkpoints").glob("epoch_*.pt"))
    assert names == [f"epoch_{e:03d}.pt" for e in epochs]
    last = io.torch_load(run / "checkpoints" / names[-1])
    assert (last["method"], last["seed"], last["epoch"]) == ("untrained", 0, epochs[-1])
    log = pd.read_csv(run / "train_log.tsv", sep="\t")
    assert log["epoch"].tolist() == epochs[1:] and log["loss"].notna().all()

    dry_code, dry = slurm_harness.run_snakemake(
        [*workflow, "--cores", "1", "--dry-run", target], env, tmp_path / "dry.log", 120
    )
    assert dry_code == 0 and "Nothing to be done" in dry, dry[-3000:]


RETRY_SNAKEFILE = """
rule all:
    input: "trained.txt"

rule prepare:
    output: "prepared.txt"
    threads: 2
    resources: mem_mb=200, runtime=4
    shell: "echo \\"$SLURM_CPUS_PER_TASK\\" > {output}"

rule pretrain:
    input: "prepared.txt"
    output: "trained.txt"
    threads: 1
    resources: gpu=1, mem_mb=100, runtime=lambda wildcards, attempt: 3 * attempt
    shell:
        "if [ {resources.runtime} -le 3 ]; then "
        "echo 'attempt one fails on purpose' >&2; exit 3; fi; "
        "echo \\"$CUDA_VISIBLE_DEVICES {resources.runtime}\\" > {output}"
"""


@pytest.mark.slurm
@pytest.mark.slow
def test_cpu_and_gpu_jobs_and_a_retry_with_more_runtime(cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(RETRY_SNAKEFILE)
    args = ["--profile", str(SLURM_PROFILE), "--snakefile", str(tmp_path / "Snakefile")]
    args += ["--directory", str(tmp_path), *FAST_POLLING]
    code, output = slurm_harness.run_snakemake(
        args, cluster_env(cluster), tmp_path / "snakemake.log", SNAKEMAKE_TIMEOUT_S
    )
    assert code == 0, f"snakemake ended with {code}:\n{output[-5000:]}"
    jobs = slurm_harness.submitted_jobs(output)

    (cpu_id,) = jobs["prepare"]
    cpu_job = cluster.job(cpu_id)
    assert cpu_job["JobState"] == "COMPLETED" and cpu_job["Partition"] == "debug"
    assert cpu_job["CPUs/Task"] == "2" and cpu_job["MinMemoryNode"] == "200M"
    assert cpu_job.get("TresPerJob", "(null)") == "(null)"
    assert (tmp_path / "prepared.txt").read_text().split() == ["2"]

    first, second = jobs["pretrain"]
    failed, retried = cluster.job(first), cluster.job(second)
    assert failed["JobState"] == "FAILED" and retried["JobState"] == "COMPLETED"
    assert time_limit_minutes(failed["TimeLimit"]) == 3
    assert time_limit_minutes(retried["TimeLimit"]) == 6  # attempt 2 asks for twice the time
    for job in (failed, retried):
        assert job["TresPerJob"] == "gres:gpu:1"  # plain --gpus=1: no model asked for
        assert job["CpusPerTres"] == "gres:gpu:1"  # --cpus-per-gpu = threads
        assert job["Partition"] == "debug"  # the cluster's default partition
    # SLURM gave the job its (fake) card: the gres plugin set CUDA_VISIBLE_DEVICES
    assert (tmp_path / "trained.txt").read_text().split() == ["0", "6"]
    failed_log = next((tmp_path / ".snakemake" / "slurm_logs").rglob(f"{first}.log"))
    assert "attempt one fails on purpose" in failed_log.read_text()
