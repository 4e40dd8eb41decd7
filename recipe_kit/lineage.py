"""Decision records: what each notebook chose, with the evidence, so the next notebook starts from it.

Why: the recipe is one lineage, changed one thing at a time. Notebook 2 measures the skeleton,
3 picks the architecture, 4 the regularizers, 5 the optimizer and schedule, and 6 trains exactly
that configuration longer. Each writes a small, human-readable JSON file, runs/decisions/NN_DATASET.json;
the next notebook reads it. A notebook run alone (no record in runs/ yet) falls back to the record
committed with the course (recipe_kit/decisions/), made by the committed run on Fashion-MNIST, and
says so.
"""
import json
from pathlib import Path

import torch

from .models import course_cnn, vgg_cnn

COMMITTED = Path(__file__).resolve().parent / "decisions"
REFERENCE_DATASET = "fashion-mnist"   # the dataset of the committed records and notebook outputs


def record_path(stage, dataset, runs_dir):
    return Path(runs_dir) / "decisions" / f"{stage:02d}_{str(dataset).replace('/', '_')}.json"


def save(stage, dataset, runs_dir, decision, evidence, note=""):
    """Write notebook `stage`'s decision (what the next notebooks use) and its evidence (the measured
    numbers that justified it). Returns the path."""
    record = {"stage": stage, "dataset": str(dataset), "decision": decision, "evidence": evidence, "note": note}
    json.dumps(record)   # fails here, with the offending value, if something is not plain JSON
    path = record_path(stage, dataset, runs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def load(stage, dataset, runs_dir, verbose=True):
    """Notebook `stage`'s record for `dataset`: from runs_dir if that notebook has run here, else the
    committed Fashion-MNIST record (its decision, made by the course's own run), with a message."""
    path = record_path(stage, dataset, runs_dir)
    if not path.exists():
        committed, reference = COMMITTED / path.name, COMMITTED / f"{stage:02d}_{REFERENCE_DATASET}.json"
        path = committed if committed.exists() else reference
        if not path.exists():
            raise FileNotFoundError(f"No decision record of notebook {stage}: run notebook {stage} first "
                                    f"(it writes {record_path(stage, dataset, runs_dir)}).")
        if verbose:
            print(f"notebook {stage} has not run here for {dataset!r}: using the committed record "
                  f"{path.name} (run notebook {stage} to make your own).")
    return json.loads(path.read_text())


def describe(record):
    """One line per decided item: what a learner reads at the top of the next notebook."""
    lines = [f"notebook {record['stage']} decided ({record['dataset']}):"]
    lines += [f"  {key}: {value}" for key, value in record["decision"].items()]
    return "\n".join(lines)


def build(decision, in_channels, num_classes, image_size, dropout=None):
    """The network a decision names ({"architecture": "vgg_cnn" or "course_cnn", "width", "stages"}),
    freshly initialized; dropout defaults to the decision's own (0 if it has none)."""
    dropout = decision.get("dropout", 0.0) if dropout is None else dropout
    if decision["architecture"] == "vgg_cnn":
        return vgg_cnn(in_channels, num_classes, width=decision["width"], stages=decision["stages"],
                       image_size=image_size, dropout=dropout)
    if decision["architecture"] == "course_cnn":
        return course_cnn(in_channels, num_classes, width=decision["width"], image_size=image_size, dropout=dropout)
    raise ValueError(f"architecture {decision['architecture']!r}: expected 'vgg_cnn' or 'course_cnn'.")


def optimizer(params, setting):
    """The optimizer a notebook-5 setting names ({"optimizer": "SGD" or "Adam", "lr", "weight_decay"}):
    SGD with Nesterov momentum 0.9, or AdamW (Adam when weight_decay is 0)."""
    if setting["optimizer"] == "SGD":
        return torch.optim.SGD(params, lr=setting["lr"], momentum=0.9, nesterov=True,
                               weight_decay=setting["weight_decay"])
    if setting["optimizer"] == "Adam":
        return torch.optim.AdamW(params, lr=setting["lr"], weight_decay=setting["weight_decay"])
    raise ValueError(f"optimizer {setting['optimizer']!r}: expected 'SGD' or 'Adam'.")


def warm_up_share(pct_start, total_steps):
    """pct_start, raised so the warm-up spans at least 2 steps: OneCycleLR divides by zero when it spans
    exactly one (a run of 4 steps at 0.25, e.g. one epoch of a small dataset)."""
    return min(1.0, max(pct_start, 2 / total_steps))


def schedule(optimizer, setting, total_steps):
    """The learning-rate schedule a setting names, stepped once per step: one-cycle (warm-up for
    pct_start of the steps to the peak setting["lr"], then anneal), or None for a constant rate."""
    if setting["schedule"] == "one-cycle":
        if total_steps < 3:
            raise ValueError(f"a one-cycle schedule needs at least 3 steps (warm-up and annealing), got "
                             f"total_steps={total_steps}: train longer, or use schedule 'constant'.")
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=setting["lr"], total_steps=total_steps,
                                                   pct_start=warm_up_share(setting.get("pct_start", 0.25), total_steps))
    if setting["schedule"] == "constant":
        return None
    raise ValueError(f"schedule {setting['schedule']!r}: expected 'one-cycle' or 'constant'.")
