"""VITA at small scale: one codebook shared by vision and action, an autoregressive backbone that
emits codes, and two decoders that read the same code stream.

Tokenizers (warm-up stage, `VITATokenizer`):
    vision: features of (I_t, I_t+k) (the frozen frame VAE's latents, channel-wise concatenated)
            -> M-Former (learned queries over the feature patches) -> `vision_tokens` vectors -> Q
            decoder D_v(f_t, codes) -> the next frame's latent as a change from f_t
    action: the chunk (horizon, dim), normalized -> DCT over time (orthonormal, scipy.fft) -> MLP
            -> `action_tokens` vectors -> Q;  decoder D_a: transformer over the codes -> coefficients
            -> inverse DCT -> the chunk
    Q: vector-quantize-pytorch's VectorQuantize (EMA codebook, k-means init, dead codes re-seeded),
    one instance for both modalities (one codebook tensor), or one each for the ablation.
Backbone (co-train stage, `VITABackbone`): transformers' LlamaForCausalLM at a small
configuration over [instruction tokens | current-frame feature patches | proprio | BOS | codes];
greedy decoding with its KV cache. Each generated code also hands its hidden state to the
decoders (`context`, a zero-initialized projection into code space), so the co-train losses reach
the backbone, as the paper's joint objective does.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config


def dct_matrix(n: int) -> np.ndarray:
    """(n, n) orthonormal DCT-II matrix D: D @ x == scipy.fft.dct(x, norm="ortho"); D.T inverts it."""
    return scipy.fft.dct(np.eye(n), norm="ortho", axis=0)


def patchify(latents: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, (h/p) * (w/p), C * p * p), raster order."""
    b, c, h, w = latents.shape
    x = latents.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: torch.Tensor, c: int, size: int, p: int) -> torch.Tensor:
    b, n = tokens.shape[0], size // p
    x = tokens.reshape(b, n, n, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, size, size)


