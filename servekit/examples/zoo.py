"""The architecture zoo: tiny random transformers checkpoints written with ``save_pretrained`` (config, weights,
tokenizer.json built here with ``tokenizers``, preprocessor_config.json), the way a user's folder looks.
Nothing is downloaded: every config is built from its class with small sizes."""
from __future__ import annotations

import io
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

WORDS = ("the a of and to in is it was for on are with as at be this from by or an he she they we you not but "
         "john smith mary jones paris london berlin acme corp globex works lives city river lake north south east "
         "west new york goal match team coach score rain storm cloud snow bread cheese soup guitar song drum piano "
         "where who what when did does ? . , ! ' -").split()
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
NER_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
TEXT_LABELS = ("negative", "neutral", "positive")
IMAGE_LABELS = ("cat", "dog", "bird", "fish")
AUDIO_LABELS = ("yes", "no", "up", "down", "silence")
MAX_POSITIONS = 128
SMALL_TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=MAX_POSITIONS)
ROBERTA_POSITIONS = MAX_POSITIONS + 2  # RoBERTa numbers positions from padding_idx + 1
SMALL_WAV2VEC2 = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16,
                      num_conv_pos_embedding_groups=2, classifier_proj_size=16, feat_extract_norm="layer")
SAMPLING_RATE = 16_000


def wordpiece_tokenizer() -> tuple[Any, dict]:
    """BERT-style: lower-cased WordPiece over WORDS plus single characters, [CLS] A [SEP] (B [SEP])."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + list(dict.fromkeys(WORDS + list(CHARS) + [f"##{c}" for c in CHARS] + ["##s", "##ed", "##ing"]))
    tokenizer = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer, dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                           mask_token="[MASK]")


def bytelevel_tokenizer() -> tuple[Any, dict]:
    """RoBERTa/GPT-2-style: byte-level BPE learned from WORDS (deterministic), <s> A </s></s> B </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([" ".join(WORDS)] * 3 + [" " + w for w in WORDS], trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                            add_prefix_space=False)
    return tokenizer, dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", cls_token="<s>",
                           sep_token="</s>", mask_token="<mask>")


TOKENIZERS = {"wordpiece": wordpiece_tokenizer, "bytelevel": bytelevel_tokenizer}


def save_tokenizer(folder: Path, kind: str) -> int:
    """tokenizer.json + tokenizer_config.json as ``tokenizer.save_pretrained`` writes them; the vocabulary size."""
    from transformers import PreTrainedTokenizerFast

    tokenizer, specials = TOKENIZERS[kind]()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=MAX_POSITIONS, **specials).save_pretrained(folder)
    return tokenizer.get_vocab_size()


@dataclass(frozen=True)
class Architecture:
    """One zoo entry: a tiny config, the model class, and what else its folder holds."""

    name: str
    model_class: str
    config: str  # the config class
    settings: dict = field(default_factory=dict)
    labels: tuple[str, ...] = TEXT_LABELS
    tokenizer: str | None = None  # wordpiece | bytelevel
    processor: Callable[[], Any] | None = None  # an image processor or feature extractor to save beside it
    modality: str = "text"
    pooling: str | None = None  # base models: --pooling
    refused: str = ""  # why servekit refuses it (its export must fail with this in the message)
    options: dict = field(default_factory=dict)  # extra export options (max_seconds for audio)


def _vit_processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def _convnext_processor():
    from transformers import ConvNextImageProcessor

    return ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875)


def _mobilenet_processor():
    from transformers import MobileNetV2ImageProcessor

    return MobileNetV2ImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32})


def _wav2vec2_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0, do_normalize=True,
                                    return_attention_mask=True)


def _ast_extractor():
    from transformers import ASTFeatureExtractor

    return ASTFeatureExtractor(num_mel_bins=16, max_length=64, sampling_rate=SAMPLING_RATE)


