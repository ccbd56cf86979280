"""Writing metrics as CoreDNS's Prometheus client writes them, for plugins that export some.

CoreDNS's metrics come from Go's client_golang. Where its output is text,
not numbers, dashboards and recording rules match it exactly: a histogram
bucket is ``le="100"`` there, where Python's client writes ``le="100.0"``.
Build histogram families with ``bucket_labels`` and they read as CoreDNS's.

Nothing here imports prometheus_client (about 2 MB), so a plugin can keep
these at import time and build its families only when scraped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal

__all__ = ["TIME_BUCKETS", "bucket_labels", "go_float", "openmetrics_float"]

TIME_BUCKETS = tuple(0.00025 * 2**i for i in range(16))
"""CoreDNS's ``plugin.TimeBuckets`` (``ExponentialBuckets(0.00025, 2, 16)``): 0.25 ms to 8.192 s."""


def go_float(value: float) -> str:
    """``value`` as client_golang writes a float in the text format.

    That is Go's ``strconv.FormatFloat(value, 'g', -1, 64)``: the fewest
    digits that read back as the same float, in plain notation when the
    decimal exponent is from -4 to 5, else as ``d.ddde±XX`` (``100``,
    ``0.00025``, ``16000``, ``1e+06``, ``1.2345678e+06``, ``1e-05``); and
    ``+Inf``, ``-Inf``, ``NaN``. Zero is ``0``.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    # repr gives the shortest round-tripping digits, as Go's shortest formatting does.
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len(digit_tuple) - len(digits)
    point = len(digits) + exponent
    """Where the decimal point falls after the digits' first ``point`` (may be <= 0)."""
    prefix = "-" if sign else ""
    decimal_exponent = point - 1
    if decimal_exponent < -4 or decimal_exponent >= 6:  # Go's rule for the shortest form
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        sign_of_exponent = "-" if decimal_exponent < 0 else "+"
        return f"{prefix}{mantissa}e{sign_of_exponent}{abs(decimal_exponent):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return prefix + digits + "0" * (point - len(digits))
    return f"{prefix}{digits[:point]}.{digits[point:]}"


def bucket_labels(bounds: Iterable[float]) -> list[str]:
    """The ``le`` labels of a histogram with these upper bounds, ``+Inf`` last."""
    return [go_float(bound) for bound in bounds] + ["+Inf"]


def openmetrics_float(text: str) -> str:
    """A ``go_float`` text as client_golang writes it in OpenMetrics: ``100`` is ``100.0``."""
    if text in ("+Inf", "-Inf", "NaN") or "." in text or "e" in text:
        return text
    return text + ".0"
