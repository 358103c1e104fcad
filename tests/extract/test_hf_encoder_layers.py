"""HFEncoderLayerExtractor on real EmoDB audio with tiny random wav2vec2 / HuBERT / WavLM models
(tests/ssl_models.py) loaded back through from_pretrained: every state, each utterance's own frames,
values as a direct forward of the utterance alone, and independence from batch composition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoModel

from pipeline.audio import SAMPLE_RATE, load_audio
from pipeline.errors import AudioError
from pipeline.extract.hf_encoder_layers import HFEncoderLayerExtractor
from pipeline.models.hf_encoder import load_speech_encoder
from tests.ssl_models import TINY

# Cut to different lengths (the EmoDB copy is 2.0 s throughout) so that padding would show.
SECONDS = (0.73, 1.31, 2.0)


@pytest.fixture(scope="module")
def audios(emodb_root) -> list[np.ndarray]:
    files = sorted(emodb_root.rglob("*.flac"))[:len(SECONDS)]
    return [load_audio(f).samples[:int(s * SAMPLE_RATE)] for f, s in zip(files, SECONDS)]


def direct_states(model_dir, audio: np.ndarray) -> list[np.ndarray]:
    """A plain forward of one utterance, independent of the extractor."""
    model = AutoModel.from_pretrained(model_dir).eval()
    fe = AutoFeatureExtractor.from_pretrained(model_dir)
    with torch.no_grad():
        out = model(fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values, output_hidden_states=True)
    return [h[0].numpy().astype(np.float16) for h in out.hidden_states]


@pytest.mark.parametrize("name", sorted(TINY))
def test_states_frames_and_values_match_a_direct_forward(name, tiny_ssl_dirs, audios):
    enc = load_speech_encoder(str(tiny_ssl_dirs[name]))
    assert (enc.n_states, enc.d_model, enc.frame_rate) == (3, 32, 50.0)
    results = HFEncoderLayerExtractor(enc).extract(audios, [""] * len(audios))
    for audio, res in zip(audios, results):
        want = direct_states(tiny_ssl_dirs[name], audio)
        n = int(enc.model._get_feat_extract_output_lengths(torch.tensor(len(audio))))
        assert len(res.encoder) == 3 and n == want[0].shape[0]
        assert abs(n - len(audio) / SAMPLE_RATE * enc.frame_rate) < 2
        for got, ref in zip(res.encoder, want):
            assert got.dtype == np.float16 and got.shape == (n, 32)
            np.testing.assert_array_equal(got, ref)
        assert res.decoder == [] and res.tokens.dtype == np.int32 and res.tokens.size == 0
        assert res.hypothesis == "" and not res.hyp_loop and not res.hyp_capped


@pytest.mark.parametrize("name", sorted(TINY))
def test_stored_states_do_not_depend_on_batch_composition(name, tiny_ssl_dirs, audios):
    ex = HFEncoderLayerExtractor(load_speech_encoder(str(tiny_ssl_dirs[name])))
    together = ex.extract(audios)
    apart = ex.extract(audios[1::-1])[::-1] + ex.extract(audios[2:])
    for a, b in zip(together, apart):
        for x, y in zip(a.encoder, b.encoder):
            np.testing.assert_array_equal(x, y)


def test_padded_batches_only_for_layer_norm_front_ends(tiny_ssl_dirs, audios):
    """batch_size > 1: group-norm models still run alone (bit-identical); the layer-norm WavLM pads
    with a mask and agrees with the single-utterance states to about one float16 step."""
    for name in sorted(TINY):
        enc = load_speech_encoder(str(tiny_ssl_dirs[name]))
        alone = HFEncoderLayerExtractor(enc).extract(audios)
        ex = HFEncoderLayerExtractor(enc, batch_size=8)
        batched = ex.extract(audios)
        assert ex.takes_padded_batches == (name == "wavlm")
        for a, b in zip(alone, batched):
            for x, y in zip(a.encoder, b.encoder):
                assert x.shape == y.shape
                if ex.takes_padded_batches:
                    np.testing.assert_allclose(y, x, rtol=2e-3, atol=2e-3)
                else:
                    np.testing.assert_array_equal(y, x)


def test_audio_shorter_than_one_frame_refused(tiny_ssl_dirs, audios):
    ex = HFEncoderLayerExtractor(load_speech_encoder(str(tiny_ssl_dirs["wav2vec2"])))
    with pytest.raises(AudioError, match="shorter than one frame"):
        ex.extract([audios[0], audios[0][:200]])
