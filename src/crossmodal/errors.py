"""Errors that carry a user-facing message naming the bad input and how to fix it."""


class CrossmodalError(Exception):
    """Base class: the CLI prints the message (no traceback) and exits with status 2."""


class DownloadError(CrossmodalError):
    """A download failed after its retries, or the server answered unexpectedly."""


class ChecksumError(DownloadError):
    """A downloaded file does not match the size or checksum recorded in the manifest."""


class UnsafeArchiveError(CrossmodalError):
    """An archive entry would land outside the extraction folder (or is a link/device)."""


class CorruptArchiveError(CrossmodalError):
    """An archive is truncated or unreadable."""


class DataFormatError(CrossmodalError):
    """An annotation or question file is malformed; the message names the file."""
