"""What ``--transformers DIR`` reads from a save_pretrained folder, and the flag each refusal names."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from handlers.config import CLASSIFICATION, EMBEDDING, QUESTION_ANSWERING, TOKEN_CLASSIFICATION
from handlers.signature import Range
from servekit.build.checkpoint.derive import CheckpointError, CheckpointOptions, derive
from servekit.build.images import photo_crops
from servekit.examples.zoo import IMAGE_LABELS, NER_LABELS, SPECTROGRAM, TEXT_LABELS, save_checkpoint


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    names = ("bert", "roberta", "mpnet", "gpt2", "distilbert", "bert-ner", "bert-qa", "bert-embedder", "vit",
             "convnext", "mobilenet-v2", "wav2vec2", "ast")
    return {name: save_checkpoint(name, root / name) for name in names}


def shape(derived, name: str):
    return next(spec for spec in derived.signature.inputs if spec.name == name)


def test_a_text_classifier_says_task_labels_inputs_and_tokenizer(folders) -> None:
    derived = derive(folders["bert"])
    assert (derived.task, derived.labels, derived.modality) == (CLASSIFICATION, TEXT_LABELS, "text")
    assert derived.signature.names == ("input_ids", "attention_mask", "token_type_ids")
    ids = shape(derived, "input_ids")
    assert ids.shape == (Range(1, 128),) and (ids.min_value, ids.max_value, ids.pad_value) == (0, 159, 0)
    assert (shape(derived, "token_type_ids").min_value, shape(derived, "token_type_ids").max_value) == (0, 1)
    assert derived.tokenizer == folders["bert"] / "tokenizer.json"
    lines = "\n".join(derived.lines)
    for said in ("task: classification (architecture BertForSequenceClassification)",
                 "labels: negative, neutral, positive (config.json id2label)",
                 "input_ids: int64, length 1..128 (max_position_embeddings 128), ids 0..159 (vocab_size), padding id 0",
                 "token_type_ids: int64 0..1 (type_vocab_size)", "tokenizer: "):
        assert said in lines


def test_positions_counted_from_the_padding_index_shorten_the_length(folders) -> None:
    """RoBERTa and MPNet number positions from padding_idx + 1: 130 positions hold 128 tokens (MPNet's padding_idx
    is 1 whatever config.json says, so 128 hold 126)."""
    roberta = derive(folders["roberta"])
    assert shape(roberta, "input_ids").shape == (Range(1, 128),) and shape(roberta, "input_ids").pad_value == 1
    assert "token_type_ids" not in roberta.signature.names  # type_vocab_size 1: the model's zeros are the only value
    assert shape(derive(folders["mpnet"]), "input_ids").shape == (Range(1, 126),)
    assert "token_type_ids" not in derive(folders["distilbert"]).signature.names  # forward() does not take them


def test_max_length_caps_and_cannot_exceed_the_model(folders) -> None:
    assert shape(derive(folders["bert"], CheckpointOptions(max_length=32)), "input_ids").shape == (Range(1, 32),)
    with pytest.raises(CheckpointError, match=r"--max-length 500 exceeds what the model takes: 128"):
        derive(folders["bert"], CheckpointOptions(max_length=500))


def test_token_classification_question_answering_and_embeddings(folders) -> None:
    ner = derive(folders["bert-ner"], CheckpointOptions(aggregation="none"))
    assert (ner.task, ner.labels, ner.task_settings) == (TOKEN_CLASSIFICATION, NER_LABELS, {"aggregation": "none"})
    qa = derive(folders["bert-qa"])
    assert qa.task == QUESTION_ANSWERING and qa.signature.outputs == ("start_logits", "end_logits")
    assert qa.task_settings == {"window": 128, "doc_stride": 64, "max_answer_length": 15}  # min(384, 128), min(128, 64)
    embedder = derive(folders["bert-embedder"], CheckpointOptions(pooling="mean"))
    assert embedder.task == EMBEDDING and embedder.signature.outputs == ("embedding",) and embedder.labels == ()


def test_what_the_folder_does_not_say_names_the_flag(folders, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="base model without a head: give --pooling mean|cls"):
        derive(folders["bert-embedder"])
    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(folders["bert"], no_tokenizer)
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer.json .* give --tokenizer FILE"):
        derive(no_tokenizer)
    assert derive(no_tokenizer, CheckpointOptions(tokenizer=folders["bert"] / "tokenizer.json")).task == CLASSIFICATION
    gpt2 = tmp_path / "gpt2"
    shutil.copytree(folders["gpt2"], gpt2)
    config = json.loads((gpt2 / "config.json").read_text())
    (gpt2 / "config.json").write_text(json.dumps({**config, "pad_token_id": None}))
    with pytest.raises(CheckpointError, match="no pad_token_id: give --pad-token-id"):
        derive(gpt2)
    assert shape(derive(gpt2, CheckpointOptions(pad_token_id=2)), "input_ids").pad_value == 2
    (gpt2 / "config.json").write_text(json.dumps({**config, "architectures": None}))
    with pytest.raises(CheckpointError, match="give --architecture CLASS"):
        derive(gpt2)
    with pytest.raises(CheckpointError, match="has no config.json"):
        derive(tmp_path)
    with pytest.raises(CheckpointError, match=SPECTROGRAM):
        derive(folders["ast"])
    no_processor = tmp_path / "no_processor"
    shutil.copytree(folders["vit"], no_processor)
    (no_processor / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointError, match="no preprocessor_config.json"):
        derive(no_processor)


@pytest.mark.parametrize("name", ["vit", "convnext", "mobilenet-v2"])
def test_image_preprocessing_equals_the_transformers_image_processor(folders, name: str) -> None:
    """Our decode with the derived settings gives what transformers' own processor gives, on photos of any aspect."""
    from PIL import Image
    from transformers import AutoImageProcessor

    derived = derive(folders[name])
    assert derived.labels == IMAGE_LABELS
    (_, preprocess), = derived.signature.images.items()
    processor = AutoImageProcessor.from_pretrained(folders[name], local_files_only=True)
    for data in photo_crops(6):
        ours = preprocess.to_model([preprocess.decode_many([data])])
        theirs = processor(Image.open(io.BytesIO(data)).convert("RGB"), return_tensors="np")["pixel_values"]
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_audio_settings_come_from_the_feature_extractor(folders) -> None:
    derived = derive(folders["wav2vec2"], CheckpointOptions(max_seconds=2.0))
    (name, audio), = derived.signature.audio.items()
    assert name == "input_values" and audio.sampling_rate == 16_000
    # two frames out of conv kernels (10, 4, 4) with strides (5, 4, 4): 165 samples
    assert (audio.min_samples, audio.max_samples) == (165, 32_000)
    assert derived.signature.names == ("input_values", "attention_mask") and not derived.single_request_batches


def test_a_group_norm_audio_model_is_served_one_request_per_batch(folders, tmp_path: Path) -> None:
    """Its feature encoder normalises over the padded clip, so padding would change its answers."""
    folder = tmp_path / "group_norm"
    shutil.copytree(folders["wav2vec2"], folder)
    extractor = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**extractor, "return_attention_mask": False}))
    derived = derive(folder)
    assert derived.single_request_batches and "one request per batch" in "\n".join(derived.lines)
    assert not derived.wrapper.model_takes_mask
