"""The caller's side of `cxr.dicom_worker`: one long-lived decoder process, replaced after a crash.

A damaged compressed DICOM can crash GDCM's C++ codecs; in the worker that costs the worker, not the
app. Requests go one at a time (a lock): the pipe carries one conversation, and a compressed film
decodes in a fraction of a second.
"""

from __future__ import annotations

import atexit
import io
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from cxr.dicom_worker import LENGTH, OK

WORKER = Path(__file__).with_name("dicom_worker.py")
# A compressed radiograph decodes in well under a second (the first request also starts Python,
# ~1 s); a decoder still busy after this has hung, and is killed.
TIMEOUT_S = 60.0

_lock = threading.Lock()
_worker: subprocess.Popen | None = None


class DecoderFailed(Exception):
    """The decoder process raised, crashed or hung on this file."""


def first_frame(data: bytes) -> np.ndarray:
    """The stored values of the first frame of the DICOM file `data`, decoded in the worker."""
    with _lock:
        worker = _running_worker()
        watchdog = threading.Timer(TIMEOUT_S, worker.kill)
        watchdog.start()
        try:
            worker.stdin.write(LENGTH.pack(len(data)) + data)
            worker.stdin.flush()
            status = worker.stdout.read(1)
            payload = _read_array(worker.stdout) if status == OK else b""
        except OSError:  # the worker died while we wrote: a broken pipe
            status, payload = b"", b""
        finally:
            watchdog.cancel()
        if not status or (status == OK and not payload):
            _stop()  # crashed or killed: the next file gets a fresh worker
            raise DecoderFailed("the decoder process stopped")
        if status != OK:
            raise DecoderFailed("the decoder could not read the pixel data")
        return np.load(io.BytesIO(payload), allow_pickle=False)


def _read_array(stream) -> bytes:
    header = stream.read(LENGTH.size)
    if len(header) < LENGTH.size:
        return b""
    size = LENGTH.unpack(header)[0]
    payload = stream.read(size)
    return payload if len(payload) == size else b""


def _running_worker() -> subprocess.Popen:
    global _worker
    if _worker is None or _worker.poll() is not None:
        # The codec's stderr goes nowhere: it may quote the file, and says nothing a user can act on.
        _worker = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return _worker


def _stop() -> None:
    global _worker
    if _worker is not None:
        _worker.kill()
        _worker.wait()
        for pipe in (_worker.stdin, _worker.stdout):
            try:
                pipe.close()
            except OSError:  # unflushed bytes to a dead process
                pass
        _worker = None


def _stop_at_exit() -> None:
    with _lock:
        _stop()


atexit.register(_stop_at_exit)
