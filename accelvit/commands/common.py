"""Flags and helpers shared by the CLI subcommands (one spelling for every command)."""

from __future__ import annotations

import argparse
import fnmatch
import os
import secrets
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from .. import distributed
from ..data import DATASETS, ON_BAD_IMAGE, DataConfig
from ..errors import ConfigError
from ..layout import CARD_FILE, ONNX_FILE, ONNX_REPORT, SPEC_FILE, TRAIN_METRICS_FILE, WEIGHTS_FILE
from ..train import TrainProgress

#: What accelvit writes into a model folder (``train``, ``prune``, ``export``): ``--overwrite`` replaces a folder
#: holding only these, never one holding anything else.
MODEL_FOLDER_FILES = (WEIGHTS_FILE, SPEC_FILE, CARD_FILE, TRAIN_METRICS_FILE, ONNX_FILE, ONNX_REPORT,
                      "model.unverified.onnx", "report.json", "layers_*.csv")


def add_data_args(p: argparse.ArgumentParser, dataset_required: bool = False) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default=None if dataset_required else "digits",
                   required=dataset_required, help="data set (default: digits, embedded)")
    g.add_argument("--data-dir", default=None, help="data set folder (cifar10, caltech101, folder)")
    g.add_argument("--download", action="store_true", help="let torchvision download cifar10/caltech101")
    g.add_argument("--img-size", type=check_img_size_arg, default=None, help="input size (default: the model's)")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--subset", type=int, default=None, help="use at most N training images")
    g.add_argument("--eval-subset", type=int, default=None, help="use at most N images in val and test")
    aug = g.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=None,
                     help="random crop/flip on the training split (default: on, except for digits)")
    aug.add_argument("--no-augment", dest="augment", action="store_false",
                     help="no random crop/flip on the training split")
    g.add_argument("--num-workers", type=int, default=0)
    g.add_argument("--on-bad-image", choices=ON_BAD_IMAGE, default=None,
                   help="folder data sets: stop and name damaged images (error, default) or leave them out (skip)")


def check_img_size_arg(text: str) -> int:
    """``--img-size``: a whole number of pixels within ``accelvit.experiment.config.check_img_size``'s bounds
    (8 to ACCELVIT_MAX_IMG_SIZE, default 512), else argparse's usage error with the reason."""
    from ..experiment.config import check_img_size

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels such as 224, got {text!r}") from None
    try:
        return check_img_size(value, "--img-size")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--img-size: ")) from None


def default_augment(dataset: str | None) -> bool:
    """Augmentation unless told: on for photos (CIFAR-10, Caltech-101, folders), off for the 8x8
    digits, where random crops cost accuracy (about 85-89% instead of 96% for swin_micro at 32 px
    after 20 epochs); the dashboard's form makes the same choice."""
    return (dataset or "digits") != "digits"


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--seed", type=int, default=0)


def data_config_from_args(args: argparse.Namespace, img_size: int, mean=None, std=None) -> DataConfig:
    return DataConfig(dataset=args.dataset, root=args.data_dir, img_size=img_size, batch_size=args.batch_size,
                      subset=args.subset, eval_subset=args.eval_subset,
                      augment=default_augment(args.dataset) if args.augment is None else args.augment,
                      num_workers=args.num_workers, download=args.download, seed=args.seed,
                      on_bad_image=getattr(args, "on_bad_image", None) or "error",
                      mean=mean, std=std).validate()


@contextmanager
def tqdm_progress(desc: str) -> Iterator:
    """A progress callback for ``fit`` drawing one tqdm bar over all steps."""
    bar: tqdm | None = None

    def callback(p: TrainProgress) -> None:
        nonlocal bar
        if not distributed.is_main():  # under torchrun one bar, rank 0's
            return
        if bar is None:
            bar = tqdm(total=p.total_steps, desc=desc, unit="step", dynamic_ncols=True)
        bar.n = p.global_step
        bar.set_postfix(epoch=f"{p.epoch}/{p.epochs}", loss=f"{p.loss:.3f}", acc=f"{p.accuracy:.3f}",
                        lr=f"{p.lr:.2e}", img_s=f"{p.images_per_s:.0f}", refresh=False)
        bar.refresh()

    try:
        yield callback
    finally:
        if bar is not None:
            bar.close()


