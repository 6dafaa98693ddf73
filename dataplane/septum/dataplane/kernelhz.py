"""The running kernel's HZ (jiffies per second).

The datapath keeps per-packet time in jiffies (`bpf_jiffies64`, which the verifier inlines
into one memory load) instead of a clock helper call, so it needs HZ to turn the
configured timeouts into jiffies. The kernel does not export HZ directly: read it from the
kernel's build configuration, or else measure it from /proc/timer_list, which prints the
jiffies counter beside the monotonic clock.
"""

from __future__ import annotations

import functools
import gzip
import os
import re
import time
from pathlib import Path

from septum.dataplane.errors import PrerequisiteError

# The values Kconfig offers (CONFIG_HZ_100 ... CONFIG_HZ_1000).
_KNOWN_HZ = (100, 250, 300, 1000)
_CONFIG_HZ = re.compile(rb"^CONFIG_HZ=(\d+)$", re.MULTILINE)
_TIMER_LIST_NOW = re.compile(rb"^now at (\d+) nsecs$", re.MULTILINE)
_TIMER_LIST_JIFFIES = re.compile(rb"^jiffies: (\d+)$", re.MULTILINE)
# Long enough that one jiffy of rounding is < 2 % even at HZ=100.
_MEASURE_S = 0.5


def _from_config() -> int | None:
    candidates = [
        (Path("/proc/config.gz"), True),
        (Path(f"/boot/config-{os.uname().release}"), False),
    ]
    for path, compressed in candidates:
        try:
            data = gzip.decompress(path.read_bytes()) if compressed else path.read_bytes()
        except OSError:
            continue
        match = _CONFIG_HZ.search(data)
        if match:
            return int(match.group(1))
    return None


def _timer_list_sample() -> tuple[int, int] | None:
    try:
        text = Path("/proc/timer_list").read_bytes()
    except OSError:
        return None
    now = _TIMER_LIST_NOW.search(text)
    jiffies = _TIMER_LIST_JIFFIES.search(text)
    if not now or not jiffies:
        return None
    return int(now.group(1)), int(jiffies.group(1))


def _measured() -> int | None:
    first = _timer_list_sample()
    if first is None:
        return None
    deadline = time.monotonic() + _MEASURE_S
    while time.monotonic() < deadline:
        time.sleep(0.05)  # calibration interval, not a wait for a state
    second = _timer_list_sample()
    if second is None or second[0] <= first[0]:
        return None
    rate = (second[1] - first[1]) * 1e9 / (second[0] - first[0])
    return min(_KNOWN_HZ, key=lambda hz: abs(hz - rate))


@functools.cache
def kernel_hz() -> int:
    """HZ of the running kernel; raises PrerequisiteError when neither source is readable."""
    hz = _from_config() or _measured()
    if hz is None:
        raise PrerequisiteError(
            "kernel HZ: no CONFIG_HZ in /proc/config.gz or /boot/config-<release>, "
            "and /proc/timer_list is not readable to measure it"
        )
    return hz
