"""The shipped `hk-mainland-science` rule measured on the labelled real items (eval/labels.csv)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator import config
from eval.measure import LABELS, Label, main, measure, read_labels
from tests.corpus import CORPUS

ROOT = Path(__file__).resolve().parent.parent
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no corpus at {CORPUS}")


def test_labels_are_well_formed() -> None:
    labels = read_labels(LABELS)
    assert len(labels) >= 400
    assert len({label.key for label in labels}) == len(labels)
    assert sum(label.positive for label in labels) >= 20


@needs_corpus
def test_shipped_rules_reach_the_precision_and_recall_goal() -> None:
    result = measure(config.load(ROOT / "config" / "feeds.toml"), CORPUS, read_labels(LABELS))
    assert result.not_found == []
    assert result.precision >= 0.9, result.false_positives
    assert result.recall >= 0.85, result.false_negatives


@needs_corpus
def test_measure_counts_both_kinds_of_mistake(tmp_path: Path) -> None:
    """A rule that tags everything with "香港" finds the positives and many negatives."""
    path = tmp_path / "feeds.toml"
    path.write_text(
        '[tags.hk]\nany = ["香港", "Hong Kong"]\n[publish]\ntopic = "hk"\n', encoding="utf-8"
    )
    labels = read_labels(LABELS)
    result = measure(config.load(path), CORPUS, labels)
    found = result.true_positives + len(result.false_negatives)
    assert found == sum(label.positive for label in labels)
    assert len(result.false_positives) > 100
    assert result.precision < 0.3


def test_measure_skips_cleanly_without_the_corpus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--corpus", str(tmp_path / "absent")]) == 0
    assert "skipped: no corpus at" in capsys.readouterr().out


def test_unknown_keys_are_reported(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "feed.xml").write_text(
        "<rss version='2.0'><channel><title>t</title><item><title>香港深圳科技合作</title>"
        "<guid>https://example.org/1</guid></item></channel></rss>",
        encoding="utf-8",
    )
    labels = [
        Label("https://example.org/1", True, "feed.xml", "香港"),
        Label("https://example.org/2", False, "feed.xml", "x"),
    ]
    result = measure(config.load(ROOT / "config" / "feeds.toml"), corpus, labels)
    assert [label.key for label in result.not_found] == ["https://example.org/2"]
    assert result.true_positives + len(result.false_negatives) == 1
