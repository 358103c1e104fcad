"""nser-pipeline: Whisper layer caches and layer-adapter training for noisy speech emotion recognition."""

__version__ = "0.1.0"
