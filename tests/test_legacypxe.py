"""The first DHCP stage of the undionly.kpxe chainload test (pipeline/boottest/legacypxe.py)."""

from __future__ import annotations

import pytest

from pipeline.boottest.errors import BootTestError
from pipeline.boottest.legacypxe import SecondStage, legacy_rom_config, undionly_fetched_by
from pipeline.render.dnsmasq import render_dnsmasq
from tests.spec_helpers import parse, spec_text

SPEC = spec_text(append=["firmware: {bios: ipxe}", "dhcp: {range_start: 192.168.0.100, range_end: 192.168.0.199}"])


def test_the_rom_stage_is_the_generated_configuration_without_ipxe_recognition() -> None:
    (artifact,) = render_dnsmasq(parse(SPEC))
    first = legacy_rom_config(artifact.data).decode().splitlines()
    generated = artifact.data.decode().splitlines()
    assert [line for line in generated if line not in first] == [
        "dhcp-match=set:ipxe,175",
        "dhcp-userclass=set:ipxe,iPXE",
    ]
    # Untagged, the ROM is a BIOS client that is not iPXE: it gets undionly.kpxe.
    assert "dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe" in first


def test_a_configuration_without_the_ipxe_lines_is_refused() -> None:
    with pytest.raises(BootTestError, match="no 'dhcp-userclass=set:ipxe,iPXE' line"):
        legacy_rom_config(b"dhcp-match=set:ipxe,175\n")


def test_fetches_are_read_from_dnsmasqs_log() -> None:
    log = (
        "Dec  2 01:57:39 dnsmasq-tftp[13871]: sent /w/tftp/undionly.kpxe to 192.168.77.102\n"
        "Dec  2 01:57:40 dnsmasq-tftp[13871]: sent /w/tftp/nfsroot.ipxe to 192.168.77.11\n"
        "Dec  2 01:57:59 dnsmasq-tftp[13871]: sent /w/tftp/undionly.kpxe to 192.168.77.102\n"
    )
    assert undionly_fetched_by(log) == {"192.168.77.102"}


def test_second_stage_restarts_once_when_every_node_fetched_undionly() -> None:
    log = ["dnsmasq-tftp[1]: sent /t/undionly.kpxe to 10.0.0.1\n"]
    restarts: list[int] = []
    stage = SecondStage(2, lambda: "".join(log), lambda: restarts.append(1))
    stage.start()
    assert not stage.done.wait(0.6) and restarts == []  # one node is not enough
    log.append("dnsmasq-tftp[1]: sent /t/undionly.kpxe to 10.0.0.2\n")
    assert stage.done.wait(5)
    # The thread that started the new dnsmasq lives until stop(): its death would SIGTERM it (PDEATHSIG).
    assert stage.thread.is_alive() and not stage.thread.join(0.5) and stage.thread.is_alive()
    stage.stop()
    assert restarts == [1] and not stage.thread.is_alive()


def test_a_failed_restart_is_reported() -> None:
    def fail() -> None:
        raise OSError("no dnsmasq")

    stage = SecondStage(1, lambda: "dnsmasq-tftp[1]: sent /t/undionly.kpxe to 10.0.0.1\n", fail)
    stage.start()
    assert stage.done.wait(5)
    with pytest.raises(BootTestError, match="no dnsmasq"):
        stage.stop()
