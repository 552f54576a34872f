"""espeak-ng speech synthesis through ctypes, using the library shipped by `espeakng_loader`.

espeak keeps hidden global state between utterances (pitch-flutter phase, wave phase, filter
memories), so two syntheses of the same text differ by a few samples' timing. To be
deterministic the library is initialised once per process and every utterance is synthesised
in a forked child, which starts from the pristine post-initialisation state and sends its
samples back through a pipe: a few milliseconds an utterance (POSIX only). `phonemes` (espeak's
IPA transcription, the labels of the CTC judge) runs in a child too, so it leaves that state alone.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import threading
import warnings

import numpy as np

from data_pipelines.espeak_tts.voices import Voice

# espeak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_INITIALIZE_DONT_EXIT = 0x8000  # return errors instead of calling exit()
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PHONEMES_IPA = 0x02  # espeak_TextToPhonemes phonememode bit 1: IPA
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_OK = 0

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)


class EspeakError(RuntimeError):
    """espeak-ng could not be loaded or refused a request."""


class _Engine:
    """The process-wide espeak-ng instance."""

    def __init__(self):
        try:
            import espeakng_loader
            lib_path = espeakng_loader.get_library_path()
            data_path = espeakng_loader.get_data_path()
            self.lib = ctypes.CDLL(lib_path)
        except (ImportError, OSError, RuntimeError) as e:
            raise EspeakError(
                f"cannot load espeak-ng from the espeakng_loader wheel ({e}); "
                "install it with `pip install espeakng-loader`") from e
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(),
                                     _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (returned {rate}) with data at {data_path}")
        self.sample_rate = rate
        self.lock = threading.Lock()
        self._chunks: list[bytes] = []
        # Keep a reference: ctypes callbacks are freed when the Python object dies.
        self._callback = _CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, num_samples, _events):
        if wav and num_samples > 0:
            self._chunks.append(ctypes.string_at(wav, 2 * num_samples))
        return 0  # 0 = continue synthesis

    def _speak(self, text: str, voice: Voice) -> bytes:
        """Synthesise in this process (advances espeak's hidden state); raw int16 bytes."""
        lib = self.lib

        def check(status, what):
            if status != _OK:
                raise EspeakError(f"espeak-ng {what} failed with status {status} for {voice.id}")

        check(lib.espeak_SetVoiceByName(voice.espeak_name.encode()),
              f"SetVoiceByName({voice.espeak_name!r})")
        for param, value in ((_RATE, voice.espeak_rate), (_PITCH, voice.pitch),
                             (_RANGE, voice.espeak_range), (_VOLUME, 100)):
            check(lib.espeak_SetParameter(param, value, 0), f"SetParameter({param}, {value})")
        lib.espeak_ng_SetRandSeed(0)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        check(lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None),
              "Synth")
        chunks, self._chunks = self._chunks, []
        return b"".join(chunks)

    def _phonemes(self, text: str, language: str) -> bytes:
        """espeak's IPA transcription of `text`, clause by clause (in this process); UTF-8 bytes."""
        lib = self.lib
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        if lib.espeak_SetVoiceByName(language.encode()) != _OK:
            raise EspeakError(f"espeak-ng has no voice for language {language!r}")
        buffer = ctypes.create_string_buffer(text.encode("utf-8") + b"\0")
        cursor = ctypes.c_void_p(ctypes.addressof(buffer))  # espeak advances it clause by clause
        clauses = []
        while cursor.value:
            clauses.append(lib.espeak_TextToPhonemes(ctypes.byref(cursor), _CHARS_UTF8, _PHONEMES_IPA) or b"")
        return b" ".join(clauses)

    def _forked(self, work, what: str) -> bytes:
        """Runs `work() -> bytes` in a forked child, so this process's espeak state stays pristine."""
        if not hasattr(os, "fork"):
            raise EspeakError("deterministic espeak calls fork a child each; this platform has no os.fork")
        with self.lock:
            read_fd, write_fd = os.pipe()
            with warnings.catch_warnings():
                # Python warns that forking a multithreaded (JAX) process may deadlock; the child only
                # calls espeak and exits with os._exit, touching no lock another thread may hold.
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
                pid = os.fork()
            if pid == 0:  # child: run once from the clean state, send, exit without cleanup
                status = 0
                try:
                    os.close(read_fd)
                    payload = work()
                except BaseException as e:  # report any failure to the parent as text
                    status, payload = 1, repr(e).encode()
                try:
                    with os.fdopen(write_fd, "wb") as f:
                        f.write(payload)
                finally:
                    os._exit(status)
            os.close(write_fd)
            with os.fdopen(read_fd, "rb") as f:
                payload = f.read()
            _, wait_status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(wait_status)
        if code != 0:
            message = payload.decode(errors="replace") or f"exit code {code}"
            raise EspeakError(f"espeak-ng failed on {what}: {message}")
        return payload

    def synthesize(self, text: str, voice: Voice) -> np.ndarray:
        payload = self._forked(lambda: self._speak(text, voice), f"{text!r} with voice {voice.id}")
        return np.frombuffer(payload, np.int16).copy()

    def phonemes(self, text: str, language: str) -> str:
        return self._forked(lambda: self._phonemes(text, language), f"phonemes of {text!r} ({language})").decode()

    def phonemes_many(self, pairs: list[tuple[str, str]]) -> list[str | None]:
        def work():
            readings = []
            for text, language in pairs:
                try:
                    readings.append(self._phonemes(text, language).decode() if text.strip() else None)
                except (EspeakError, UnicodeDecodeError):
                    readings.append(None)
            return json.dumps(readings).encode()
        return json.loads(self._forked(work, f"phonemes of {len(pairs)} texts"))


@functools.cache
def _engine() -> _Engine:
    return _Engine()


def native_sample_rate() -> int:
    """espeak's output rate, as returned by espeak_Initialize (22050 for espeak-ng)."""
    return _engine().sample_rate


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak `text` with `voice`; int16 mono samples at `native_sample_rate()`."""
    if not text.strip():
        raise ValueError("cannot synthesise empty text")
    return _engine().synthesize(text, voice)


def phonemes(text: str, language: str) -> str:
    """espeak's IPA transcription of `text` as the `language` voice reads it (clauses joined by spaces)."""
    if not text.strip():
        raise ValueError("cannot phonemize empty text")
    return _engine().phonemes(text, language)


def phonemes_many(pairs) -> list[str | None]:
    """`phonemes` of many (text, language) pairs, read one after another in a single forked child: forking a
    large (JAX) process costs tens of milliseconds, which one child a text would pay ten thousand times for a
    corpus. None where espeak cannot read a text (empty, or a language it has no voice for)."""
    pairs = list(pairs)
    return _engine().phonemes_many(pairs) if pairs else []
