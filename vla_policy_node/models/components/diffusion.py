"""Diffusion and flow-matching helpers shared by the families (diffusers schedulers underneath).

Two objectives:
- ddpm: x_t = sqrt(a_t) x + sqrt(1 - a_t) eps, the model predicts eps; DDIM samples.
- flow: x_s = (1 - s) x + s eps (s in [0, 1]), the model predicts the velocity eps - x;
  FlowMatchEuler integrates from s = 1 to 0.
Model timesteps are on the 0..num_train_timesteps scale for both.
"""

from __future__ import annotations

import torch


def make_scheduler(objective: str, num_train_timesteps: int = 1000):
    """The inference scheduler of an objective (DDIM for ddpm, FlowMatchEuler for flow)."""
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    if objective == "flow":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=1.0)
    if objective == "ddpm":
        return DDIMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                             clip_sample=False, set_alpha_to_one=True, prediction_type="epsilon")
    raise ValueError(f"diffusion objective '{objective}' unknown (ddpm | flow)")


class TrainingNoise:
    """Noise levels, noised inputs and regression targets for training one objective."""

    def __init__(self, objective: str, num_train_timesteps: int = 1000):
        self.objective, self.num_train_timesteps = objective, num_train_timesteps
        if objective == "ddpm":
            from diffusers import DDPMScheduler
            self.ddpm = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2")
        elif objective != "flow":
            raise ValueError(f"diffusion objective '{objective}' unknown (ddpm | flow)")

    def sample_levels(self, batch: int, generator=None, device=None) -> torch.Tensor:
        """Per-sample noise levels: integer timesteps (ddpm) or s in [0, 1) (flow)."""
        if self.objective == "flow":
            return torch.rand(batch, generator=generator, device=device)
        return torch.randint(0, self.num_train_timesteps, (batch,), generator=generator, device=device)

    def model_timestep(self, levels: torch.Tensor) -> torch.Tensor:
        return levels * self.num_train_timesteps if self.objective == "flow" else levels

    def noised(self, x: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        if self.objective == "flow":
            s = levels.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
            return (1 - s) * x + s * noise
        return self.ddpm.add_noise(x, noise, levels)

    def target(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return noise - x if self.objective == "flow" else noise


def noise_to_level(scheduler, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """`x` noised to the level of inference timestep `t` of `scheduler` (for inpainting known values)."""
    if hasattr(scheduler, "scale_noise"):                     # flow matching
        return scheduler.scale_noise(x, t.reshape(1), noise)
    return scheduler.add_noise(x, noise, t.reshape(1).long())


def randn(shape: tuple, generator, device, dtype) -> torch.Tensor:
    """Gaussian noise; `generator` one torch.Generator, or a list of one per sample (each sample's
    noise then does not depend on the others in the batch, as diffusers pipelines take it)."""
    if isinstance(generator, (list, tuple)):
        return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=device, dtype=dtype) for g in generator])
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)
