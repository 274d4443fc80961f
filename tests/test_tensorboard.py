"""The TensorBoard events file: CRC-32C, the records and Events read back by a reader written
here (both CRCs checked, the protobuf fields decoded), and a tiny run, killed and resumed, whose
events files hold the values of its metrics.jsonl."""

import os
import re
import socket
import struct

import numpy as np
import pytest

from lnrepro import metrics, tensorboard, train
from tests.test_train import build, killed_after, small_config


# ------------------------------------------------------------------------------------------------
# A reader, independent of the writer but for crc32c (checked against known answers below).


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32


def read_records(path: str) -> list[bytes]:
    """The data of every TFRecord in the file, both CRCs checked."""
    with open(path, "rb") as f:
        data = f.read()
    records, pos = [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack(
            "<I", data[pos + 8:pos + 12])
        assert length_crc == _mask(tensorboard.crc32c(header))
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert body_crc == _mask(tensorboard.crc32c(body))
        records.append(body)
        pos += 16 + length
    assert pos == len(data)  # no torn record
    return records


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def decode_fields(data: bytes) -> list[tuple[int, object]]:
    """(field number, value) of a protobuf message: ints, 8- or 4-byte strings of the fixed
    types, bytes of the length-delimited ones."""
    fields, pos = [], 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(data, pos)
        elif wire_type == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire_type == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise AssertionError(f"unexpected wire type {wire_type}")
        fields.append((field, value))
    assert pos == len(data)
    return fields


def decode_event(data: bytes) -> dict:
    """{'wall_time', 'step', 'file_version' (or None), 'scalars' {tag: float32 value}}."""
    event = {"wall_time": None, "step": 0, "file_version": None, "scalars": {}}
    for field, value in decode_fields(data):
        if field == 1:
            (event["wall_time"],) = struct.unpack("<d", value)
        elif field == 2:
            event["step"] = value
        elif field == 3:
            event["file_version"] = value.decode()
        elif field == 5:
            for summary_field, summary_value in decode_fields(value):
                assert summary_field == 1  # Summary.value
                tag_value = dict(decode_fields(summary_value))
                (event["scalars"][tag_value[1].decode()],) = struct.unpack("<f", tag_value[2])
        else:
            raise AssertionError(f"unexpected Event field {field}")
    return event


def read_events(workdir: str) -> list[dict]:
    """The events of every events file in workdir, in name order (as TensorBoard reads them)."""
    names = sorted(n for n in os.listdir(workdir) if "tfevents" in n)
    return [decode_event(r) for n in names for r in read_records(os.path.join(workdir, n))]


def as_float32(value: float) -> float:
    return float(np.float32(value))


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data, crc", [
    (b"", 0),
    (b"123456789", 0xE3069283),  # the standard check value
    (bytes(32), 0x8A9136AA),  # RFC 3720, B.4
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
])
def test_crc32c_known_answers(data, crc):
    assert tensorboard.crc32c(data) == crc


def test_scalars_read_back_with_their_steps_and_tags(tmp_path):
    events = tensorboard.EventFile(str(tmp_path))
    assert not os.listdir(tmp_path)  # created at the first write
    events.write(0, {"valid/error": 0.25})
    events.write(300, {"train/nll": 0.1, "big": 1e39, "tiny": -2.5e-7})
    events.write(2**40, {"valid/error": 0.125})

    (name,) = os.listdir(tmp_path)
    assert re.fullmatch(rf"events\.out\.tfevents\.\d+\.{re.escape(socket.gethostname())}", name)
    first, *scalars = read_events(str(tmp_path))
    assert first["file_version"] == "brain.Event:2" and not first["scalars"]
    assert [e["step"] for e in scalars] == [0, 300, 2**40]
    assert [e["scalars"] for e in scalars] == [
        {"valid/error": 0.25},
        {"train/nll": as_float32(0.1), "big": float("inf"), "tiny": as_float32(-2.5e-7)},
        {"valid/error": 0.125}]
    assert all(e["file_version"] is None for e in scalars)
    assert all(abs(e["wall_time"] - os.path.getmtime(tmp_path / name)) < 60 for e in scalars)


def test_a_row_gives_its_finite_floats_grouped_by_split():
    row = {"round": 0, "epoch": 1, "step": 16, "examples_seen": 256,
           "train_loss_running": 1.5, "grad_norm_max": 3.0, "valid_error": 0.5,
           "test_nll": None, "train_nll": float("nan"), "examples_per_sec": np.float64(100.0)}
    assert tensorboard.row_scalars(row) == {
        "train/loss_running": 1.5, "grad_norm_max": 3.0, "valid/error": 0.5,
        "examples_per_sec": 100.0}


def test_a_resumed_run_leaves_events_holding_its_metrics(tiny, tmp_path):
    data_dir, load_split = tiny
    config = small_config(data_dir, norm="layer", num_epochs=2)
    workdir = str(tmp_path)
    killed_build, Killed = killed_after(1, load_split)
    with pytest.raises(Killed):
        train.train_and_evaluate(config, workdir, killed_build)
    assert len([n for n in os.listdir(workdir) if "tfevents" in n]) == 1
    train.train_and_evaluate(config, workdir, build(load_split))

    rows = metrics.read_metrics(workdir)
    assert [r["examples_seen"] for r in rows] == [256, 512]
    events = read_events(workdir)
    # Each start begins with the file version (the resume's own file, or, within the same
    # second, the same file), then one event per round.
    versions = [e for e in events if e["file_version"] is not None]
    assert [e["file_version"] for e in versions] == ["brain.Event:2"] * 2
    logged = [e for e in events if e["scalars"]]
    assert [e["step"] for e in logged] == [r["examples_seen"] for r in rows]
    for event, row in zip(logged, rows):
        assert event["scalars"] == {tensorboard.scalar_tag(k): as_float32(v)
                                    for k, v in row.items() if isinstance(v, float)}
    assert sorted(logged[0]["scalars"]) == [
        "examples_per_sec", "round_seconds", "test/error", "test/nll", "train/error",
        "train/loss_running", "train/nll", "valid/error", "valid/nll"]
