"""Speech recognition by an OpenAI-compatible ``/v1/audio/transcriptions`` server."""

from __future__ import annotations

import io
import threading
from typing import Any

import numpy as np

from tools.audio import SAMPLE_RATE, load_audio, speech_windows
from tools.common import load_once
from tools.endpoint import Endpoint

__all__ = ["EndpointASR"]


class EndpointASR:
    """Speech recognition by an OpenAI-compatible ``/v1/audio/transcriptions`` server (e.g. a GPU
    box serving Whisper for many users). The audio is checked and normalised here first, exactly
    as for the local model (:func:`load_audio`: bad, empty, silent or too long audio fails before
    anything is sent), then sent as 16 kHz mono WAV with ``language="en"``. The local voice
    detector gates it too (:func:`speech_windows`, ``vad``): audio with no speech in any window is
    not sent (the transcript is empty), and windows without speech are left out of what is sent."""

    def __init__(self, base_url: str, model: str | None = None, *, api_key_env: str | None = None,
                 timeout: float | None = None, retries: int | None = None, vad: bool = True) -> None:
        self.endpoint = Endpoint.for_tool("ASR", base_url, api_key_env=api_key_env, timeout=timeout, retries=retries)
        self.model = (model or "").strip() or None
        self.vad = vad
        self.load_seconds: float | None = None
        self._contacted = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EndpointASR({self.endpoint.base_url!r}, {self.model!r})"

    @property
    def name(self) -> str:
        return f"{self.model or '?'} @ {self.endpoint.base_url}"

    @property
    def loaded(self) -> bool:
        return self._contacted

    @load_once
    def load(self) -> None:
        """Contact the server once; without a model name, take the one model it lists."""
        self.model = self.endpoint.served_model(self.model, "--asr-model (ASKDRAW_ASR_MODEL)")
        self._contacted = True

    def transcribe(self, audio: Any) -> str:
        import soundfile as sf

        samples = load_audio(audio)
        self.load()
        if self.vad:
            windows = [w for w, _ in speech_windows(samples)]
            if not windows:
                return ""  # noise, hum or music only: nothing for the server to make words of
            if sum(w.size for w in windows) < samples.size:
                samples = np.concatenate(windows)
        buf = io.BytesIO()
        sf.write(buf, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        try:
            reply = self.endpoint.client().audio.transcriptions.create(
                model=self.model, file=("audio.wav", buf.getvalue(), "audio/wav"), language="en",
                response_format="json")
        except Exception as exc:  # noqa: BLE001 - one line naming the endpoint
            raise self.endpoint.error(exc) from exc
        text = reply if isinstance(reply, str) else getattr(reply, "text", None)
        if not isinstance(text, str):
            raise self.endpoint.malformed(f"no 'text' in {str(reply)[:80]!r}")
        return " ".join(text.split())
