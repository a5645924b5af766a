"""`opcost signature select` and `opcost adapt` on the real ganesan2020 data."""
from __future__ import annotations

import json

import click
import numpy as np
import pytest
from click.testing import CliRunner

from host.cli import signature_cmds
from host.modeler import data_ganesan2020 as g20
from host.modeler.signature import PhonePredictor


@pytest.fixture(scope="module")
def cli():
    @click.group()
    def main() -> None:
        pass

    signature_cmds.register(main)
    return main


@pytest.fixture(scope="module")
def data():
    return g20.load(g20.default_data_dir())


def _run(cli, args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_select_writes_signature(cli, tmp_path, data):
    out = tmp_path / "sig.json"
    res = _run(cli, ["signature", "select", "--k", "10", "--method", "sccs", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert json.loads(res.output.strip().splitlines()[-1]) == doc
    assert doc["method"] == "sccs" and doc["k"] == 10 and len(doc["networks"]) == 10
    assert set(doc["networks"]) <= set(data.networks)
    assert doc["training_devices"] == data.devices
    assert doc["dataset"]["statistic"] == "median_after_first"


def test_adapt_end_to_end(cli, tmp_path, data):
    sig = tmp_path / "sig.json"
    assert _run(cli, ["signature", "select", "--k", "8", "--method", "pqr", "--out", str(sig)]).exit_code == 0
    doc = json.loads(sig.read_text())
    # a "new" phone: Pixel_4_0 left out of the training devices
    doc["training_devices"] = [d for d in doc["training_devices"] if not d.startswith("Pixel_4_")]
    sig.write_text(json.dumps(doc))
    i = data.devices.index("Pixel_4_0")
    csv = tmp_path / "new.csv"
    csv.write_text("network,latency_ms\n" + "".join(
        f"{n},{data.latency_ms[i, data.networks.index(n)]}\n" for n in doc["networks"]))
    out = tmp_path / "new.predictor"
    res = _run(cli, ["adapt", "--signature", str(sig), "--latencies", str(csv), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.output.strip().splitlines()[-1])["latency_ms"]
    phone = PhonePredictor.load(str(out))
    assert "Pixel_4_0" not in phone.model.devices_ and len(phone.model.devices_) == len(doc["training_devices"])
    np.testing.assert_allclose(phone.predict(), [printed[n] for n in phone.networks])
    mape = np.mean(np.abs(phone.predict() / data.latency_ms[i] - 1))
    assert mape < 0.15  # a sanity bound, not the accuracy target (that is in benchmarks/)


def test_cli_errors_are_clear(cli, tmp_path):
    missing = _run(cli, ["adapt", "--signature", str(tmp_path / "nope.json"), "--latencies", "x.csv",
                         "--out", str(tmp_path / "p")])
    assert missing.exit_code == 2 and "error: cannot read signature file" in missing.output
    assert "Traceback" not in missing.output
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    res = _run(cli, ["adapt", "--signature", str(bad), "--latencies", "x.csv", "--out", str(tmp_path / "p")])
    assert res.exit_code == 2 and "not an opcost signature file" in res.output and "what to do" in res.output
    res = _run(cli, ["signature", "select", "--k", "500"])
    assert res.exit_code == 2 and "k must be between" in res.output
    res = _run(cli, ["signature", "select", "--data", str(tmp_path / "none")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = _run(cli, ["signature", "select", "--method", "magic"])
    assert res.exit_code == 2 and "magic" in res.output


def test_adapt_rejects_incomplete_latencies(cli, tmp_path):
    sig = tmp_path / "sig.json"
    assert _run(cli, ["signature", "select", "--k", "5", "--method", "pqr", "--out", str(sig)]).exit_code == 0
    nets = json.loads(sig.read_text())["networks"]
    csv = tmp_path / "new.csv"
    csv.write_text(f"{nets[0]},12.5\n")
    res = _run(cli, ["adapt", "--signature", str(sig), "--latencies", str(csv), "--out", str(tmp_path / "p")])
    assert res.exit_code == 2 and "no latency for signature network" in res.output and nets[1] in res.output
