"""The run directory and its only writer, the :class:`RunRecorder`.

    runs/<name>/
      config.json     resolved config, package/library versions, seed, host, command line,
                      git commit (when run from a checkout), resolved device
      metrics.jsonl   one JSON object of scalars per evaluation point, appended and flushed
      margins.jsonl   list-valued record entries (e.g. Figure 2's margins), one line per point
      summary.json    status (a :class:`Status`), time scales, final measures, wall time
      checkpoints/    last.pt: model, optimizer, RNG and sampler state, step, and the number
                      and SHA-256 digest of the metrics/margins lines it covers
      figures/        figures
      .lock           the writer lock (flock), held for the writer's whole life

Rules the recorder enforces:

- one writer: an exclusive, non-blocking ``flock`` on ``.lock`` is taken by whoever creates,
  resumes or marks a run; a second writer gets :class:`~latephase.errors.RunDirBusy`;
- files other than the two ``.jsonl`` are replaced atomically through a unique temporary file
  that is removed if the write fails; a torn last line of a ``.jsonl`` is skipped on reading;
- checkpoints hold tensors and primitives only, are read with ``weights_only=True`` and carry
  a digest of their own bytes: nothing in them can execute code, and a flipped byte is found;
- resume verifies before it deletes anything: the lines a checkpoint covers must be present
  and unchanged (digest); only lines beyond it are dropped;
- a status never says ``finished`` over missing records.

Reading (:class:`RunDir`, :func:`load_metrics`) needs no torch.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import io
import json
import math
import os
import platform
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from latephase._version import __version__
from latephase.errors import ResumeError, RunDirBusy, RunDirError
from latephase.faults import fault

try:  # POSIX; elsewhere the lock is not taken (documented in the README)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

CONFIG, METRICS, MARGINS, SUMMARY = "config.json", "metrics.jsonl", "margins.jsonl", "summary.json"
CHECKPOINT = Path("checkpoints") / "last.pt"
FIGURES, LOCK = "figures", ".lock"
CHECKPOINT_FORMAT = 2


class Status(str, enum.Enum):
    """A run's status in summary.json."""

    RUNNING = "running"
    FINISHED = "finished"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


# ----------------------------------------------------------------------------- JSON and files


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "detach") and hasattr(obj, "numel"):  # torch.Tensor, without torch
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalar
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    """Compact JSON that keeps NaN and inf (as Python's NaN/Infinity tokens, which
    ``json.loads`` and pandas read back)."""
    return json.dumps(obj, default=_json_default, sort_keys=False, allow_nan=True)


