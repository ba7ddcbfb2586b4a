"""Data sets and transforms: digits (embedded), cifar10, caltech101, any image folder.

One entry point, :func:`load_data`, returns train/val/test loaders, class names and the
input size. Every split is seeded and (where labels allow) stratified, and the split that
was used is returned so a run can record it.

- ``digits``: scikit-learn's ``load_digits`` (ships with the package, no network): 8x8
  grey images upsampled to RGB at ``img_size``.
- ``cifar10``: ``torchvision.datasets.CIFAR10``; the official test split is the test set and
  validation is carved from the training split. torchvision verifies the files' MD5 sums
  before it unpickles them, so only the official archive is ever unpickled.
- ``caltech101``: ``torchvision.datasets.Caltech101`` (category targets, BACKGROUND_Google
  excluded, grey images converted to RGB) with a seeded stratified split.
- ``folder``: any ``ImageFolder`` tree; ``train/`` and ``test/`` (or ``val/``) subfolders
  are used when present, otherwise a seeded stratified split of the whole tree.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from .errors import ConfigError, DataError, InputError, reject_unknown
from .images import FOLDER_IMAGE_FORMATS, SquareResize, check_image_file, find_bad_images, load_image, to_rgb8
from .utils import seed_everything

log = logging.getLogger(__name__)

DATASETS = ("digits", "cifar10", "caltech101", "folder")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_FOLDER = "cifar-10-batches-py"  # torchvision's CIFAR10.base_folder
CALTECH101_FOLDERS = ("caltech101", "101_ObjectCategories")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ON_BAD_IMAGE = ("error", "skip")
#: How many damaged files a message or a run's split record names (the count is always complete).
BAD_IMAGES_NAMED = 10


@dataclass
class DataConfig:
    """Which data set, and how to split, transform and batch it.

    Args:
        dataset: ``digits`` | ``cifar10`` | ``caltech101`` | ``folder``.
        root: folder holding the data (cifar10: the folder containing ``cifar-10-batches-py``;
            caltech101: the folder containing ``caltech101/101_ObjectCategories``; folder: the
            ImageFolder tree). Unused for digits.
        img_size: square input size the model sees.
        batch_size: training batch size (evaluation uses twice this).
        val_fraction: fraction held out for validation (of the training split where an
            official test split exists, else of everything).
        test_fraction: fraction held out for testing where no test split exists.
        subset: keep at most this many training images (stratified, seeded); None keeps all.
        eval_subset: keep at most this many images in each of val and test.
        augment: random crop (+ flip, except for digits) on the training split.
        num_workers: DataLoader worker processes.
        download: let torchvision download cifar10 / caltech101 into ``root`` (needs network).
        seed: seed of splits, subsets and shuffling.
        mean, std: normalisation; None uses the model's (see ``accelvit.models``) or ImageNet's.
        on_bad_image: what a ``folder`` data set does with an image that cannot be used (not an
            image, damaged, cut short, too large): ``error`` stops before training and names the
            files; ``skip`` leaves them out, counted and named in the run's split record. Every
            image the run uses is checked before training (header, ``verify()``, JPEGs decoded
            at 1/8 scale).
    """

    dataset: str = "digits"
    root: str | None = None
    img_size: int = 32
    batch_size: int = 64
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    subset: int | None = None
    eval_subset: int | None = None
    augment: bool = True
    num_workers: int = 0
    download: bool = False
    seed: int = 0
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    on_bad_image: str = "error"

    def validate(self) -> "DataConfig":
        if self.dataset not in DATASETS:
            raise ConfigError("dataset", f"unknown data set {self.dataset!r}; choose one of {', '.join(DATASETS)}.")
        if self.dataset == "folder" and not self.root:
            raise ConfigError("root", "the folder data set needs the path of an image folder tree.")
        if not isinstance(self.img_size, int) or self.img_size < 8:
            raise ConfigError("img_size", f"must be a whole number >= 8, got {self.img_size!r}.")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError("batch_size", f"must be a whole number >= 1, got {self.batch_size!r}.")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ConfigError(name, f"must be between 0 and 1 (exclusive), got {v!r}.")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("val_fraction", "val_fraction + test_fraction must leave something to train on.")
        for name in ("subset", "eval_subset"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(name, f"must be a whole number >= 1 or empty, got {v!r}.")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ConfigError("num_workers", f"must be >= 0, got {self.num_workers!r}.")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and len(v) != 3:
                raise ConfigError(name, f"needs three values (R, G, B), got {v!r}.")
        if self.std is not None and min(self.std) <= 0:
            raise ConfigError("std", "values must be positive.")
        if self.on_bad_image not in ON_BAD_IMAGE:
            raise ConfigError("on_bad_image", f"must be one of {', '.join(ON_BAD_IMAGE)} (stop and name the damaged "
                                              f"images, or leave them out and count them), got {self.on_bad_image!r}.")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("mean", "std"):
            if d[k] is not None:
                d[k] = list(d[k])
        if d["on_bad_image"] == "error":  # the default leaves older configs (and baseline cache keys) as they were
            del d["on_bad_image"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataConfig":
        reject_unknown(d, cls, "data.")
        d = dict(d)
        for k in ("mean", "std"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass
class DataBundle:
    train: DataLoader
    val: DataLoader
    test: DataLoader
    class_names: list[str]
    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    split: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ----------------------------------------------------------------------------- transforms

def make_transforms(img_size: int, mean: Sequence[float], std: Sequence[float], train: bool,
                    flip: bool = True) -> T.Compose:
    """PIL image -> normalised float tensor. Eval is deterministic; train adds crop/flip.

    The geometry is ``Resize(img_size)`` + ``CenterCrop(img_size)`` (short side scaled, middle kept),
    done in one bounded step by :class:`accelvit.images.SquareResize`.
    """
    ops: list[Any] = [T.Lambda(_to_rgb), SquareResize(img_size)]
    if train:
        ops.append(T.RandomCrop(img_size, padding=max(1, img_size // 8), padding_mode="reflect"))
        if flip:
            ops.append(T.RandomHorizontalFlip())
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


def _to_rgb(img: Image.Image) -> Image.Image:
    return to_rgb8(img)


class _Transformed(Dataset):
    """Applies a transform to items of a base data set (so train/val/test share one base)."""

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Any, targets: Sequence[int]):
        self.base, self.indices, self.transform = base, list(indices), transform
        self.targets = [int(targets[i]) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        img, y = self.base[self.indices[i]]
        return self.transform(img), int(y)


class _TensorImages(Dataset):
    """Images held as one uint8 tensor [N,3,H,W] (digits), transformed on the fly."""

    def __init__(self, images: torch.Tensor, targets: Sequence[int], indices: Sequence[int],
                 mean: Sequence[float], std: Sequence[float], train: bool, img_size: int):
        self.images, self.indices = images, list(indices)
        self.targets = [int(targets[i]) for i in self.indices]
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.crop = T.RandomCrop(img_size, padding=max(1, img_size // 8)) if train else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        x = self.images[self.indices[i]].float() / 255.0
        if self.crop is not None:
            x = self.crop(x)
        return (x - self.mean) / self.std, self.targets[i]


# ----------------------------------------------------------------------------- splitting

def stratified_split(targets: Sequence[int], fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices into len(fractions)+1 parts: the given fractions, then the rest.

    Stratified and seeded: part p gets exactly ``round(fractions[p] * N)`` items, spread over
    the classes in proportion to their sizes (largest-remainder rounding), drawn at random
    within each class.
    """
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(targets, return_counts=True)
    pools = {}
    for cls in classes:
        idx = np.flatnonzero(targets == cls)
        rng.shuffle(idx)
        pools[cls] = list(idx)
    n_total = len(targets)
    parts: list[list[int]] = []
    for frac in fractions:
        want = int(round(frac * n_total))
        exact = counts * frac
        quota = np.minimum(np.floor(exact).astype(int), [len(pools[c]) for c in classes])
        order = np.argsort(-(exact - np.floor(exact)), kind="stable")
        k = 0
        while quota.sum() < want and k < 10 * len(classes):
            c = order[k % len(classes)]
            if quota[c] < len(pools[classes[c]]):
                quota[c] += 1
            k += 1
        part: list[int] = []
        for c, q in zip(classes, quota):
            part.extend(pools[c][:q])
            pools[c] = pools[c][q:]
        parts.append(part)
    parts.append([i for c in classes for i in pools[c]])
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


