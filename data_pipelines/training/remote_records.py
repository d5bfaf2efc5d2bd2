"""Records of tfds array_record files on a bucket, read by exact byte ranges through tensorstore.

array_record's own reader opens a gs:// file with riegeli's GcsReader, which asks for every record it reads
from the record's offset to the end of the file (`Range: bytes=N-`) and drops the stream once it has the
record; the dropped stream cannot return its connection to the pool (on GCS, a new TLS session for the next
request), and google-cloud-cpp spends two to five times the client CPU per request that tensorstore's GCS
key-value store (the client orbax's checkpoints already use) spends on a closed byte range over pooled
connections. A pre-cropped example needs one record per distinct frame, about 4.4 on the stage-1/2 draws, so
the cost per request decides how many examples a host's core prepares from a bucket (docs/performance.md,
"Reading training data from a bucket", has the figures).

This module reads the files' own index and the records' chunks as the array_record and riegeli formats
define them (riegeli's doc/riegeli_records_file_format.md; array_record's cpp/layout.proto):
  - the file is riegeli chunks, interrupted by a 24-byte block header at every multiple of 64 KiB;
  - the last 64 KiB block holds the postscript chunk (`RiegeliPostscript`: `footer_offset`, `magic`);
  - the footer chunk from `footer_offset` to that block holds a `RiegeliFooterMetadata` record, then one
    `ArrayRecordFooter` (`chunk_offset`, `decoded_data_size`, `num_records`) per data chunk;
  - a data chunk (40-byte header, then `data_size` bytes of data) is a simple chunk: compression type
    (none or zstd, each zstd block prefixed with its decompressed size), the record sizes, the records.
A file in any other encoding (transposed chunks, brotli or snappy, which tfds does not write) is read with
array_record's reader instead (`RemoteArrayRecords.readable`). Sizes are checked against the chunk headers
and the footer; a mismatch is an OSError naming the file and chunk, never a silently wrong record.
"""

from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np
import tensorstore as ts
import zstandard

__all__ = ["RemoteArrayRecords", "UnsupportedEncoding", "is_gcs"]

BLOCK_SIZE = 1 << 16
BLOCK_HEADER_SIZE = 24
CHUNK_HEADER_SIZE = 40
ARRAY_RECORD_MAGIC = 0x71930E704FDAE05E
ARRAY_RECORD_VERSION = 1
SIMPLE_CHUNK = ord("r")
COMPRESSION_NONE = 0
COMPRESSION_ZSTD = ord("z")

_stores: dict = {}
_stores_lock = threading.Lock()


def _new_lock_in_child():  # a fork while another thread held the lock would leave it held in the child
  global _stores_lock
  _stores_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


class UnsupportedEncoding(OSError):
  """A file this reader does not decode (array_record's own reader does)."""


def is_gcs(path) -> bool:
  return os.fspath(path).startswith("gs://")


def _kvstore(path: str):
  """(tensorstore key-value store, key) of a file: GCS's for gs://bucket/key, the file driver's for a local
  path (tests); one store per bucket or folder and process (a grain worker opens its own)."""
  if is_gcs(path):
    bucket, _, key = path[len("gs://"):].partition("/")
    spec = {"driver": "gcs", "bucket": bucket}
  else:
    folder, key = os.path.split(os.path.abspath(path))
    spec = {"driver": "file", "path": folder + "/"}
  with _stores_lock:
    cache_key = (os.getpid(), str(spec))
    if cache_key not in _stores:
      _stores[cache_key] = ts.KvStore.open(spec).result()
    return _stores[cache_key], key