def atomic_write_bytes(path: Path, data: bytes, point: str = "summary_write") -> None:
    """Write ``data`` to a unique temporary file beside ``path``, fsync, ``os.replace``.  The
    temporary file is removed if anything fails (a full disk leaves no debris)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fault(point, fh, data)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def environment() -> dict[str, str]:
    """Versions of latephase and the libraries its numbers depend on, Python, host."""
    from importlib import metadata

    env = {"latephase": __version__, "python": platform.python_version(),
           "host": socket.gethostname()}
    for dist in ("torch", "numpy", "scipy", "scikit-learn"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            env[dist] = metadata.version(dist)
    return env


#: seconds each ``git`` call of :func:`git_revision` may take
GIT_TIMEOUT_S = 2.0


@functools.cache
def git_revision(where: str = str(Path(__file__).resolve().parent)) -> dict[str, Any] | None:
    """``{"commit": HEAD's hash, "dirty": tracked files changed}`` of the git checkout that
    holds ``where`` (default: latephase's own source); None when it is not in a checkout, git
    is missing or slow (each call gives up after GIT_TIMEOUT_S).  Never raises."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", where, *args], capture_output=True, text=True,
                                 timeout=GIT_TIMEOUT_S, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def child_path(out: str | Path, name: str) -> Path:
    """``out/name`` for a run or sweep ``name`` that must stay inside ``out``."""
    text = str(name)
    if (not text or text in (".", "..") or "/" in text or "\\" in text or "\0" in text
            or Path(text).is_absolute()):
        raise RunDirError(f"name {text!r} is not a plain directory name (no '/', '..', or "
                          "absolute path); it must stay inside --out")
    return Path(out) / text


# ----------------------------------------------------------------------------- reading


def _read_lines(path: Path) -> list[bytes]:
    try:
        return path.read_bytes().split(b"\n")
    except IsADirectoryError:
        raise RunDirError(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        raise RunDirError(f"{path}: cannot read ({exc.strerror})") from None


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a ``.jsonl`` written by the recorder.  A torn (unterminated, unparseable)
    last line is skipped silently, one unparseable line elsewhere with a warning; a file
    that is not such a log (binary, several bad lines, a line that is not an object with an
    integer ``step``) is a :class:`RunDirError` naming the file and line."""
    if not path.exists():
        return
    lines = _read_lines(path)
    bad = 0
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        last = i == len(lines) - 1  # no newline after it: possibly torn
        try:
            rec = json.loads(raw.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            if last:
                continue
            bad += 1
            if bad > 1:
                raise RunDirError(f"{path}:{i + 1}: not a latephase record log (several "
                                  "malformed lines)") from None
            warnings.warn(f"{path}:{i + 1}: skipping malformed line", RuntimeWarning,
                          stacklevel=2)
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
            raise RunDirError(f"{path}:{i + 1}: a record must be a JSON object with an integer "
                              f"'step', got {raw[:60].decode(errors='replace')!r}")
        yield rec


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes().decode())
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing; is this a run directory written by latephase?") \
            from None
    except (UnicodeDecodeError, json.JSONDecodeError, IsADirectoryError) as exc:
        raise RunDirError(f"{path}: unreadable {what} ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise RunDirError(f"{path}: {what} must be a JSON object, got {type(value).__name__}")
    return value


def last_step(path: Path) -> int:
    """Step of the last complete record of a metrics.jsonl (0 if none), reading only its
    tail; for progress displays that poll runs written by other processes."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            lines = fh.read().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


class RunDir:
    """A run directory on disk, for reading; :class:`RunRecorder` is its writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # ---- paths
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def margins_path(self) -> Path:
        return self.path / MARGINS

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def figures_dir(self) -> Path:
        return self.path / FIGURES

    # ---- creation and opening
    @classmethod
    def create(cls, path: str | Path, cfg: Any, info: Mapping[str, Any] | None = None
               ) -> RunRecorder:
        """A new run directory for ``cfg`` (a Config, or None with ``info``), locked by the
        returned recorder; refuses one that holds a run."""
        return RunRecorder.create(path, cfg, info)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not run.path.is_dir() or not run.config_path.is_file():
            raise RunDirError(
                f"{str(run.path)!r} is not a run directory (no {CONFIG}); pass a directory "
                "written by `latephase run`"
            )
        return run

    # ---- reading
    def info(self) -> dict[str, Any]:
        """config.json as a dict."""
        return _read_json_object(self.config_path, "run config")

    def config(self) -> Any:
        from latephase.config import config_from_dict

        info = self.info()
        if not isinstance(info.get("config"), dict):
            raise RunDirError(f"{self.config_path}: holds no training config (a Tracker run "
                              "cannot be resumed by latephase)")
        try:
            return config_from_dict(info["config"])
        except RunDirError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise RunDirError(f"{self.config_path}: invalid run config: {exc}") from None

    def records(self) -> list[dict[str, Any]]:
        return list(iter_records(self.metrics_path))

    def margins(self) -> list[dict[str, Any]]:
        """margins.jsonl: one ``{"step": s, key: [values]}`` per evaluation point."""
        return list(iter_records(self.margins_path))

    def metrics(self) -> Any:
        """The metrics as a pandas DataFrame, one row per evaluation point."""
        return load_metrics(self.path)

    def summary(self) -> dict[str, Any]:
        """summary.json ({} when absent); an unreadable one is a RunDirError."""
        if not self.summary_path.exists():
            return {}
        return _read_json_object(self.summary_path, "run summary")

    def status(self) -> Status | None:
        raw = self.summary().get("status")
        try:
            return Status(raw) if raw is not None else None
        except ValueError:
            raise RunDirError(f"{self.summary_path}: unknown status {raw!r}; valid: "
                              f"{', '.join(s.value for s in Status)}") from None


def load_metrics(path: str | Path) -> Any:
    """Read ``<run>/metrics.jsonl`` (or a metrics.jsonl path) into a pandas DataFrame."""
    import pandas as pd

    p = Path(path)
    file = p / METRICS if p.is_dir() else p
    if not file.exists():
        raise RunDirError(f"{file}: no metrics file; pass a run directory written by latephase")
    df = pd.DataFrame.from_records(list(iter_records(file)))
    if len(df):
        df = df.sort_values("step").reset_index(drop=True)
    return df


def finite_or_none(x: float) -> float | None:
    return x if isinstance(x, int | float) and math.isfinite(x) else None


# ----------------------------------------------------------------------------- checkpoints


def write_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Save ``state`` (tensors and primitives only) with a SHA-256 digest of its bytes.

    The file is ``torch.save({"format", "sha256", "blob"})`` where ``blob`` is the uint8
    tensor of ``torch.save(state)``: both levels load with ``weights_only=True``."""
    import torch

    buf = io.BytesIO()
    torch.save(dict(state), buf)
    payload = buf.getvalue()
    outer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
                "blob": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}, outer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, outer.getvalue(), point="checkpoint_write")