BERT = dict(vocab_size=160, **SMALL_TEXT)
ROBERTA = dict(vocab_size=480, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1,
               **{**SMALL_TEXT, "max_position_embeddings": ROBERTA_POSITIONS})
DISTILBERT = dict(vocab_size=160, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=MAX_POSITIONS)
AUDIO = dict(max_seconds=1.0)
SPECTROGRAM = "features computed outside the model"

# The 20 of the target, in the README's order; the last one is refused (its features are computed outside
# the model), so 19/20 = 95 % export in one command.
ARCHITECTURES = (
    Architecture("bert", "BertForSequenceClassification", "BertConfig", BERT, tokenizer="wordpiece"),
    Architecture("distilbert", "DistilBertForSequenceClassification", "DistilBertConfig", DISTILBERT, tokenizer="wordpiece"),
    Architecture("roberta", "RobertaForSequenceClassification", "RobertaConfig", ROBERTA, tokenizer="bytelevel"),
    Architecture("albert", "AlbertForSequenceClassification", "AlbertConfig",
                 dict(BERT, embedding_size=16, pad_token_id=0), tokenizer="wordpiece"),
    Architecture("electra", "ElectraForSequenceClassification", "ElectraConfig", dict(BERT, embedding_size=16),
                 tokenizer="wordpiece"),
    Architecture("deberta-v2", "DebertaV2ForSequenceClassification", "DebertaV2Config", dict(BERT, pad_token_id=0),
                 tokenizer="wordpiece"),
    Architecture("mpnet", "MPNetForSequenceClassification", "MPNetConfig", dict(BERT, pad_token_id=0),
                 tokenizer="wordpiece"),
    Architecture("gpt2", "GPT2ForSequenceClassification", "GPT2Config",
                 dict(vocab_size=480, n_embd=32, n_layer=2, n_head=2, n_positions=MAX_POSITIONS, pad_token_id=1,
                      bos_token_id=0, eos_token_id=2), tokenizer="bytelevel"),
    Architecture("modernbert", "ModernBertForSequenceClassification", "ModernBertConfig",
                 dict(BERT, pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3,
                      global_attn_every_n_layers=2, local_attention=16), tokenizer="wordpiece"),
    Architecture("xlm-roberta", "XLMRobertaForSequenceClassification", "XLMRobertaConfig", ROBERTA, tokenizer="bytelevel"),
    Architecture("bert-ner", "BertForTokenClassification", "BertConfig", BERT, NER_LABELS, tokenizer="wordpiece"),
    Architecture("bert-qa", "BertForQuestionAnswering", "BertConfig", BERT, (), tokenizer="wordpiece"),
    Architecture("bert-embedder", "BertModel", "BertConfig", BERT, (), tokenizer="wordpiece", pooling="mean"),
    Architecture("vit", "ViTForImageClassification", "ViTConfig",
                 dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64), IMAGE_LABELS, processor=_vit_processor, modality="image"),
    Architecture("convnext", "ConvNextForImageClassification", "ConvNextConfig",
                 dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32), IMAGE_LABELS,
                 processor=_convnext_processor, modality="image"),
    Architecture("resnet", "ResNetForImageClassification", "ResNetConfig",
                 dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"), IMAGE_LABELS,
                 processor=_convnext_processor, modality="image"),
    Architecture("mobilenet-v2", "MobileNetV2ForImageClassification", "MobileNetV2Config",
                 dict(image_size=32, depth_multiplier=0.25), IMAGE_LABELS, processor=_mobilenet_processor,
                 modality="image"),
    Architecture("swin", "SwinForImageClassification", "SwinConfig",
                 dict(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4),
                 IMAGE_LABELS, processor=_vit_processor, modality="image"),
    Architecture("wav2vec2", "Wav2Vec2ForSequenceClassification", "Wav2Vec2Config", SMALL_WAV2VEC2, AUDIO_LABELS,
                 processor=_wav2vec2_extractor, modality="audio", options=AUDIO),
    Architecture("ast", "ASTForAudioClassification", "ASTConfig",
                 dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      num_mel_bins=16, max_length=64, patch_size=16, frequency_stride=10, time_stride=10),
                 AUDIO_LABELS, processor=_ast_extractor, modality="audio", refused=SPECTROGRAM),
)
# Beyond the 20: a second token-classification and QA head, two more waveform models.
EXTRA = (
    Architecture("roberta-ner", "RobertaForTokenClassification", "RobertaConfig", ROBERTA, NER_LABELS,
                 tokenizer="bytelevel"),
    Architecture("distilbert-qa", "DistilBertForQuestionAnswering", "DistilBertConfig", DISTILBERT, (),
                 tokenizer="wordpiece"),
    Architecture("hubert", "HubertForSequenceClassification", "HubertConfig", SMALL_WAV2VEC2, AUDIO_LABELS,
                 processor=_wav2vec2_extractor, modality="audio", options=AUDIO),
    Architecture("wavlm", "WavLMForSequenceClassification", "WavLMConfig", SMALL_WAV2VEC2, AUDIO_LABELS,
                 processor=_wav2vec2_extractor, modality="audio", options=AUDIO),
)
BY_NAME = {a.name: a for a in ARCHITECTURES + EXTRA}
# The default run exports these (one per modality and new task); the rest run under `make zoo` (slow).
DEFAULT_RUN = ("bert-ner", "bert-qa", "vit", "wav2vec2")


