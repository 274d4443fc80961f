"""TensorBoard event files, written without TensorFlow: a live view of a run for
`tensorboard --logdir runs/`.

metrics.jsonl stays the record (plots and tables are rebuilt from it); the events file beside it
only lets a researcher watch a run in TensorBoard while it trains. TensorFlow (or the tensorboard
package) would be a large dependency for writing a few scalars per round, so the format is
written here by hand. It is small:

  file    `events.out.tfevents.<int time>.<hostname>` (TensorBoard looks for "tfevents"), a
          sequence of TFRecords, each holding one serialized `Event` protobuf.
  record  uint64 length (little endian) | masked crc32c(length bytes) (uint32 LE) | data |
          masked crc32c(data) (uint32 LE), where mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8
          mod 2^32 and crc32c is CRC-32C (Castagnoli).
  Event   wall_time = 1 (double), step = 2 (int64), file_version = 3 (string, "brain.Event:2" in
          a file's first event), summary = 5 (Summary).
  Summary value = 1 (repeated Value); Value: tag = 1 (string), simple_value = 2 (float32).

A metric row becomes one Event whose summary holds every finite float of the row (the ints are
counters: round, epoch or interval, step, examples seen). The x axis (the Event's step) is the
examples seen, as `EventFile.write_row` explains.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from typing import Any

FILE_VERSION = "brain.Event:2"
STEP_KEY = "examples_seen"  # the x axis, see EventFile.write_row
# Row keys with these prefixes are grouped in TensorBoard: 'valid_error' -> 'valid/error'.
GROUPS = ("train", "valid", "test")


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), one table lookup per byte: a few hundred bytes per round."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The CRC a TFRecord stores: rotated and offset, so that a CRC of data that itself holds
    CRCs is not a trivial one."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def encode_record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # a negative int64 is its two's complement, ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)  # wire types: 0 varint, 1 64-bit, 2 bytes, 5 32-bit


def _bytes_field(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _float32(value: float) -> bytes:
    try:
        return struct.pack("<f", value)
    except OverflowError:  # finite but beyond float32: TensorBoard shows it as infinite
        return struct.pack("<f", math.copysign(math.inf, value))


def encode_event(wall_time: float, step: int = 0, *, file_version: str | None = None,
                 scalars: dict[str, float] | None = None) -> bytes:
    """A serialized Event: its wall time, step, and the file version or scalars {tag: value}."""
    event = _key(1, 1) + struct.pack("<d", wall_time)
    if step:  # proto3 leaves a default value out
        event += _key(2, 0) + _varint(step)
    if file_version is not None:
        event += _bytes_field(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _bytes_field(1, _bytes_field(1, tag.encode()) + _key(2, 5) + _float32(value))
            for tag, value in scalars.items())
        event += _bytes_field(5, summary)
    return event


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a row key: 'train_nll' -> 'train/nll' (TensorBoard groups tags by
    the part before '/'); keys outside GROUPS stay as they are ('grad_norm_max')."""
    group, _, name = key.partition("_")
    return f"{group}/{name}" if group in GROUPS and name else key


def row_scalars(row: dict[str, Any]) -> dict[str, float]:
    """{tag: value} for every finite float of a metric row (ints are counters, not curves;
    a non-finite value is None in a written row)."""
    return {scalar_tag(key): float(value) for key, value in row.items()
            if isinstance(value, float) and math.isfinite(value)}


class EventFile:
    """One events file in `workdir`, named when the run (re)starts and created at its first
    write; a resumed run writes a new one beside the old (TensorBoard reads them all, in name
    order). Each write opens, appends and closes the file, so a live TensorBoard sees every round
    as soon as it ends and nothing is left open when a run stops. A restart within the same
    second appends to the file of that second instead: events are read in order either way."""

    def __init__(self, workdir: str):
        self.path = os.path.join(
            workdir, f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}")
        self._started = False

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Appends the scalars {tag: value} at `step`."""
        records = b""
        if not self._started:
            records += encode_record(encode_event(time.time(), file_version=FILE_VERSION))
        records += encode_record(encode_event(time.time(), step, scalars=scalars))
        with open(self.path, "ab") as f:
            f.write(records)
        self._started = True

    def write_row(self, row: dict[str, Any]) -> None:
        """Appends a metric row's finite floats (see row_scalars) at step = the examples seen.

        Examples seen, not optimizer steps or rounds: the sweeps compare batch sizes at an equal
        budget of examples (pi-MNIST, batch 1 to 256), and in examples their curves overlay, as
        in Fig. 6's epochs; in steps a batch-4 run would stretch 32x past a batch-128 one. For
        runs of one batch size (the reader's Fig. 2, in updates) it is the step axis scaled by
        the batch size. The row's 'step' and round count stay in metrics.jsonl."""
        self.write(int(row[STEP_KEY]), row_scalars(row))
