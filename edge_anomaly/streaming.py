"""``stream()`` for every inspector: the ``Inspector`` and the wrappers that settle or bootstrap on a line."""

from __future__ import annotations


class Streaming:
    """Mixin for an ``InspectorLike``: ``stream`` runs it over a frame source (``runtime.stream.stream``)."""

    def stream(self, source, on_event=None, **options):
        """Run frames from ``source`` (camera index, device, URL, pipeline, video, folder, glob or a
        ``FrameSource``) through this inspector; returns a runner to iterate or ``.run()``.
        Options: ``events=`` JSONL path, ``overlays=`` folder, ``speak=``, ``sinks=`` (yours: ``handle``
        and ``close``; one that fails is logged and skipped), ``provider=``, ``gate=``, ``max_frames=``,
        ``verdict_timeout=``, ``queue_size=``."""
        from edge_anomaly.runtime.stream import stream  # the runtime's threads and sinks load only to stream

        return stream(self, source, on_event, **options)

