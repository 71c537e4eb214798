"""Memory a run costs: peak resident memory of a process, and the Ray object store's use.

Sweeps and the scale benchmark record these per round, so cost can be plotted against the
number of hospitals (see `RESOURCES` in fedsim.results).
"""

from __future__ import annotations

import resource
import sys

import ray


def peak_rss_bytes() -> int:
    """This process's peak resident set size since it started (shared object-store pages
    that it touched included, so a sum over processes is an upper bound)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes


def object_store_bytes() -> int:
    """Bytes of the primary copies in the object stores of the whole cluster, as Ray's resource
    view last saw them: the objects that a live reference pins.

    Each raylet reports its `object_store_memory` resource as available = capacity minus the bytes
    of the primary copies it holds (Ray's default `scheduler_report_pinned_bytes_only`), so the
    total less the available amount, summed over the nodes by the public `ray.cluster_resources()`
    and `ray.available_resources()`, is that sum. Both are answered by the GCS in a few ms and need
    no dashboard; the view follows the nodes' resource reports, so a put or a free shows up within
    about a second.

    Not counted, unlike "used" in `ray memory --stats-only`: copies a node fetched from another
    (secondary copies), and objects that no reference pins any more but that a process still maps
    (arrays deserialized zero-copy from a put whose ref was then dropped); nor objects spilled to disk.
    """
    total = ray.cluster_resources().get("object_store_memory", 0.0)
    available = ray.available_resources().get("object_store_memory", 0.0)
    return max(0, int(total - available))
