"""An offline Kaggle bundle: one folder to upload as a Kaggle dataset and run in a notebook with no internet.

    python -m kit.bundle --run-dir RUN --out DIR [--test-images N --time-limit 9h] [--python-version 3.10 3.11 3.12]
                         [--gpu] [--int8 | --fp16]                                            (or --onnx FILE)

DIR/model/ensemble.onnx   the exported graph (from the run, or the file given); with --int8 or --fp16 its twin
DIR/wheels/               the torch-free runtime as a wheel (nfnet-kit-predict: kit/core and kit/runtime; its `cpu` and
                          `gpu` extras pull onnxruntime or onnxruntime-gpu) and the wheels of its dependencies, for
                          every --python-version and --platform
DIR/requirements.txt      what to install from DIR/wheels, pinned per Python (environment markers) to the versions
                          downloaded for it: onnxruntime at the version tested here, the others at most at theirs
DIR/requirements-gpu.txt  the same with onnxruntime-gpu (--gpu)
DIR/predict.py            checks the running Python, then reads a (read-only) competition folder and writes the
                          submission; CUDA when onnxruntime has it, and it says which provider ran
DIR/settings.json         {"layout": the competition's file and folder names, from the run; "pythons"; "platforms"}
DIR/README.md             how to install and run it, for which Pythons and platforms
DIR/budget.md             images/s measured here, whether the hidden test set fits the time limit, what to drop

In the notebook:
    pip install --no-index --find-links DIR/wheels -r DIR/requirements.txt
    python DIR/predict.py --data-dir /kaggle/input/COMPETITION --out /kaggle/working/submission.csv
"""
from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Optional

import numpy as np

from kit import __version__
from kit.core.atomic import atomic_dir, write_text
from kit.core.entry import number, option, parse_duration, parse_request
from kit.core.errors import KitError
from kit.core.paths import Outputs, chosen_twin, twin_path
from kit.deploy.twins import twin_of
from kit.core.table import Layout
from kit.store.rundir import RunDir
from kit.runtime.predictor import Predictor

log = logging.getLogger(__name__)
PACKAGE = "nfnet-kit-predict"
# the shipped runtime: these folders of kit/, whole (tests/test_layout.py keeps them torch-free at import)
RUNTIME_PACKAGES = ("core", "runtime")
DEPENDENCIES = ("numpy", "pillow", "tqdm")                 # and onnxruntime: -cpu or -gpu, by the extra
RUNTIMES = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}

PREDICT_SCRIPT = '''"""Predict a competition's test images with the bundled graph and write the submission (no network, no
PyTorch). Install first: pip install --no-index --find-links wheels -r requirements.txt (requirements-gpu.txt on a
GPU notebook); README.md says more."""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUNDLE = json.loads((HERE / "settings.json").read_text())

if __name__ == "__main__":
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if running not in BUNDLE["pythons"]:                   # checked before anything of the kit is imported
        print(f"error: this bundle holds wheels for Python {', '.join(BUNDLE['pythons'])}; this notebook runs Python "
              f"{running}. Rebuild it with python -m kit.bundle ... --python-version {running}", file=sys.stderr)
        sys.exit(2)
    from kit.core.entry import main_guard
    from kit.runtime.submission import main
    main_guard(lambda: main(HERE / "model" / "ensemble.onnx", BUNDLE["layout"]))
'''

README = """# Offline prediction bundle

Built by nfnet-kit {version} for Python {pythons} on {platforms}. Upload this folder as a dataset; below, BUNDLE
is where it is mounted (e.g. /kaggle/input/my-bundle).

CPU notebook:

    pip install --no-index --find-links {name}/wheels -r {name}/requirements.txt
    python {name}/predict.py --data-dir /kaggle/input/COMPETITION --out /kaggle/working/submission.csv
{gpu}
predict.py checks the running Python first and stops naming the bundle's ones if it is not among them; it uses
CUDA when onnxruntime has it and says which provider ran. budget.md: the time the test set needs.
"""
GPU_README = """
GPU notebook (onnxruntime-gpu; it needs the notebook's CUDA and cuDNN):

    pip install --no-index --find-links {name}/wheels -r {name}/requirements-gpu.txt
    python {name}/predict.py --data-dir /kaggle/input/COMPETITION --out /kaggle/working/submission.csv
"""


