"""fit and its helpers on a tiny real Fashion-MNIST subset: each test trains for a fraction of a second."""
import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import recipe_kit as rk
from recipe_kit.loader import channel_stats
from recipe_kit.models import course_cnn, init_final_bias_to_log_prior, logistic_regression, mlp, vgg_cnn
from recipe_kit.train import EarlyStopping, default_train_step, evaluate, fit, predict, snapshot_predictions


@pytest.fixture(scope="module")
def data():
    train = rk.load_dataset("fashion-mnist", "train")
    x_train, y_train = train.images[:512], train.labels[:512]
    x_val, y_val = train.images[512:768], train.labels[512:768]
    mean, std = channel_stats(x_train)
    return dict(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, mean=mean, std=std)


def loaders(data, seed=0, batch_size=64):
    train = rk.BatchLoader(data["x_train"], data["y_train"], batch_size, seed=seed, mean=data["mean"], std=data["std"])
    val = rk.BatchLoader(data["x_val"], data["y_val"], 128, shuffle=False, mean=data["mean"], std=data["std"])
    return train, val


def train_cnn(data, seed=0, epochs=3, lr=3e-3, **kwargs):
    torch.manual_seed(seed)
    model = course_cnn(width=8)
    train, val = loaders(data, seed)
    history = fit(model, train, nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=lr), epochs,
                  val_loader=val, progress=False, **kwargs)
    return model, history


def test_fit_learns_and_reports_history(data):
    _, h = train_cnn(data)
    assert h["step"] == list(range(1, 25)) and len(h["loss"]) == 24        # 512 / 64 = 8 steps per epoch
    assert h["epoch"] == [1, 2, 3] and h["epoch_step"] == [8, 16, 24]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "throughput", "data_wait_share"):
        assert len(h[key]) == 3, key
    assert h["loss"][0] == pytest.approx(math.log(10), abs=0.3)           # untrained: about uniform
    assert h["val_loss"][-1] < h["val_loss"][0] < h["loss"][0]
    assert h["val_acc"][-1] > 0.5 and 0 < h["train_acc"][-1] <= 1        # chance is 0.1
    assert all(0 <= share <= 1 for share in h["data_wait_share"])
    assert all(t > 0 for t in h["throughput"])
    assert h["stopped"] == "finished 3 epochs."


def test_same_seed_same_losses_other_seed_differs(data):
    _, a = train_cnn(data, seed=1, epochs=1)
    _, b = train_cnn(data, seed=1, epochs=1)
    _, c = train_cnn(data, seed=2, epochs=1)
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-6)
    assert c["loss"] != pytest.approx(a["loss"], abs=1e-3)


def test_nan_learning_rate_stops_with_a_message(data):
    model = course_cnn(width=8)
    train, _ = loaders(data)
    with pytest.warns(UserWarning, match="loss became nan"):
        h = fit(model, train, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=float("nan")), 3,
                progress=False)
    assert h["stopped"].startswith("loss became nan at step 2: lower the learning rate")
    assert len(h["loss"]) == 2 and math.isfinite(h["loss"][0]) and math.isnan(h["loss"][1])
    assert h["epoch"] == [1]


def test_max_steps_stops_mid_epoch(data):
    _, h = train_cnn(data, epochs=5, max_steps=10)
    assert len(h["loss"]) == 10 and h["epoch"] == [1, 2] and h["epoch_step"] == [8, 10]
    assert h["stopped"] == "reached max_steps=10 (epoch 2)."


def scripted_fit(losses_per_epoch, early_stopping):
    """fit a Linear whose weights hold the epoch number, with a step that reports scripted losses."""
    model = nn.Linear(4, 2)
    batches = [(torch.randn(3, 4), torch.tensor([0, 1, 0]))] * 2     # 2 steps per epoch, a plain list works
    steps = []

    def step(model, batch, loss_fn, optimizer):
        steps.append(1)
        epoch = (len(steps) + 1) // 2
        with torch.no_grad():
            model.weight.fill_(epoch)
        return losses_per_epoch[epoch - 1]

    h = fit(model, batches, None, None, len(losses_per_epoch), train_step=step, early_stopping=early_stopping,
            progress=False)
    return model, h


