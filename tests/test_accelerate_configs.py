"""The accelerate configs in configs/accelerate: both load as accelerate reads them, and the DDP one trains with two
CPU processes (gloo) that end with the same weights. FSDP needs CUDA (accelerate runs FSDP configs as plain data
parallel on CPUs), so it is checked by bench/gpu.sh."""

import json
import os
import subprocess
import sys
from pathlib import Path

from opd_studio.records import Record, write_records
from tests.conftest import ADD, random_llama

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"


def test_configs_load_as_accelerate_reads_them():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    ddp = load_config_from_file(str(CONFIGS / "ddp.yaml"))
    fsdp = load_config_from_file(str(CONFIGS / "fsdp.yaml"))
    assert ddp.distributed_type == DistributedType.MULTI_GPU and ddp.mixed_precision == "bf16"
    assert fsdp.distributed_type == DistributedType.FSDP
    assert fsdp.fsdp_config["fsdp_version"] == 2
    assert fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"


def test_ddp_config_trains_with_two_cpu_processes(tokenizer, tmp_path):
    random_llama(tokenizer, 1.0).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    hinted = {**ADD, "hints": [{**ADD["hints"][0], "status": "accepted"}]}
    write_records(tmp_path / "curated.jsonl", [Record.from_dict(hinted), Record.from_dict({**hinted, "id": "b"})])
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPD_STUDIO_DATA=str(tmp_path / "data"))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "ddp.yaml"),
               "--mixed_precision", "no", "--main_process_port", str(30500 + os.getpid() % 1000),
               "-m", "opd_studio", "train", "--data", str(tmp_path / "curated.jsonl"), "--out", str(tmp_path / "run"),
               "--model", str(tmp_path / "model"), "--steps", "2", "--batch-size", "1", "--lr", "5e-3",
               "--drift-threshold", "none", "--unreviewed", "--no-heldout"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    checksums = json.loads((tmp_path / "run" / "run.json").read_text())["process_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
