"""A built wheel carries the embedded model: installed apart from this checkout, it finds sora-tiny and generates.

The wheel is installed without its dependencies into a folder of its own, which comes first on the path, so the
run uses the installed package (checked), never the checkout, with this environment's torch and the rest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from sora_cli.video import probe, read_metadata

ROOT = Path(__file__).resolve().parent.parent


def test_a_wheel_installs_the_default_model_and_generates(tmp_path):
    # Built from a copy: a build writes build/ and *.egg-info into the tree it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "runs",
                                                                "*.egg-info", "__pycache__", ".pytest_cache"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("sora_cli-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"sora_cli/weights/sora-tiny/model_index.json",
            "sora_cli/weights/sora-tiny/transformer/diffusion_pytorch_model.safetensors",
            "sora_cli/weights/sora-tiny/vae/diffusion_pytorch_model.safetensors"} <= names

    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    work = tmp_path / "work"  # not the checkout, so `-m sora_cli` cannot pick the source tree up from the cwd
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1")
    where = subprocess.run([sys.executable, "-c", "import sora_cli; print(sora_cli.__file__)"], capture_output=True,
                           text=True, cwd=work, env=env)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    out = work / "quick.mp4"
    result = subprocess.run([sys.executable, "-m", "sora_cli", "generate", "a red circle moving right on a black "
                             "background", "--seed", "1", "--steps", "2", "--out", str(out), "--quiet"],
                            capture_output=True, text=True, cwd=work, env=env)
    assert result.returncode == 0, result.stderr
    assert probe(out).num_frames == 17 and read_metadata(out)["model"] == "sora-tiny"
