"""remote_records: array_record files read by byte ranges give array_record's own records, on local files and
on the test storage server, and fail loudly on what they cannot read."""

import collections
import os
import random

import pytest
from array_record.python import array_record_data_source
from array_record.python import array_record_module

from data_pipelines.training import remote_records
from tests import gcs_emulator

Instruction = collections.namedtuple("Instruction", "filename skip take")


def _records(seed: int, count: int) -> list[bytes]:
  """Records of many sizes: empty, a few bytes, and large ones that cross 64 KiB block boundaries and zstd's
  128 KiB blocks; random bytes (JPEG-like, incompressible) and repetitive ones (compressible)."""
  rng = random.Random(seed)
  sizes = [0, 1, 7, 70_000, 200_000, 131_072, 65_536 - 64] + [rng.choice([10, 300, 5_000, 90_000])
                                                              for _ in range(count - 7)]
  out = []
  for i, size in enumerate(sizes):
    out.append(rng.randbytes(size) if i % 2 else bytes([i % 251]) * size)
  return out


def _write(path, records, options: str):
  writer = array_record_module.ArrayRecordWriter(os.fspath(path), options)
  for record in records:
    writer.write(record)
  writer.close()


@pytest.mark.parametrize("options", ["group_size:1", "group_size:1,uncompressed", "group_size:3",
                                     "group_size:4,uncompressed"])
def test_local_files_read_as_array_record_reads_them(tmp_path, options):
  records = _records(0, 40)
  path = tmp_path / "a.array_record"
  _write(path, records, options)
  reference = array_record_data_source.ArrayRecordDataSource([os.fspath(path)])
  source = remote_records.RemoteArrayRecords([Instruction(os.fspath(path), 0, len(records))])
  assert len(source) == len(records) == len(reference)
  order = list(range(len(records)))
  random.Random(1).shuffle(order)
  got = source.__getitems__(order)
  assert [len(g) for g in got] == [len(records[i]) for i in order]
  assert got == [records[i] for i in order] == [reference[i] for i in order]
  assert source[5] == records[5]


def test_instructions_skip_take_and_several_files(tmp_path):
  first, second = _records(2, 12), _records(3, 9)
  _write(tmp_path / "a", first, "group_size:1")
  _write(tmp_path / "b", second, "group_size:1")
  source = remote_records.RemoteArrayRecords([Instruction(os.fspath(tmp_path / "a"), 3, 5),
                                              Instruction(os.fspath(tmp_path / "b"), 0, 9)])
  assert len(source) == 14
  assert source.__getitems__(range(14)) == first[3:8] + second
  with pytest.raises(IndexError):
    source[14]


def test_transposed_chunks_are_left_to_array_records_reader(tmp_path):
  _write(tmp_path / "t", [b"\x08\x01", b"\x08\x02"], "group_size:1,transpose:true")
  instructions = [Instruction(os.fspath(tmp_path / "t"), 0, 2)]
  assert not remote_records.RemoteArrayRecords(instructions).readable()
  with pytest.raises(remote_records.UnsupportedEncoding, match="chunk type 0x74"):
    remote_records.RemoteArrayRecords(instructions)[0]


def test_a_damaged_chunk_or_footer_is_an_error_naming_the_file(tmp_path):
  records = _records(4, 10)
  path = tmp_path / "d"
  _write(path, records, "group_size:1")
  data = bytearray(path.read_bytes())
  begins, _, _ = remote_records._File(os.fspath(path)).index()
  chunk = int(begins[4])
  at = chunk + (24 if chunk % 65536 == 0 else 0) + 8  # the chunk header's data_size
  data[at:at + 8] = (10**9).to_bytes(8, "little")
  damaged = tmp_path / "damaged"
  damaged.write_bytes(bytes(data))
  source = remote_records.RemoteArrayRecords([Instruction(os.fspath(damaged), 0, 10)])
  assert source[3] == records[3]
  with pytest.raises(OSError, match=rf"{damaged}: chunk 4 at byte {chunk} is not readable"):
    source[4]
  truncated = tmp_path / "truncated"
  truncated.write_bytes(bytes(path.read_bytes()[:-65536]))
  with pytest.raises(OSError, match=rf"{truncated}: not a readable array_record file"):
    remote_records.RemoteArrayRecords([Instruction(os.fspath(truncated), 0, 10)])[0]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  server = gcs_emulator.GcsEmulator(str(tmp_path_factory.mktemp("gcs")))
  yield server
  server.close()


def test_on_the_bucket_records_come_by_closed_byte_ranges_through_tensorstore(gcs, tmp_path, monkeypatch):
  for key, value in gcs.env.items():
    monkeypatch.setenv(key, value)
  records = _records(5, 30)
  _write(tmp_path / "a", records, "group_size:1")
  _write(tmp_path / "t", records[:4], "group_size:1,transpose:true")
  from etils import epath  # pylint: disable=g-import-not-at-top
  for name in ("a", "t"):
    epath.Path(f"gs://{gcs.bucket}/sets/{name}").write_bytes((tmp_path / name).read_bytes())
  before = gcs.requests()
  source = remote_records.RemoteArrayRecords([Instruction(f"gs://{gcs.bucket}/sets/a", 0, 30)])
  order = list(range(30))[::-1]
  assert source.__getitems__(order) == [records[i] for i in order]
  after = gcs.requests()
  # The postscript, the footer, then one request per record; array_record's reader sent nothing.
  assert after["tensorstore"] - before["tensorstore"] == 2 + 30, (before, after)
  assert remote_records.RemoteArrayRecords([Instruction(f"gs://{gcs.bucket}/sets/a", 0, 30)]).readable()
  after = gcs.requests()
  assert after["array_record"] == before["array_record"], (before, after)
  # A file in another encoding is refused here, and array_record's reader (google-cloud-cpp) reads it.
  transposed = [Instruction(f"gs://{gcs.bucket}/sets/t", 0, 4)]
  assert not remote_records.RemoteArrayRecords(transposed).readable()
  reference = array_record_data_source.ArrayRecordDataSource([transposed[0].filename])
  assert [reference[i] for i in range(4)] == records[:4]
  assert gcs.requests()["array_record"] > after["array_record"]


def test_a_missing_object_is_an_error_naming_it(gcs, monkeypatch):
  for key, value in gcs.env.items():
    monkeypatch.setenv(key, value)
  path = f"gs://{gcs.bucket}/no/such.array_record"
  with pytest.raises(OSError, match=rf"{path}"):
    remote_records.RemoteArrayRecords([Instruction(path, 0, 1)])[0]
