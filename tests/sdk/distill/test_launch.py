import subprocess
import sys

import pytest

from sdk.distill.launch import MEETING, join, torchrun_command
from sdk.errors import DistillError


def test_one_machine_is_standalone_and_several_meet_at_a_c10d_rendezvous():
    one = torchrun_command(4, 1, None, "abc", "/runs/r", "key", "/runs/r/c.json")
    assert one[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    assert one[-4:] == ["sdk.distill.launch", "/runs/r", "key", "/runs/r/c.json"]
    many = torchrun_command(8, 2, "head:29500", "abc", "/runs/r", "key", "/runs/r/c.json")
    i = many.index("--nnodes")
    assert many[i: i + 8] == ["--nnodes", "2", "--rdzv_backend", "c10d", "--rdzv_endpoint", "head:29500",
                              "--rdzv_id", "abc"]
    assert "--standalone" not in many
    with pytest.raises(DistillError, match="--rdzv-endpoint"):
        torchrun_command(8, 2, None, "abc", "/runs/r", "key", "/runs/r/c.json")
    with pytest.raises(DistillError, match="needs host:port"):
        torchrun_command(8, 2, "node-a", "abc", "/runs/r", "key", "/runs/r/c.json")


def test_join_names_what_it_waited_for_and_a_bad_meeting_file(tmp_path):
    with pytest.raises(DistillError, match="distributed.json: not written within 0 s"):
        join(tmp_path, wait_s=0)
    (tmp_path / MEETING).write_text('{"key": "k"}')
    with pytest.raises(DistillError, match="not a distributed-stage file"):
        join(tmp_path, wait_s=0)


def test_distill_join_outside_a_run_folder_exits_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sdk.cli", "join", str(tmp_path), "--wait", "0"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "manifest.json missing" in done.stderr
