"""``stream()`` for every inspector: the ``Inspector`` and the wrappers that settle or bootstrap on a line."""

from __future__ import annotations

from collections.abc import Sequence

from .images import ImageLike
from .result import InspectionResult


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


class FrameByFrame(Streaming):
    """For wrappers whose state moves on with each frame (settling, zero-shot bootstrapping): a list is
    inspected in order, one frame at a time, as a stream would hand them over. Subclasses give
    ``inspect_one``."""

    def inspect(self, frame: ImageLike | Sequence[ImageLike], color_order: str = "bgr"):
        """One frame -> ``InspectionResult``; a list -> a list."""
        if isinstance(frame, (list, tuple)):
            return [self.inspect_one(f, color_order) for f in frame]
        return self.inspect_one(frame, color_order)

    def inspect_one(self, frame: ImageLike, color_order: str) -> InspectionResult:
        raise NotImplementedError