def _cap(indices: np.ndarray, targets: Sequence[int], limit: int | None, seed: int) -> np.ndarray:
    """Keep at most ``limit`` indices, stratified and seeded."""
    if limit is None or limit >= len(indices):
        return indices
    t = np.asarray(targets)[indices]
    keep, _ = stratified_split(t, [limit / len(indices)], seed)
    return indices[keep]


# ----------------------------------------------------------------------------- sources

def _digits(cfg: DataConfig):
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = torch.from_numpy(d.images).float().div(16.0).unsqueeze(1)  # [N,1,8,8] in [0,1]
    imgs = torch.nn.functional.interpolate(imgs, size=(cfg.img_size, cfg.img_size), mode="bilinear",
                                           align_corners=False)
    imgs = (imgs.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return imgs, d.target.tolist(), [str(n) for n in d.target_names]


# ----------------------------------------------------------------------------- where the files are
def _cifar10_root(root: str | None) -> Path:
    return Path(root or "data/cifar10").expanduser()


def _caltech101_root(root: str | None) -> Path:
    return Path(root or "data").expanduser()


def _cifar10_hint(folder: Path) -> str:
    return (f"Put the extracted 'CIFAR-10 python version' archive in {folder} (so that {folder}/data_batch_1 "
            "exists), or enable download (needs network).")


def _caltech101_hint(cats: Path) -> str:
    return (f"Unpack Caltech-101 so that {cats}/<class>/image_0001.jpg exists (the layout "
            "torchvision.datasets.Caltech101 reads), or enable download (needs network).")


def folder_classes(root: str | Path) -> list[str]:
    """Class sub-folders of an image folder tree (of its ``train/`` when there is one), sorted."""
    p = Path(root).expanduser()
    tree = p / "train" if (p / "train").is_dir() else p
    return sorted(d.name for d in tree.iterdir() if d.is_dir() and not d.name.startswith("."))


#: Classes of the built-in data sets (a folder's are counted by :func:`num_classes_of`).
NUM_CLASSES = {"digits": 10, "cifar10": 10, "caltech101": 101}


def num_classes_of(dataset: str, root: str | None) -> int:
    """Number of classes without loading the data (folder trees are counted; 10 when unreadable)."""
    if dataset in NUM_CLASSES:
        return NUM_CLASSES[dataset]
    try:
        return max(len(folder_classes(root or "")), 1)
    except OSError:
        return 10


def missing_data_files(dataset: str, root: str | None, download: bool = False) -> str | None:
    """What is missing for ``dataset`` at ``root``, as a message for the user; None when it looks present.

    Looks at folders only (loads nothing): :func:`load_data` raises it as a DataError before
    loading, and the Experiment form shows it under the data folder field.
    """
    if dataset == "digits":
        return None
    if dataset == "cifar10":
        folder = _cifar10_root(root) / CIFAR10_FOLDER
        if download or (folder / "data_batch_1").exists():
            return None
        return f"CIFAR-10 not found: {folder}/data_batch_1 does not exist. {_cifar10_hint(folder)}"
    if dataset == "caltech101":
        cats = _caltech101_root(root).joinpath(*CALTECH101_FOLDERS)
        if download or cats.is_dir():
            return None
        return f"Caltech-101 not found: {cats} does not exist. {_caltech101_hint(cats)}"
    if dataset == "folder":
        if not root:
            return "Give the path of an image folder tree (<folder>/<class>/<image>.jpg)."
        p = Path(root).expanduser()
        if not p.is_dir():
            return f"Image folder not found: {p} does not exist or is not a folder. Expected {p}/<class>/<image>.jpg."
        if not folder_classes(p):
            tree = p / "train" if (p / "train").is_dir() else p
            return (f"{tree} is not an image folder tree: it has no class sub-folders. Expected "
                    f"{tree}/<class>/<image>.jpg with one sub-folder per class.")
        return None
    return f"Unknown data set {dataset!r}."


def _cifar10(cfg: DataConfig):
    from torchvision.datasets import CIFAR10

    root = _cifar10_root(cfg.root)
    folder = root / CIFAR10_FOLDER
    hint = _cifar10_hint(folder)
    try:
        train = CIFAR10(str(root), train=True, download=cfg.download)
        test = CIFAR10(str(root), train=False, download=False)
    except RuntimeError as exc:
        raise DataError(f"CIFAR-10 in {folder} is missing files or corrupted ({exc}). {hint}") from exc
    except OSError as exc:  # download failed (no network) and the like
        raise DataError(f"Could not download CIFAR-10 into {root}: {exc}. {hint}") from exc
    return train, list(train.targets), test, list(test.targets), list(train.classes)


def _caltech101(cfg: DataConfig):
    from torchvision.datasets import Caltech101

    root = _caltech101_root(cfg.root)
    cats = root.joinpath(*CALTECH101_FOLDERS)
    hint = _caltech101_hint(cats)
    try:
        ds = Caltech101(str(root), target_type="category", download=cfg.download)
    except RuntimeError as exc:
        raise DataError(f"Caltech-101 in {cats} is missing or corrupted ({exc}). {hint}") from exc
    except OSError as exc:
        raise DataError(f"Could not download Caltech-101 into {root}: {exc}. {hint}") from exc
    return ds, list(ds.y), list(ds.categories)


def _folder_image(path: str) -> Image.Image:
    """ImageFolder's loader: :func:`accelvit.images.load_image` (allowed formats, bounds, EXIF, 8-bit RGB);
    a file that fails is a DataError naming it (the scan before training finds such files; this one
    changed since, or was not scanned)."""
    try:
        return load_image(path, formats=FOLDER_IMAGE_FORMATS, verify=False)  # checked before training
    except InputError as exc:
        why = check_image_file(path) or f"cannot be used ({exc})"
        raise DataError(f"{path} {why}. Remove or replace it, or set on_bad_image to skip (--on-bad-image skip) to "
                        "leave such images out.") from None


def _image_folder(path: Path):
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(path), loader=_folder_image)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{path} is not an image folder tree ({exc}). Expected {path}/<class>/<image>.jpg "
                        f"with one sub-folder per class and images ending in {', '.join(IMAGE_EXTENSIONS)}.") from exc


