"""Errors on the gRPC wire: the one place an exception becomes a gRPC status code and message.

Qdrant's gRPC API answers with the same texts as its REST API, under the status codes tonic maps its
storage errors to; `retry-after` (seconds) goes into the trailing metadata when trying again later can work
(a restarting cluster, a rate limit). Tracebacks and request contents never reach the client.
"""

from __future__ import annotations

from typing import NoReturn

import grpc

from inference.errors import ApiError, from_exception

# HTTP status (the vocabulary of `inference.errors`) -> the gRPC code Qdrant answers with.
_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ALREADY_EXISTS,  # Qdrant's StorageError::AlreadyExists (its only 409)
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """`(code, message, trailing metadata)` for anything raised while serving an RPC.

    Classification is `inference.errors.from_exception` (which logs and hides unexpected errors), so a gRPC
    caller gets exactly the message a REST caller would.
    """
    error: ApiError = from_exception(exc)
    code = _CODES.get(error.status)
    if code is None:
        code = grpc.StatusCode.INTERNAL if error.status >= 500 else grpc.StatusCode.INVALID_ARGUMENT
    trailers: tuple[tuple[str, str], ...] = ()
    if error.retry_after is not None:
        trailers = (("retry-after", str(error.retry_after)),)
    return code, error.message, trailers


def abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    """End the RPC with the status `grpc_status` gives for `exc` (raises, as `context.abort` does)."""
    code, message, trailers = grpc_status(exc)
    if trailers:
        context.set_trailing_metadata(trailers)
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover  # grpc always raises here
