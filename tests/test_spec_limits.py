"""The YAML loader's limits (issue 12, defect 5): hostile documents are refused with a line, quickly and in
bounded memory; legitimate large documents are not."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from pipeline.errors import SpecError
from pipeline.spec.load import load_cluster
from pipeline.spec.yamlload import MAX_BYTES, MAX_DEPTH, load_yaml
from tests.spec_helpers import problems, spec_text


def _load_problems(path: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_cluster(path)
    return [str(p) for p in caught.value.problems]


def test_deep_flow_nesting_is_refused_with_its_line() -> None:
    text = "name: x\nboot: " + "[" * 500 + "]" * 500 + "\n"
    assert problems(text) == [
        f"cluster.yaml:2:{7 + MAX_DEPTH}: boot.{'.'.join(['0'] * MAX_DEPTH)}: "
        f"nested deeper than {MAX_DEPTH} levels (a cluster spec needs a handful)"
    ]


def test_deep_block_nesting_is_refused() -> None:
    lines = [" " * i + f"k{i}:" for i in range(300)]
    found = problems("\n".join(lines) + " x\n")
    assert len(found) == 1 and f"nested deeper than {MAX_DEPTH} levels" in found[0], found


def test_a_device_is_not_read(tmp_path: Path) -> None:
    assert _load_problems(Path("/dev/zero")) == [
        "/dev/zero: not a regular file (a character device); give the path of cluster.yaml"
    ]
    os.mkfifo(tmp_path / "fifo")  # opening it for reading would block forever
    assert _load_problems(tmp_path / "fifo") == [
        f"{tmp_path}/fifo: not a regular file (a FIFO); give the path of cluster.yaml"
    ]
    assert _load_problems(tmp_path) == [f"{tmp_path}: not a regular file (a directory); give the path of cluster.yaml"]


def test_a_huge_file_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    huge = tmp_path / "cluster.yaml"
    with huge.open("wb") as f:
        f.truncate(2 << 30)  # sparse: 2 GiB of zeros that take no disk
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert _load_problems(huge) == [f"{huge}: the file is larger than {MAX_BYTES} bytes"]
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 2 * MAX_BYTES // 1024 + 100_000


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "gateway: !mytag",
            "cluster.yaml:2:10: gateway: the tag !mytag is not allowed (remove it: only plain YAML values are read)",
        ),
        (
            "gateway: !!set",
            "cluster.yaml:2:10: gateway: the tag tag:yaml.org,2002:set is not allowed (remove it: only plain YAML values are read)",
        ),
        (
            "gateway: !!omap",
            "cluster.yaml:2:10: gateway: the tag tag:yaml.org,2002:omap is not allowed (remove it: only plain YAML values are read)",
        ),
    ],
)
def test_tags_on_collections_are_refused(line: str, expected: str) -> None:
    found = problems(spec_text({2: line}).replace("  address: 192.168.0.254", "  address: 192.168.0.254", 1))
    assert expected in found, found


def test_tag_on_a_sequence_is_refused() -> None:
    assert problems(spec_text({20: "  sysappend: !seqtag [ip, bootif, cpu]"})) == [
        "cluster.yaml:20:14: boot.sysappend: the tag !seqtag is not allowed (remove it: only plain YAML values are read)"
    ]


def test_unknown_scalar_tags_are_refused_by_name() -> None:
    assert problems(spec_text({1: "name: !local homelab"})) == [
        "cluster.yaml:1:7: name: the tag !local is not allowed (remove it: only plain YAML values are read)"
    ]
    # Standard tags that only restate the type stay allowed: !!str is the other way to quote.
    assert problems(spec_text({26: "deploy: {root: gateway/, keep_initrds: !!str 3}"})) == [
        "cluster.yaml:26:40: deploy.keep_initrds: expected a whole number, got str '3'"
    ]


def test_invalid_utf8_names_its_line_and_column() -> None:
    text = spec_text().encode().replace(b"name: homelab", b"name: home\xfflab")
    assert problems(text) == [  # type: ignore[arg-type]
        "cluster.yaml:1:11: the file is not valid UTF-8: byte 0xff cannot start a character (save it as UTF-8)"
    ]
    text = spec_text().encode().replace(b"/srv/tftp", b"/srv/t\xc3ftp")
    assert problems(text) == [  # type: ignore[arg-type]
        "cluster.yaml:5:20: the file is not valid UTF-8: byte 0xc3 starts a character cut short (save it as UTF-8)"
    ]


def test_control_character_in_the_file_names_its_line_and_column() -> None:
    text = spec_text().replace("/srv/tftp", "/srv/t\x00ftp")
    assert problems(text) == [
        "cluster.yaml:5:20: the file contains the character '\\x00', which YAML does not allow (write it as an escape in a double-quoted string, or remove it)"
    ]


def test_a_huge_value_is_not_echoed_whole() -> None:
    value = "a" * 1_000_000
    lines = {
        17: f"  kernel: {value}",
        8: f"  workers: {{path: /workers, access: '{value}'}}",
        25: f'    - {{mac: "{value}"}}',
        19: f"  cmdline: ['{value}$']",
        26: f"deploy: {{root: gateway/, keep_initrds: 1{'0' * 4000}}}",
    }
    for number, line in lines.items():
        found = problems(spec_text({number: line}))
        assert len(found) == 1 and len(found[0]) < 700, found[0][:1000]
        if number in (8, 25, 19):
            assert "... (100000" in found[0], found[0]
    huge_key = problems(spec_text({26: f"deploy:\n  root: gateway/\n  ? {value}\n  : 1"}))
    assert len(huge_key) == 1 and len(huge_key[0]) < 1000 and "(1000000 characters)" in huge_key[0]


def test_values_pyyaml_cannot_construct_are_problems_not_crashes() -> None:
    assert problems(spec_text({1: "name: 2001-02-30"})) == [
        "cluster.yaml:1:7: name: cannot read this value: day is out of range for month (quote it to make it a string)"
    ]
    found = problems(spec_text({26: f"deploy: {{root: gateway/, keep_initrds: {'9' * 5000}}}"}))
    assert len(found) == 1 and found[0].startswith("cluster.yaml:26:40: deploy.keep_initrds: cannot read this value")
    assert problems(spec_text({26: "deploy: {root: gateway/, keep_initrds: !!int abc}"})) == [
        "cluster.yaml:26:40: deploy.keep_initrds: cannot read this value: invalid literal for int() with base 10: 'abc' (quote it to make it a string)"
    ]


def test_many_plain_values_are_not_taken_for_an_alias_bomb() -> None:
    text = "values: [" + ",".join(["1"] * 600_000) + "]\n"
    assert len(load_yaml(text, "cluster.yaml").data["values"]) == 600_000


def test_alias_bomb_names_the_alias() -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    found = problems("\n".join(lines) + "\n")
    assert len(found) == 1 and "aliases expand to more than" in found[0], found
    assert found[0].startswith("cluster.yaml:")


def test_syntax_error_names_where_the_construct_began() -> None:
    text = spec_text({9: "root: {share: clients, options: [ro}"})
    assert problems(text) == [
        "cluster.yaml:9:33: flow sequence started here",
        "cluster.yaml:9:36: YAML syntax error: did not find expected ',' or ']' (in the flow sequence started at line 9, column 33)",
    ]
    text = spec_text({7: "  clients: {path: /clients, access: [ro"})
    found = problems(text)
    assert "cluster.yaml:7:37: flow sequence started here" in found, found