# ----------------------------------------------------------------------------- checks before training
def _where(cfg: DataConfig) -> str:
    return f" in {Path(cfg.root).expanduser()}" if cfg.root and cfg.dataset != "digits" else ""


def _check_splits(cfg: DataConfig, classes: Sequence[str], train_t: Sequence[int],
                  parts: dict[str, np.ndarray]) -> None:
    """DataError unless train, val and test each hold an image (an empty one gives NaN metrics)."""
    sizes = {k: len(v) for k, v in parts.items()}
    empty = [k for k, n in sizes.items() if n == 0]
    if empty:
        have = ", ".join(f"{n} {k}" for k, n in sizes.items())
        raise DataError(f"The {cfg.dataset} data set{_where(cfg)} is too small to split: the {' and '.join(empty)} "
                        f"split{'s are' if len(empty) > 1 else ' is'} empty ({have} images). Training, validation and "
                        "test each need at least one image, or the metrics are not numbers. Add images (about "
                        f"{int(np.ceil(1 / min(cfg.val_fraction, cfg.test_fraction)))} per class or more), or give "
                        "the folder train/ and test/ sub-folders.")
    seen = {int(t) for t in np.asarray(train_t)[parts["train"]]}
    if len(seen) < len(classes):
        missing = [str(classes[i]) for i in range(len(classes)) if i not in seen]
        log.warning("%d of %d classes have no training image (%s): the model cannot learn them",
                    len(missing), len(classes), ", ".join(missing[:BAD_IMAGES_NAMED]))


