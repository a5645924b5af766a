"""CLI commands: `opcost campaign run|status` and `opcost export`."""
from __future__ import annotations

import sys
from typing import Optional

import click

from host.cli._common import echo_json, handle_errors


def _store_path(plan, store: Optional[str]) -> str:
    return store or plan.store


def _print_status(report: dict, run_cmd: str) -> None:
    from opcost.errors import short_list

    if not report["store_exists"]:
        click.echo(f"store {report['store']} does not exist yet: nothing measured; "
                   f"`{run_cmd}` creates it")
    for serial, s in report["devices"].items():
        pending = f"{s['pending']} pending" + (f" ({s['interrupted']} interrupted)" if s["interrupted"] else "")
        click.echo(f"{serial}: {s['done']}/{s['total']} done, {pending}, {s['running']} running, "
                   f"{s['failed']} failed")
        for g in s["reason_groups"]:
            if len(g["models"]) <= 1:
                click.echo(f"    {g['count']} x {g['example']}")
            else:
                click.echo(f"    {g['count']} x {g['reason']} ({len(g['models'])} models: "
                           f"{short_list(g['models'], 3)})")
    runner = report["runner"]
    if runner is not None:
        pid = f"pid {runner['pid']}" if runner.get("pid") else "pid unknown"
        click.echo(f"a campaign runner is working on this store now ({pid}); running jobs are in progress")
    n = report["interrupted"]
    if n:
        click.echo(f"note: {n} job{'s were' if n != 1 else ' was'} left running by a runner that is gone "
                   f"(interrupted or killed), counted as pending; `{run_cmd}` "
                   f"resumes {'them' if n != 1 else 'it'}")


def _print_summary(summary, as_json: bool) -> None:
    if as_json:
        echo_json(summary.to_dict())
        return
    line = (f"{summary.jobs} jobs: {summary.done} measured now, {summary.skipped_done} already done, "
            f"{summary.failed} failed now, {summary.skipped_failed} failed before (use --retry-failed)")
    if summary.not_run:
        line += f", {summary.not_run} not run (still pending)"
    if summary.other_binary:
        line += (f"; {summary.other_binary} done job(s) were measured with another benchmark_model "
                 f"(--remeasure-other-binary measures them again)")
    click.echo(line)
    for serial, d in summary.devices.items():
        line = f"{serial}: {d.done} measured, {d.failed} failed"
        if d.lost:
            line += f" (stopped: {d.lost})"
        click.echo(line)
        for reason, n in sorted(d.reasons.items(), key=lambda kv: -kv[1]):
            click.echo(f"    {n} x {reason}")


