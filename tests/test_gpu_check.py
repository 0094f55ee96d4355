"""benchmarks/gpu_check.py (make gpu-check): the no-CUDA message, and the same code run small on the CPU."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_without_cuda_says_so_and_exits_0():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no device visible, whatever the machine has
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "no CUDA device" in done.stdout and "nothing to time" in done.stdout
    assert "tiles/s" not in done.stdout


def test_cpu_small_prints_positive_figures(capsys):
    """--device cpu --small: the gtex profile's first network at its input size, and 03's two backends."""
    import yaml

    gtex = yaml.safe_load((SCRIPT.parents[1] / "params" / "gtex.yaml").read_text())["notebooks"]["02_training"]
    assert _load_script().main(["--device", "cpu", "--small"]) == 0
    out = capsys.readouterr().out
    fx = re.search(r"^02 feature extraction: (\S+) at (\d+) px, (\d+) tiles .*: ([\d.]+) s, ([\d.]+) tiles/s$",
                   out, re.M)
    assert fx, out
    assert fx.group(1) == gtex["archs"][0] and int(fx.group(2)) == gtex["input_px"]
    assert int(fx.group(3)) > 0 and float(fx.group(4)) > 0 and float(fx.group(5)) > 0
    numpy_s = re.search(r"^03 correlation numpy: .*: ([\d.]+) s$", out, re.M)
    torch_s = re.search(r"^03 correlation torch \(cpu\): .*: ([\d.]+) s, ([\d.]+)x numpy; .*the same pairs$", out,
                        re.M)
    assert numpy_s and torch_s, out
    assert float(numpy_s.group(1)) > 0 and float(torch_s.group(1)) > 0 and float(torch_s.group(2)) > 0
    assert "avx" in out or "no avx2/avx512" in out  # the CPU's vector flags, beside the figures


def test_bad_sizes_are_refused():
    with pytest.raises(SystemExit):
        _load_script().main(["--device", "cpu", "--tiles", "0"])
