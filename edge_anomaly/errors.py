"""The SDK's exceptions, each raised where the problem is seen and naming what was found."""


class EdgeAnomalyError(Exception):
    """Base of every error the SDK raises on purpose."""


class InputError(EdgeAnomalyError, ValueError):
    """A frame, image file or folder the SDK cannot use (unreadable, wrong shape or dtype)."""


class BundleError(EdgeAnomalyError):
    """A bundle that is missing, corrupt, tampered with or made for another format version."""


class BackendError(EdgeAnomalyError):
    """No inference backend can run the bundle here, or the one asked for is unavailable."""


class InferenceError(EdgeAnomalyError):
    """The graphs gave no usable answer for a frame (a non-finite score or map): never read as "normal"."""


class BackendUnavailable(BackendError):
    """A remote backend (a Triton server) did not answer, or answered for another bundle: the frame was not
    inspected. It may come back; a stream counts such frames and goes on."""
