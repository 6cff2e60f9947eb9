"""JPEG files read without decoding: which ones the engine's device decoder takes, and
a request's JPEGs kept encoded on their way to it.

Torch-free: the HTTP workers, which never import torch, decide here which requests
travel encoded (service.pipeline) and the engine decodes them (service.device_decode).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Start-of-frame markers (ITU T.81, B.1.1.3): 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) are not.
_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_BASELINE_HUFFMAN = frozenset({0xC0, 0xC1})  # baseline and extended sequential, Huffman
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length follows
_START_OF_SCAN = 0xDA


@dataclass(frozen=True)
class JpegHeader:
    width: int
    height: int
    components: int  # 1 grey, 3 YCbCr (or RGB), 4 CMYK or YCCK
    precision: int  # bits per sample
    baseline: bool  # sequential, Huffman-coded: what nvJPEG decodes


def jpeg_header(data: bytes) -> JpegHeader | None:
    """The frame header of a JPEG, from its markers alone; None for anything else."""
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if length < 2 or marker == _START_OF_SCAN:
            return None  # malformed, or a scan before any frame header
        if marker in _FRAMES:
            frame = data[position + 4 : position + 2 + length]
            if len(frame) < 6:
                return None
            return JpegHeader(
                width=int.from_bytes(frame[3:5], "big"),
                height=int.from_bytes(frame[1:3], "big"),
                components=frame[5],
                precision=frame[0],
                baseline=marker in _BASELINE_HUFFMAN,
            )
        position += 2 + length
    return None


def device_decodable(data: bytes) -> bool:
    """Whether the device decoder takes this image (else the CPU path decodes it)."""
    header = jpeg_header(data)
    return (
        header is not None
        and header.baseline
        and header.precision == 8
        and header.components in (1, 3)
        and header.width > 0
        and header.height > 0
    )


@dataclass(frozen=True)
class EncodedJpegs:
    """A request's images as the client sent them, every one `device_decodable`: the
    engine decodes them on its device, in one call per batch."""

    data: tuple[bytes, ...]

    def __len__(self) -> int:
        return len(self.data)

    def split(self, size: int) -> list[EncodedJpegs]:
        """Slices of at most `size` images, in order (as torch.split does for pixels)."""
        return [EncodedJpegs(self.data[i : i + size]) for i in range(0, len(self.data), size)]

    def joined(self) -> tuple[bytes, list[int]]:
        """All the files back to back, and each one's length: one block to hand across."""
        return b"".join(self.data), [len(blob) for blob in self.data]

    @classmethod
    def from_joined(cls, buffer: bytes | memoryview, lengths: Sequence[int]) -> EncodedJpegs:
        """`joined`'s inverse; copies, so the buffer may be reused at once."""
        view, files, offset = memoryview(buffer), [], 0
        for length in lengths:
            files.append(bytes(view[offset : offset + length]))
            offset += length
        if offset != len(view):
            raise ValueError(f"{len(view)} bytes hold {offset} bytes of JPEG files")
        return cls(tuple(files))