def read_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The state saved by :func:`write_checkpoint`, verified; never executes code.  A file
    that needs more than tensors and primitives, or whose digest does not match, is a
    :class:`ResumeError` naming the problem."""
    import torch

    def load(src: Any) -> Any:
        try:
            return torch.load(src, weights_only=True, map_location=map_location)
        except Exception as exc:  # pickle.UnpicklingError, RuntimeError (zip), EOFError...
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            # torch's message starts by offering an unsafe load: name what was refused instead
            why = [ln for ln in lines if "Unsupported" in ln or "GLOBAL" in ln]
            msg = (why or lines or [type(exc).__name__])[0]
            raise ResumeError(f"{path}: not a loadable latephase checkpoint (loaded with "
                              f"weights_only=True; {msg[:160]})") from None

    outer = load(path)
    if not isinstance(outer, dict):
        raise ResumeError(f"{path}: not a latephase checkpoint (a {type(outer).__name__})")
    if "blob" not in outer:  # format 1 (latephase 0.1.0): no digest
        if "step" not in outer:
            raise ResumeError(f"{path}: not a latephase checkpoint (no 'step')")
        return outer
    blob = outer["blob"]
    payload = blob.cpu().numpy().tobytes() if hasattr(blob, "numpy") else b""
    if hashlib.sha256(payload).hexdigest() != outer.get("sha256"):
        raise ResumeError(f"{path}: checkpoint is corrupted (its SHA-256 digest does not "
                          "match its contents); nothing was changed")
    state = load(io.BytesIO(payload))
    if not isinstance(state, dict) or "step" not in state:
        raise ResumeError(f"{path}: not a latephase checkpoint (no 'step')")
    return state


# ----------------------------------------------------------------------------- the recorder


def _complete_lines(path: Path) -> tuple[list[bytes], int]:
    """Newline-terminated lines of a file (each with its newline) and the byte length of a
    trailing unterminated fragment."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    return lines, len(parts[-1])


