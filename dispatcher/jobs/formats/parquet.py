"""The Parquet format (`.parquet`): columns in any number of row groups, read a batch of rows at a time.

Parquet seeks in its file, so a compressed one (`.parquet.gz`) or a stream is first copied, decompressed,
to a temporary file (`inputs.seekable`); `tables` checks the column.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

from dispatcher.jobs import tables
from dispatcher.jobs.dedup import Clean
from dispatcher.jobs.files import Side, Source

_ROWS = 1 << 16  # rows read at a time


@dataclasses.dataclass(frozen=True)
class Parquet:
    name: str = "parquet"
    suffixes: tuple[str, ...] = (".parquet",)
    no_columns: str | None = None

    def read(
        self, source: Source, side: Side, stop: threading.Event | None, on_column: Callable[[str], None]
    ) -> Iterator[Clean]:
        def column(_pa: Any, path: str, _compression: str | None) -> tables.Column:
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            name = tables.column(source, side, list(parquet.schema_arrow.names))
            batches = parquet.iter_batches(batch_size=_ROWS, columns=[name])
            return tables.Column(name, (batch.column(0) for batch in batches))

        return tables.read(source, side, stop, on_column, column, decompressed=True)


PARQUET = Parquet()
