"""The README's two commands are the ones that work: CI runs the test command, and the quick start generates."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from sora_cli.video import probe, read_metadata

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_ci_runs_the_readme_test_command():
    generate, test = quick_start_commands()
    assert "pytest" in test and "sora generate" in generate
    assert test in (ROOT / ".ci" / "run").read_text()


def test_quick_start_generates_with_the_embedded_model(tmp_path):
    generate, _ = quick_start_commands()
    args = shlex.split(generate.split("&& sora ", 1)[1])  # what runs after the install steps
    out = tmp_path / "quick.mp4"
    result = subprocess.run([sys.executable, "-m", "sora_cli", *args, "--out", str(out)], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = probe(out)
    assert (info.codec, info.pix_fmt, info.num_frames, info.fps) == ("h264", "yuv420p", 17, 8)
    assert read_metadata(out)["model"] == "sora-tiny"


def test_the_module_table_lists_every_module():
    """"How it works" names every module of the package (rows may shorten a path to its last folders)."""
    section = (ROOT / "README.md").read_text().split("## How it works", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `sora_cli/")]
    named = " ".join(row.split(" | ")[0] for row in rows)
    package = ROOT / "sora_cli"
    missing = [str(path.relative_to(package)) for path in sorted(package.rglob("*.py"))
               if not any(f"`{'/'.join(path.relative_to(package).parts[-k:])}`" in named or
                          f"`sora_cli/{'/'.join(path.relative_to(package).parts[-k:])}`" in named for k in (1, 2, 3))]
    assert missing == []
