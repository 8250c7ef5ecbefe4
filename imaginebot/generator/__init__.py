"""Talking to the image generator (GPT Image 2 through 1min.ai): client, errors, request and result types."""

from __future__ import annotations

from imaginebot.generator.client import GeneratorClient, presigned_expiry
from imaginebot.generator.errors import (
    AuthenticationFailed,
    BadRequest,
    ContentRejected,
    GenerationFailed,
    GeneratorError,
    GeneratorTimeout,
    InsufficientCredits,
    RateLimited,
    ServerError,
    error_from_response,
    parse_retry_after,
)
from imaginebot.generator.types import (
    Background,
    DownloadedImage,
    GenerationRequest,
    GenerationResult,
    MalformedResult,
    OutputFormat,
    Quality,
)

__all__ = [
    "AuthenticationFailed",
    "Background",
    "BadRequest",
    "ContentRejected",
    "DownloadedImage",
    "GenerationFailed",
    "GenerationRequest",
    "GenerationResult",
    "GeneratorClient",
    "GeneratorError",
    "GeneratorTimeout",
    "InsufficientCredits",
    "MalformedResult",
    "OutputFormat",
    "Quality",
    "RateLimited",
    "ServerError",
    "error_from_response",
    "parse_retry_after",
    "presigned_expiry",
]
