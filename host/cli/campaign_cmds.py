"""CLI commands: `opcost campaign run|status` and `opcost export`."""
from __future__ import annotations

import sys
from typing import Optional

import click

from host.cli._common import echo_json, handle_errors


def _store_path(plan, store: Optional[str]) -> str:
    return store or plan.store


def _print_status(status: dict) -> None:
    for serial, s in status.items():
        click.echo(f"{serial}: {s['done']}/{s['total']} done, {s['pending']} pending, "
                   f"{s['running']} running, {s['failed']} failed")
        for reason, n in sorted(s["reasons"].items(), key=lambda kv: -kv[1]):
            click.echo(f"    {n} x {reason}")


def _print_summary(summary, as_json: bool) -> None:
    if as_json:
        echo_json(summary.to_dict())
        return
    line = (f"{summary.jobs} jobs: {summary.done} measured now, {summary.skipped_done} already done, "
            f"{summary.failed} failed now, {summary.skipped_failed} failed before (use --retry-failed)")
    if summary.not_run:
        line += f", {summary.not_run} not run (still pending)"
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
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    @click.option("--no-progress", is_flag=True, help="No progress bars on stderr.")
    @handle_errors
    def campaign_run(plan_path: str, store_path: Optional[str], retry_failed: bool, as_json: bool,
                     no_progress: bool) -> None:
        """Run the jobs of PLAN that are not done yet; safe to interrupt and run again.

        Exit status: 0 when every job of the plan is done; 1 (after the summary) when a
        job failed in this run or jobs are left failed or pending (see `opcost campaign
        status`); 2 for an unusable plan or store.
        """
        from host.campaign import load_plan, run_campaign
        from host.store import Store

        plan = load_plan(plan_path)
        with Store.open(_store_path(plan, store_path)) as store:
            summary = run_campaign(plan, store, progress=not no_progress, retry_failed=retry_failed)
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
        """How many jobs of PLAN are done, pending and failed, per device, and why."""
        from host.campaign import campaign_status, load_plan
        from host.store import Store

        plan = load_plan(plan_path)
        with Store.open(_store_path(plan, store_path), create=False) as store:
            status = campaign_status(plan, store)
        if as_json:
            echo_json(status)
        else:
            _print_status(status)

    @main.command("export")
    @click.option("--store", "store_path", required=True, help="SQLite store to export.")
    @click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
    @click.option("--out", "out_dir", required=True, help="Folder to write runs/ops/devices/models files to.")
    @click.option("--json", "as_json", is_flag=True, help="Print the written paths as JSON.")
    @handle_errors
    def export_cmd(store_path: str, fmt: str, out_dir: str, as_json: bool) -> None:
        """Write the store's runs, ops, devices and models tables as CSV or Parquet."""
        from host.store import Store, export

        with Store.open(store_path, create=False) as store:
            paths = export(store, out_dir, fmt)
        if as_json:
            echo_json({"files": paths})
        else:
            for p in paths:
                click.echo(p)
