"""Ctrl-C during rk.fit, for real: a child process trains, the test sends it SIGINT, the child reports.

The loaders below print READY and then sleep at a chosen point, so the signal lands exactly there
(in the middle of an epoch's batches, or in the middle of validation).
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CHILD = textwrap.dedent('''
    import json, sys, time, warnings
    import torch, torch.nn as nn
    from recipe_kit.train import EarlyStopping, fit

    where = sys.argv[1]                       # "train": Ctrl-C mid-epoch; "val": mid-validation
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(8, 2))
    x = torch.randn(32, 1, 4, 4)
    y = (x.flatten(1).sum(1) > 0).long()
    epoch_losses = [1.0, 0.5, 0.7, 0.8, 0.9, 0.9]  # scripted: epoch 2 is the best

    class Batches:                            # 4 batches an epoch; sleeps where the signal must land
        def __init__(self, stall_epoch, stall_batch):
            self.stall, self.epoch = (stall_epoch, stall_batch), 0
        def __iter__(self):
            self.epoch += 1
            for i in range(4):
                if (self.epoch, i) == self.stall:
                    print("READY", flush=True)
                    time.sleep(60)
                yield x[8 * i: 8 * i + 8], y[8 * i: 8 * i + 8]

    def step(model, batch, loss_fn, optimizer):
        epoch = len(seen) // 4 + 1
        seen.append(epoch)
        with torch.no_grad():
            model[1].weight.fill_(epoch)      # the weights say which epoch they come from
        return epoch_losses[epoch - 1]

    seen = []
    train, val = (Batches(4, 2), None) if where == "train" else (Batches(0, 0), Batches(3, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = fit(model, train, nn.CrossEntropyLoss(), None, 6, train_step=step, val_loader=val, progress=False,
                early_stopping=EarlyStopping(patience=10, metric="train_loss"))
    print(json.dumps({"stopped": h["stopped"], "interrupted": h["interrupted"], "epoch": h["epoch"],
                      "steps": len(h["loss"]), "training": [m.training for m in model.modules()],
                      "weight": model[1].weight.unique().tolist(),
                      "warnings": [str(w.message) for w in caught]}))
''')


def interrupted_fit(where, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.Popen([sys.executable, str(script), where], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "READY", child.stderr.read()
        child.send_signal(signal.SIGINT)       # what Ctrl-C in a terminal (or Jupyter's interrupt) sends
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_ctrl_c_mid_epoch_returns_the_history_and_restores_the_best_weights(tmp_path):
    r = interrupted_fit("train", tmp_path)
    assert r["interrupted"] is True
    assert r["stopped"].startswith("interrupted (KeyboardInterrupt) in epoch 4 after step 14")
    assert r["epoch"] == [1, 2, 3] and r["steps"] == 14          # 3 epochs of 4 steps, 2 steps of epoch 4
    assert "Restored the weights of epoch 2" in r["stopped"] and r["weight"] == [2.0]
    assert all(r["training"])                                     # every module back in train mode
    assert any(w.startswith("interrupted") for w in r["warnings"])


def test_ctrl_c_during_validation_leaves_every_module_in_train_mode(tmp_path):
    r = interrupted_fit("val", tmp_path)
    assert r["interrupted"] is True and r["epoch"] == [1, 2] and r["steps"] == 12
    assert r["stopped"].startswith("interrupted (KeyboardInterrupt) in epoch 3 after step 12")
    assert all(r["training"]), r["training"]                      # evaluate restored them in its finally
    assert r["weight"] == [2.0], "epoch 3's weights were replaced by the best epoch's (2)"
