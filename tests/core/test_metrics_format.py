"""Metric values written as CoreDNS's Go client writes them (strconv.FormatFloat 'g', -1)."""

from __future__ import annotations

import math

import pytest

from pycorefile.metrics import TIME_BUCKETS, bucket_labels, go_float, openmetrics_float


@pytest.mark.parametrize(
    ("value", "text"),
    [
        # Go's own test vectors for FormatFloat(f, 'g', -1, 64) (strconv/ftoa_test.go).
        (1.0, "1"),
        (20.0, "20"),
        (1234567.8, "1.2345678e+06"),
        (200000.0, "200000"),
        (2000000.0, "2e+06"),
        (0.0, "0"),
        (-1.0, "-1"),
        (12.0, "12"),
        (123456700.0, "1.234567e+08"),
        (1e23, "1e+23"),
        (99999999999999974834176.0, "9.999999999999997e+22"),
        (100000000000000008388608.0, "1.0000000000000001e+23"),
        (5e-324, "5e-324"),
        (-5e-324, "-5e-324"),
        (32.0, "32"),
        (2.2250738585072011e-308, "2.225073858507201e-308"),
        (383260575764816448.0, "3.8326057576481645e+17"),
        (-5.8339553793802237e23, "-5.8339553793802237e+23"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
        # The bucket bounds CoreDNS exports.
        (0.00025, "0.00025"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (8.192, "8.192"),
        (100.0, "100"),
        (511.0, "511"),
        (16e3, "16000"),
        (64e3, "64000"),
        (1e6, "1e+06"),
        (-0.0, "0"),  # client_golang writes any zero as 0
    ],
)
def test_go_float(value: float, text: str) -> None:
    assert go_float(value) == text


def test_bucket_labels_and_openmetrics() -> None:
    assert bucket_labels(TIME_BUCKETS)[:3] == ["0.00025", "0.0005", "0.001"]
    assert bucket_labels(TIME_BUCKETS)[-2:] == ["8.192", "+Inf"]
    assert bucket_labels([0, 100, 16e3]) == ["0", "100", "16000", "+Inf"]
    # client_golang's OpenMetrics writer adds ".0" where there is neither "." nor "e".
    assert [openmetrics_float(t) for t in ("0", "1", "-1", "100", "16000")] == [
        "0.0", "1.0", "-1.0", "100.0", "16000.0",
    ]  # fmt: skip
    assert [openmetrics_float(t) for t in ("0.00025", "1e+06", "+Inf", "-Inf", "NaN")] == [
        "0.00025", "1e+06", "+Inf", "-Inf", "NaN",
    ]  # fmt: skip
