"""The store's listing index: a SQLite file that every process sharing the store keeps current.

`<root>/.index/listing.sqlite` holds, per adapter folder, what the listing shows of it (name,
version, method, source, labels, base model, size, metrics, created_at) and the stamp of its
manifest (inode, mtime). `AdapterStore` updates the row under the store's file lock after every
add, replace and delete, so a page is one query on the name's B-tree: no manifest is opened.

Every rename in or out of the root (by any writer: ours, one of an older version, a copy by
hand) changes the root's mtime. A reader trusts the index only while the root's mtime is the
one recorded by the last scan and that scan started RACY_NS after it (file times are coarse: a
change in the same tick keeps the mtime). Otherwise it rescans under the lock: a folder with
the name and directory inode the last scan saw is unchanged; the others (new, replaced, or
written by our writers since) get a stat of their manifest, and a read when its stamp changed.
A full scan (at start-up, or when the last is FULL_SCAN_NS old) stats every manifest: it also
sees a folder replaced behind the index by one with the same inode number. A missing,
unreadable or older-format file is rebuilt; deleting it loses nothing. The rollback journal
(not WAL) keeps it usable on a volume shared by several hosts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from adapters_store import format as fmt
from adapters_store.errors import AdapterNotFound, InvalidAdapter
from adapters_store.listing import Filters, Listed, Page, query_page

log = logging.getLogger(__name__)

FORMAT = 1  # PRAGMA user_version of the file; a file of another format is rebuilt
RACY_NS = 2_000_000_000
FULL_SCAN_NS = 60_000_000_000
INDEX_DIR = ".index"
INDEX_FILE = "listing.sqlite"
SCHEMA = (
    "DROP TABLE IF EXISTS entries",
    "DROP TABLE IF EXISTS meta",
    # dino: the folder's inode as the last scan saw it (NULL once a writer changed the row)
    "CREATE TABLE entries (name TEXT PRIMARY KEY, stamp TEXT NOT NULL, method TEXT,"
    " source TEXT, data TEXT, dino INTEGER) WITHOUT ROWID",
    "CREATE INDEX entries_scan ON entries (dino, stamp)",  # a scan reads it, not the data
    "CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), root_mtime INTEGER NOT NULL,"
    " scanned_at INTEGER NOT NULL, full_scan_at INTEGER NOT NULL)",
    f"PRAGMA user_version = {FORMAT}",
)
UPSERT = "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)"
Row = tuple[str, str, str | None, str | None, str | None, int | None]


class StoreIndex:
    def __init__(self, root: Path, lock: Callable[[], contextlib.AbstractContextManager]) -> None:
        self.root = root
        self.path = root / INDEX_DIR / INDEX_FILE
        self._lock = lock
        self._local = threading.local()  # each thread's open connection (see _connection)

    # ---- writers: the caller holds the store lock ---------------------------------------
    def put(self, folder: Path, manifest: fmt.Manifest) -> None:
        stamp = _stamp(folder / fmt.MANIFEST)
        if stamp is not None:
            self._write(UPSERT, _row(fmt.name_of_folder(folder.name), stamp, manifest, None))

    def drop(self, name: str) -> None:
        self._write("DELETE FROM entries WHERE name = ?", (name,))

    def _write(self, sql: str, params: tuple) -> None:
        """One statement on the index if it exists (else the first reader builds it). A
        failure never fails the store's write: the file is removed, and readers rebuild it."""
        try:
            conn = self._connection()
            if _version(conn) == FORMAT:
                conn.execute(sql, params)
        except FileNotFoundError:
            return
        except sqlite3.Error as exc:
            log.warning("listing index %s: %s; it will be rebuilt", self.path, exc)
            self._discard()

    # ---- readers -------------------------------------------------------------------------
    def page(self, limit: int, after: str | None = None, filters: Filters | None = None) -> Page:
        """Up to `limit` entries named after `after`, in name order, matching `filters`."""
        filters = filters or Filters()
        try:
            conn = self._connection()
            conn.execute("BEGIN")  # one snapshot for the check and the query
            try:
                if self._fresh(conn):
                    return query_page(conn, limit, after, filters)
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except FileNotFoundError:
            pass
        except sqlite3.DatabaseError as exc:
            if _busy(exc):
                raise
        with self._lock():
            self._rescan(full=False)
            return query_page(self._connection(), limit, after, filters)

    def refresh(self) -> None:
        """Bring the index up to date with the folders now (built if missing): a full scan."""
        with self._lock():
            self._rescan(full=True)

    # ---- internals -----------------------------------------------------------------------
    def _fresh(self, conn: sqlite3.Connection) -> bool:
        if _version(conn) != FORMAT:
            return False
        row = conn.execute("SELECT root_mtime, scanned_at FROM meta").fetchone()
        mtime = os.stat(self.root).st_mtime_ns
        return row is not None and row[0] == mtime and row[1] - mtime >= RACY_NS

    def _rescan(self, *, full: bool) -> None:
        try:
            self._scan_into_index(full)
        except sqlite3.DatabaseError as exc:
            if _busy(exc):
                raise
            log.warning("listing index %s unreadable (%s): rebuilding it", self.path, exc)
            self._discard()
            self._scan_into_index(True)

    def _scan_into_index(self, full: bool) -> None:
        self.path.parent.mkdir(exist_ok=True)
        mtime = os.stat(self.root).st_mtime_ns  # before the scan: a later change shows
        now = time.time_ns()
        with self._connect(create=True) as conn:
            if _version(conn) != FORMAT:
                conn.executescript(";".join(("BEGIN", *SCHEMA, "COMMIT")))
            last_full = conn.execute("SELECT full_scan_at FROM meta").fetchone()
            full = full or last_full is None or now - last_full[0] > FULL_SCAN_NS
            rows, inodes, gone = self._changes(conn, full)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(UPSERT, rows)
            conn.executemany("UPDATE entries SET dino = ? WHERE name = ?", inodes)
            conn.executemany("DELETE FROM entries WHERE name = ?", [(n,) for n in gone])
            full_at = now if full else last_full[0]
            conn.execute("INSERT OR REPLACE INTO meta VALUES (1, ?, ?, ?)", (mtime, now, full_at))
            conn.execute("COMMIT")
        if rows or gone:
            log.info("listing index: %d entries written, %d gone", len(rows), len(gone))

    def _changes(
        self, conn: sqlite3.Connection, full: bool
    ) -> tuple[list[Row], list[tuple[int, str]], set[str]]:
        """Rows for the folders that are new or changed; (inode, name) of unchanged ones whose
        inode was not recorded; the names no longer there. Not `full`: a folder with the inode
        recorded is taken as unchanged without a stat."""
        known = dict(conn.execute("SELECT name, dino FROM entries"))
        with os.scandir(self.root) as entries:  # comprehensions: this runs over every adapter
            seen = {
                fmt.name_of_folder(e.name): e.inode()
                for e in entries
                if e.name[0] != "." and e.is_dir()
            }
        gone = known.keys() - seen.keys()
        todo = seen if full else dict(seen.items() - known.items())
        stamps = dict(conn.execute("SELECT name, stamp FROM entries")) if full else {}
        rows: list[Row] = []
        inodes: list[tuple[int, str]] = []
        for name, dino in todo.items():
            folder = os.path.join(self.root, fmt.folder_name(name))
            current = _stamp(os.path.join(folder, fmt.MANIFEST))
            stamp = stamps.get(name) if full else _known_stamp(conn, name)
            if current is None or current != stamp:
                row = None if current is None else _read_row(Path(folder), current, dino)
                if row is None:
                    gone.add(name)
                else:
                    rows.append(row)
            elif known.get(name) != dino:
                inodes.append((dino, name))
        return rows, inodes, gone

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection to the file, kept open between calls (a write costs one
        statement); opened again after a fork or once the file was replaced by a rebuild.
        FileNotFoundError when there is no file."""
        st = os.stat(self.path)
        key = (os.getpid(), st.st_dev, st.st_ino)
        held = getattr(self._local, "held", None)
        if held is None or held[0] != key:
            if held is not None and held[0][0] == key[0]:
                held[1].close()
            self._local.held = (key, self._open(create=False))
        return self._local.held[1]

    @contextlib.contextmanager
    def _connect(self, *, create: bool) -> Iterator[sqlite3.Connection]:
        conn = self._open(create=create)
        try:
            yield conn
        finally:
            conn.close()

    def _open(self, *, create: bool) -> sqlite3.Connection:
        uri = f"{self.path.absolute().as_uri()}?mode={'rwc' if create else 'rw'}"
        conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        # A cache of the manifests: a crash of the machine may cost a rebuild, no more. The
        # journal is emptied, not deleted, after each write (no directory change each time).
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA journal_mode = TRUNCATE")
        return conn

    def _discard(self) -> None:
        self._local.held = None
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")


def _row(name: str, stamp: str, manifest: fmt.Manifest, dino: int | None) -> Row:
    data = Listed.of(manifest).model_dump_json()
    return (name, stamp, manifest.adapter_config, manifest.source, data, dino)


def _read_row(folder: Path, stamp: str, dino: int) -> Row | None:
    """The folder's row; None when it is gone. An unreadable manifest is remembered (data
    NULL: not listed, as `AdapterStore.list` skips it) so that it is not re-read every scan."""
    try:
        return _row(fmt.name_of_folder(folder.name), stamp, fmt.read_manifest(folder), dino)
    except AdapterNotFound:
        return None
    except InvalidAdapter:
        return (fmt.name_of_folder(folder.name), stamp, None, None, None, dino)


def _stamp(manifest: str | Path) -> str | None:
    try:
        st = os.stat(manifest)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return f"{st.st_ino}:{st.st_mtime_ns}"


def _known_stamp(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute("SELECT stamp FROM entries WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


def _version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def _busy(exc: sqlite3.DatabaseError) -> bool:
    """Locked or busy past the timeout: the file is fine, so it is not rebuilt."""
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
