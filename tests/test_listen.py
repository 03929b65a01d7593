"""pipeline.listen: the subscriber's checks before it waits (real sockets, real name resolution)."""

import pytest

from pipeline.listen import ListenError, check_host, listen


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:5560", "tcp://localhost:5560", "tcp://[::1]:5560",
                                      "ipc:///tmp/vigil.sock", "tcp://*:5560"])
def test_hosts_that_resolve_and_other_transports_pass(endpoint):
    check_host(endpoint)


def test_an_unresolvable_host_is_named_at_once():
    with pytest.raises(ListenError, match=r"cannot resolve host 'no-such-host\.invalid' of tcp://no-such-host\.invalid:5560"):
        check_host("tcp://no-such-host.invalid:5560")


def test_negative_count_or_timeout_is_refused():
    with pytest.raises(ValueError, match="0 or more"):
        listen("tcp://127.0.0.1:5560", count=-1)
