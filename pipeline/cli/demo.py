"""`nser demo-corpus`: the synthetic espeak-ng corpus and babble noise the README's demo runs on."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.common import NserCommand


@click.command("demo-corpus", cls=NserCommand)
@click.argument("out", type=click.Path(), help="Folder for corpus/ and noise/babble/.")
@click.option("--voices", default=6, show_default=True, help="Speakers (espeak-ng voices).")
@click.option("--sentences", default=8, show_default=True, help="Sentences each voice reads in every emotion.")
@click.option("--folds", default=3, show_default=True, help="Speaker-independent folds.")
@click.option("--seed", default=0, show_default=True, help="Seed of the per-utterance prosody jitter and the babble.")
def demo_corpus(out, voices, sentences, folds, seed):
    """Synthesize the small espeak-ng demo corpus and a babble noise folder (see README)."""
    from pipeline.corpora.synthetic import build_babble_noise, build_demo_corpus

    corpus = build_demo_corpus(Path(out) / "corpus", n_voices=voices, n_sentences=sentences, n_folds=folds,
                               seed=seed)
    noise = build_babble_noise(Path(out) / "noise" / "babble", seed=seed)
    click.echo(f"corpus: {corpus}\nnoise: {noise}")
