"""The device script at tiny size on the CPU: every section runs and the report is complete."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from invdiff.benchmarks.common import run_isolated
from invdiff.benchmarks.device import SECTIONS, DeviceMemory, device_check, network_tflop
from invdiff.benchmarks.throughput import random_adm
from tests.benchmarks.test_batch import ROOT

NARROW = {"image_size": 32, "model_channels": 32, "num_head_channels": 16, "channel_mult": [1, 2],
          "attention_resolutions": [16]}


@pytest.mark.slow
def test_the_tiny_device_check_runs_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "scripts/device_check.py", "device=cpu", "device_check=tiny", f"out={out}",
         f"data_root={tmp_path / 'data'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "device_check.json").read_text())
    sections = report["sections"]
    assert list(sections) == list(SECTIONS) and report["header"]["device"] == "cpu"
    assert all(sec.get("ok", True) and "error" not in sec and "skipped" not in sec for sec in sections.values())
    outcomes = {(r["task"], r["sampler"]): r["outcome"] for r in sections["tasks"]["rows"]}
    assert outcomes[("mri", "dds")] == outcomes[("ct3d", "diffusion_mbir")] == "ok"
    assert outcomes[("phase", "dds")] == outcomes[("mri", "diffusion_mbir")] == "refused"
    assert "exit status 0" in sections["batch"]["summary"] and (out / "batch" / "summary.json").is_file()
    for name, slices in (("dds", [1, 2]), ("volume", [4])):
        rows = sections[name]["rows"]
        assert rows and all(r["finite"] and r["nfe"] == 2 and r["s_per_slice"] > 0 for r in rows), rows
        assert [r["seconds"] / r["s_per_slice"] for r in rows] == pytest.approx(slices)
    profile = sections["profile"]
    assert profile["rows"] and profile["syncs"]["aten::_local_scalar_dense"] > 0
    assert (out / "profile_trace.json").stat().st_size > 0
    text = (out / "device_check.md").read_text()
    assert "| dds1_dds | fp32 | 2 | off | 2 |" in text and "6 ok, 3 refused by the method, 0 errors" in text


def test_network_flops_of_an_adm_are_counted_without_running_it():
    prior = random_adm("dds_fastmri_320", overrides=NARROW)
    one, two = network_tflop(prior, (1, 2, 32, 32)), network_tflop(prior, (2, 2, 32, 32))
    assert one > 0 and two == pytest.approx(2 * one)
    assert all(not p.is_meta and p.device.type == "cpu" for p in prior.parameters())  # the real prior is intact


def test_unknown_sections_are_named_and_the_budget_skips_what_is_left(tmp_path):
    with pytest.raises(ValueError, match=r"sections: unknown \['gpus'\]"):
        device_check(out=tmp_path, device="cpu", sections=["gpus"])
    device_check(out=tmp_path, device="cpu", sections=["tasks", "dds"], budget_s=0)
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert all(sec["skipped"] == "time budget spent" for sec in report["sections"].values())


def _peak_of_a_256_mib_tensor() -> dict:
    with DeviceMemory(torch.device("cpu")) as memory:
        x = torch.ones(64, 2**20)  # 256 MiB
        x += 1
    return {"peak_mib": memory.peak_mib}


def test_device_memory_is_measured_on_the_cpu():
    # In a fresh interpreter: in a long test process the block may reuse pages that earlier
    # tests left resident, which the resident-memory peak rightly does not count.
    assert run_isolated(_peak_of_a_256_mib_tensor)["peak_mib"] >= 200
