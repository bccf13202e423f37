"""The settings table is the one declaration of every option: each row is taken by exactly the commands and batch
modes it names and refused by the others, its bounds are enforced wherever it is given, and what it marks for
the metadata is in the video's metadata. A new row needs only an example value here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from safetensors.torch import save_file

from conftest import random_lora, save_tiny_wan_experts
from test_quantize import wan_layout_of
from sora_cli.batch_file import read_batch
from sora_cli.cli import app
from sora_cli.settings import BATCH, MODES, NAMES, SETTINGS, check, of_command, of_mode
from test_cli import call_sora

COMMANDS = (*MODES, BATCH)
# A valid value of every setting, as typed (paths are made in `workspace`).
EXAMPLES = dict(prompt="a red fox", negative="blurry", seed=7, model="{model}", size="64x48", aspect="16:9",
                resolution="480p", frames=9, seconds=1.5, fps=8, steps=2, guidance=3.0, guidance_2=2.0, shift=2.0,
                sampler="euler", passes=1, image="{image}", last_image="{image}", loop=True, fit="pad", backward=True, duration=3.0,
                strength=0.4, out="x.mp4", metadata="json", overwrite=True, device="cpu", dtype="bf16", offload="model", vae_tiling="on",
                offline=True, json=True, quiet=True, out_dir="{dir}", repeat=2, batch_size="2", force=True,
                dry_run=True, mode="generate", video="{clip}", lora="{lora}:0.5", lora_2="{lora}",
                cache="first-block", cache_threshold=0.1, attention="sdpa", compile=True,
                transformer="{transformer}", transformer_2="{transformer_2}", quantize="fp8", preview=True,
                preview_webp=True, storyboard="shots.json")
# What each command needs besides the setting under test (its arguments, and for batch its folder).
BASE = dict(generate=["a fox"], extend=["clip.mp4"], loop=["clip.mp4"], connect=["a.mp4", "b.mp4"],
            edit=["clip.mp4", "--prompt", "x"], batch=["p.txt", "--out-dir", "out"])


def test_every_setting_has_an_example_and_one_row_per_command_and_mode():
    assert set(NAMES) == set(EXAMPLES)
    for place in COMMANDS:
        for attr in ("commands", "lines"):
            names = [s.name for s in SETTINGS if place in getattr(s, attr)]
            assert len(names) == len(set(names)), (place, attr, names)


def parses(command: str, args: list[str]) -> bool:
    """Whether the command's command line takes `args` (Click's parser alone: nothing runs)."""
    click_command = typer.main.get_command(app).commands[command]
    try:
        click_command.make_context(command, list(args), resilient_parsing=False)
    except Exception as e:
        assert "No such option" in str(e) or "Got unexpected extra argument" in str(e), e
        return False
    return True


def typed(setting) -> list[str]:
    if setting.kind is bool:
        return [setting.option]
    return [setting.option, str(EXAMPLES[setting.name]).format(model="m", image="i.png", dir="d", clip="c.mp4",
                                                                lora="l.safetensors", transformer="t.gguf",
                                                                transformer_2="t2.gguf")]


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_takes_exactly_its_settings(command):
    options = {s.name for s in SETTINGS if not s.argument and s.commands}
    for name in options:
        rows = [s for s in SETTINGS if s.name == name and s.commands]
        mine = of_command(command).get(name)
        if mine is not None and mine.argument:
            continue  # `generate`'s prompt is its argument
        args = typed(mine or rows[0])
        assert parses(command, BASE[command] + args) == (mine is not None), (command, name)


@pytest.fixture
def workspace(tmp_path, tiny_wan_dir):
    for name in ("clip.mp4", "a.mp4", "i.png", "style.safetensors"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def line(mode: str, name: str, workspace: Path) -> dict:
    fields = {"mode": mode} if mode != "generate" else {}
    if mode in ("generate", "edit") and name != "prompt":
        fields["prompt"] = "x"
    if mode != "generate" and name != "video":
        fields["video"] = ["clip.mp4", "a.mp4"] if mode == "connect" else "clip.mp4"
    value = EXAMPLES[name]
    if name in ("image", "last_image"):
        value = "i.png"
    elif name in ("lora", "lora_2"):
        value = "style.safetensors:0.5"
    elif name == "video":
        value = ["clip.mp4", "a.mp4"] if mode == "connect" else "clip.mp4"
    elif name == "mode":
        value = mode
    elif name == "storyboard":  # a line gives the shots themselves
        value = [{"prompt": "a fox", "seconds": 1}]
    return fields | {name: value}


@pytest.mark.parametrize("mode", MODES)
def test_each_batch_mode_takes_exactly_its_settings(mode, workspace):
    for name in NAMES:
        fields = line(mode, name, workspace)
        file = workspace / "p.jsonl"
        file.write_text(json.dumps(fields) + "\n")
        errors = read_batch(str(file), workspace / "out").errors
        taken = name in of_mode(mode)
        assert (errors == []) == taken, (mode, name, errors)
        if not taken:
            reasons = (f"does not take '{name}'", f"unknown field '{name}'", "goes with mode 'generate'",
                       "needs a mode")
            assert any(reason in errors[0][1] for reason in reasons), errors


def outside(limit) -> list:
    """Values just outside the limit, and values that are no number at all."""
    return [limit.low if limit.above else limit.low - (1 if limit.whole else 0.5), limit.high + 1,
            float("nan"), float("inf")]


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.limit], ids=lambda s: f"{s.name}-{s.commands}")
def test_every_bound_holds_on_the_command_line_and_in_lines(setting, workspace, capsys, tiny_wan_dir):
    for value in outside(setting.limit):
        with pytest.raises(Exception, match="is not allowed"):
            check(setting, value)
        for command in setting.commands:
            code, out, err = call_sora(capsys, command, *BASE[command], setting.option, str(value),
                                       "--model", str(tiny_wan_dir))
            assert code == 2 and setting.option in err and err.startswith("error:"), (command, value, err)
        for mode in setting.lines:
            if value != value or value in (float("inf"),):
                continue  # JSON has no NaN or infinity: refused as such by test_batch
            file = workspace / "p.jsonl"
            file.write_text(json.dumps(line(mode, setting.name, workspace) | {setting.name: value}) + "\n")
            errors = read_batch(str(file), workspace / "out").errors
            assert errors and "not allowed" in errors[0][1], (mode, value, errors)


def recorded(setting, value) -> dict:
    """The metadata a setting marks, for the value given (a LoRA's record also has its file's hash)."""
    parsed = check(setting, value)
    if setting.name in ("lora", "lora_2"):
        return {setting.metadata[0]: [dict(file=path.name, scale=scale) for path, scale in parsed]}
    if setting.name in ("transformer", "transformer_2"):  # recorded by file name
        return {setting.metadata[0]: parsed.name}
    values = parsed if isinstance(parsed, tuple) else (parsed,)
    return dict(zip(setting.metadata, values))


@pytest.fixture(scope="module")
def experts(tmp_path_factory) -> Path:
    """A tiny two-expert model (so that --guidance-2 and --lora-2 are taken) whose window is long enough for every
    edit, and a LoRA for it."""
    folder = save_tiny_wan_experts(tmp_path_factory.mktemp("settings") / "experts", num_frames=17)
    save_file(random_lora(folder), str(folder.parent / "style.safetensors"))
    for name in ("transformer", "transformer_2"):  # each expert as a single file in Wan's own names
        save_file(wan_layout_of(folder / name), str(folder.parent / f"{name}.safetensors"))
    return folder


@pytest.mark.parametrize("command", MODES)
def test_what_is_marked_is_in_the_metadata(command, experts, tmp_path, capsys):
    tiny_experts_dir = experts
    clip = tmp_path / "clip.mp4"
    code, _, err = call_sora(capsys, "generate", "a clip", "--model", str(tiny_experts_dir), "--size", "48x32",
                             "--frames", "9", "--steps", "1", "--out", str(clip))
    assert code == 0, err
    args, expected = ["--prompt", "x"] if command == "edit" else [], {}
    for s in of_command(command).values():
        if not s.metadata:
            continue
        value = EXAMPLES[s.name]
        if isinstance(value, str):
            value = value.format(model=tiny_experts_dir, lora=tiny_experts_dir.parent / "style.safetensors",
                                 transformer=tiny_experts_dir.parent / "transformer.safetensors",
                                 transformer_2=tiny_experts_dir.parent / "transformer_2.safetensors")
        args += [str(value)] if s.argument else [s.option] if s.kind is bool else [s.option, str(value)]
        expected |= recorded(s, [value] if s.multiple else value)
    inputs = [str(clip)] * (2 if command == "connect" else 1 if command != "generate" else 0)
    code, out, err = call_sora(capsys, command, *inputs, *args, "--json", "--out", str(tmp_path / "made.mp4"))
    assert code == 0, err
    record = json.loads(out)
    for key in ("lora", "lora_2"):  # each LoRA's hash is recorded as well
        record[key] = [{k: v for k, v in r.items() if k != "sha256"} for r in record.get(key) or []] or None
    assert expected and {k: record.get(k) for k in expected} == expected
