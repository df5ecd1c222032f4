"""One exception tree for the whole SDK.

Every error yolo_edge raises derives from :class:`YoloEdgeError`, so callers can catch
ours rather than onnxruntime's, OpenCV's or requests'. Third-party errors are wrapped
with ``raise ... from exc`` so the original stays in the traceback, except the network
failures of the remote clients: those say in one line what failed (``cannot connect to
URL: connection refused ...``) and keep the library's chain on ``CloudError.original``.

    YoloEdgeError
    ├── ConfigError              bad argument or setting (also a ValueError)
    ├── ImageError               input image problems (also a ValueError)
    │   ├── ImageNotFoundError   no file at the path given (also a FileNotFoundError)
    │   ├── ImageDecodeError     bytes/path that are not a decodable image
    │   ├── UnsupportedImageError  wrong type, dtype, shape or channel order
    │   └── ImageTooLargeError   more pixels or bytes than the safety limit
    ├── ModelError
    │   ├── ModelNotFoundError   unknown name, or known but not fetched yet
    │   ├── ModelIntegrityError  sha256 mismatch: corrupt or tampered file
    │   ├── ModelFetchError      the pinned artifact could not be obtained
    │   └── UnsupportedModelError  an output layout we cannot decode
    ├── BackendError             the inference runtime failed or is missing
    └── CloudError               talking to the yolo-edge service
        ├── CloudUnavailableError  connection refused, 503, cold start timed out
        ├── CloudTimeoutError      the request took longer than allowed
        ├── CloudAuthError         401/403: missing or wrong token
        ├── CloudRequestError      4xx: the service rejected what we sent
        ├── CloudFrameError        the service answered, but not with detections for a frame
        ├── CloudModelMismatchError  the service runs another model than expected
        └── CloudDeadlineExpiredError  the frame's deadline passed before its batch started
"""

from __future__ import annotations

__all__ = [
    "YoloEdgeError",
    "ConfigError",
    "ImageError",
    "ImageNotFoundError",
    "ImageDecodeError",
    "UnsupportedImageError",
    "ImageTooLargeError",
    "ModelError",
    "ModelNotFoundError",
    "ModelIntegrityError",
    "ModelFetchError",
    "UnsupportedModelError",
    "BackendError",
    "CloudError",
    "CloudUnavailableError",
    "CloudTimeoutError",
    "CloudAuthError",
    "CloudRequestError",
    "CloudFrameError",
    "CloudModelMismatchError",
    "CloudDeadlineExpiredError",
]


class YoloEdgeError(Exception):
    """Base class of every error raised by yolo_edge."""


class ConfigError(YoloEdgeError, ValueError):
    """An argument or setting is out of range or of the wrong kind."""


class ImageError(YoloEdgeError, ValueError):
    """The input image cannot be used."""


class ImageNotFoundError(ImageError, FileNotFoundError):
    """No file at the path given as an image (``except FileNotFoundError`` catches it too)."""


class ImageDecodeError(ImageError):
    """Bytes or a file that are not a decodable JPEG/PNG/BMP/WebP image."""


class UnsupportedImageError(ImageError):
    """An input of the wrong type, dtype, shape or channel layout."""


class ImageTooLargeError(ImageError):
    """An image above the pixel or byte limit (decompression-bomb protection)."""


class ModelError(YoloEdgeError):
    """Problems finding, verifying or understanding a model."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model name is unknown, or the model has not been fetched yet."""


class ModelIntegrityError(ModelError):
    """A model file's sha256 does not match its pin."""


class ModelFetchError(ModelError):
    """The pinned source artifact could not be downloaded or unpacked."""


class UnsupportedModelError(ModelError):
    """The model's input or output layout is not one yolo_edge can decode."""


class BackendError(YoloEdgeError, RuntimeError):
    """The inference runtime is missing, failed to load the model, or failed to run."""


class CloudError(YoloEdgeError):
    """Talking to a yolo-edge service failed.

    A request that got no HTTP answer (refused, no route, DNS, TLS, timed out) raises one
    line that names the URL, the cause and what to do, without the chain of
    requests/urllib3/socket exceptions behind it: that chain is on ``original`` (None
    otherwise), logged at DEBUG, and printed by the command lines' ``-v``.
    """

    #: the library exception behind a transport failure (not chained, to keep the error one line)
    original: BaseException | None = None

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class CloudUnavailableError(CloudError):
    """The service cannot be reached or is not ready (connection error, 502/503/504).

    ``retry_after_s`` is the server's ``Retry-After``, when it sent one.
    """

    def __init__(self, message: str, *, status_code: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after_s = retry_after_s


class CloudTimeoutError(CloudError):
    """The service did not answer within the timeout."""


class CloudAuthError(CloudError):
    """The service refused our credentials (401/403)."""


class CloudRequestError(CloudError):
    """The service rejected the request as invalid (4xx other than auth and 429)."""


class CloudFrameError(CloudError):
    """The service answered the request, but one frame has no detections.

    ``index`` is the frame's position in the request and ``frame_status`` its
    :class:`~yolo_edge.remote.wire.FrameStatus` value (``"error"``, ``"expired"``).
    """

    def __init__(self, message: str, *, index: int, frame_status: str) -> None:
        super().__init__(message, status_code=200)
        self.index = index
        self.frame_status = frame_status


class CloudModelMismatchError(CloudError):
    """The service runs a different model (sha256) than the caller expects."""


class CloudDeadlineExpiredError(CloudError):
    """The request's deadline passed before the server started its batch, so nothing was computed.

    Raised when the server rejected the request because its ``timeout`` ran out in the
    queue (Triton: "Request timeout expired"), or before sending when no budget is left.
    Not a fault of the endpoint: do not retry it, and do not count it against the endpoint's health.
    """
