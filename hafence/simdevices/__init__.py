"""Simulated devices for ``hafence demo`` and ``hafence lab`` (and the tests): an IPMI BMC
(OpenIPMI's ``ipmi_sim``) and an SNMP switch (snmpsim), each a real protocol peer run
as a process of its own. Peers only the tests need live in ``tests/peers``."""