def _encoder(width: int, layers: int, heads: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def make_quantizer(code_dim: int, codebook_size: int):
    from vector_quantize_pytorch import VectorQuantize

    return VectorQuantize(dim=code_dim, codebook_size=codebook_size, decay=0.99, commitment_weight=0.25,
                          kmeans_init=True, kmeans_iters=10, threshold_ema_dead_code=2)


class VITATokenizer(ModelMixin, ConfigMixin):
    """Vision and action encoders, their decoders and the codebook(s)."""

    @register_to_config
    def __init__(self, latent_channels: int = 4, latent_size: int = 8, patch_size: int = 2, codebook_size: int = 256,
                 code_dim: int = 64, shared_codebook: bool = True, vision_tokens: int = 4, action_tokens: int = 4,
                 dct_keep: int = 0, tokenizer_width: int = 128, tokenizer_layers: int = 2, tokenizer_heads: int = 4,
                 horizon: int = 8, action_dim: int = 4):
        super().__init__()
        w = tokenizer_width
        patch_dim = latent_channels * patch_size ** 2
        patches = (latent_size // patch_size) ** 2
        self.dct_keep = dct_keep or horizon
        # vision: M-Former over [f_t ; f_t+k] patches with learned queries
        self.vision_in = nn.Linear(2 * patch_dim, w)
        self.vision_queries = nn.Parameter(torch.randn(1, vision_tokens, w) * 0.02)
        self.vision_pos = nn.Parameter(torch.randn(1, vision_tokens + patches, w) * 0.02)
        self.mformer = _encoder(w, tokenizer_layers, tokenizer_heads)
        self.vision_to_code = nn.Linear(w, code_dim)
        # vision decoder D_v: codes + f_t patches -> change of the latent
        self.vision_from_code = nn.Linear(code_dim, w)
        self.frame_in = nn.Linear(patch_dim, w)
        self.vision_decoder_pos = nn.Parameter(torch.randn(1, vision_tokens + patches, w) * 0.02)
        self.vision_decoder = _encoder(w, tokenizer_layers, tokenizer_heads)
        self.vision_out = nn.Linear(w, patch_dim)
        nn.init.zeros_(self.vision_out.weight)          # "nothing moves" to start with
        nn.init.zeros_(self.vision_out.bias)
        # action: DCT coefficients -> MLP -> codes; decoder: transformer over codes -> coefficients
        coeffs = self.dct_keep * action_dim
        self.action_encoder = nn.Sequential(nn.Linear(coeffs, 2 * w), nn.GELU(), nn.Linear(2 * w, 2 * w), nn.GELU(),
                                            nn.Linear(2 * w, action_tokens * code_dim))
        self.action_from_code = nn.Linear(code_dim, w)
        self.action_decoder_pos = nn.Parameter(torch.randn(1, action_tokens, w) * 0.02)
        self.action_decoder = _encoder(w, tokenizer_layers, tokenizer_heads)
        self.action_out = nn.Sequential(nn.LayerNorm(action_tokens * w), nn.Linear(action_tokens * w, coeffs))
        self.dct_basis = dct_matrix(horizon)          # numpy float64: float32 on use, whatever the model's dtype
        self.quantizer = make_quantizer(code_dim, codebook_size)
        self.action_quantizer_separate = None if shared_codebook else make_quantizer(code_dim, codebook_size)

    def freeze(self, vision_encoder: bool = False, vision_decoder: bool = False, action_encoder: bool = False,
               codebook: bool = False) -> None:
        """Stop gradients into the named parts (a stage that does not train them, or never uses them)."""
        parts = []
        if vision_encoder:
            parts += [self.vision_in, self.mformer, self.vision_to_code, self.vision_queries, self.vision_pos]
        if vision_decoder:
            parts += [self.vision_from_code, self.frame_in, self.vision_decoder, self.vision_out, self.vision_decoder_pos]
        if action_encoder:
            parts += [self.action_encoder]
        if codebook:
            parts += [self.quantizer, self.action_quantizer]
        for part in parts:
            part.requires_grad_(False)

    # ---- codebook -----------------------------------------------------------------------
    @property
    def vision_quantizer(self):
        return self.quantizer

    @property
    def action_quantizer(self):
        return self.quantizer if self.action_quantizer_separate is None else self.action_quantizer_separate

    def codes(self, indices: torch.Tensor, modality: str) -> torch.Tensor:
        """(B, L) code indices -> (B, L, code_dim) codebook vectors of that modality's codebook."""
        if modality not in ("vision", "action"):
            raise ValueError(f"modality '{modality}' unknown; use 'vision' or 'action'")
        quantizer = self.vision_quantizer if modality == "vision" else self.action_quantizer
        return quantizer.get_output_from_indices(indices)

    def quantize(self, z_vision: torch.Tensor | None, z_action: torch.Tensor | None):
        """Quantize (B, Lv, d) and/or (B, La, d). With one codebook both go through a single call, so
        its k-means start and EMA updates see both modalities. Returns (quantized, indices) per
        modality (None where not given) and the commitment loss."""
        if self.action_quantizer_separate is None and z_vision is not None and z_action is not None:
            lv = z_vision.shape[1]
            q, idx, commit = self.quantizer(torch.cat([z_vision, z_action], dim=1))
            return (q[:, :lv], idx[:, :lv]), (q[:, lv:], idx[:, lv:]), commit.sum()
        out, commit = [], 0.0
        for z, quantizer in ((z_vision, self.vision_quantizer), (z_action, self.action_quantizer)):
            if z is None:
                out.append(None)
                continue
            q, idx, loss = quantizer(z)
            out.append((q, idx))
            commit = commit + loss.sum()
        return out[0], out[1], commit

    # ---- vision -------------------------------------------------------------------------
    def encode_vision(self, f_now: torch.Tensor, f_next: torch.Tensor) -> torch.Tensor:
        """Feature latents (B, C, h, h) of I_t and I_t+k -> (B, vision_tokens, code_dim), before Q."""
        p = self.config.patch_size
        x = self.vision_in(torch.cat([patchify(f_now, p), patchify(f_next, p)], dim=-1))
        x = torch.cat([self.vision_queries.expand(len(x), -1, -1), x], dim=1) + self.vision_pos
        return self.vision_to_code(self.mformer(x)[:, : self.config.vision_tokens])

    def decode_vision(self, f_now: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """D_v: feature latent of I_t (B, C, h, h) and codes (B, Lv, code_dim) -> latent of I_t+k."""
        cfg = self.config
        x = torch.cat([self.vision_from_code(codes), self.frame_in(patchify(f_now, cfg.patch_size))], dim=1)
        x = self.vision_decoder(x + self.vision_decoder_pos)[:, cfg.vision_tokens:]
        return f_now + unpatchify(self.vision_out(x), cfg.latent_channels, cfg.latent_size, cfg.patch_size)

    # ---- action -------------------------------------------------------------------------
    def dct_coefficients(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, horizon, dim) -> (B, dct_keep, dim): the lowest frequencies of each channel."""
        dct = torch.as_tensor(self.dct_basis, dtype=torch.float32, device=actions.device)
        coefficients = torch.einsum("kt,btd->bkd", dct, actions.float())[:, : self.dct_keep]
        return coefficients.to(actions.dtype)          # in float32 whatever the model's dtype

    def inverse_dct(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(B, dct_keep, dim) -> (B, horizon, dim), the dropped frequencies taken as zero."""
        dct = torch.as_tensor(self.dct_basis[: self.dct_keep], dtype=torch.float32, device=coefficients.device)
        return torch.einsum("kt,bkd->btd", dct, coefficients.float()).to(coefficients.dtype)

    def encode_action(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalized chunk (B, horizon, dim) -> (B, action_tokens, code_dim), before Q."""
        cfg = self.config
        z = self.action_encoder(self.dct_coefficients(actions).flatten(1))
        return z.reshape(len(z), cfg.action_tokens, cfg.code_dim)

    def decode_action(self, codes: torch.Tensor) -> torch.Tensor:
        """D_a: codes (B, La, code_dim) -> normalized chunk (B, horizon, dim)."""
        x = self.action_decoder(self.action_from_code(codes) + self.action_decoder_pos)
        coefficients = self.action_out(x.flatten(1)).reshape(len(x), self.dct_keep, self.config.action_dim)
        return self.inverse_dct(coefficients)

    @torch.no_grad()
    def tokenize(self, f_now: torch.Tensor, f_next: torch.Tensor | None, actions: torch.Tensor | None):
        """Code indices of (I_t, I_t+k) pairs and of chunks (either may be None), codebook unchanged."""
        used = ([self.vision_quantizer] if f_next is not None else []) + ([self.action_quantizer] if actions is not None else [])
        for quantizer in used:
            if not bool(quantizer._codebook.initted):
                raise RuntimeError("VITATokenizer.tokenize: the codebook was never trained (no warm-up ran)")
        was_training = self.training
        self.eval()
        try:
            vision, action, _ = self.quantize(None if f_next is None else self.encode_vision(f_now, f_next),
                                              None if actions is None else self.encode_action(actions))
        finally:
            self.train(was_training)
        return None if vision is None else vision[1], None if action is None else action[1]


class VITABackbone(ModelMixin, ConfigMixin):
    """The autoregressive model: a small LlamaForCausalLM over a prefix of context embeddings."""

    @register_to_config
    def __init__(self, text_dim: int = 384, text_tokens: int = 16, latent_channels: int = 4, latent_size: int = 8,
                 patch_size: int = 2, state_dim: int = 4, use_proprio: bool = True, codebook_size: int = 256,
                 code_dim: int = 64, hidden_size: int = 192, num_layers: int = 4, num_heads: int = 4,
                 sequence_tokens: int = 8):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        d = hidden_size
        patches = (latent_size // patch_size) ** 2
        self.prefix_tokens = text_tokens + patches + 1
        self.text_proj = nn.Linear(text_dim, d)
        self.frame_proj = nn.Linear(latent_channels * patch_size ** 2, d)
        self.state_proj = nn.Linear(state_dim, d)
        self.prefix_embed = nn.Parameter(torch.randn(1, self.prefix_tokens, d) * 0.02)   # which slot is which
        self.bos_token_id = codebook_size
        lm_config = LlamaConfig(vocab_size=codebook_size + 1, hidden_size=d, intermediate_size=4 * d,
                                num_hidden_layers=num_layers, num_attention_heads=num_heads,
                                num_key_value_heads=num_heads, max_position_embeddings=self.prefix_tokens + sequence_tokens + 1,
                                bos_token_id=codebook_size, eos_token_id=None, pad_token_id=None,
                                tie_word_embeddings=False, attention_dropout=0.0)
        self.lm = LlamaForCausalLM(lm_config)
        self.context_out = nn.Linear(d, code_dim)        # the decoders' view of each code's hidden state
        nn.init.zeros_(self.context_out.weight)
        nn.init.zeros_(self.context_out.bias)

    def prefix(self, text: torch.Tensor, frame: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """text (B, Lt, text_dim), frame feature latent (B, C, h, h), state (B, S) normalized ->
        (B, prefix_tokens + 1, d): the context and the BOS embedding."""
        cfg = self.config
        state = state if cfg.use_proprio else torch.zeros_like(state)
        x = torch.cat([self.text_proj(text), self.frame_proj(patchify(frame, cfg.patch_size)),
                       self.state_proj(state)[:, None]], dim=1) + self.prefix_embed
        bos = torch.full((len(x), 1), self.bos_token_id, dtype=torch.long, device=x.device)
        return torch.cat([x, self.lm.get_input_embeddings()(bos)], dim=1)

    def forward(self, text, frame, state, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: the target codes (B, L) -> logits (B, L, codebook_size) for each code and
        the decoders' context (B, L, code_dim) taken from the hidden state that predicted it."""
        x = torch.cat([self.prefix(text, frame, state), self.lm.get_input_embeddings()(tokens[:, :-1])], dim=1)
        hidden = self.lm.model(inputs_embeds=x, use_cache=False).last_hidden_state[:, self.prefix_tokens:]
        return self.logits(hidden), self.context_out(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm.lm_head(hidden)[..., : self.config.codebook_size]      # BOS is never generated

    @torch.no_grad()
    def generate(self, text, frame, state, num_tokens: int | None = None, use_cache: bool = True):
        """Greedy codes (B, L) and their context (B, L, code_dim). With `use_cache` each step feeds
        only the newest code and reuses the keys/values of everything before it (a DynamicCache);
        without, the whole sequence is recomputed at every step (the reference)."""
        num_tokens = num_tokens or self.config.sequence_tokens
        x = self.prefix(text, frame, state)
        out = self.lm.model(inputs_embeds=x, use_cache=use_cache)
        tokens, hiddens = [], []
        for i in range(num_tokens):
            h = out.last_hidden_state[:, -1]
            token = self.logits(h).argmax(-1)
            tokens.append(token)
            hiddens.append(h)
            if i == num_tokens - 1:
                break
            step = self.lm.get_input_embeddings()(token)[:, None]
            if use_cache:
                out = self.lm.model(inputs_embeds=step, past_key_values=out.past_key_values, use_cache=True)
            else:
                x = torch.cat([x, step], dim=1)
                out = self.lm.model(inputs_embeds=x, use_cache=False)
        return torch.stack(tokens, 1), self.context_out(torch.stack(hiddens, 1))


def ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - SSIM of (B, 3, S, S) pixels in [-1, 1] (pytorch-msssim, 7 px Gaussian window)."""
    from pytorch_msssim import ssim

    return 1.0 - ssim((pred + 1) / 2, (target + 1) / 2, data_range=1.0, size_average=True, win_size=7)


def frame_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's visual objective: L1 + (1 - SSIM)."""
    return F.l1_loss(pred, target) + ssim_loss(pred, target)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over the real steps of padded chunks: mask (B, horizon), 1 real / 0 padded."""
    m = mask[..., None].to(pred.dtype)
    return ((pred - target) ** 2 * m).sum() / (m.sum() * pred.shape[-1]).clamp(min=1)


def codebook_usage(indices: torch.Tensor, codebook_size: int) -> dict:
    """Perplexity (effective number of codes) and dead codes (never used) over a set of indices."""
    counts = torch.bincount(indices.flatten().long().cpu(), minlength=codebook_size).double()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"perplexity": round(float(entropy.exp()), 2), "used_codes": int((counts > 0).sum()),
            "dead_codes": int((counts == 0).sum()), "codebook_size": codebook_size}