def build_predictor_wheel(out: Path) -> Path:
    """A wheel of the shipped runtime only (kit/core, kit/runtime), depending on onnxruntime, numpy, pillow and tqdm."""
    kit_dir = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        (src / "kit").mkdir()
        shutil.copy(kit_dir / "__init__.py", src / "kit" / "__init__.py")
        for package in RUNTIME_PACKAGES:
            shutil.copytree(kit_dir / package, src / "kit" / package, ignore=shutil.ignore_patterns("__pycache__"))
        write_text(src / "pyproject.toml", f"""[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{PACKAGE}"
version = "{__version__}"
description = "The torch-free predictor of nfnet-kit: exported ensembles -> Kaggle submissions"
requires-python = ">=3.9"
dependencies = [{", ".join(f'"{d}"' for d in DEPENDENCIES)}]

[project.optional-dependencies]
cpu = ["onnxruntime"]
gpu = ["onnxruntime-gpu"]

[project.scripts]
kit-predict = "kit.runtime.predict:cli"

[tool.setuptools.packages.find]
include = ["kit", "kit.*"]
""")
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                                 "-w", str(out), str(src)], capture_output=True, text=True)
        if result.returncode:
            raise KitError(f"building the predictor wheel failed: {result.stderr.strip()[-500:]}")
    return next(out.glob("nfnet_kit_predict-*.whl"))


def tested(name: str) -> str:
    """The version installed here: the one the tests ran with."""
    return importlib_metadata.version(name)


# glibc generations a Kaggle notebook (Ubuntu 22.04, glibc 2.35) runs; pip picks the newest a package offers
KAGGLE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def download_wheels(out: Path, platforms: list[str], python_version: str, runtime: str = "onnxruntime") -> dict:
    """The wheels of `runtime` (at the version tested here) and of the predictor's dependencies (at most the
    versions tested here, the newest that exist for that Python) for one Python; returns {name: version}."""
    wanted = [f"{runtime}=={tested('onnxruntime')}", *(f"{d}<={tested(d)}" for d in DEPENDENCIES if d != "tqdm"),
              f"tqdm=={tested('tqdm')}"]
    digits = python_version.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(out), *wanted,
           "--python-version", python_version, "--implementation", "cp", "--abi", f"cp{digits}"]
    for tag in platforms:
        cmd += ["--platform", tag]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        raise KitError(f"pip download of {runtime} and the predictor's dependencies for Python {python_version} on "
                       f"{', '.join(platforms)} failed (is PyPI reachable? does {runtime} {tested('onnxruntime')} "
                       f"exist for them?): {result.stderr.strip().splitlines()[-1][-400:] if result.stderr.strip() else ''}")
    names = {runtime, *DEPENDENCIES}
    versions = {}
    for wheel in out.glob("*.whl"):
        name, version, python_tag, abi_tag = wheel.name.split("-")[0], wheel.name.split("-")[1], \
            wheel.name.split("-")[-3], wheel.name.split("-")[-2]
        name = name.lower().replace("_", "-")
        fits = python_tag == f"cp{digits}" or python_tag.startswith("py") or \
            (abi_tag == "abi3" and python_tag.startswith("cp") and int(python_tag[2:]) <= int(digits))
        if name in names and fits:
            versions[name] = version
    return versions


def requirements(extra: str, pins: dict[str, dict[str, str]]) -> str:
    """requirements.txt for every Python of the bundle: the predictor wheel with its onnxruntime extra, and each
    dependency pinned per Python (environment markers) to the version downloaded for it."""
    pythons = sorted(pins, key=lambda v: tuple(map(int, v.split("."))))
    lines = [f"# Python {', '.join(pythons)}; install with: pip install --no-index --find-links wheels -r THIS_FILE",
             f"{PACKAGE}[{extra}]=={__version__}"]
    for name in sorted({n for p in pins.values() for n in p}):
        for python in pythons:
            if name in pins[python]:
                lines.append(f'{name}=={pins[python][name]} ; python_version == "{python}"')
    return "\n".join(lines) + "\n"


