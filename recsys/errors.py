"""One error hierarchy for the whole project, mapped to gRPC status codes in one place."""

from __future__ import annotations

import grpc


class RecsysError(Exception):
    """Base of every error this project raises on purpose.

    Messages say what went wrong and what to do about it.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retryable = False
    """Whether the same call again, perhaps on another worker, may succeed. The server marks
    an UNAVAILABLE answer that is not (``grpc-retry-pushback-ms: -1``), so the callers'
    retry policy (``serving.client.SERVICE_CONFIG``) leaves it alone."""

    def grpc_status_code(self) -> grpc.StatusCode:
        return self.code


class ConfigError(RecsysError):
    """The configuration file or an override is invalid."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class DataError(RecsysError):
    """An input data set is missing, malformed or not the expected size."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ArtifactError(RecsysError):
    """A model or index artifact is missing, corrupt or mismatched."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class InvalidRequestError(RecsysError):
    """A request is malformed (empty id, k out of range, ...)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotReadyError(RecsysError):
    """The service has not loaded its model, index or features yet."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class StoreUnavailableError(RecsysError):
    """The online store did not answer (down, timed out, locked). Every worker shares it, so
    an immediate retry would meet the same store: not ``retryable`` by a caller's policy."""

    code = grpc.StatusCode.UNAVAILABLE


class BrokerError(RecsysError):
    """The local Kafka broker could not be fetched, formatted or started."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(RecsysError):
    """The caller's deadline passed before the answer was ready."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