def test_early_stopping_stops_and_restores_best_weights():
    losses = [1.0, 0.5, 0.7, 0.8, 0.1, 0.1]
    model, h = scripted_fit(losses, EarlyStopping(patience=2, metric="train_loss"))
    assert h["epoch"] == [1, 2, 3, 4] and h["train_loss"] == pytest.approx(losses[:4])
    assert h["stopped"].startswith("early stopping after epoch 4: train_loss did not improve")
    assert "Restored the weights of epoch 2" in h["stopped"]
    assert torch.all(model.weight == 2)
    assert math.isnan(h["train_acc"][0])                                # the step returned no logits
    model, h = scripted_fit(losses, EarlyStopping(patience=2, metric="train_loss", restore_best=False))
    assert torch.all(model.weight == 4)
    model, h = scripted_fit(losses, EarlyStopping(patience=2, metric="train_loss", min_delta=0.6))
    assert h["epoch"] == [1, 2, 3]                                      # 0.5 < 1.0 - 0.6 is false


def test_early_stopping_on_val_loss_and_its_errors(data):
    model = logistic_regression(784, 10)                                 # no BatchNorm: lr=0 changes nothing
    train, val = loaders(data)
    h = fit(model, train, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.0), 10, val_loader=val,
            early_stopping=EarlyStopping(patience=2), progress=False)
    assert h["epoch"] == [1, 2, 3] and h["val_loss"][0] == pytest.approx(h["val_loss"][2], abs=1e-5)
    with pytest.raises(ValueError, match="no val_loader"):
        fit(model, train, nn.CrossEntropyLoss(), None, 2, early_stopping=EarlyStopping(), progress=False)
    with pytest.raises(ValueError, match="metric='loss'"):
        fit(model, train, nn.CrossEntropyLoss(), None, 2, early_stopping=EarlyStopping(metric="loss"), progress=False)


def test_callbacks_and_snapshot_predictions(data):
    train, val = loaders(data)
    x_fixed = next(iter(val))[0][:8]                                     # (8, 1, 28, 28)
    calls = []

    def spy(step, model, history):
        calls.append((step, model.training, history["stopped"] is not None))

    torch.manual_seed(0)
    model = course_cnn(width=8)
    h = fit(model, train, nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=3e-3), 2,
            callbacks=[snapshot_predictions(x_fixed, every=5), spy], every=3, progress=False)
    assert [c[0] for c in calls] == [0, 3, 6, 9, 12, 15, 16]             # step 0, every 3, and the end
    assert all(training for _, training, _ in calls)                     # the snapshot restored train mode
    assert [done for *_, done in calls] == [False] * 6 + [True]
    snaps = h["snapshots"]
    assert [s["step"] for s in snaps] == [0, 15, 16]                     # called at 0,3,..: multiples of 5 and the end
    assert all(s["probs"].shape == (8, 10) for s in snaps)
    assert torch.allclose(snaps[-1]["probs"].sum(1), torch.ones(8), atol=1e-5)
    assert torch.allclose(snaps[-1]["probs"], predict(model, x_fixed), atol=1e-6)  # taken in eval mode