class _JsonlLog:
    """An append-only .jsonl whose line count and running SHA-256 the recorder tracks."""

    def __init__(self, path: Path, point: str) -> None:
        self.path, self.point = path, point
        self.fh: IO[bytes] | None = None
        self.lines = 0
        self.sha = hashlib.sha256()

    def append(self, record: Mapping[str, Any]) -> None:
        data = (dumps(record) + "\n").encode()
        if self.fh is None:
            self.fh = self.path.open("ab")
        fault(self.point, self.fh, data)
        try:
            self.fh.write(data)
            self.fh.flush()
        except OSError:
            self._cut_back()
            raise
        self.lines += 1
        self.sha.update(data)

    def _cut_back(self) -> None:
        """After a failed write (disk full): truncate to the last complete line."""
        with contextlib.suppress(OSError):
            self.close()
            size = sum(len(x) for x in _complete_lines(self.path)[0][: self.lines])
            os.truncate(self.path, size)

    def coverage(self) -> dict[str, Any]:
        return {"lines": self.lines, "sha256": self.sha.hexdigest()}

    def verify(self, lines: int, sha256: str | None, what: str) -> int:
        """Check that the first ``lines`` complete lines are present with this digest; the
        byte size they take (what survives resume)."""
        complete, _ = _complete_lines(self.path)
        if len(complete) < lines:
            where = "is missing" if not self.path.exists() else f"has {len(complete)}"
            raise ResumeError(
                f"{self.path}: {where}{' complete lines' if self.path.exists() else ''}, but "
                f"the checkpoint covers {lines} {what} lines; refusing to resume (nothing was "
                "changed): restore the file or start a new run")
        covered = complete[:lines]
        if sha256 is not None:
            digest = hashlib.sha256(b"".join(covered)).hexdigest()
            if digest != sha256:
                raise ResumeError(
                    f"{self.path}: the {lines} lines the checkpoint covers were changed (digest "
                    "mismatch); refusing to resume (nothing was changed)")
        return sum(len(x) for x in covered)

    def restart_at(self, lines: int, size: int) -> None:
        """Drop everything after the first ``lines`` lines (``size`` bytes)."""
        self.close()
        if self.path.exists() and self.path.stat().st_size != size:
            os.truncate(self.path, size)
        self.lines = lines
        self.sha = hashlib.sha256()
        if lines:
            with self.path.open("rb") as fh:
                self.sha.update(fh.read(size))

    def sync(self) -> None:
        if self.fh is not None:
            os.fsync(self.fh.fileno())

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


