"""Pure parsers of the device probe and getprop, on recorded text (tests/fakeadb/recordings)."""
import os
import shutil
import subprocess

import pytest

from device_bench.probes import (PROBE_SCRIPT, normalize_temp_c, parse_cpu_clusters, parse_getprop,
                                 parse_probe)
from opcost.errors import ParseError

REC = os.path.join(os.path.dirname(__file__), "fakeadb", "recordings")


def rec(name):
    with open(os.path.join(REC, name), encoding="utf-8") as f:
        return f.read()


def test_getprop_real_excerpt():
    props = parse_getprop(rec("getprop_kirin990_excerpt.txt"))
    assert props["ro.product.model"] == "EBG-AN10"
    assert props["ro.board.platform"] == "kirin990"
    assert props["ro.build.version.sdk"] == "29"
    assert len(props) == 25


def test_getprop_empty_value_multiline_and_crlf():
    text = "[a.b]: []\r\n[multi]: [line one\nline two]\r\n[x]: [1]\r\nnoise line\n"
    assert parse_getprop(text) == {"a.b": "", "multi": "line one\nline two", "x": "1"}


@pytest.mark.parametrize("raw,expected", [(38400, 38.4), (309, 30.9), (31, 31.0), (-40, -40.0), (105000, 105.0)])
def test_temperature_units_are_normalised(raw, expected):
    assert normalize_temp_c(raw) == pytest.approx(expected)


def test_probe_synthetic_phone():
    st = parse_probe(rec("probe_synthetic_sm8250.txt"), timestamp=5.0)
    assert st.timestamp == 5.0
    assert st.governors["cpu7"] == "schedutil"
    assert st.cur_freq_khz["cpu6"] == 710400
    assert st.max_freq_khz["cpu7"] == 2841600
    assert st.temps_c["cpu-1-0-usr"] == pytest.approx(38.9)
    assert st.temps_c["tsens_tz_sensor9"] == pytest.approx(30.9)   # deci-degC zone
    assert st.temps_c["xo_therm"] == pytest.approx(31.0)           # plain degC zone
    assert "pa_therm1" not in st.temps_c                            # unreadable zone skipped
    assert st.battery_temp_c == pytest.approx(29.1)
    assert st.battery_level_pct == 76
    assert st.max_temp_c() == pytest.approx(38.9)


def test_probe_battery_from_dumpsys_real_excerpt():
    text = "##cpu\ncpu0|-|-|-|-\n##thermal\n##battery\n" + rec("dumpsys_battery_samsung_excerpt.txt") + "##end\n"
    st = parse_probe(text)
    assert st.battery_temp_c == pytest.approx(32.6)
    assert st.battery_level_pct == 84
    assert st.governors == {} and st.cur_freq_khz == {}


def test_probe_duplicate_zone_types_are_kept_apart():
    text = "##cpu\n##thermal\nthermal_zone3|battery|30000\nthermal_zone9|battery|45000\n##battery\n##end\n"
    st = parse_probe(text)
    assert st.temps_c == {"battery": 30.0, "battery@thermal_zone9": 45.0}


def test_probe_garbage_is_a_parse_error():
    with pytest.raises(ParseError) as e:
        parse_probe(rec("benchmark_model_synthetic_garbage.txt"))
    assert "##cpu" in str(e.value)
    assert "lorem ipsum" in str(e.value)  # the output tail is shown


def test_cpu_clusters_from_related_cpus():
    clusters = parse_cpu_clusters(rec("probe_synthetic_sm8250.txt"))
    assert clusters == [{"cpus": [0, 1, 2, 3], "max_khz": 1804800},
                        {"cpus": [4, 5, 6], "max_khz": 2419200},
                        {"cpus": [7], "max_khz": 2841600}]


def test_cpu_clusters_offline_core_without_cpufreq():
    text = "##cpu\ncpu0|-|-|-|-\ncpu1|performance|1000|2000|1\n##end\n"
    assert parse_cpu_clusters(text) == [{"cpus": [0], "max_khz": None}, {"cpus": [1], "max_khz": 2000}]


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
def test_probe_script_runs_in_a_posix_shell_and_parses():
    """The script is plain POSIX sh: on this Linux host it must run and give parseable
    output (phones run it under toybox sh, which supports the same constructs)."""
    out = subprocess.run(["sh", "-c", PROBE_SCRIPT], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    st = parse_probe(out.stdout)
    assert out.stdout.strip().endswith("##end")
    assert isinstance(st.temps_c, dict)
    n_cpus = len([d for d in os.listdir("/sys/devices/system/cpu") if d[3:].isdigit() and d.startswith("cpu")])
    assert sum(len(c["cpus"]) for c in parse_cpu_clusters(out.stdout)) == n_cpus