def save_checkpoint(architecture: Architecture | str, folder: Path, seed: int = 0) -> Path:
    """``save_pretrained`` a randomly initialised tiny model (+ tokenizer / processor) into ``folder``."""
    import torch
    import transformers

    arch = BY_NAME[architecture] if isinstance(architecture, str) else architecture
    folder.mkdir(parents=True, exist_ok=True)
    config = getattr(transformers, arch.config)(**arch.settings)
    if arch.labels:
        config.id2label = dict(enumerate(arch.labels))
        config.label2id = {label: i for i, label in enumerate(arch.labels)}
    if arch.tokenizer:
        vocab = save_tokenizer(folder, arch.tokenizer)
        config.vocab_size = max(config.vocab_size, vocab)
    if arch.processor is not None:
        arch.processor().save_pretrained(folder)
    torch.manual_seed(seed)
    getattr(transformers, arch.model_class)(config).eval().save_pretrained(folder)
    return folder


def wav_bytes(samples: np.ndarray, rate: int = SAMPLING_RATE, channels: int = 1) -> bytes:
    """PCM16 WAV of float samples in [-1, 1] (interleaved when ``channels`` > 1)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def tone(seconds: float, hz: float = 440.0, rate: int = SAMPLING_RATE, amplitude: float = 0.5) -> np.ndarray:
    """A sine tone as float32 samples."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


FIRST, LAST = ("john", "mary"), ("smith", "jones")
CITIES, ORGS = ("paris", "london", "berlin", "new york"), ("acme corp", "globex")
FILLER = ("the", "a", "of", "and", "it", "was", "for", "on", "with", "at", "this", "by", "not", "but")