class RunProgressBar:
    """One tqdm bar over a whole runner run (percent), fed its events: stage, training numbers, warnings."""

    def __init__(self, enabled: bool, desc: str = ""):
        self.enabled = enabled
        self.bar = None
        self.desc = desc

    def __call__(self, event: Any) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=100, desc=self.desc, unit="%", dynamic_ncols=True, file=sys.stderr,
                            bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
        kind = getattr(event, "kind", "")
        overall = getattr(event, "overall", None)
        if kind in ("stage_started", "progress"):
            self.bar.set_description_str(f"{self.desc} {event.stage}".strip(), refresh=False)
        if kind == "progress" and event.loss is not None:
            self.bar.set_postfix(loss=f"{event.loss:.3f}", acc=f"{event.accuracy:.3f}",
                                 img_s=f"{event.images_per_s:.0f}", refresh=False)
        elif kind == "stage_started":
            self.bar.set_postfix_str("", refresh=False)
        if kind == "warning":
            self.bar.write(f"warning: {event.message}")
        if overall is not None:
            self.bar.n = round(100 * overall, 1)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def add_output_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--out", required=True, help=f"a new (or empty) folder for {what}")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the model folder --out already holds (only a folder holding nothing but a saved "
                        "model's files; the new one takes its place in one rename when it is complete)")


def check_output_folder(out: Path, overwrite: bool, checkpoint: Path | None = None) -> None:
    """ConfigError unless ``out`` may receive a new model: absent or empty, or (``overwrite``) a folder holding
    only a saved model's files; never the ``checkpoint`` read, nor a folder containing it."""
    if checkpoint is not None:
        ck = checkpoint.expanduser().resolve()
        o = out.expanduser().resolve()
        if o == ck or o in ck.parents:
            raise ConfigError("--out", f"{out} {'is' if o == ck else 'contains'} the checkpoint folder "
                                       f"{checkpoint}; give another --out so the baseline is not overwritten.")
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise ConfigError("--out", f"{out} exists and is not a folder; give a new folder.")
    entries = sorted(e.name for e in out.iterdir())
    if not entries:
        return
    others = [e for e in entries if not any(fnmatch.fnmatchcase(e, pat) for pat in MODEL_FOLDER_FILES)
              or not (out / e).is_file() or (out / e).is_symlink()]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ConfigError("--out", f"{out} already holds other things than a saved model ({shown}); give a new "
                                   "or empty folder (nothing is deleted there, even with --overwrite).")
    if not overwrite:
        raise ConfigError("--out", f"{out} already holds a saved model ({', '.join(entries[:4])}"
                                   f"{', ...' if len(entries) > 4 else ''}); give a new folder, or add --overwrite "
                                   "to replace it.")


@contextmanager
def output_folder(out: Path, overwrite: bool, checkpoint: Path | None = None) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write into; when the block ends without an error it takes
    ``out``'s place (the old model folder, if ``overwrite`` allowed one, is removed after the swap), so
    ``out`` never holds half of a model. On an error the temporary folder goes and ``out`` is as it was."""
    out = out.expanduser()
    check_output_folder(out, overwrite, checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    tmp = out.parent / f".{out.name}.tmp-{token}"
    tmp.mkdir()
    try:
        yield tmp
        check_output_folder(out, overwrite, checkpoint)  # nothing else arrived there meanwhile
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{token}"
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if old is not None:
                os.replace(old, out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def follow_rank_0(cfg: Any) -> int:
    """A rank other than 0 under torchrun: run the same Experiment (its collectives pair with rank 0's) with no
    run store, no artifacts and no output; rank 0 records, saves and prints."""
    from ..experiment import Experiment

    Experiment(cfg).run()
    return 0
