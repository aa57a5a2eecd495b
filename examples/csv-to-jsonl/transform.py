"""CSV to JSON Lines: one JSON object per CSV row, keyed by the header.

zeroflow's `exec` contract: the object is the file named by ZEROFLOW_INPUT; every file written to
ZEROFLOW_OUTPUT_DIR becomes an output (uploaded to <sink prefix><input key>/<file name>). A
non-zero exit fails the attempt; the last lines of stderr are recorded with the failure.
"""
import csv
import json
import os
import pathlib
import sys


def main() -> int:
    source = pathlib.Path(os.environ["ZEROFLOW_INPUT"])
    out_dir = pathlib.Path(os.environ["ZEROFLOW_OUTPUT_DIR"])
    target = out_dir / (source.stem + ".jsonl")
    rows = 0
    with source.open(newline="", encoding="utf-8") as f, target.open("w", encoding="utf-8") as out:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            print(f"{os.environ.get('ZEROFLOW_KEY', source.name)}: no CSV header", file=sys.stderr)
            return 2
        for row in reader:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            rows += 1
    print(f"{source.name}: {rows} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