def ner_sentences(count: int, seed: int = 0) -> list[tuple[str, list[tuple[int, int, str]]]]:
    """Sentences with people, places and organisations, each with its entities' character spans and tags."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        parts: list[tuple[str, str]] = []
        for _ in range(int(rng.integers(1, 4))):
            kind = int(rng.integers(0, 3))
            entity = {0: (f"{rng.choice(FIRST)} {rng.choice(LAST)}", "PER"), 1: (str(rng.choice(CITIES)), "LOC"),
                      2: (str(rng.choice(ORGS)), "ORG")}[kind]
            parts += [(str(w), "O") for w in rng.choice(FILLER, size=int(rng.integers(0, 3)))] + [entity]
        text, spans = "", []
        for words, tag in parts:
            start = len(text) + (1 if text else 0)
            text = f"{text} {words}" if text else words
            if tag != "O":
                spans.append((start, start + len(words), tag))
        out.append((text, spans))
    return out


def train_ner(folder: Path, steps: int = 150, seed: int = 0) -> Path:
    """Fine-tune the folder's token classifier briefly on ``ner_sentences`` (so entities span several tokens and
    B-/I- tags mean something), then save it back."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(folder, local_files_only=True)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    label_id = {label: i for i, label in model.config.id2label.items()}
    encoded = []
    for text, spans in ner_sentences(256, seed):
        encoding = tokenizer.encode(text)
        tags = []
        for (start, end), special in zip(encoding.offsets, encoding.special_tokens_mask):
            inside = next((s for s in spans if s[0] <= start < s[1]), None)
            if special:
                tags.append(-100)
            elif inside is None:
                tags.append(label_id["O"])
            else:
                tags.append(label_id[("B-" if start == inside[0] else "I-") + inside[2]])
        encoded.append((encoding.ids, tags))
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-wide model: measured 2.5 s on one thread vs 41 s on two of a loaded machine
    try:
        _steps(model, optimizer, encoded, steps)
    finally:
        torch.set_num_threads(threads)
    model.eval().save_pretrained(folder)
    return folder


def _steps(model: Any, optimizer: Any, encoded: list, steps: int) -> None:
    import torch

    for step in range(steps):
        batch = [encoded[(step * 16 + i) % len(encoded)] for i in range(16)]
        longest = max(len(ids) for ids, _ in batch)
        ids = torch.zeros(len(batch), longest, dtype=torch.long)
        labels = torch.full((len(batch), longest), -100, dtype=torch.long)
        for row, (token_ids, tags) in enumerate(batch):
            ids[row, :len(token_ids)] = torch.tensor(token_ids)
            labels[row, :len(tags)] = torch.tensor(tags)
        optimizer.zero_grad()
        mask = torch.zeros_like(ids)
        for row, (token_ids, _) in enumerate(batch):
            mask[row, :len(token_ids)] = 1
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()


@dataclass(frozen=True)
class ExportedCheckpoint:
    """A zoo checkpoint saved into ``folder`` and exported with ``--transformers`` into ``directory``."""

    name: str
    folder: Path
    directory: Path


def export_checkpoint(name: str, root: Path, formats: str = "torchscript,onnx", trained: bool = False,
                      **options: Any) -> ExportedCheckpoint:
    """save_pretrained the zoo entry under ``root/checkpoints`` and export it into ``root/build`` (as the CLI does)."""
    from servekit.build.checkpoint.derive import CheckpointOptions
    from servekit.build.checkpoint.export import TransformersOptions, export_transformers
    from servekit.build.model_config import Batching

    arch = BY_NAME[name]
    folder = save_checkpoint(arch, root / "checkpoints" / name)
    if trained:
        train_ner(folder)
    checkpoint = CheckpointOptions(pooling=arch.pooling, **{**arch.options, **options})
    directory = export_transformers(TransformersOptions(folder, name, checkpoint, formats=formats,
                                                        batching=Batching(batch_size=8, max_batch_delay_ms=50),
                                                        build_dir=root / "build"))
    return ExportedCheckpoint(name, folder, directory)


def main(argv: list[str] | None = None) -> int:
    """``python -m servekit.examples.zoo NAME FOLDER``: save one zoo checkpoint (the NER one briefly trained)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m servekit.examples.zoo", description=main.__doc__)
    parser.add_argument("name", choices=sorted(BY_NAME))
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    save_checkpoint(args.name, args.folder)
    if BY_NAME[args.name].model_class.endswith("ForTokenClassification"):
        train_ner(args.folder)
    print(f"saved {args.name} ({BY_NAME[args.name].model_class}) into {args.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
