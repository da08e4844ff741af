"""A fix for the DirectRunner's streaming metrics, which lose every bundle's counts but the first.

Beam 2.77's streaming DirectRunner gives each bundle a fresh MetricsContainer
and commits it when the bundle ends, but each worker thread's StateSampler
caches its scoped states by step name, with the container of the step's first
bundle: user counters of later bundles land in that old container and are
never committed, so a run summary would count one bundle per thread and step.
`install()` makes the cached state's container serve the current bundle:
emptied when the bundle starts, shared with the container that is committed.
Only the DirectRunner's own threads are affected; other runners do not use
this sampler.
"""

from apache_beam.runners.worker import statesampler

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    original = statesampler.StateSampler.scoped_state

    def scoped_state(self, name_context, state_name, io_target=None, metrics_container=None):
        state = original(self, name_context, state_name, io_target, metrics_container)
        cached = state.metrics_container
        if metrics_container is not None and cached is not None and cached is not metrics_container:
            if metrics_container.metrics is not cached.metrics:
                cached.reset()
                metrics_container.metrics = cached.metrics
        return state

    statesampler.StateSampler.scoped_state = scoped_state
    _installed = True
