"""`polycube_text`: Polycube's `Dynmon::getOpenMetrics` text (src/services/pcn-dynmon/src/Dynmon.cpp,
polycube-network/polycube), from metric configs and raw JSON values; and `raw_value` on codecs."""
from __future__ import annotations

import sys

from hypothesis import given
from hypothesis import strategies as st

from pynetmon.btf_codec import ArrayCodec, IntCodec, StructCodec
from pynetmon.dynmon.config import MetricConfig
from pynetmon.dynmon.polycube import polycube_text, raw_value


def _metric(name: str, labels=(), help_: str = "h", type_: str = "counter") -> MetricConfig:
    return MetricConfig.model_validate({"name": name, "map-name": "M", "open-metrics-metadata": {
        "help": help_, "type": type_, "labels": [{"name": k, "value": v} for k, v in labels]}})


def test_single_value_keeps_the_name_and_integers_have_no_dot_zero():
    assert polycube_text([(_metric("pkts"), [8])], []) == "#HELP pkts h\n#TYPE pkts counter\npkts{} 8"


def test_elements_are_suffixed_and_every_sample_repeats_help_and_type():
    text = polycube_text([], [(_metric("b", [("a", "1"), ("c", "2")], "bytes", "gauge"), [1, 2.9])])
    assert text == ('#HELP b bytes\n#TYPE b gauge\nb_0{a="1", c="2"} 1\n'
                    '#HELP b bytes\n#TYPE b gauge\nb_1{a="1", c="2"} 2')


def test_values_that_are_not_numbers_give_an_empty_part_and_paths_join_ingress_first():
    ingress = [(_metric("x"), [{"key": 1, "value": 2}]), (_metric("y"), [3])]
    assert polycube_text(ingress, [(_metric("z"), [-1])]) == \
        "\n#HELP y h\n#TYPE y counter\ny{} 3\n#HELP z h\n#TYPE z counter\nz{} 18446744073709551615"
    assert polycube_text([], []) == ""
    assert polycube_text([(_metric("e"), [])], []) == ""


def test_a_non_number_inside_the_array_stops_the_metric_there():
    assert polycube_text([(_metric("m"), [1, {"a": 1}, 3])], []) == "#HELP m h\n#TYPE m counter\nm_0{} 1"


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF))
def test_raw_value_reads_big_endian_fields_as_native_integers(port, addr):
    codec = StructCodec("dest", 8, [("dport", 0, IntCodec(2, big_endian=True)), ("pad", 2, IntCodec(2)),
                                    ("daddr", 4, IntCodec(4, big_endian=True))])
    got = raw_value({"dport": port, "pad": 7, "daddr": addr}, codec)
    assert got == {"dport": int.from_bytes(port.to_bytes(2, "big"), sys.byteorder), "pad": 7,
                   "daddr": int.from_bytes(addr.to_bytes(4, "big"), sys.byteorder)}
    assert raw_value([port], ArrayCodec(IntCodec(2, big_endian=True), 1)) == \
        [int.from_bytes(port.to_bytes(2, "big"), sys.byteorder)]