def measure(graph: Path, rounds: int = 3, batch: int = 32) -> tuple[float, dict]:
    """Images/s of the graph's onnxruntime session on this machine (decode excluded), and its metadata."""
    predictor = Predictor(graph, "cpu")
    size = predictor.meta.img_size
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    predictor.predict_images(images)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        predictor.predict_images(images)
        times.append(time.perf_counter() - t)
    return batch / float(np.median(times)), predictor.meta.__dict__


def budget(rate: float, meta: dict, test_images: int | None, hours: float | None) -> str:
    """Whether predicting the hidden test set fits the limit, and what each option would save."""
    members = meta.get("members") or [{"folds": meta["folds"], "views": ["identity"] + (["hflip"] if meta["tta"] else [])}]
    folds = sum(len(m["folds"]) for m in members)
    views = max(len(m.get("views", ["identity"])) for m in members)
    lines = ["# Prediction budget\n", f"Measured on {platform.processor() or platform.machine()} ({platform.platform()}), "
             f"CPU provider: **{rate:.1f} images/s** for {folds} fold model(s) x {views} TTA view(s) at "
             f"{meta['img_size']}px (decoding runs in parallel threads and is not included). Kaggle's machines differ; "
             f"scale by their speed.\n"]
    if not test_images or not hours:
        lines.append("Pass --test-images N and --time-limit (e.g. 9h) to check the hidden test set against the limit.")
        return "\n".join(lines) + "\n"
    needed = test_images / rate / 3600
    fits = needed <= hours
    lines.append(f"{test_images} test images need about **{needed:.2f} h** of the {hours:g} h limit: "
                 f"**{'fits' if fits else 'does NOT fit'}** ({100 * needed / hours:.0f} % of the limit).\n")
    lines += ["| option | estimated time | fits |", "|---|---:|---|"]
    options = [("as bundled", 1.0)]
    if views > 1:
        options.append(("no TTA (infer.py --no-tta)", 1.0 / views))
    for keep in range(folds - 1, 0, -1):
        options.append((f"{keep} of {folds} fold models (infer.py --folds ...)", keep / folds))
    options.append(("int8 graph (infer.py --int8; 1.0-1.8x faster on CPUs, bench/RESULTS.md)", 1 / 1.5))
    for name, factor in options:
        lines.append(f"| {name} | {needed * factor:.2f} h | {'yes' if needed * factor <= hours else 'no'} |")
    if not fits:
        cheapest = next((name for name, factor in options if needed * factor <= hours), None)
        lines.append(f"\nDrop first: {cheapest or 'more than any single option; combine them, or use a GPU notebook'}.")
    return "\n".join(lines) + "\n"


def make_bundle(out: Path, *, onnx: Path | None = None, run_dir: Path | None = None, test_images: int | None = None,
                hours: float | None = None, platforms: list[str] | None = None,
                python_versions: list[str] | None = None, gpu: bool = False, twin: str | None = None) -> dict:
    """Build the bundle under a temporary name and rename it to `out` at the end: a failure leaves nothing. `twin`
    (int8 or fp16): the bundle ships that twin of the graph (kit.export.twin) as its model/ensemble.onnx."""
    if (onnx is None) == (run_dir is None):
        raise KitError("pass exactly one of --run-dir (export its ensemble) and --onnx (bundle this file)")
    pythons = sorted(set(python_versions or [f"{sys.version_info.major}.{sys.version_info.minor}"]),
                     key=lambda v: tuple(map(int, v.split("."))))
    bad = [v for v in pythons if not re.fullmatch(r"3\.\d{1,2}", v)]
    if bad:
        raise KitError(f"--python-version {bad[0]!r} is not a Python 3 version like 3.11")
    guard = Outputs().reads(onnx).protects(run_dir, "the run dir")
    guard.check("--out", out, "folder")
    if onnx is not None:
        meta = Predictor(onnx, "cpu").meta      # a file that is no kit graph is refused before anything is built
        if twin:
            onnx = twin_of(onnx, twin, meta)
    with atomic_dir(out) as tmp:
        result = _build(tmp, onnx, run_dir, test_images, hours, list(platforms or KAGGLE_PLATFORMS), pythons, gpu,
                        twin)
    log.info(f"bundle: {out} ({result['bytes'] / 2**20:.0f} MB: ensemble.onnx, {result['wheels']} wheels for Python "
             f"{', '.join(pythons)}{' (CPU and GPU onnxruntime)' if gpu else ''} incl. {result['wheel']})\n"
             f"{result['budget']}")
    return result