def _drop_bad_images(cfg: DataConfig, train_base: Any, test_base: Any, parts: tuple[np.ndarray, ...],
                     split: dict[str, Any], tell: Callable[[float, str], None]) -> tuple[np.ndarray, ...]:
    """Check every image of the three splits before training (:func:`accelvit.images.check_image_file`).

    ``on_bad_image="error"``: DataError naming the files; ``"skip"``: the parts without them, and
    ``split["bad_images"]`` records how many were left out and names the first few.
    """
    bases = (train_base, train_base, test_base)
    paths = sorted({b.samples[i][0] for b, idx in zip(bases, parts) for i in idx})
    total = len(paths)
    tell(0.75, f"checking {total} images")

    def step(done: int, _total: int) -> None:
        tell(0.75 + 0.15 * done / max(total, 1), f"checking images: {done} of {total}")

    bad = find_bad_images(paths, progress=step, total=total)
    if not bad:
        return parts
    root = Path(cfg.root).expanduser()

    def rel(p: str) -> str:
        try:
            return str(Path(p).relative_to(root))
        except ValueError:
            return p

    named = [f"{rel(p)} {why}" for p, why in list(bad.items())[:BAD_IMAGES_NAMED]]
    more = f"; and {len(bad) - len(named)} more" if len(bad) > len(named) else ""
    if cfg.on_bad_image == "error":
        raise DataError(f"{len(bad)} of the {total} images in {root} cannot be used: " + "; ".join(named) + more
                        + ". Remove or replace them, or set on_bad_image to skip (--on-bad-image skip) to leave them "
                          "out and count them.")
    log.warning("leaving out %d of %d images in %s that cannot be used: %s%s", len(bad), total, root,
                "; ".join(named), more)
    split["bad_images"] = {"skipped": len(bad), "checked": total, "files": named}
    return tuple(np.array([i for i in idx if b.samples[i][0] not in bad], dtype=np.int64)
                 for b, idx in zip(bases, parts))


