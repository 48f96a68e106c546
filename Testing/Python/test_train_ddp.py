"""Training runs unchanged under torchrun: two CPU processes (gloo) keep identical weights while drawing different
batches, and only rank 0 writes checkpoints and exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    from safetensors.torch import save_file
    torch.set_num_threads(1)
    sys.path.insert(0, {testdir!r})
    from conftest import tiny_train_config as tiny_config
    from MedGANLogic.train import trainer_class, distributed as ddp
    family, out = sys.argv[1], sys.argv[2]
    ctx = ddp.init_distributed("cpu")
    trainer = trainer_class(family)(tiny_config(family, steps=4), out + "/run", ctx=ctx, progress=False)
    batch = trainer.data.batch(0, 0, ctx.rank, ctx.world_size)
    trainer.fit()
    if ctx.is_main:
        trainer.export(out + "/models")
    state = {{f"{{n}}.{{k}}": v.contiguous() for n in trainer.nets for k, v in trainer.net(n).state_dict().items()}}
    state["first_batch"] = next(iter(batch.values()))
    save_file(state, f"{{out}}/rank{{ctx.rank}}.safetensors")
    json.dump({{"backend": ctx.backend, "world": ctx.world_size}}, open(f"{{out}}/rank{{ctx.rank}}.json", "w"))
    ddp.shutdown(ctx)
""")


def test_two_process_gloo_ddp(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT.format(testdir=os.path.dirname(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), "cyclegan", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert json.load(open(tmp_path / "rank0.json")) == {"backend": "gloo", "world": 2}
    assert not torch.equal(r0.pop("first_batch"), r1.pop("first_batch"))  # each rank trains on its own slices
    assert r0.keys() == r1.keys()
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # gradients were averaged: the replicas never diverged
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny-ab", "tiny-ba"]
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_000004.safetensors"]
