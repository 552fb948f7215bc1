"""A markdown table from bench JSON lines on stdin, one row a line.

Both engines' lines are read: `aiprod bench` names its slots `workers` and its memory
`worker_rss_mib` and has no `engine` key; graphile-worker's bench names them `concurrency` and
`rss_mib`. A key a line lacks is shown as `-`.
"""

import json
import sys


def first(d, *keys):
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return None


def cell(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


COLUMNS = [
    ("engine", lambda d: " ".join(filter(None, [first(d, "engine") or "aiprod", first(d, "version")]))),
    ("slots", lambda d: first(d, "workers", "concurrency")),
    ("jobs/s", lambda d: first(d, "jobs_per_s")),
    ("checkpoints/s", lambda d: first(d, "checkpoints_per_s")),
    ("commits/job", lambda d: first(d, "commits_per_job")),
    ("p50 ms", lambda d: first(d, "p50_ms")),
    ("p99 ms", lambda d: first(d, "p99_ms")),
    ("RSS MiB", lambda d: first(d, "worker_rss_mib", "rss_mib")),
]


def main():
    rows = [json.loads(line) for line in sys.stdin if line.strip()]
    print("| " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|" + "|".join("---" if i < 1 else "---:" for i in range(len(COLUMNS))) + "|")
    for d in rows:
        print("| " + " | ".join(cell(get(d)) for _, get in COLUMNS) + " |")


if __name__ == "__main__":
    main()
