"""The wheel folder that bench/gpu_check.sh installs from on a GPU machine with no package registry.

    .venv/bin/python bench/gpu_wheels.py                       # -> shared/wheels (make gpu-wheels)
    .venv/bin/python bench/gpu_wheels.py --dest /tmp/wheels --python 3.12

The GPU machine has torch (a CUDA build) and transformers already; what the GPU tests and
bench/bench_sizes.py import must be installable there offline. The folder gets ROOTS' dependency
closure, each package at the version installed here (the one the tests pass with), as wheels for
each ``--python`` version (a pure-Python wheel is the same file for all), except torch, triton and
the CUDA libraries (the machine's own stay; a pin in gpu_check.sh keeps pip from touching them) and
EXCLUDE. ``requirements.txt`` in the folder names the roots with the project's version specifiers,
so ``pip install --no-index --find-links DIR -r DIR/requirements.txt`` installs only what the
machine lacks or has too old (transformers 4 -> 5, say).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]

# What the @pytest.mark.gpu tests and bench_sizes.py import (tools.diffusion, tools.base: pydantic).
ROOTS = ("diffusers", "accelerate", "transformers", "safetensors", "pydantic", "pillow", "numpy", "pytest")
# The machine's torch stack stays as it is; numpy comes with it on every CUDA image we know of (and
# is the largest wheel: 16 MB per Python version). Add it back with --include numpy.
EXCLUDE = {"torch", "triton", "numpy", "setuptools", "pip"}
EXCLUDE_PREFIXES = ("nvidia-", "cuda-")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64")


def project_specifiers() -> dict[str, str]:
    """name -> requirement string, from pyproject.toml's dependencies and test extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + list(project.get("optional-dependencies", {}).get("test", []))
    return {canonicalize_name(Requirement(r).name): r for r in reqs}


def closure(roots: list[str], python: str, exclude: set[str]) -> dict[str, str]:
    """name -> pinned requirement (``name==installed``, or the bare requirement when it is not
    installed here, e.g. a backport only older Pythons need), for the environment of ``python``."""
    env = {"python_version": python, "python_full_version": f"{python}.0", "extra": ""}
    pinned: dict[str, str] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in pinned or name in exclude or name.startswith(EXCLUDE_PREFIXES):
            continue
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pinned[name] = str(Requirement(f"{req.name}{req.specifier}"))
            continue
        pinned[name] = f"{name}=={dist.version}"
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            if sub_req.marker is None or sub_req.marker.evaluate(env):  # extras' requirements say extra == "x"
                todo.append(sub_req)
    return pinned


def download(pins: list[str], python: str, dest: Path) -> bool:
    """``pip download`` the wheels of ``pins`` (no dependencies) for CPython ``python`` on x86-64 Linux."""
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
           "--only-binary=:all:", "--implementation=cp", f"--python-version={python}",
           *[f"--platform={p}" for p in PLATFORMS], "--dest", str(dest), *pins]
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=REPO / "shared" / "wheels")
    parser.add_argument("--python", nargs="+", default=["3.11", "3.12", "3.13"],
                        help="Python versions of the GPU machine (compiled wheels differ per version; askdraw needs >= 3.11)")
    parser.add_argument("--include", nargs="*", default=[], help="also carry these excluded packages (e.g. numpy)")
    args = parser.parse_args()
    exclude = EXCLUDE - {canonicalize_name(n) for n in args.include}
    specs = project_specifiers()
    roots = [specs.get(canonicalize_name(r), r) for r in ROOTS]
    args.dest.mkdir(parents=True, exist_ok=True)
    missing: list[str] = []
    for python in args.python:
        pins = sorted(closure(roots, python, exclude).values())
        print(f"==> Python {python}: {len(pins)} packages", file=sys.stderr)
        if download(pins, python, args.dest):
            continue
        # Some version installed here needs a newer Python (httpx2 2.16 needs 3.11): one by one, the
        # same version where it exists for this Python, else the newest that does.
        for pin in pins:
            bare = re.split(r"[=<>!~]", pin, maxsplit=1)[0]
            if not download([pin], python, args.dest) and not download([bare], python, args.dest):
                missing.append(f"{bare} (Python {python})")
    if missing:
        print(f"no wheel found for: {', '.join(missing)}", file=sys.stderr)
    # The roots, without what the machine keeps; pip picks the folder's wheels only where needed.
    keep = [r for r in roots if canonicalize_name(Requirement(r).name) not in exclude]
    (args.dest / "requirements.txt").write_text(
        "# bench/gpu_wheels.py: what bench/gpu_check.sh installs (only what the machine lacks)\n"
        + "\n".join(re.sub(r"\s+", "", r) for r in keep) + "\n")
    wheels = sorted(args.dest.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 1024 ** 2
    print(f"{len(wheels)} wheels, {size:.1f} MiB in {args.dest}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
