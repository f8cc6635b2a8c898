"""The modules servekit generates around a transformers model so every format sees plain tensors: named inputs
one by one (torch.export matches them to dynamic shapes), plain outputs (logits; start and end logits; a
pooled vector), and the feature extractor's normalisation inside the graph where the handler cannot do it."""
from __future__ import annotations

import torch
from torch import nn

from servekit.build.defaults import POOLINGS  # noqa: F401  (re-exported; the CLI shows them without torch)

LOGITS, SPAN, POOLED = "logits", "span", "pooled"
NORMALIZE_EPSILON = 1e-7  # Wav2Vec2FeatureExtractor's variance floor


class TextModel(nn.Module):
    """``forward(input_ids, attention_mask, token_type_ids)`` -> logits, (start, end) logits, or a pooled vector."""

    def __init__(self, model: nn.Module, head: str = LOGITS, pooling: str = "mean") -> None:
        super().__init__()
        self.model, self.head, self.pooling = model, head, pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None):
        named = {"input_ids": input_ids}
        if attention_mask is not None:
            named["attention_mask"] = attention_mask
        if token_type_ids is not None:
            named["token_type_ids"] = token_type_ids
        out = self.model(**named)
        if self.head == SPAN:
            return out.start_logits, out.end_logits
        if self.head == POOLED:
            return pooled(out.last_hidden_state, attention_mask, self.pooling)
        return out.logits


def pooled(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """The first token's vector (cls), or the mean over the instance's own tokens (padding left out)."""
    if pooling == "cls" or attention_mask is None:
        return hidden[:, 0] if pooling == "cls" else hidden.mean(1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class ImageModel(nn.Module):
    """``forward(pixel_values)`` -> logits (preprocessing happens in the handler, as declared)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


class AudioModel(nn.Module):
    """``forward(input_values, attention_mask)`` -> logits.

    The feature extractor's ``do_normalize`` (zero mean, unit variance per clip) happens here, over each clip's
    own samples as the mask says, so a clip padded in a batch is normalised exactly as it is alone. The mask
    reaches the model only when its feature extractor asks for one (``return_attention_mask``).
    """

    def __init__(self, model: nn.Module, normalize: bool, model_takes_mask: bool) -> None:
        super().__init__()
        self.model, self.normalize, self.model_takes_mask = model, normalize, model_takes_mask

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        samples = input_values
        if self.normalize:
            mask = attention_mask.to(input_values.dtype)
            count = mask.sum(-1, keepdim=True)
            mean = (input_values * mask).sum(-1, keepdim=True) / count
            variance = (((input_values - mean) * mask) ** 2).sum(-1, keepdim=True) / count
            samples = (input_values - mean) / torch.sqrt(variance + NORMALIZE_EPSILON) * mask
        if self.model_takes_mask:
            return self.model(input_values=samples, attention_mask=attention_mask).logits
        return self.model(input_values=samples).logits