class RunRecorder(RunDir):
    """The only writer of a run directory (see the module docstring).

    ``append`` writes one record (scalars to metrics.jsonl, list values to margins.jsonl);
    ``checkpoint`` saves a state with the line coverage; ``write_summary``/``finish`` write
    summary.json; ``close`` releases the lock.  Acquire with :meth:`create`,
    :meth:`take` (an existing run) or use as a context manager.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._lock_fh: IO[bytes] | None = None
        self.metrics_log = _JsonlLog(self.metrics_path, "metrics_append")
        self.margins_log = _JsonlLog(self.margins_path, "margins_append")
        #: the logging sinks config.json turns on (opened on the first append)
        self.sinks: list[Any] | None = None
        self._lock()
        self._adopt_existing()

    # ---- the lock
    def _lock(self) -> None:
        try:
            fh = (self.path / LOCK).open("ab")
        except OSError as exc:
            raise RunDirError(f"{self.path}: cannot write the run directory "
                              f"({exc.strerror})") from None
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                raise RunDirBusy(f"run directory {str(self.path)!r} is in use by another "
                                 "process (a run, resume or sweep writes it); wait for it to "
                                 "end or stop it") from None
        self._lock_fh = fh
        for stale in [*self.path.glob(".*.tmp"), *(self.path / CHECKPOINT.parent).glob(".*.tmp")]:
            with contextlib.suppress(OSError):  # left by a writer killed mid-write
                stale.unlink()

    @property
    def locked(self) -> bool:
        return self._lock_fh is not None

    def _adopt_existing(self) -> None:
        """Continue counting the lines already on disk (appending to an existing run)."""
        for log in (self.metrics_log, self.margins_log):
            lines, _ = _complete_lines(log.path)
            log.lines = len(lines)
            log.sha = hashlib.sha256(b"".join(lines))

    @classmethod
    def create(cls, path: str | Path, cfg: Any, info: Mapping[str, Any] | None = None
               ) -> RunRecorder:
        """Create a run directory exclusively (under the lock) and write its config.json:
        ``{"config": cfg.to_dict(), "seed", "environment", "command", "git", **info}``
        (``git``: :func:`git_revision`, when latephase runs from a checkout; ``info`` from
        :func:`latephase.api.run` holds ``device``, ``cfg.device`` resolved: auto -> cpu)."""
        p = Path(path)
        try:
            p.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise RunDirError(f"cannot create run directory {str(p)!r}: a file is in the way"
                              ) from None
        except OSError as exc:
            raise RunDirError(f"cannot create run directory {str(p)!r}: {exc.strerror}"
                              ) from None
        try:
            rec = cls(p)
        except RunDirBusy:
            if (p / CONFIG).exists():
                raise RunDirBusy(f"run directory {str(p)!r} already holds a run, and another "
                                 "writer has it open; choose another --name") from None
            raise
        try:
            if rec.config_path.exists():
                raise RunDirError(
                    f"run directory {str(p)!r} already holds a run; continue it with "
                    f"--resume {p} or choose another --name")
            content: dict[str, Any] = {}
            if cfg is not None:
                content.update(config=cfg.to_dict(), seed=cfg.seed)
            content.update(environment=environment(), command=list(sys.argv))
            revision = git_revision()
            if revision is not None:
                content.update(git=revision)
            content.update(info or {})
            atomic_write_text(rec.config_path, json.dumps(content, indent=2,
                                                          default=_json_default) + "\n")
            rec.write_summary({"status": Status.RUNNING, "step": 0})
        except BaseException:
            rec.close()
            raise
        return rec

    @classmethod
    def take(cls, run: str | Path | RunDir) -> RunRecorder:
        """The recorder of an existing run directory (``run`` itself if it is one)."""
        if isinstance(run, RunRecorder):
            if not run.locked:
                run._lock()
            return run
        return cls(RunDir.open(run.path if isinstance(run, RunDir) else run).path)

    def update_info(self, **fields: Any) -> None:
        """Rewrite config.json with ``fields`` changed (e.g. an extended ``config``)."""
        info = {**self.info(), **fields}
        atomic_write_text(self.config_path, json.dumps(info, indent=2, default=_json_default)
                          + "\n")

    # ---- records
    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record: scalar values to metrics.jsonl, list values (with the step)
        to margins.jsonl, each as one flushed line."""
        scalars = {k: v for k, v in record.items() if not isinstance(v, list | tuple)}
        lists = {k: list(v) for k, v in record.items() if isinstance(v, list | tuple)}
        if lists:
            self.margins_log.append({"step": record["step"], **lists})
        self.metrics_log.append(scalars)
        self._feed_sinks(scalars)

    def _feed_sinks(self, scalars: Mapping[str, Any]) -> None:
        """Copy a record to the sinks of ``logging.*`` (latephase.integrations.sinks), after
        metrics.jsonl has it.  A failing sink warns once and is dropped: the run goes on."""
        if self.sinks is None:
            self.sinks = []
            cfg = self.info().get("config") if self.config_path.exists() else None
            logging = (cfg or {}).get("logging") if isinstance(cfg, dict) else None
            if isinstance(logging, dict) and any(logging.values()):
                from latephase.integrations.sinks import open_sinks

                try:
                    self.sinks = open_sinks(self.path, self.info())
                except Exception as exc:
                    warnings.warn(f"{self.path.name}: logging sinks not opened ({exc}); "
                                  "metrics.jsonl has every record", RuntimeWarning,
                                  stacklevel=3)
        for sink in list(self.sinks):
            try:
                sink.record(scalars)
            except Exception as exc:
                warnings.warn(f"{self.path.name}: {type(sink).__name__} failed ({exc}); "
                              "it is dropped, metrics.jsonl has every record",
                              RuntimeWarning, stacklevel=3)
                self.sinks.remove(sink)
                with contextlib.suppress(Exception):
                    sink.close()

    def sync(self) -> None:
        self.metrics_log.sync()
        self.margins_log.sync()

    def coverage(self) -> dict[str, Any]:
        return {"metrics": self.metrics_log.coverage(), "margins": self.margins_log.coverage()}

    # ---- checkpoints and resume
    def checkpoint(self, state: Mapping[str, Any]) -> None:
        """Save ``state`` with the coverage of the records written so far."""
        self.sync()
        write_checkpoint(self.checkpoint_path, {**state, "records": self.coverage()})

    def verify_resume(self, map_location: Any = "cpu") -> dict[str, Any] | None:
        """The checkpoint state, after checking the records it covers; None when the run
        has no checkpoint and no records yet.  Touches nothing; call :meth:`commit_resume`
        once the state has been loaded."""
        status = self.status()
        if status is Status.DIVERGED:
            why = self.summary().get("error", "")
            raise ResumeError(f"run {str(self.path)!r} diverged ({why}); resuming would "
                              "repeat it: start a new run with other hyper-parameters")
        has_ck = self.checkpoint_path.exists()
        if not has_ck:
            n = len(_complete_lines(self.metrics_path)[0])
            if n:
                raise ResumeError(
                    f"{self.path}: metrics.jsonl holds {n} records but there is no checkpoint "
                    f"({CHECKPOINT}); resuming would delete them, so nothing was changed: "
                    "move the run aside and start again")
            self._plan: dict[str, tuple[int, int]] = {"metrics": (0, 0), "margins": (0, 0)}
            return None
        state = read_checkpoint(self.checkpoint_path, map_location)
        cov = state.get("records")
        plan: dict[str, tuple[int, int]] = {}
        if isinstance(cov, dict):
            for name, log in (("metrics", self.metrics_log), ("margins", self.margins_log)):
                c = cov.get(name, {"lines": 0, "sha256": None})
                plan[name] = (int(c["lines"]), log.verify(int(c["lines"]), c.get("sha256"),
                                                          name))
        else:  # format 1: no digest; the evaluations it counts must be there
            n = int(state.get("evals_done", 0))
            plan["metrics"] = (n, self.metrics_log.verify(n, None, "metrics"))
            plan["margins"] = (0, 0)
            warnings.warn(f"{self.checkpoint_path}: written by latephase 0.1.0 (no digest); "
                          "only the record count was checked", RuntimeWarning, stacklevel=2)
        self._plan = plan
        return state

    def commit_resume(self) -> None:
        """Drop the lines beyond the verified checkpoint (after :meth:`verify_resume`)."""
        plan = getattr(self, "_plan", None)
        if plan is None:
            raise RuntimeError("commit_resume() before verify_resume()")
        self.metrics_log.restart_at(*plan["metrics"])
        self.margins_log.restart_at(*plan["margins"])
        del self._plan

    # ---- summary
    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_text(self.summary_path, json.dumps(dict(summary), indent=2,
                                                        default=_json_default) + "\n")

    def finish(self, status: Status, *, expected_steps: Sequence[int] | None = None,
               timescales: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
               **fields: Any) -> dict[str, Any]:
        """Write the final summary: status, the time scales (computed here, once, from the
        records on disk), the last record and ``fields``.  ``finished`` is written only when
        the records hold exactly ``expected_steps``; otherwise the run is ``failed`` with the
        missing steps named."""
        self.sync()
        records = self.records()
        status = Status(status)
        if status is Status.FINISHED and expected_steps is not None:
            have = [int(r["step"]) for r in records]
            if have != list(expected_steps):
                missing = sorted(set(expected_steps) - set(have))
                status = Status.FAILED
                fields["error"] = (f"records do not match the schedule: {len(have)} of "
                                   f"{len(expected_steps)} ({len(missing)} missing, e.g. "
                                   f"step {missing[:3]})")
        summary: dict[str, Any] = {
            "status": status, "step": records[-1]["step"] if records else None,
            "timescales": timescales(records) if timescales and records else {},
            "final": records[-1] if records else {}, "evaluations": len(records), **fields}
        self.write_summary(summary)
        return json.loads(dumps(summary))

    def close(self) -> None:
        for sink in getattr(self, "sinks", None) or []:
            with contextlib.suppress(Exception):
                sink.close()
        self.sinks = None
        self.metrics_log.close()
        self.margins_log.close()
        if self._lock_fh is not None:
            self._lock_fh.close()  # releases the flock
            self._lock_fh = None

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def mark_failed(path: str | Path, error: str) -> dict[str, Any]:
    """Record ``error`` in a run that still says ``running`` (its writer died); taken under
    the lock, so a live writer is never overwritten (:class:`RunDirBusy` instead)."""
    run = RunDir(path)
    if not run.summary_path.exists():
        return {}
    with RunRecorder(run.path) as rec:
        summary = rec.summary()
        if summary.get("status") in (None, Status.RUNNING.value):
            summary = {**summary, "status": Status.FAILED.value, "error": error}
            rec.write_summary(summary)
        return summary
