"""Decode compressed DICOM pixel data in a process of its own, which stays up between files.

Started as a script by `cxr.dicom_isolation` (`python dicom_worker.py`). Each request on stdin is an 8-byte
big-endian length and a DICOM file's bytes; each reply on stdout is one status byte (OK or ERROR)
and, for OK, an 8-byte length and the first frame's stored values as a .npy array. The codecs
behind pydicom's plugins (GDCM's JPEG Lossless and JPEG-LS) are C++ that can crash the whole
interpreter on a damaged file; here a crash ends only this process, and the app's server lives on.
Staying up saves the ~1 s of starting Python and importing pydicom for every file. Imports nothing
from cxr, so it runs without cxr on the path; it exits when its stdin closes.
"""

import io
import logging
import struct
import sys
import warnings

OK, ERROR = b"\x00", b"\x02"
LENGTH = struct.Struct(">Q")


def first_frame(data: bytes):
    import pydicom
    from pydicom.pixels import pixel_array

    ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
    # A radiograph is one frame. Decoding only the first keeps a many-frame file's memory at one
    # frame, which the caller has already checked against the pixel limit.
    return pixel_array(ds, index=0)


def serve(requests, replies) -> None:
    import numpy as np

    while header := requests.read(LENGTH.size):
        data = requests.read(LENGTH.unpack(header)[0])
        try:
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(first_frame(data)), allow_pickle=False)
        except Exception:  # noqa: BLE001 - any codec failure means the same thing to the parent
            replies.write(ERROR)
        else:
            replies.write(OK + LENGTH.pack(buf.tell()) + buf.getvalue())
        replies.flush()


def main() -> None:
    # Element values in warnings and logs can be patient data; nothing here may print them.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")
    import numpy  # noqa: F401 - import before the first request, not during it
    import pydicom  # noqa: F401

    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