def _build(out: Path, onnx, run_dir, test_images, hours, platforms: list[str], pythons: list[str], gpu: bool,
           twin: str | None) -> dict:
    (out / "model").mkdir()
    (out / "wheels").mkdir()
    graph = out / "model" / "ensemble.onnx"
    layout = Layout()
    if run_dir is not None:
        from kit.export.build import export
        export(run_dir, out=graph, twin=twin)
        if twin:                                # the twin is the bundle's model; the fp32 graph stays out of it
            os.replace(twin_path(graph, twin), graph)
        layout = Layout.of(RunDir(run_dir).config())
    else:
        shutil.copy(onnx, graph)
    rate, meta = measure(graph)
    wheel = build_predictor_wheel(out / "wheels")
    for extra in ("cpu", "gpu") if gpu else ("cpu",):
        pins = {v: download_wheels(out / "wheels", platforms, v, RUNTIMES[extra]) for v in pythons}
        write_text(out / ("requirements.txt" if extra == "cpu" else "requirements-gpu.txt"), requirements(extra, pins))
    write_text(out / "predict.py", PREDICT_SCRIPT)
    write_text(out / "settings.json", json.dumps({"layout": asdict(layout), "pythons": pythons,
                                                  "platforms": platforms}, indent=1) + "\n")
    write_text(out / "README.md", README.format(version=__version__, pythons=", ".join(pythons), name="BUNDLE",
                                                platforms=", ".join(platforms),
                                                gpu=GPU_README.format(name="BUNDLE") if gpu else ""))
    report = budget(rate, meta, test_images, hours)
    write_text(out / "budget.md", report)
    return {"rate": rate, "wheel": wheel.name, "budget": report, "wheels": len(list((out / "wheels").iterdir())),
            "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()), "pythons": pythons}


@dataclass
class BundleRequest:
    """kit.bundle's flags, as one value (kit.core.entry.add_flags makes the flags from it)."""
    run_dir: Optional[str] = option(None, "export this run's ensemble into the bundle")
    onnx: Optional[str] = option(None, "bundle this exported file instead")
    out: str = option(None, "a new folder for the bundle", required=True)
    test_images: Optional[int] = option(None, "how many images the hidden test set has", parse=number(1, None, int))
    time_limit: Optional[float] = option(None, "the competition's notebook time limit, e.g. 9h or 540m (a bare "
                                               "number: hours)", parse=lambda text: parse_duration(text, "h") / 3600)
    platform: list[str] = option([], "pip platform tag of the target machine (repeatable; default: "
                                     f"{' '.join(KAGGLE_PLATFORMS)})")
    python_version: list[str] = option([], "the Pythons of the target machines, e.g. 3.10 3.11 3.12 (default: this "
                                           "one's)", nargs="+", metavar="X.Y")
    gpu: bool = option(False, "also onnxruntime-gpu for those Pythons (requirements-gpu.txt)")
    int8: bool = option(False, "ship the graph's int8 twin (infer.py --int8; for CPUs)")
    fp16: bool = option(False, "ship the graph's fp16 twin (infer.py --fp16; for GPUs)")


def main() -> None:
    r = parse_request(BundleRequest, description=__doc__)
    make_bundle(Path(r.out), onnx=Path(r.onnx) if r.onnx else None, run_dir=Path(r.run_dir) if r.run_dir else None,
                test_images=r.test_images, hours=r.time_limit, platforms=r.platform or None,
                python_versions=r.python_version or None, gpu=r.gpu, twin=chosen_twin(r.int8, r.fp16))
