"""Something the datapath needs is missing: the load fails at once with one clear line, and
nothing reaches stderr (libbpf's messages, the verifier log included, go to logging)."""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from septum.dataplane import libbpf, loader
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import NodeDatapath
from septum.dataplane.errors import LibbpfError

pytestmark = pytest.mark.privileged

_REPO = Path(__file__).resolve().parents[2]
# Loads a node datapath; prints the error's class and message (nothing when it loads).
_LOAD = """
import sys
from pathlib import Path
from septum.dataplane import loader
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import NodeDatapath
from septum.dataplane.errors import DatapathError

config = DatapathConfig(node_name=sys.argv[1], bpf_object=Path(sys.argv[2]))
try:
    NodeDatapath(config).close()
except DatapathError as err:
    print(type(err).__name__, err, sep=": ")
finally:
    loader.remove_pins(config.pin_dir)
"""


def _load_in_subprocess(node_name: str, bpf_object: Path, drop: str = "") -> str:
    """Run _LOAD (with the capabilities in `drop` dropped); returns its stdout line and
    asserts it wrote nothing to stderr."""
    command = [sys.executable, "-c", _LOAD, node_name, str(bpf_object)]
    if drop:
        command = ["capsh", f"--drop={drop}", "--", "-c", shlex.join(command)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


@pytest.mark.parametrize(
    ("drop", "missing"),
    [
        # without CAP_PERFMON the verifier refuses pointer arithmetic "for !root"
        ("cap_sys_admin,cap_perfmon", "CAP_PERFMON"),
        ("cap_sys_admin,cap_bpf", "CAP_BPF"),
        ("cap_net_admin", "CAP_NET_ADMIN"),
    ],
)
def test_a_missing_capability_is_named_in_one_line(node_name, drop, missing):
    config = DatapathConfig(node_name=node_name)
    try:
        output = _load_in_subprocess(node_name, config.bpf_object, drop)
        assert output.count("\n") == 1
        assert output.startswith("PrerequisiteError: septum datapath needs ")
        assert output.rstrip("\n").endswith(f"missing {missing}: run it as root (sudo)")
        assert not config.pin_dir.exists()
    finally:  # should the check ever let the load through
        loader.remove_pins(config.pin_dir)


@pytest.fixture(scope="module")
def rejected_object(tmp_path_factory) -> Path:
    """The datapath object with bench_empty reading far past its context: the verifier
    refuses it."""
    root = tmp_path_factory.mktemp("rejected")
    shutil.copytree(_REPO / "bpf", root / "bpf")
    source = root / "bpf" / "septum.bpf.c"
    empty = "int bench_empty(struct __sk_buff *skb)\n{\n\treturn SEPTUM_TC_FORWARD;\n}"
    text = source.read_text()
    assert empty in text
    bad_read = "return *(int *)((long)skb + 4000);"
    source.write_text(text.replace(empty, empty.replace("return SEPTUM_TC_FORWARD;", bad_read)))
    target = root / "rejected.bpf.o"
    includes = [f"-I{root / 'bpf' / 'include'}", f"-I{root / 'bpf'}"]
    subprocess.run(
        ["clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", *includes]
        + ["-I/usr/include/x86_64-linux-gnu", "-c", str(source), "-o", str(target)],
        check=True,
        capture_output=True,
    )
    return target


def test_a_rejected_program_is_one_line_and_nothing_on_stderr(
    node_name, rejected_object, capfd, caplog
):
    config = DatapathConfig(node_name=node_name, bpf_object=rejected_object)
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger=libbpf.log.name):
        with pytest.raises(LibbpfError) as caught:
            NodeDatapath(config)
    message = str(caught.value)
    assert "\n" not in message
    assert "the verifier rejected a program (bench_empty; verifier log: " in message
    assert "lines, logged at DEBUG by septum.dataplane.libbpf)" in message
    # libbpf's default printer wrote its warnings and the whole log to fd 2
    assert capfd.readouterr() == ("", "")
    verifier_log = libbpf.last_verifier_log()
    assert verifier_log is not None and verifier_log.program == "bench_empty"
    assert "invalid bpf_context access" in verifier_log.text
    assert f"verifier log: {verifier_log.lines} lines" in message
    [record] = [r for r in caplog.records if "verifier log of program" in r.getMessage()]
    assert record.levelno == logging.DEBUG and verifier_log.text in record.getMessage()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("BPF program load failed" in text for text in warnings)
    assert not config.pin_dir.exists()


def test_without_logging_configured_a_rejection_prints_nothing(node_name, rejected_object):
    """What a CLI user sees: the error, and no libbpf lines through logging's last resort."""
    output = _load_in_subprocess(node_name, rejected_object)
    assert output.startswith("LibbpfError: loading ")
    assert output.count("\n") == 1 and "the verifier rejected a program" in output
