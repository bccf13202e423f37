"""Parity of sora_cli.sampling with the diffusers schedulers as Wan 2.1 configures them."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor

from sora_cli.sampling import (
    EulerSolver,
    SamplerConfig,
    UniPCSolver,
    add_noise,
    flow_sigmas,
    frame_noise,
    make_solver,
    sample,
)

diffusers = pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler  # noqa: E402

STEPS = [1, 2, 3, 10, 50]
SHIFTS = [1.0, 3.0, 5.0]
SAMPLERS = ["unipc", "euler"]
# float32 UniPC differs from the reference only by rounding (we form the coefficients in
# float64); measured max abs error 1.9e-6 over these grids with |x| up to ~3
TOL = dict(rtol=1e-5, atol=1e-5)


def wan_unipc(shift: float = 3.0) -> UniPCMultistepScheduler:
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        solver_order=2,
        solver_type="bh2",
        predict_x0=True,
        lower_order_final=True,
        final_sigmas_type="zero",
        num_train_timesteps=1000,
    )


def reference(sampler: str, shift: float):
    if sampler == "unipc":
        return wan_unipc(shift)
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def fake_velocity(x: Tensor, t: Tensor) -> Tensor:
    # depends non-linearly on x and on t, so a wrong step index or coefficient shows up
    return torch.tanh(x) * (t / 1000) + 0.1 * x


def start_latents(dtype: torch.dtype = torch.float32, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 3, 4, 4, generator=g).to(dtype)  # (batch, channels, frames, h, w)


def reference_trajectory(scheduler, x: Tensor, begin: int = 0, replace=None) -> list[Tensor]:
    """x before every step and after the last one, stepping the diffusers scheduler."""
    if begin:
        scheduler.set_begin_index(begin)
    xs = []
    for i, t in enumerate(scheduler.timesteps[begin:], start=begin):
        if replace is not None:
            x = replace(x, i)
        xs.append(x)
        x = scheduler.step(fake_velocity(x, t), t, x).prev_sample
    return xs + [x]


def our_trajectory(sampler: str, x: Tensor, sigmas: Tensor, timesteps: Tensor, **kw) -> list[Tensor]:
    xs = []

    def velocity_fn(x: Tensor, t: Tensor, i: int) -> Tensor:
        assert t.dtype == timesteps.dtype and t == timesteps[i]
        xs.append(x)
        return fake_velocity(x, t)

    return xs + [sample(velocity_fn, x, sigmas, timesteps, sampler, **kw)]


def assert_trajectories_close(ours: list[Tensor], ref: list[Tensor], exact: bool) -> None:
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.dtype == b.dtype
        if exact:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, **TOL)


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", STEPS)
def test_schedule_matches_diffusers(sampler: str, shift: float, n: int) -> None:
    ref = reference(sampler, shift)
    ref.set_timesteps(n)
    sigmas, timesteps = flow_sigmas(n, shift, sampler)
    assert sigmas.shape == (n + 1,) and timesteps.shape == (n,)
    assert sigmas.dtype == ref.sigmas.dtype and timesteps.dtype == ref.timesteps.dtype
    assert torch.equal(sigmas, ref.sigmas)
    assert torch.equal(timesteps, ref.timesteps)
    assert sigmas[-1] == 0 and bool((sigmas[1:] < sigmas[:-1]).all())


def test_timestep_dtypes_follow_the_reference() -> None:
    # the transformer is conditioned on integers under UniPC and on floats under Euler
    assert flow_sigmas(10, 3.0, "unipc")[1].dtype == torch.int64
    assert flow_sigmas(10, 3.0, "euler")[1].dtype == torch.float32


def test_schedule_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_steps"):
        flow_sigmas(0, 3.0, "unipc")
    with pytest.raises(ValueError, match="ddim"):
        flow_sigmas(10, 3.0, "ddim")
    with pytest.raises(ValueError, match="ddim"):
        make_solver("ddim", flow_sigmas(10, 3.0, "unipc")[0])


# --------------------------------------------------------------------------- trajectories


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", STEPS)
def test_trajectory_matches_diffusers(sampler: str, shift: float, n: int) -> None:
    x = start_latents()
    ref_sched = reference(sampler, shift)
    ref_sched.set_timesteps(n)
    ref = reference_trajectory(ref_sched, x)
    ours = our_trajectory(sampler, x, *flow_sigmas(n, shift, sampler))
    # Euler is the same float32 arithmetic as the reference, so it must agree to the bit
    assert_trajectories_close(ours, ref, exact=sampler == "euler")


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_bfloat16_input_runs_and_stays_bfloat16(sampler: str) -> None:
    sigmas, timesteps = flow_sigmas(10, 3.0, sampler)
    x = start_latents()
    steps_dtypes = []

    def velocity_fn(x: Tensor, t: Tensor, i: int) -> Tensor:
        steps_dtypes.append(x.dtype)
        return fake_velocity(x, t)

    out16 = sample(velocity_fn, x.bfloat16(), sigmas, timesteps, sampler)
    out32 = sample(lambda x, t, i: fake_velocity(x, t), x, sigmas, timesteps, sampler)
    assert out16.dtype == torch.bfloat16 and steps_dtypes == [torch.bfloat16] * 10
    assert torch.isfinite(out16.float()).all()
    # bf16 keeps ~3 significant digits and |x| reaches ~3; measured 0.016 (unipc), 0.020 (euler)
    assert (out16.float() - out32).abs().max() < 0.05


# --------------------------------------------------------------------------- single steps


def test_euler_step_is_x_plus_dt_v_exactly() -> None:
    sigmas, timesteps = flow_sigmas(7, 5.0, "euler")
    x, v = start_latents(seed=1), start_latents(seed=2)
    solver = EulerSolver(sigmas)
    ref = FlowMatchEulerDiscreteScheduler(shift=5.0)
    ref.set_timesteps(7)
    for i in range(7):
        dt = sigmas[i + 1] - sigmas[i]
        ours = solver.step(v, x, i)
        assert torch.equal(ours, x + dt * v)
        assert torch.equal(ours, ref.step(v, timesteps[i], x).prev_sample)
        x = ours


def test_unipc_single_step_lands_on_the_x0_estimate() -> None:
    # n = 1: one first-order step from sigma ~1 straight to 0, i.e. x0 = x - sigma * v
    sigmas, timesteps = flow_sigmas(1, 3.0, "unipc")
    assert timesteps.tolist() == [999]
    x, v = start_latents(seed=1), start_latents(seed=2)
    ours = UniPCSolver(sigmas).step(v, x, 0)
    torch.testing.assert_close(ours, x - sigmas[0] * v, rtol=0, atol=1e-6)
    ref = wan_unipc(3.0)
    ref.set_timesteps(1)
    assert torch.equal(ours, ref.step(v, timesteps[0], x).prev_sample)


def test_unipc_two_steps() -> None:
    # n = 2: both predictors are first order (warm-up, then lower_order_final). The second
    # step corrects x1, but the last step lands on the x0 estimate made from the uncorrected
    # x1, so the result equals plain Euler (a first-order UniPC predictor is an Euler step:
    # both are exact when x0 is constant).
    sigmas, timesteps = flow_sigmas(2, 3.0, "unipc")
    x = start_latents()
    ref = wan_unipc(3.0)
    ref.set_timesteps(2)
    ref_traj = reference_trajectory(ref, x)
    assert_trajectories_close(our_trajectory("unipc", x, sigmas, timesteps), ref_traj, exact=False)
    assert_trajectories_close(our_trajectory("euler", x, sigmas, timesteps), ref_traj, exact=False)


def test_unipc_corrector_is_what_differs_from_euler() -> None:
    # n = 3: step 1 corrects x1 before predicting x2, so x2 differs from Euler's
    sigmas, timesteps = flow_sigmas(3, 3.0, "unipc")
    x = start_latents()
    ref = wan_unipc(3.0)
    ref.set_timesteps(3)
    ref_traj = reference_trajectory(ref, x)
    ours = our_trajectory("unipc", x, sigmas, timesteps)
    euler = our_trajectory("euler", x, sigmas, timesteps)
    assert_trajectories_close(ours, ref_traj, exact=False)
    torch.testing.assert_close(euler[1], ref_traj[1], **TOL)
    assert (euler[2] - ref_traj[2]).abs().max() > 1e-3  # measured 9.9e-3


def test_unipc_steps_must_be_consecutive() -> None:
    sigmas, _ = flow_sigmas(10, 3.0, "unipc")
    solver = UniPCSolver(sigmas)
    x = start_latents()
    solver.step(x, x, 0)
    with pytest.raises(ValueError, match="consecutive"):
        solver.step(x, x, 2)


def test_unipc_rejects_sigma_one() -> None:
    # log-SNR is -inf at sigma = 1; the schedules nudge it below, hand-made ones must too
    with pytest.raises(ValueError, match="sigmas"):
        UniPCSolver(torch.tensor([1.0, 0.5, 0.0]))


# --------------------------------------------------------------------------- partial runs


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("begin", [1, 4, 9])
def test_partial_start_matches_reference_begin_index(sampler: str, begin: int) -> None:
    n, shift = 10, 3.0
    sigmas, timesteps = flow_sigmas(n, shift, sampler)
    x = add_noise(start_latents(seed=3), start_latents(seed=4), sigmas[begin])
    ref_sched = reference(sampler, shift)
    ref_sched.set_timesteps(n)
    ref = reference_trajectory(ref_sched, x, begin=begin)
    progress = []
    ours = our_trajectory(
        sampler, x, sigmas, timesteps, start=begin, on_step=lambda done, total: progress.append((done, total))
    )
    assert_trajectories_close(ours, ref, exact=sampler == "euler")
    assert progress == [(i, n) for i in range(begin + 1, n + 1)]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_latent_replacement_between_steps_matches_reference(sampler: str) -> None:
    # inpainting-style: channel 0 is pinned to a known latent noised to the current sigma
    n, shift = 10, 5.0
    sigmas, timesteps = flow_sigmas(n, shift, sampler)
    known, noise = start_latents(seed=5), start_latents(seed=6)

    def replace(x: Tensor, i: int) -> Tensor:
        x = x.clone()
        x[:, 0] = add_noise(known[:, 0], noise[:, 0], sigmas[i])
        return x

    x = start_latents()
    ref_sched = reference(sampler, shift)
    ref_sched.set_timesteps(n)
    ref = reference_trajectory(ref_sched, x, replace=replace)
    ours = our_trajectory(sampler, x, sigmas, timesteps, before_step=replace)
    assert_trajectories_close(ours, ref, exact=sampler == "euler")


def test_sample_validates_its_arguments() -> None:
    sigmas, timesteps = flow_sigmas(5, 3.0, "unipc")
    x = start_latents()
    with pytest.raises(ValueError, match="sigmas"):
        sample(lambda x, t, i: x, x, sigmas[:-1], timesteps, "unipc")
    with pytest.raises(ValueError, match="start"):
        sample(lambda x, t, i: x, x, sigmas, timesteps, "unipc", start=6)
    # starting at the end is a no-op, not an error
    assert sample(lambda x, t, i: x, x, sigmas, timesteps, "unipc", start=5) is x


# --------------------------------------------------------------------------- add_noise


def test_add_noise_matches_reference_forward_process() -> None:
    x0, noise = start_latents(seed=7), start_latents(seed=8)
    euler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    euler.set_timesteps(10)
    sigmas, timesteps = flow_sigmas(10, 3.0, "euler")
    t = timesteps[4:5]
    expected = euler.scale_noise(x0, t, noise)
    torch.testing.assert_close(add_noise(x0, noise, sigmas[4]), expected, rtol=0, atol=1e-6)

    unipc = wan_unipc(3.0)
    unipc.set_timesteps(10)
    sigmas, timesteps = flow_sigmas(10, 3.0, "unipc")
    t = timesteps[[2, 6]]  # one sigma per batch item
    torch.testing.assert_close(
        add_noise(x0, noise, sigmas[[2, 6]]), unipc.add_noise(x0, noise, t), rtol=0, atol=1e-6
    )
    assert torch.equal(add_noise(x0, noise, 0.0), x0) and torch.equal(add_noise(x0, noise, 1.0), noise)


# --------------------------------------------------------------------------- configs


def test_config_from_diffusers_schedulers() -> None:
    # to_json_string() is what diffusers writes to scheduler_config.json
    unipc = json.loads(wan_unipc(5.0).to_json_string())
    assert SamplerConfig.from_scheduler_config(unipc) == SamplerConfig("unipc", 5.0, 1000)
    euler = json.loads(FlowMatchEulerDiscreteScheduler(shift=3.0).to_json_string())
    assert SamplerConfig.from_scheduler_config(euler) == SamplerConfig("euler", 3.0, 1000)


def test_config_from_wan_scheduler_config_json() -> None:
    # the scheduler/scheduler_config.json shipped with Wan-AI/Wan2.1-T2V-1.3B-Diffusers
    wan = {
        "_class_name": "UniPCMultistepScheduler",
        "_diffusers_version": "0.33.0.dev0",
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "disable_corrector": [],
        "dynamic_thresholding_ratio": 0.995,
        "final_sigmas_type": "zero",
        "flow_shift": 3.0,
        "lower_order_final": True,
        "num_train_timesteps": 1000,
        "predict_x0": True,
        "prediction_type": "flow_prediction",
        "rescale_betas_zero_snr": False,
        "sample_max_value": 1.0,
        "solver_order": 2,
        "solver_p": None,
        "solver_type": "bh2",
        "steps_offset": 0,
        "thresholding": False,
        "timestep_spacing": "linspace",
        "trained_betas": None,
        "use_beta_sigmas": False,
        "use_exponential_sigmas": False,
        "use_flow_sigmas": True,
        "use_karras_sigmas": False,
    }
    assert SamplerConfig.from_scheduler_config(wan) == SamplerConfig("unipc", 3.0, 1000)


@pytest.mark.parametrize("config", [SamplerConfig("unipc", 5.0), SamplerConfig("euler", 3.0, 1000)])
def test_config_round_trip_and_diffusers_loads_ours(config: SamplerConfig) -> None:
    d = json.loads(json.dumps(config.to_scheduler_config()))
    assert SamplerConfig.from_scheduler_config(d) == config
    cls = UniPCMultistepScheduler if config.sampler == "unipc" else FlowMatchEulerDiscreteScheduler
    assert d["_class_name"] == cls.__name__
    loaded = cls.from_config(d)
    loaded.set_timesteps(12)
    sigmas, timesteps = flow_sigmas(12, config.shift, config.sampler)
    assert torch.equal(loaded.sigmas, sigmas) and torch.equal(loaded.timesteps, timesteps)


def test_config_rejects_unknown_class() -> None:
    with pytest.raises(ValueError, match="DDIMScheduler"):
        SamplerConfig.from_scheduler_config({"_class_name": "DDIMScheduler"})
    with pytest.raises(ValueError, match="None"):
        SamplerConfig.from_scheduler_config({})
    with pytest.raises(ValueError, match="sampler"):
        SamplerConfig("ddim", 3.0)


@pytest.mark.parametrize(
    "class_name, change, key",
    [
        ("UniPCMultistepScheduler", {"solver_type": "bh1"}, "solver_type"),
        ("UniPCMultistepScheduler", {"solver_order": 3}, "solver_order"),
        ("UniPCMultistepScheduler", {"use_karras_sigmas": True}, "use_karras_sigmas"),
        ("UniPCMultistepScheduler", {"disable_corrector": [0]}, "disable_corrector"),
        ("UniPCMultistepScheduler", {"prediction_type": None}, "prediction_type"),  # removed: epsilon
        ("UniPCMultistepScheduler", {"use_flow_sigmas": None}, "use_flow_sigmas"),  # removed: False
        ("FlowMatchEulerDiscreteScheduler", {"use_dynamic_shifting": True}, "use_dynamic_shifting"),
        ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}, "stochastic_sampling"),
        ("FlowMatchEulerDiscreteScheduler", {"invert_sigmas": True}, "invert_sigmas"),
    ],
)
def test_config_rejects_unsupported_settings(class_name: str, change: dict, key: str) -> None:
    sampler = "unipc" if class_name == "UniPCMultistepScheduler" else "euler"
    d = SamplerConfig(sampler, 3.0).to_scheduler_config()
    for k, v in change.items():
        if v is None:
            del d[k]
        else:
            d[k] = v
    with pytest.raises(ValueError, match=key):
        SamplerConfig.from_scheduler_config(d)


def test_frame_noise_without_correlation_is_the_plain_draw() -> None:
    """A seed draws the same noise as before the correlated prior existed (and as diffusers draws it)."""
    shape = (1, 16, 5, 8, 12)
    plain = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(frame_noise(shape, torch.Generator().manual_seed(3), 0.0), plain)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_frame_noise_correlates_frames_and_keeps_unit_variance(rho: float) -> None:
    noise = frame_noise((2, 16, 5, 32, 32), torch.Generator().manual_seed(0), rho)
    frames = noise.transpose(1, 2).reshape(2, 5, -1)  # (B, F, C*h*w)
    assert abs(frames.var().item() - 1) < 0.02
    corr = torch.corrcoef(frames[0])  # (F, F)
    off_diagonal = corr[~torch.eye(5, dtype=torch.bool)]
    assert (off_diagonal - rho).abs().max().item() < 0.03, off_diagonal
    # two samples of a batch share nothing
    assert abs(torch.corrcoef(torch.stack([frames[0, 0], frames[1, 0]]))[0, 1].item()) < 0.03


def test_frame_noise_rejects_a_bad_correlation() -> None:
    for rho in (-0.1, 1.0):
        with pytest.raises(ValueError, match="noise correlation"):
            frame_noise((1, 4, 2, 2, 2), torch.Generator().manual_seed(0), rho)