def test_tensorboard_writes_scalars(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    train_cnn(data, epochs=1, tensorboard_dir=tmp_path / "run")
    files = list((tmp_path / "run").glob("events.out.tfevents.*"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert len(events.Scalars("train/loss_per_step")) == 8
    assert [e.step for e in events.Scalars("epoch/val_loss")] == [8]


def test_dataloader_and_batchloader_give_the_same_training(data):
    mean, std = data["mean"][0], data["std"][0]
    x = (data["x_train"].float() / 255 - mean) / std                    # what BatchLoader computes
    dataloader = DataLoader(TensorDataset(x, data["y_train"]), batch_size=64, shuffle=False)
    batchloader = rk.BatchLoader(data["x_train"], data["y_train"], 64, shuffle=False, mean=(mean,), std=(std,))
    histories = []
    for loader in (dataloader, batchloader):
        torch.manual_seed(0)
        model = course_cnn(width=8)
        histories.append(fit(model, loader, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.05),
                             1, val_loader=loader, progress=False))
    assert histories[0]["loss"] == pytest.approx(histories[1]["loss"], abs=1e-5)
    assert histories[0]["val_acc"] == pytest.approx(histories[1]["val_acc"])


def test_evaluate_and_predict_agree(data):
    model, _ = train_cnn(data, epochs=1)
    _, val = loaders(data)
    loss, acc = evaluate(model, val, nn.CrossEntropyLoss())
    probs = predict(model, val)                                          # (256, 10)
    assert probs.shape == (256, 10) and torch.allclose(probs.sum(1), torch.ones(256), atol=1e-5)
    assert acc == pytest.approx((probs.argmax(1) == data["y_val"]).float().mean().item())
    assert loss == pytest.approx(nn.functional.nll_loss(probs.log(), data["y_val"]).item(), abs=1e-4)
    x_val = torch.cat([x for x, _ in val])
    assert torch.allclose(predict(model, x_val, batch_size=100), probs, atol=1e-6)
    assert model.training                                                # both restored the mode
    with pytest.raises(ValueError, match="shuffle=False"):
        predict(model, loaders(data)[0])
    with pytest.raises(ValueError, match="normalized float"):
        predict(model, data["x_val"])


def test_fit_rejects_bad_arguments(data):
    model = course_cnn(width=8)
    train, _ = loaders(data)
    with pytest.raises(ValueError, match="epochs=0"):
        fit(model, train, nn.CrossEntropyLoss(), None, 0)
    one_shot = iter([next(iter(train))])
    with pytest.raises(ValueError, match="no batches in epoch 2"):
        fit(model, one_shot, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.01), 2, progress=False)


def test_vgg_cnn_stages_shapes_and_learns():
    assert vgg_cnn()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    three = vgg_cnn(in_channels=3, num_classes=5, width=4, stages=3, image_size=32)
    assert three(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    convs = [m for m in three if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 4, 8, 8, 16, 16] and all(c.bias is None for c in convs)
    assert three[-3].in_features == 16 * 4 * 4                          # 32 -> 16 -> 8 -> 4 after three pools
    assert vgg_cnn(stages=3)[-3].in_features == 64 * 3 * 3              # 28 -> 14 -> 7 -> 3 (pools floor)
    with pytest.raises(ValueError, match="stages=5"):
        vgg_cnn(stages=5, image_size=28)
    torch.manual_seed(0)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    model = vgg_cnn(width=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = [default_train_step(model, (x, y), nn.CrossEntropyLoss(), optimizer)[0] for _ in range(30)]
    assert losses[-1] < 0.2 * losses[0], "it fits one batch: every layer is wired to the next"


def test_models_shapes_and_log_prior_bias():
    assert course_cnn()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert course_cnn(in_channels=3, num_classes=5, width=4, image_size=32)(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    assert mlp(784, 10, hidden=(32, 16), dropout=0.1)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert logistic_regression(784, 10)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="divisible by 4"):
        course_cnn(image_size=30)

    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)                 # imbalanced: 90% / 9% / 1%
    model = mlp(4, 3, hidden=(8,))
    priors = init_final_bias_to_log_prior(model, labels, 3)
    assert priors.tolist() == pytest.approx([0.9, 0.09, 0.01])
    with torch.no_grad():
        model[-1].weight.zero_()                                        # logits = bias alone
    loss = nn.functional.cross_entropy(model(torch.randn(100, 4)), labels).item()
    entropy = -(priors * priors.log()).sum().item()
    assert loss == pytest.approx(entropy, abs=1e-5) and loss < math.log(3) / 2
    with pytest.raises(ValueError, match="num_classes=4"):
        init_final_bias_to_log_prior(model, labels, 4)


def test_scheduler_steps_once_per_optimization_step_and_lr_is_recorded(data):
    torch.manual_seed(0)
    model = course_cnn(width=8)
    train, _ = loaders(data)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=2 * len(train))
    h = fit(model, train, nn.CrossEntropyLoss(), optimizer, 2, scheduler=scheduler, progress=False)
    expected = torch.optim.lr_scheduler.OneCycleLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1),
                                                   max_lr=0.1, total_steps=2 * len(train))
    lrs = []
    for _ in range(2 * len(train)):
        lrs.append(expected.get_last_lr()[0])
        expected.optimizer.step()
        expected.step()
    assert h["lr"] == pytest.approx(lrs) and len(h["lr"]) == len(h["loss"]) == 16
    assert h["lr"][0] < max(h["lr"]) and h["lr"][-1] < h["lr"][0]     # warm up, then anneal
    _, plain = train_cnn(data, epochs=1)
    assert plain["lr"] == [3e-3] * 8                                    # no scheduler: constant


def test_course_cnn_dropout_keeps_initial_weights_and_is_off_in_eval():
    torch.manual_seed(0)
    plain = course_cnn(width=4)
    torch.manual_seed(0)
    dropped = course_cnn(width=4, dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) for m in dropped) == 2
    assert [p.tolist() for p in plain.parameters()] == [p.tolist() for p in dropped.parameters()]
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(plain.eval()(x), dropped.eval()(x))


def test_mixed_precision_wrapper_matches_float32_and_trains(data):
    torch.manual_seed(0)
    model = course_cnn(width=8)
    x = torch.randn(4, 1, 28, 28)
    reference = model.eval()(x)
    fast = rk.MixedPrecision(model).eval()
    out = fast(x)
    assert out.dtype == torch.float32 and out.shape == (4, 10)
    assert torch.allclose(out, reference, atol=0.1)                    # bfloat16 keeps ~3 significant digits
    assert all(p.dtype == torch.float32 for p in fast.parameters())    # weights stay float32
    assert set(fast.model.state_dict()) == set(course_cnn(width=8).state_dict())
    train, val = loaders(data)
    fast.train()
    h = fit(fast, train, nn.CrossEntropyLoss(), torch.optim.AdamW(fast.parameters(), lr=3e-3), 3, val_loader=val,
            progress=False)
    assert h["val_acc"][-1] > 0.5                                      # chance is 0.1
    assert isinstance(rk.models.bf16_is_fast("cpu"), bool) and rk.models.bf16_is_fast("meta") is False


