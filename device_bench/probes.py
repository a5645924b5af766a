"""Device-state probe: one shell script run on the phone, and pure parsers of its output.

The script only uses what toybox ``sh``/``cat`` on every Android since 6 offer. It prints
marked sections so that the parser never guesses which file a number came from:

    ##cpu
    cpu0|schedutil|1785600|1785600|0 1 2 3      name|governor|cur kHz|max kHz|related_cpus
    ##thermal
    thermal_zone0|cpu0-silver-usr|38400         zone|type|raw temp
    ##battery
    temp=326                                    sysfs, tenths of a degree C
    capacity=84
    ... or the lines of `dumpsys battery` when sysfs is not readable
    ##end

Missing files print ``-`` (offline cores have no cpufreq directory).
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional

from opcost.errors import ParseError
from opcost.records import DeviceState

PROBE_SCRIPT = r"""
echo '##cpu'
for d in /sys/devices/system/cpu/cpu[0-9]*; do
  f=$d/cpufreq
  g=$(cat $f/scaling_governor 2>/dev/null || echo -)
  c=$(cat $f/scaling_cur_freq 2>/dev/null || echo -)
  m=$(cat $f/cpuinfo_max_freq 2>/dev/null || echo -)
  r=$(cat $f/related_cpus 2>/dev/null || echo -)
  echo "${d##*/}|$g|$c|$m|$r"
done
echo '##thermal'
for z in /sys/class/thermal/thermal_zone*; do
  [ -e $z ] || continue
  echo "${z##*/}|$(cat $z/type 2>/dev/null || echo -)|$(cat $z/temp 2>/dev/null || echo -)"
done
echo '##battery'
b=/sys/class/power_supply/battery
if [ -r $b/temp ]; then
  echo "temp=$(cat $b/temp 2>/dev/null)"
  echo "capacity=$(cat $b/capacity 2>/dev/null)"
else
  dumpsys battery 2>/dev/null
fi
echo '##end'
""".strip() + "\n"

_SECTION = re.compile(r"^##(cpu|thermal|battery|end)\s*$")


def normalize_temp_c(raw: float) -> float:
    """Thermal-zone reading -> degrees C.

    The kernel ABI says milli-degC, and most phones follow it (38400 = 38.4 C). Some older
    Qualcomm (msm8953 tsens) zones report deci-degC (309 = 30.9 C) and a few PMIC/ADC zones
    plain degC (31). Phones do not run between 150 C and 1000 C, so the magnitude tells.
    """
    if abs(raw) >= 1000:
        return raw / 1000.0
    if abs(raw) >= 150:
        return raw / 10.0
    return float(raw)


def _split_sections(text: str) -> Dict[str, List[str]]:
    sections: Dict[str, List[str]] = {}
    current: Optional[str] = None
    for line in text.replace("\r\n", "\n").split("\n"):
        m = _SECTION.match(line.strip())
        if m:
            current = m.group(1)
            sections.setdefault(current, [])
            continue
        if current is not None and line.strip():
            sections[current].append(line.rstrip())
    return sections


def _int_or_none(s: str) -> Optional[int]:
    s = s.strip()
    if not s or s == "-":
        return None
    try:
        return int(s)
    except ValueError:
        return None


def parse_probe(text: str, *, timestamp: Optional[float] = None) -> DeviceState:
    """Parse the output of ``PROBE_SCRIPT``. Raises ParseError if it is not that output."""
    sections = _split_sections(text)
    if "cpu" not in sections or "end" not in sections:
        raise ParseError("device probe output is missing its section markers (##cpu ... ##end)",
                         output_tail=text)
    state = DeviceState(timestamp=timestamp)
    for line in sections["cpu"]:
        parts = line.split("|")
        if len(parts) < 4:
            continue
        name = parts[0].strip()
        if parts[1].strip() not in ("", "-"):
            state.governors[name] = parts[1].strip()
        cur = _int_or_none(parts[2])
        if cur is not None:
            state.cur_freq_khz[name] = cur
        mx = _int_or_none(parts[3])
        if mx is not None:
            state.max_freq_khz[name] = mx
    for line in sections.get("thermal", []):
        parts = line.split("|")
        if len(parts) != 3:
            continue
        zone, ztype, raw = (p.strip() for p in parts)
        value = _int_or_none(raw)
        if value is None:
            continue  # unreadable zone (permission denied on some vendor sensors)
        key = ztype if ztype not in ("", "-") else zone
        if key in state.temps_c:  # several zones share a type name on many SoCs
            key = f"{key}@{zone}"
        state.temps_c[key] = normalize_temp_c(value)
    _parse_battery(sections.get("battery", []), state)
    return state


def _parse_battery(lines: List[str], state: DeviceState) -> None:
    for line in lines:
        s = line.strip()
        key, sep, val = s.partition("=") if "=" in s else s.partition(":")
        if not sep:
            continue
        key, val = key.strip().lower(), val.strip()
        num = _int_or_none(val)
        if num is None:
            continue
        # Both the power_supply `temp` file and `dumpsys battery` give tenths of a degree C.
        if key in ("temp", "temperature"):
            state.battery_temp_c = num / 10.0
        elif key in ("capacity", "level"):
            state.battery_level_pct = num


def parse_cpu_clusters(text: str) -> List[Dict[str, object]]:
    """CPU clusters from ``PROBE_SCRIPT`` output: cores that share a cpufreq policy
    (``related_cpus``), each with its max frequency. Sorted by first core."""
    sections = _split_sections(text)
    clusters: Dict[tuple, Dict[str, object]] = {}
    for line in sections.get("cpu", []):
        parts = line.split("|")
        if len(parts) < 5:
            continue
        name = parts[0].strip()
        related = [int(x) for x in parts[4].split() if x.isdigit()]
        if not related:
            m = re.match(r"cpu(\d+)$", name)
            if not m:
                continue
            related = [int(m.group(1))]
        key = tuple(sorted(related))
        mx = _int_or_none(parts[3])
        entry = clusters.setdefault(key, {"cpus": list(key), "max_khz": mx})
        if mx is not None and (entry["max_khz"] is None or mx > entry["max_khz"]):
            entry["max_khz"] = mx
    return [clusters[k] for k in sorted(clusters)]


_GETPROP_LINE = re.compile(r"^\[([^\]]*)\]:\s*\[(.*)\]\s*$")


def parse_getprop(text: str) -> Dict[str, str]:
    """``getprop`` output (``[key]: [value]`` lines) -> dict. Multi-line values are joined
    with newlines; lines outside any property are ignored."""
    props: Dict[str, str] = {}
    pending_key: Optional[str] = None
    pending_val: List[str] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        if pending_key is not None:
            if raw.rstrip().endswith("]"):
                pending_val.append(raw.rstrip()[:-1])
                props[pending_key] = "\n".join(pending_val)
                pending_key, pending_val = None, []
            else:
                pending_val.append(raw)
            continue
        m = _GETPROP_LINE.match(raw.strip())
        if m:
            props[m.group(1)] = m.group(2)
            continue
        m2 = re.match(r"^\[([^\]]*)\]:\s*\[(.*)$", raw.strip())
        if m2:
            pending_key, pending_val = m2.group(1), [m2.group(2)]
    return props
