"""A BERT-style text classifier to prove the path on: transformers' BertForSequenceClassification built
from a small BertConfig (random init, never a hub download), a tokenizers WordLevel tokenizer trained
here, and a synthetic topic task (which of four topics do a sentence's keywords name), so that
accuracy and agreement gates mean something.

Needs the optional ``transformers`` and ``tokenizers`` packages (``pip install -e '.[text]'``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

TOPICS = {
    "sports": ("goal", "match", "team", "coach", "score", "league"),
    "weather": ("rain", "storm", "cloud", "sunny", "wind", "snow"),
    "food": ("bread", "cheese", "soup", "salad", "pasta", "fruit"),
    "music": ("guitar", "song", "drum", "piano", "concert", "melody"),
}
LABELS = tuple(TOPICS)
FILLER = tuple(dict.fromkeys(  # unique, in order
    "the a of and to in is it that was for on are with as his they be at one have this from by hot word but "
    "what some we can out other were all there when up use your how said an each she which do their time if "
    "will way about many then them write would like so these her long make thing see him two has look more "
    "day could go come did number sound no most people my over know water than call first who may down side "
    "been now find".split()))
PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
SPECIAL_TOKENS = (PAD, UNK, CLS)  # ids 0, 1, 2: padding is id 0 with attention mask 0
VOCAB_SIZE = len(SPECIAL_TOKENS) + len(FILLER) + sum(len(words) for words in TOPICS.values())
MAX_LENGTH = 128  # tokens, [CLS] included: position embeddings; a signature may declare less
MIN_WORDS, MAX_WORDS = 3, 20
INPUT_NAMES = ("input_ids", "attention_mask")


@dataclass(frozen=True)
class BertSize:
    """How big the BERT is; ``TINY`` for tests, ``SMALL`` (4 layers, 256 wide) for measurements."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    lr: float  # AdamW from random init: the wider model needs a smaller step or it collapses to one class


TINY = BertSize(layers=2, hidden=32, heads=2, intermediate=64, lr=3e-3)
SMALL = BertSize(layers=4, hidden=256, heads=4, intermediate=1024, lr=5e-4)


def synthetic_sentences(count: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Sentences of filler words with two keywords of their topic and at most one of another."""
    rng = np.random.default_rng(seed)
    texts, labels = [], rng.integers(0, len(LABELS), size=count)
    for label in labels:
        words = list(rng.choice(FILLER, size=int(rng.integers(MIN_WORDS, MAX_WORDS - 2))))
        keywords = list(rng.choice(TOPICS[LABELS[label]], size=2))
        if rng.random() < 0.3:
            other = (int(label) + int(rng.integers(1, len(LABELS)))) % len(LABELS)
            keywords.append(str(rng.choice(TOPICS[LABELS[other]])))
        for word in keywords:
            words.insert(int(rng.integers(0, len(words) + 1)), word)
        texts.append(" ".join(words))
    return texts, labels.astype(np.int64)


def train_tokenizer(texts: Sequence[str]):  # -> tokenizers.Tokenizer
    """A WordLevel tokenizer learned from ``texts``: lower-cased words, ``[CLS]`` first, truncated at MAX_LENGTH."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS)))
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{CLS} $A", special_tokens=[(CLS, 2)])
    tokenizer.enable_truncation(MAX_LENGTH)
    return tokenizer


def all_words() -> list[str]:
    """Every word the task uses, so a tokenizer trained on them covers the whole vocabulary."""
    return list(FILLER) + [word for words in TOPICS.values() for word in words]


def encode(tokenizer, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Token ids and attention mask ``[n, longest]``, padded with id 0 / mask 0 (as the handler pads)."""
    encodings = tokenizer.encode_batch(list(texts))
    longest = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), longest), np.int64)
    mask = np.zeros_like(ids)
    for row, encoding in enumerate(encodings):
        ids[row, :len(encoding.ids)] = encoding.ids
        mask[row, :len(encoding.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask}


class BertClassifier(nn.Module):
    """BertForSequenceClassification with a plain ``forward(input_ids, attention_mask) -> logits``."""

    def __init__(self, size: BertSize = TINY, vocab_size: int = VOCAB_SIZE) -> None:
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(vocab_size=vocab_size, hidden_size=size.hidden, num_hidden_layers=size.layers,
                            num_attention_heads=size.heads, intermediate_size=size.intermediate,
                            max_position_embeddings=MAX_LENGTH, num_labels=len(LABELS),
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                            attn_implementation="eager")  # eager attention traces and exports to ONNX as plain ops
        self.bert = BertForSequenceClassification(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits


def tiny_bert() -> nn.Module:
    """The test-sized BERT (a factory for ``servekit export --factory servekit.examples.text_model:tiny_bert``)."""
    torch.manual_seed(0)
    return BertClassifier(TINY).eval()


def small_bert() -> nn.Module:
    """The 4-layer, 256-wide BERT the measurements use."""
    torch.manual_seed(0)
    return BertClassifier(SMALL).eval()


def train(model: nn.Module, inputs: dict[str, np.ndarray], labels: np.ndarray, epochs: int = 3,
          batch_size: int = 32, lr: float = 3e-3, seed: int = 0) -> float:
    """A short AdamW fine-tune from random init; returns the seconds it took."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    ids, mask, y = (torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"]),
                    torch.from_numpy(labels))
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(ids[batch], mask[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()
    return time.perf_counter() - started


def accuracy(model: nn.Module, inputs: dict[str, np.ndarray], labels: np.ndarray) -> float:
    """Top-1 accuracy of the eager model."""
    with torch.inference_mode():
        logits = model(torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"]))
    return float((logits.argmax(1).numpy() == labels).mean())


@dataclass(frozen=True)
class TextTask:
    """A trained text model and its data, written where ``servekit export`` can read them."""

    model: nn.Module
    tokenizer_path: Path
    weights_path: Path
    heldout_path: Path  # .npz: input_ids, attention_mask
    train_inputs: dict[str, np.ndarray]
    train_labels: np.ndarray
    test_texts: list[str]
    test_inputs: dict[str, np.ndarray]
    test_labels: np.ndarray
    accuracy: float


def prepare_text_task(out_dir: Path, size: BertSize = TINY, train_count: int = 1200, test_count: int = 256,
                      epochs: int = 4) -> TextTask:
    """Generate the data, train the tokenizer and the model, and save tokenizer.json, weights and held-out."""
    out_dir.mkdir(parents=True, exist_ok=True)
    train_texts, train_labels = synthetic_sentences(train_count, seed=0)
    test_texts, test_labels = synthetic_sentences(test_count, seed=1)
    tokenizer = train_tokenizer(all_words())
    tokenizer_path = out_dir / "tokenizer.json"
    tokenizer.save(str(tokenizer_path))
    train_inputs, test_inputs = encode(tokenizer, train_texts), encode(tokenizer, test_texts)
    torch.manual_seed(0)
    model = BertClassifier(size)
    train(model, train_inputs, train_labels, epochs=epochs, lr=size.lr)
    weights_path = out_dir / "weights.pt"
    torch.save(model.state_dict(), weights_path)
    heldout_path = out_dir / "heldout.npz"
    np.savez(heldout_path, **test_inputs)
    return TextTask(model, tokenizer_path, weights_path, heldout_path, train_inputs, train_labels, test_texts,
                    test_inputs, test_labels, accuracy(model, test_inputs, test_labels))