def test_divergence_to_nan_puts_back_the_last_finite_weights(data):
    torch.manual_seed(0)
    model = mlp(784, 10, hidden=(64,))                                   # the repro: SGD(lr=1e3) on an MLP
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, val = loaders(data)
    with pytest.warns(UserWarning, match="weights from before training, the last finite ones"):
        h = fit(model, train, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=1e3), 3,
                val_loader=val, progress=False, diverge_factor=None)     # None: only nan/inf stops it
    assert h["stopped"].startswith("loss became nan at step")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert h["epoch"] == [1] and math.isnan(h["val_acc"][0])            # no accuracy of a broken model
    assert model.training and not h["interrupted"]


def test_exploding_loss_without_nan_is_caught(data):
    torch.manual_seed(0)
    model = course_cnn(width=8)                                          # BatchNorm keeps the loss finite for long
    train, _ = loaders(data)
    with pytest.warns(UserWarning, match="loss exploded to .* at step"):
        h = fit(model, train, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=1e3, momentum=0.9), 3,
                progress=False)
    assert all(math.isfinite(v) for v in h["loss"])                      # caught before any nan
    assert h["loss"][-1] > 1e4 * h["loss"][0] and max(h["loss"][:-1]) <= 1e4 * h["loss"][0]
    assert "over 10000 times the first step's" in h["stopped"]
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


def test_non_finite_batchnorm_statistics_with_a_finite_loss_are_caught():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))] * 2
    steps = []

    def step(model, batch, loss_fn, optimizer):                          # epoch e leaves weights == e; epoch 3 breaks BN
        steps.append(1)
        epoch = (len(steps) + 1) // 2
        with torch.no_grad():
            model[1].weight.fill_(epoch)
            if epoch == 3:
                model[2].running_var.fill_(float("inf"))
        return 1.0

    with pytest.warns(UserWarning, match="BatchNorm statistics became inf/nan in epoch 3"):
        h = fit(model, batches, None, None, 5, train_step=step, progress=False)
    assert h["epoch"] == [1, 2, 3] and "weights from the end of epoch 2" in h["stopped"]
    assert torch.all(model[1].weight == 2) and torch.isfinite(model[2].running_var).all()


def test_divergence_with_early_stopping_restores_the_best_epoch():
    with pytest.warns(UserWarning, match="loss became nan at step 7"):
        model, h = scripted_fit([1.0, 0.5, 0.7, float("nan")], EarlyStopping(metric="train_loss"))
    assert "weights from the end of epoch 3" in h["stopped"] and "Restored the weights of epoch 2" in h["stopped"]
    assert torch.all(model.weight == 2)


def test_unavailable_or_misspelled_devices_say_what_to_pass(data):
    model = nn.Linear(4, 2)
    batches = [(torch.randn(3, 4), torch.tensor([0, 1, 0]))]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda', but PyTorch sees no CUDA GPU here.*device='cpu'"):
            fit(model, batches, nn.CrossEntropyLoss(), None, 1, device="cuda", progress=False)
        with pytest.raises(ValueError, match="device='cuda:0', but PyTorch sees no CUDA GPU"):
            rk.BatchLoader(data["x_val"], data["y_val"], device="cuda:0")
        with pytest.raises(ValueError, match="prefer='cuda'"):
            rk.pick_device("cuda")
    else:  # on a GPU machine: a GPU number that is not there
        bad = f"cuda:{torch.cuda.device_count()}"
        with pytest.raises(ValueError, match=f"device='{bad}', but this machine has"):
            fit(model, batches, nn.CrossEntropyLoss(), None, 1, device=bad, progress=False)
    with pytest.raises(ValueError, match="device='gpu' is not a device name.*'cuda'"):
        evaluate(model, batches, nn.CrossEntropyLoss(), device="gpu")
    with pytest.raises(ValueError, match="device=0: pass a device name"):
        predict(model, torch.randn(3, 4), device=0)
    with pytest.raises(ValueError, match="diverge_factor=0.5"):
        fit(model, batches, nn.CrossEntropyLoss(), None, 1, diverge_factor=0.5)
    assert rk.pick_device("cpu") == torch.device("cpu") and rk.check_device("cpu") == torch.device("cpu")
