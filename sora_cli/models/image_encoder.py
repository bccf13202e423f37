"""Image encoder of Wan 2.1's image-to-video checkpoints: a CLIP vision transformer (run by `transformers`, from
safetensors only) whose second-to-last hidden states are the image tokens the transformer attends to.

Images reach it as the checkpoint's `image_processor/` prepares them (resized, centre-cropped and normalised
with CLIP's statistics), so the features are those the model was trained with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ModelError
from ..loading import first_line, read_json, verify_weights

ENCODER_CLASSES = ("CLIPVisionModel", "CLIPVisionModelWithProjection")


class ImageEncoder:
    def __init__(self, processor, model: torch.nn.Module):
        self.processor, self.model = processor, model

    @classmethod
    def load(cls, encoder_dir: Path, processor_dir: Path, class_name: str, dtype: torch.dtype) -> "ImageEncoder":
        if class_name not in ENCODER_CLASSES:
            raise ModelError(f"image encoder class '{class_name}' is not supported "
                             f"(supported: {', '.join(ENCODER_CLASSES)})")
        read_json(encoder_dir / "config.json")
        read_json(processor_dir / "preprocessor_config.json")
        verify_weights(encoder_dir)
        import transformers

        transformers.logging.set_verbosity_error()
        try:
            processor = transformers.CLIPImageProcessor.from_pretrained(str(processor_dir))
            # The vision tower alone: a ...WithProjection checkpoint's projection is not what Wan reads.
            model = transformers.CLIPVisionModel.from_pretrained(str(encoder_dir), dtype=dtype, use_safetensors=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelError(f"the image encoder in {encoder_dir} could not be loaded: {first_line(e)} "
                             "(download the model again)") from None
        return cls(processor, model.eval().requires_grad_(False))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, images: list[np.ndarray]) -> Tensor:
        """(H, W, 3) uint8 images -> their tokens, one sequence: (1, n_images * S, D)."""
        from PIL import Image

        pixels = self.processor(images=[Image.fromarray(i) for i in images], return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, next(self.model.parameters()).dtype)
        states = self.model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]  # (n, S, D)
        return states.reshape(1, -1, states.shape[-1])
