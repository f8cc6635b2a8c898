"""The architecture zoo: tiny checkpoints saved with save_pretrained, each exported with one ``servekit export
--transformers`` and validated. The default run exports a few (here and in the ``checkpoints`` fixture); the
whole list runs under the ``slow`` marker (``make zoo``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from servekit.build.checkpoint.derive import CheckpointError
from servekit.build.model_dir import VALIDATION_FILE
from servekit.cli import main
from servekit.examples.zoo import ARCHITECTURES, BY_NAME, EXTRA, save_checkpoint
from servekit.measure.zoo_report import ZooRow, render

ALL_FORMATS = ("torchscript", "onnx", "aoti")


def validated_formats(directory: Path) -> set[str]:
    """The formats validation.json vouches for, each with every comparison passed."""
    report = json.loads((directory / VALIDATION_FILE).read_text())
    return {fmt for fmt in ALL_FORMATS if report.get(fmt) and all(c["passed"] for c in report[fmt])}


def test_one_command_from_a_folder_says_what_it_derived(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = save_checkpoint("bert", tmp_path / "my-sentiment-model")
    status = main(["export", "--transformers", str(folder), "--formats", "torchscript,onnx",
                   "--build-dir", str(tmp_path / "build")])
    out = capsys.readouterr().out
    assert status == 0
    for line in ("task: classification (architecture BertForSequenceClassification)",
                 "labels: negative, neutral, positive (config.json id2label)",
                 "input_ids: int64, length 1..128", "attention_mask: int64 0..1", "tokenizer: ",
                 "held-out: random token ids", "validated my-sentiment-model: TorchScript, ONNX match eager PyTorch"):
        assert line in out
    assert validated_formats(tmp_path / "build" / "my-sentiment-model") == {"torchscript", "onnx"}
    assert (tmp_path / "build" / "my-sentiment-model" / "tokenizer.json").is_file()


def test_what_cannot_be_derived_is_an_error_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = save_checkpoint("bert-embedder", tmp_path / "embedder")
    assert main(["export", "--transformers", str(folder), "--build-dir", str(tmp_path / "build")]) == 2
    assert "give --pooling mean|cls" in capsys.readouterr().err
    ast = save_checkpoint("ast", tmp_path / "ast")
    assert main(["export", "--transformers", str(ast), "--build-dir", str(tmp_path / "build")]) == 2
    assert BY_NAME["ast"].refused in capsys.readouterr().err


def test_the_default_run_zoo_validated_every_format_it_built(checkpoints) -> None:
    for exported in checkpoints.values():
        assert validated_formats(exported.directory) == {"torchscript", "onnx"}, exported.name


def test_the_report_counts_the_listed_architectures_and_says_why() -> None:
    rows = [ZooRow("bert", "BertForSequenceClassification", "text", True, task="classification", one_command="pass",
                   cells={"torchscript": "pass", "onnx": "pass", "aoti": "fails: no C++ compiler"}),
            ZooRow("ast", "ASTForAudioClassification", "audio", True, "computed outside",
                   one_command="fails: takes features computed outside the model"),
            ZooRow("hubert", "HubertForSequenceClassification", "audio", False, one_command="pass")]
    text = render(rows, "1.00, 1.00, 1.00", 60.0)
    assert "**1 of the 2 listed architectures export and validate in one command (50 %).**" in text
    assert "| bert | BertForSequenceClassification | classification | pass | pass | pass | fails: no C++ compiler |" in text
    assert "| hubert (extra) |" in text
    assert [row.as_expected for row in rows] == [True, True, True]
    assert not ZooRow("x", "X", "text", True, one_command="fails: something else").as_expected


@pytest.mark.slow
@pytest.mark.parametrize("name", [a.name for a in ARCHITECTURES + EXTRA])
def test_every_zoo_architecture_exports_in_one_command(name: str, tmp_path: Path) -> None:
    from servekit.examples.zoo import export_checkpoint

    arch = BY_NAME[name]
    if arch.refused:
        with pytest.raises(CheckpointError, match=arch.refused):
            export_checkpoint(name, tmp_path, formats=",".join(ALL_FORMATS))
        return
    exported = export_checkpoint(name, tmp_path, formats=",".join(ALL_FORMATS))
    assert validated_formats(exported.directory) == set(ALL_FORMATS)


def test_the_zoo_list_is_the_readme_list() -> None:
    """Twenty listed architectures across text, vision and audio, at least 90 % of them exportable."""
    assert len(ARCHITECTURES) == 20
    assert {a.modality for a in ARCHITECTURES} == {"text", "image", "audio"}
    assert sum(not a.refused for a in ARCHITECTURES) / len(ARCHITECTURES) >= 0.9
    assert len({a.name for a in ARCHITECTURES + EXTRA}) == len(ARCHITECTURES + EXTRA)