# ----------------------------------------------------------------------------- entry point

def load_data(cfg: DataConfig, progress: Callable[[float, str], None] | None = None) -> DataBundle:
    """Build train/val/test loaders for ``cfg`` (see the module docstring).

    ``progress(fraction, message)`` is told each step (checking, reading, splitting, loaders).
    """
    def tell(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    cfg.validate()
    tell(0.0, f"checking the {cfg.dataset} files")
    missing = missing_data_files(cfg.dataset, cfg.root, cfg.download)
    if missing:
        raise DataError(missing)
    tell(0.1, f"reading the {cfg.dataset} images")
    mean = tuple(cfg.mean) if cfg.mean is not None else (
        (0.5, 0.5, 0.5) if cfg.dataset == "digits" else IMAGENET_MEAN)
    std = tuple(cfg.std) if cfg.std is not None else (
        (0.5, 0.5, 0.5) if cfg.dataset == "digits" else IMAGENET_STD)
    split: dict[str, Any] = {"seed": cfg.seed, "dataset": cfg.dataset}

    # Each source gives the training base and targets, and the test base and targets when it
    # has its own test split (None: the test split is carved from the training base).
    test_base: Any = None
    test_t: list[int] | None = None
    test_name = "test"
    if cfg.dataset == "digits":
        train_base, train_t, classes = _digits(cfg)
    elif cfg.dataset == "cifar10":
        train_base, train_t, test_base, test_t, classes = _cifar10(cfg)
        test_name = "official test"
    elif cfg.dataset == "caltech101":
        train_base, train_t, classes = _caltech101(cfg)
    else:  # folder
        root = Path(cfg.root).expanduser()
        test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
        if (root / "train").is_dir() and test_dir is not None:
            train_base, test_base = _image_folder(root / "train"), _image_folder(test_dir)
            if test_base.classes != train_base.classes:
                raise DataError(f"{root}/train and {test_dir} have different class folders; they must match.")
            test_t = list(test_base.targets)
            test_name = f"{test_dir.name}/ folder"
        else:
            train_base = _image_folder(root / "train" if (root / "train").is_dir() else root)
        train_t, classes = list(train_base.targets), list(train_base.classes)
    if len(classes) < 2:
        raise DataError(f"The {cfg.dataset} data set{_where(cfg)} has {len(classes)} class"
                        f"{'' if len(classes) == 1 else 'es'} ({', '.join(map(str, classes)) or 'none'}); a classifier "
                        "needs at least 2 (one sub-folder per class, each holding its images). Every prediction of a "
                        "one-class model is right, so its accuracy would mean nothing.")

    tell(0.7, f"splitting {len(train_t)} images into train / val / test")
    if test_t is None:
        test_base, test_t = train_base, train_t
        test_i, val_i, train_i = stratified_split(train_t, [cfg.test_fraction, cfg.val_fraction], cfg.seed)
        split.update(method="stratified", test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction)
    else:
        val_i, train_i = stratified_split(train_t, [cfg.val_fraction], cfg.seed)
        test_i = np.arange(len(test_t))
        split.update(method=f"{test_name} split; stratified val from train", val_fraction=cfg.val_fraction)
    train_i = _cap(train_i, train_t, cfg.subset, cfg.seed)
    val_i = _cap(val_i, train_t, cfg.eval_subset, cfg.seed + 1)
    test_i = _cap(test_i, test_t, cfg.eval_subset, cfg.seed + 2)
    if cfg.dataset == "folder":  # every image the run will use, checked before any training
        train_i, val_i, test_i = _drop_bad_images(cfg, train_base, test_base, (train_i, val_i, test_i), split, tell)
    _check_splits(cfg, classes, train_t, {"train": train_i, "val": val_i, "test": test_i})

    def make(base: Any, idx: np.ndarray, targets: Sequence[int], train: bool) -> Dataset:
        train = train and cfg.augment
        if cfg.dataset == "digits":  # a uint8 image tensor, transformed on the fly
            return _TensorImages(base, targets, idx, mean, std, train=train, img_size=cfg.img_size)
        return _Transformed(base, idx, make_transforms(cfg.img_size, mean, std, train=train), targets)

    train_ds = make(train_base, train_i, train_t, True)
    val_ds = make(train_base, val_i, train_t, False)
    test_ds = make(test_base, test_i, test_t, False)

    split.update(train=len(train_ds), val=len(val_ds), test=len(test_ds))
    tell(0.9, "building the data loaders")
    gen = seed_everything(cfg.seed)
    # pinned host memory when a CUDA device can take the batches: then ``.to(device, non_blocking=True)`` overlaps
    # the copy with compute instead of being a plain synchronous copy
    common = dict(num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
                  pin_memory=torch.cuda.is_available())
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train_ds) > cfg.batch_size,
                              generator=gen, **common)
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size * 2, shuffle=False, **common)
    test_loader = DataLoader(test_ds, batch_size=cfg.batch_size * 2, shuffle=False, **common)
    tell(1.0, f"{len(train_ds)} training, {len(val_ds)} validation, {len(test_ds)} test images")
    return DataBundle(train=train_loader, val=val_loader, test=test_loader, class_names=list(classes),
                      input_size=(3, cfg.img_size, cfg.img_size), mean=mean, std=std, split=split)