def register(main: click.Group) -> None:
    """Add `campaign run`, `campaign status` and `export` to the main group."""

    @main.group("campaign")
    def campaign() -> None:
        """Measure many models on many devices, resumably.

        A plan is a YAML (.yaml/.yml) or TOML (.toml) file; paths are relative to it:

        \b
          models: [models/*.tflite, extra/net.tflite]   # files, globs or folders
          devices: [R58M123ABC, local]                  # adb serials; local = this host
          num_runs: 50                                  # run settings here are defaults
          settings:                                     # one entry per setting to measure
            - {delegate: xnnpack, threads: 1}
            - {delegate: gpu, gpu_precision: fp16}
          repeats: 3                                    # measure each combination 3 times
          retries: 2                                    # after adb errors / unplugging
          backoff_s: 2.0                                # first retry wait, doubles each time
          binary: {arm64-v8a: bin/benchmark_model}      # or one path
          thermal: {max_c: 45, max_wait_s: 300}         # cool down before each run
          nice: -10                                     # local only: nice value (< 0 needs root)
          store: results/opcost.db                      # default: opcost.db next to the plan

        \b
        Run settings: delegate (cpu|xnnpack|gpu|nnapi), threads, cpu_mask ("f0"),
        gpu_precision, warmup_runs, num_runs, min_secs, max_secs, warmup_min_secs,
        op_profiling, report_peak_memory, timeout_s.
        Running the plan again skips done jobs (also after a crash or a rename of the plan),
        retries jobs lost with an unplugged phone, and with --retry-failed all failed ones.
        """

    @campaign.command("run")
    @click.argument("plan_path", metavar="PLAN")
    @click.option("--store", "store_path", default=None,
                  help="SQLite store (default: the plan's store:, else opcost.db next to the plan).")
    @click.option("--retry-failed", is_flag=True, help="Run failed jobs again too.")
    @click.option("--remeasure-other-binary", is_flag=True,
                  help="Measure again the done jobs whose runs were taken with another benchmark_model "
                       "than the plan's current binary (the earlier runs stay in the store).")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    @click.option("--no-progress", is_flag=True, help="No progress bars on stderr.")
    @handle_errors
    def campaign_run(plan_path: str, store_path: Optional[str], retry_failed: bool, remeasure_other_binary: bool,
                     as_json: bool, no_progress: bool) -> None:
        """Run the jobs of PLAN that are not done yet; safe to interrupt and run again.

        Done jobs are not measured again when the plan's binary: changes (a warning says
        how many were measured with another build); --remeasure-other-binary does.

        Exit status: 0 when every job of the plan is done; 1 (after the summary) when a
        job failed in this run or jobs are left failed or pending (see `opcost campaign
        status`); 2 for an unusable plan or store.
        """
        from host.campaign import load_plan, run_campaign
        from host.store import Store

        plan = load_plan(plan_path)
        with Store.open(_store_path(plan, store_path)) as store:
            summary = run_campaign(plan, store, progress=not no_progress, retry_failed=retry_failed,
                                   remeasure_other_binary=remeasure_other_binary)
        _print_summary(summary, as_json)
        if summary.failed or summary.skipped_failed or summary.not_run:
            sys.exit(1)

    @campaign.command("status")
    @click.argument("plan_path", metavar="PLAN")
    @click.option("--store", "store_path", default=None,
                  help="SQLite store (default: the plan's store:, else opcost.db next to the plan).")
    @click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
    @handle_errors
    def campaign_status_cmd(plan_path: str, store_path: Optional[str], as_json: bool) -> None:
        """How many jobs of PLAN are done, pending and failed, per device, and why.

        Reads the store read-only (a read-only file or folder is fine) and never creates
        it: before the first run every job is pending. Jobs left running by a runner that
        is gone (Ctrl-C, kill) count as pending ("interrupted"); a live runner is named
        by its pid. Failure reasons are grouped with the model's name, path and sha256
        replaced by <model>.

        \b
        --json prints {"store", "store_exists", "runner": {"pid", "since"} or null,
        "interrupted", "devices": {SERIAL: {"done", "pending", "running", "failed",
        "total", "interrupted", "reasons": {full message: count}, "reason_groups":
        [{"reason", "count", "models", "example"}]}}}.
        """
        from host.campaign import campaign_report, load_plan

        plan = load_plan(plan_path)
        report = campaign_report(plan, _store_path(plan, store_path))
        if as_json:
            echo_json(report)
        else:
            run_cmd = f"opcost campaign run {plan_path}" + (f" --store {store_path}" if store_path else "")
            _print_status(report, run_cmd)

    @main.command("export")
    @click.option("--store", "store_path", required=True, help="SQLite store to export.")
    @click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
    @click.option("--out", "out_dir", required=True, help="Folder to write runs/ops/devices/models files to.")
    @click.option("--json", "as_json", is_flag=True, help="Print the written paths as JSON.")
    @handle_errors
    def export_cmd(store_path: str, fmt: str, out_dir: str, as_json: bool) -> None:
        """Write the store's runs, ops, devices and models tables as CSV or Parquet.

        The store is only read (a read-only file or folder is fine)."""
        from host.store import Store, export

        with Store.open_reader(store_path) as store:
            paths = export(store, out_dir, fmt)
        if as_json:
            echo_json({"files": paths})
        else:
            for p in paths:
                click.echo(p)
