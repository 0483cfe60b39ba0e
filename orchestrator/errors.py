"""Shine's one exception tree and the table that maps it to HTTP answers.

    ShineError                      500 INTERNAL
    ├── ClientError                 4xx: the request is at fault
    │   ├── InvalidRequest          400 INVALID_REQUEST
    │   ├── InvalidImage            400 INVALID_IMAGE
    │   ├── ImageFileTooLarge       413 IMAGE_FILE_TOO_LARGE
    │   ├── UnsupportedFormat       415 UNSUPPORTED_FORMAT
    │   ├── ImageTooLargePixels     413 IMAGE_TOO_LARGE_PIXELS
    │   ├── NoFaceFound             422 NO_FACE_FOUND
    │   ├── FaceTooSmall            422 FACE_TOO_SMALL
    │   └── RateLimited             429 RATE_LIMITED (Retry-After)
    ├── Overloaded                  503 OVERLOADED (Retry-After): more work than can be answered in time
    └── ModelError                  5xx: the model server is at fault
        ├── ModelUnavailable        503 MODEL_UNAVAILABLE (Retry-After)
        │   └── VersionGone         503: the version asked for was unloaded (the router picks again)
        ├── ModelTimeout            504 MODEL_TIMEOUT
        └── ModelBadResponse        502 MODEL_BAD_RESPONSE

Leaf classes carry their status and code; callers raise leaves, handlers read the class attributes.
"""

from __future__ import annotations


class ShineError(Exception):
    """Base of every error Shine answers with; unknown failures answer as this (500 INTERNAL)."""

    status: int = 500
    code: str = "INTERNAL"
    default_message: str = "Internal error."

    def __init__(self, message: str | None = None, *, retry_after_s: float | None = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.retry_after_s = retry_after_s


class ClientError(ShineError):
    """The request cannot be answered as sent."""

    status = 400
    code = "INVALID_REQUEST"


class InvalidRequest(ClientError):
    status = 400
    code = "INVALID_REQUEST"
    default_message = "Send the photo as multipart/form-data in the field 'image'."


class InvalidImage(ClientError):
    status = 400
    code = "INVALID_IMAGE"
    default_message = "The file could not be decoded as an image."


class ImageFileTooLarge(ClientError):
    status = 413
    code = "IMAGE_FILE_TOO_LARGE"
    default_message = "The upload is larger than the limit."


class UnsupportedFormat(ClientError):
    status = 415
    code = "UNSUPPORTED_FORMAT"
    default_message = "Unsupported image format; send JPEG, PNG, WebP, HEIC/HEIF, AVIF, GIF, BMP or TIFF."


class ImageTooLargePixels(ClientError):
    status = 413
    code = "IMAGE_TOO_LARGE_PIXELS"
    default_message = "The image has more pixels than the limit."


class NoFaceFound(ClientError):
    status = 422
    code = "NO_FACE_FOUND"
    default_message = "No face was found in the photo."


class FaceTooSmall(ClientError):
    status = 422
    code = "FACE_TOO_SMALL"
    default_message = "The face is too small to analyse."


class RateLimited(ClientError):
    status = 429
    code = "RATE_LIMITED"
    default_message = "Too many requests; retry later."


class Overloaded(ShineError):
    """This worker has more analyses waiting than it can answer within the deadline; retry later."""

    status = 503
    code = "OVERLOADED"
    default_message = "The service has more work than it can answer in time; retry shortly."


class ModelError(ShineError):
    """The model server could not give a usable answer."""

    status = 503
    code = "MODEL_UNAVAILABLE"


class ModelUnavailable(ModelError):
    status = 503
    code = "MODEL_UNAVAILABLE"
    default_message = "The model is not available right now; retry shortly."


class VersionGone(ModelUnavailable):
    """The model server no longer serves the version a request named; retried on another version."""

    default_message = "The model version was unloaded; retry shortly."


class ModelTimeout(ModelError):
    status = 504
    code = "MODEL_TIMEOUT"
    default_message = "The model did not answer in time."


class ModelBadResponse(ModelError):
    status = 502
    code = "MODEL_BAD_RESPONSE"
    default_message = "The model answered with something that breaks its contract."


# The error table: every code an app can switch on, with its status. Tests and the OpenAPI document
# are generated from it, so it cannot drift from the classes.
ERROR_TABLE: tuple[type[ShineError], ...] = (
    InvalidRequest,
    InvalidImage,
    ImageFileTooLarge,
    UnsupportedFormat,
    ImageTooLargePixels,
    NoFaceFound,
    FaceTooSmall,
    RateLimited,
    Overloaded,
    ModelUnavailable,
    ModelTimeout,
    ModelBadResponse,
    ShineError,
)

# Codes for HTTP errors raised by the framework itself (unknown route, wrong method).
HTTP_CODES: dict[int, str] = {
    400: "INVALID_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "IMAGE_FILE_TOO_LARGE",
    415: "UNSUPPORTED_FORMAT",
    429: "RATE_LIMITED",
}