def _varint(buffer: bytes, pos: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    if pos >= len(buffer) or shift > 63:
      raise ValueError("truncated varint")
    byte = buffer[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value, pos
    shift += 7


def _proto_fields(buffer: bytes) -> dict[int, int | bytes]:
  """The varint and length-delimited fields of a serialized proto message, by number (last one wins)."""
  fields, pos = {}, 0
  while pos < len(buffer):
    key, pos = _varint(buffer, pos)
    number, wire = key >> 3, key & 7
    if wire == 0:
      fields[number], pos = _varint(buffer, pos)
    elif wire == 2:
      length, pos = _varint(buffer, pos)
      fields[number], pos = buffer[pos:pos + length], pos + length
    elif wire == 1:
      fields[number], pos = int.from_bytes(buffer[pos:pos + 8], "little"), pos + 8
    elif wire == 5:
      fields[number], pos = int.from_bytes(buffer[pos:pos + 4], "little"), pos + 4
    else:
      raise ValueError(f"proto wire type {wire}")
  if pos != len(buffer):
    raise ValueError("truncated proto message")
  return fields


def _without_block_headers(raw: bytes, begin: int) -> memoryview:
  """The file bytes [begin, begin + len(raw)) without the block headers at multiples of BLOCK_SIZE."""
  view = memoryview(raw)
  boundary = -(-begin // BLOCK_SIZE) * BLOCK_SIZE
  if boundary >= begin + len(raw):
    return view
  parts, start = [], 0
  while boundary < begin + len(raw):
    parts.append(view[start:boundary - begin])
    start = boundary - begin + BLOCK_HEADER_SIZE
    boundary += BLOCK_SIZE
  parts.append(view[start:])
  return memoryview(b"".join(parts))


_decompressors = threading.local()


def _decompress(compression: int, blob: memoryview) -> memoryview:
  if compression == COMPRESSION_NONE:
    return blob
  size, pos = _varint(blob, 0)
  decompressor = getattr(_decompressors, "zstd", None)
  if decompressor is None:  # one per thread: a zstd context is not thread-safe
    decompressor = _decompressors.zstd = zstandard.ZstdDecompressor()
  data = decompressor.decompress(blob[pos:], max_output_size=max(size, 1))
  if len(data) != size:
    raise ValueError(f"zstd block decompressed to {len(data)} bytes, its prefix says {size}")
  return memoryview(data)


def decode_chunk(raw: bytes, begin: int) -> list[bytes]:
  """The records of the chunk beginning at file offset `begin`, given the file bytes from there (at least up
  to the chunk's end; padding and what follows are ignored). ValueError for a malformed chunk,
  UnsupportedEncoding for an encoding this module does not read."""
  data = _without_block_headers(raw, begin)
  if len(data) < CHUNK_HEADER_SIZE:
    raise ValueError(f"{len(data)} bytes, shorter than a chunk header")
  data_size = int.from_bytes(data[8:16], "little")
  chunk_type = data[24]
  num_records = int.from_bytes(data[25:32], "little")
  decoded_size = int.from_bytes(data[32:40], "little")
  body = data[CHUNK_HEADER_SIZE:CHUNK_HEADER_SIZE + data_size]
  if len(body) != data_size:
    raise ValueError(f"chunk data is {len(body)} bytes, its header says {data_size}")
  if chunk_type != SIMPLE_CHUNK:
    raise UnsupportedEncoding(f"chunk type {chunk_type:#x} (only simple chunks, 0x72, are read here)")
  if not body:
    raise ValueError("empty simple chunk")
  compression = body[0]
  if compression not in (COMPRESSION_NONE, COMPRESSION_ZSTD):
    raise UnsupportedEncoding(f"compression type {compression:#x} (only none and zstd are read here)")
  sizes_length, pos = _varint(body, 1)
  sizes_blob = _decompress(compression, body[pos:pos + sizes_length])
  values = _decompress(compression, body[pos + sizes_length:])
  sizes, at = [], 0
  for _ in range(num_records):
    size, at = _varint(sizes_blob, at)
    sizes.append(size)
  if at != len(sizes_blob) or sum(sizes) != len(values) or len(values) != decoded_size:
    raise ValueError(f"{num_records} record sizes summing to {sum(sizes)}, {len(values)} value bytes, header "
                     f"says {decoded_size}")
  if num_records == 1 and isinstance(values.obj, bytes) and len(values.obj) == len(values):
    return [values.obj]  # the decompressed bytes themselves: no copy
  records, at = [], 0
  for size in sizes:
    records.append(bytes(values[at:at + size]))
    at += size
  return records


class _File:
  """One array_record file (on a bucket, or local in tests): its chunks' byte ranges, from its footer (read on
  first use)."""

  def __init__(self, path: str):
    self.path = path
    self.store, self.key = _kvstore(path)
    self._index = None
    self._lock = threading.Lock()

  def read(self, begin: int, end: int | None = None):
    """A future of the bytes [begin, end) (begin < 0: the last -begin bytes)."""
    return self.store.read(self.key, byte_range=slice(begin, end))

  def value(self, future, what: str) -> bytes:
    """The bytes of a `read` future; FileNotFoundError naming the file when the object is missing."""
    result = future.result()
    if result.state != "value":
      raise FileNotFoundError(f"{self.path}: {result.state} when reading {what}")
    return result.value

  def index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chunk begins, chunk ends, first record of each chunk and the total at the end)."""
    with self._lock:
      if self._index is None:
        self._index = self._read_index()
      return self._index

  def _read_index(self):
    try:
      tail = self.value(self.read(-BLOCK_SIZE), "its postscript")
      # The postscript is the only chunk of the last block; the file's size is unknown to tensorstore's
      # suffix read, so its offset is taken modulo the block size, which is all the block headers need.
      postscripts = decode_chunk(tail, 0)  # the writer may repeat it; the reader takes the first
      fields = _proto_fields(postscripts[0]) if postscripts else {}
      if fields.get(2) != ARRAY_RECORD_MAGIC or 1 not in fields:
        raise ValueError(f"not an array_record postscript: {fields}")
      footer_offset = int(fields[1])
      footer_raw = self.value(self.read(footer_offset, None), "its footer")
      footer = decode_chunk(footer_raw[:len(footer_raw) - BLOCK_SIZE], footer_offset)
      metadata = _proto_fields(_proto_fields(footer[0]).get(1, b""))
      if metadata.get(1) != ARRAY_RECORD_VERSION:
        raise UnsupportedEncoding(f"array_record version {metadata.get(1)}")
      chunks = [_proto_fields(f) for f in footer[1:]]
      if len(chunks) != metadata.get(2, 0):
        raise ValueError(f"{len(chunks)} chunk entries, the metadata says {metadata.get(2)}")
      begins = np.array([c.get(1, 0) for c in chunks], np.int64)
      ends = np.append(begins[1:], footer_offset)
      counts = np.array([c.get(3, 0) for c in chunks], np.int64)
      firsts = np.concatenate([[0], np.cumsum(counts)])
      if firsts[-1] != metadata.get(3, 0) or np.any(ends <= begins):
        raise ValueError("footer entries do not add up to the metadata's record count or are out of order")
      return begins, ends, firsts
    except UnsupportedEncoding as e:
      raise UnsupportedEncoding(f"{self.path}: {e}") from e
    except ValueError as e:
      raise OSError(f"{self.path}: not a readable array_record file ({e})") from e


class RemoteArrayRecords:
  """tfds' `ArrayRecordDataSource` for files on gs://, read by byte ranges: `len`, `[i]` and `__getitems__`
  (the raw records, in the order asked; the chunks of one call are requested together). Local files are read
  the same way (tensorstore's file driver), which the tests use.

  `instructions` are tfds' file instructions of a split (`filename`, `skip`, `take`), as the array_record
  data source takes them."""

  def __init__(self, instructions: Sequence):
    self._files = [_File(os.fspath(i.filename)) for i in instructions]
    self._skips = np.array([i.skip for i in instructions], np.int64)
    self._starts = np.concatenate([[0], np.cumsum([i.take for i in instructions])]).astype(np.int64)

  def readable(self) -> bool:
    """Whether the files are in the encoding read here (simple chunks, zstd or none, as tfds writes them): the
    first file's index and first chunk are read to tell (and the index kept)."""
    if not self._files:
      return False
    file = self._files[0]
    try:
      begins, ends, _ = file.index()
      if len(begins):
        decode_chunk(file.value(file.read(int(begins[0]), int(ends[0])), "chunk 0"), int(begins[0]))
    except UnsupportedEncoding:
      return False
    except ValueError as e:
      raise OSError(f"{file.path}: chunk 0 is not readable ({e})") from e
    return True

  def __len__(self) -> int:
    return int(self._starts[-1])

  def __getitem__(self, index: int) -> bytes:
    return self.__getitems__([index])[0]

  def __getitems__(self, indices: Sequence[int]) -> list[bytes]:
    requests = []
    for index in indices:
      index = int(index)
      if not 0 <= index < len(self):
        raise IndexError(f"record {index} of {len(self)}")
      f = int(np.searchsorted(self._starts, index, side="right")) - 1
      file, record = self._files[f], index - int(self._starts[f]) + int(self._skips[f])
      begins, ends, firsts = file.index()
      chunk = int(np.searchsorted(firsts, record, side="right")) - 1
      if not 0 <= chunk < len(begins):
        raise IndexError(f"{file.path}: record {record} of {int(firsts[-1])}")
      begin, end = int(begins[chunk]), int(ends[chunk])
      requests.append((file, chunk, begin, record - int(firsts[chunk]), file.read(begin, end)))
    out = []
    for file, chunk, begin, within, future in requests:
      raw = file.value(future, f"chunk {chunk}")
      try:
        out.append(decode_chunk(raw, begin)[within])
      except (ValueError, IndexError) as e:
        raise OSError(f"{file.path}: chunk {chunk} at byte {begin} is not readable ({e})") from e
    return out
