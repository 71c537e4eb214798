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
    """Bytes in use in the object stores of the whole cluster right now.

    Ray has no public call for this; it is what `ray memory --stats-only` reads (one raylet
    RPC, a few ms), so it also works without the dashboard.
    """
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    state = get_state_from_address(ray.get_runtime_context().gcs_address)
    return int(get_memory_info_reply(state).store_stats.object_store_bytes_used)
