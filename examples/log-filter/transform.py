"""Application logs (JSON Lines, gzip'd or plain) filtered to warnings and errors.

zeroflow's `exec` contract: the object is the file named by ZEROFLOW_INPUT; every file written to
ZEROFLOW_OUTPUT_DIR becomes an output (uploaded to <sink prefix><input key>/<file name>). A
non-zero exit fails the attempt; the last lines of stderr are recorded with the failure.

Two outputs per log file:
  filtered.jsonl.gz  the records at or above LOG_FILTER_MIN_LEVEL (default WARN), each line
                     exactly as it was in the input, gzip'd (no name or time in the gzip header,
                     so a retry writes the same file)
  summary.json       line and record counts, records per level (all records) and per service
                     and level (kept records only)

Memory stays constant whatever the size of the input: lines are streamed, a line longer than
MAX_LINE_BYTES is skipped in pieces and counted as malformed, and the count tables stop growing
after MAX_KEYS distinct services or levels (the rest are counted under "(other)").

Malformed lines (not UTF-8, not JSON, not a JSON object, too long) are counted, never fatal.
Only input that cannot be read at all fails the object (exit 1): a corrupt or truncated gzip
stream, or an I/O error. A bad LOG_FILTER_MIN_LEVEL exits 2.
"""
import gzip
import json
import os
import pathlib
import sys
import zlib

MAX_LINE_BYTES = 1 << 20
MAX_KEYS = 1000
MALFORMED_EXAMPLES = 10
OTHER = "(other)"
NO_LEVEL = "(none)"

RANKS = {"TRACE": 0, "DEBUG": 1, "INFO": 2, "WARN": 3, "ERROR": 4, "FATAL": 5}
# Spellings of the usual logging libraries (Python logging, logback/log4j, zap, logrus, syslog).
LEVEL_NAMES = {
    "trace": "TRACE", "finest": "TRACE", "finer": "TRACE",
    "debug": "DEBUG", "fine": "DEBUG",
    "info": "INFO", "information": "INFO", "notice": "INFO",
    "warn": "WARN", "warning": "WARN",
    "error": "ERROR", "err": "ERROR", "severe": "ERROR",
    "fatal": "FATAL", "critical": "FATAL", "crit": "FATAL", "panic": "FATAL",
    "dpanic": "FATAL", "alert": "FATAL", "emerg": "FATAL", "emergency": "FATAL",
}


def level_of(record: dict) -> str:
    """The record's level as one of RANKS, another upper-case name, or NO_LEVEL."""
    value = None
    for field in ("level", "severity", "levelname", "log.level"):
        if field in record:
            value = record[field]
            break
    else:
        nested = record.get("log")  # Elastic Common Schema: {"log": {"level": "warn"}}
        if isinstance(nested, dict):
            value = nested.get("level")
    if isinstance(value, str) and value.strip():
        name = value.strip().lower()
        return LEVEL_NAMES.get(name, name.upper()[:32])
    if isinstance(value, int) and not isinstance(value, bool):
        # Numeric levels of bunyan and pino: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal.
        for bound, name in ((20, "TRACE"), (30, "DEBUG"), (40, "INFO"), (50, "WARN"), (60, "ERROR")):
            if value < bound:
                return name
        return "FATAL"
    return NO_LEVEL


def service_of(record: dict) -> str:
    value = record.get("service")
    if isinstance(value, dict):  # Elastic Common Schema: {"service": {"name": "checkout"}}
        value = value.get("name")
    if value is None:
        value = record.get("service.name", record.get("app"))
    if isinstance(value, str) and value.strip():
        return value.strip()[:128]
    return "(unknown)"


def count(table: dict, key: str) -> None:
    if key not in table and len(table) >= MAX_KEYS:
        key = OTHER
    table[key] = table.get(key, 0) + 1


def reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def open_input(path: pathlib.Path):
    """A binary stream of the decompressed input; gzip is recognised by its magic bytes, not by
    the name (object keys are not always honest)."""
    raw = path.open("rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    raw.seek(0)
    return raw, raw


def lines_of(stream):
    """Yields (line, too_long) per line, reading at most MAX_LINE_BYTES at a time."""
    while True:
        line = stream.readline(MAX_LINE_BYTES)
        if not line:
            return
        if line.endswith(b"\n") or len(line) < MAX_LINE_BYTES:
            yield line, False
            continue
        # An overlong line: drop the rest of it without holding it in memory.
        while line and not line.endswith(b"\n"):
            line = stream.readline(MAX_LINE_BYTES)
        yield b"", True


def filter_logs(stream, out, min_rank: int, summary: dict) -> None:
    by_level, by_service = summary["by_level"], summary["by_service"]
    for number, (line, too_long) in enumerate(lines_of(stream), start=1):
        summary["lines"] = number
        text = line.strip()
        if not too_long and not text:
            summary["blank"] += 1
            continue
        try:
            if too_long:
                raise ValueError(f"longer than {MAX_LINE_BYTES} bytes")
            record = json.loads(text.decode("utf-8"), parse_constant=reject_constant)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            summary["malformed"] += 1
            if len(summary["malformed_lines"]) < MALFORMED_EXAMPLES:
                summary["malformed_lines"].append(number)
                print(f"line {number}: malformed, skipped ({str(e)[:120]})", file=sys.stderr)
            continue
        summary["records"] += 1
        level = level_of(record)
        count(by_level, level)
        if RANKS.get(level, -1) >= min_rank:
            summary["kept"] += 1
            service = service_of(record)
            if service not in by_service and len(by_service) >= MAX_KEYS:
                service = OTHER
            count(by_service.setdefault(service, {}), level)
            out.write(text + b"\n")


def main() -> int:
    source = pathlib.Path(os.environ["ZEROFLOW_INPUT"])
    out_dir = pathlib.Path(os.environ["ZEROFLOW_OUTPUT_DIR"])
    name = os.environ.get("ZEROFLOW_KEY") or source.name
    min_level = os.environ.get("LOG_FILTER_MIN_LEVEL", "WARN").strip().upper()
    if min_level not in RANKS:
        print(f"LOG_FILTER_MIN_LEVEL={min_level!r}: want one of {', '.join(RANKS)}", file=sys.stderr)
        return 2

    summary = {
        "input": name, "min_level": min_level, "lines": 0, "blank": 0, "records": 0, "kept": 0,
        "malformed": 0, "malformed_lines": [], "by_level": {}, "by_service": {},
    }
    filtered = out_dir / "filtered.jsonl.gz"
    try:
        stream, raw = open_input(source)
        with raw, stream, filtered.open("wb") as f, \
                gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as out:
            filter_logs(stream, out, RANKS[min_level], summary)
    except (OSError, EOFError, zlib.error) as e:
        # gzip.BadGzipFile is an OSError; a truncated stream raises EOFError, bad deflate data
        # zlib.error. Retrying will not help, but the contract has no "do not retry" exit code.
        filtered.unlink(missing_ok=True)
        what = "corrupt gzip" if isinstance(e, (gzip.BadGzipFile, EOFError, zlib.error)) else "I/O error"
        reason = str(e) or type(e).__name__
        if isinstance(e, OSError) and e.strerror:
            reason = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
        print(f"{name}: {what} after {summary['lines']} lines: {reason}", file=sys.stderr)
        return 1

    summary["by_level"] = dict(sorted(summary["by_level"].items()))
    summary["by_service"] = {s: dict(sorted(c.items())) for s, c in sorted(summary["by_service"].items())}
    with (out_dir / "summary.json").open("w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"{name}: {summary['lines']} lines, {summary['records']} records, {summary['kept']} kept "
          f"(>= {min_level}), {summary['malformed']} malformed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
