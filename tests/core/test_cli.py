"""The command line: CoreDNS's flags, signals and exit codes, as a user runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from pycorefile import __version__

from ..process import ServerProcess, free_port, run_cli


def ask(port: int, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=3)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=3)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_version() -> None:
    out = run_cli("-version")
    assert out.returncode == 0
    assert out.stdout.splitlines()[0] == f"pycorefile-{__version__}"


def test_plugins_lists_every_registered_plugin_in_chain_order() -> None:
    out = run_cli("-plugins")
    assert out.returncode == 0
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert "whoami" in names and "bind" in names
    assert names.index("bind") < names.index("whoami")
    package_of = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()}
    built_in = {
        ep.name
        for ep in entry_points(group="pycorefile.plugins")
        if ep.dist is not None and ep.dist.name == "pycorefile"
    }
    assert built_in and all(package_of[name] == "pycorefile" for name in built_in)


def test_validate_prints_normalised_keys_and_chain(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "Corefile", "EXAMPLE.org:1053 example.net {\n  whoami\n  bind 127.0.0.1\n}\n"
    )
    out = run_cli("-conf", conf, "-validate", "-dns.port", "5353")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "dns://example.org.:1053 bind whoami",
        "dns://example.net.:5353 bind whoami",
    ]


def test_unknown_directive_exits_1_with_location(tmp_path: Path) -> None:
    conf = write(tmp_path / "Corefile", ".:1053 {\n    whoami\n    nosuchplugin arg\n}\n")
    out = run_cli("-conf", conf, "-validate")
    assert out.returncode == 1
    assert f"{conf}:3:5 - Unknown directive 'nosuchplugin'" in out.stderr
    assert "Traceback" not in out.stderr


def test_plugin_argument_error_points_at_the_argument(tmp_path: Path) -> None:
    conf = write(tmp_path / "Corefile", ".:1053 {\n    bind 127.0.0.1 not-an-address\n}\n")
    out = run_cli("-conf", conf)
    assert out.returncode == 1
    assert f"{conf}:2:20 - plugin/bind:" in out.stderr
    assert "not-an-address" in out.stderr
    assert "Traceback" not in out.stderr


def test_duplicate_keys_name_both_places(tmp_path: Path) -> None:
    conf = write(
        tmp_path / "Corefile", "example.org:1053 {\n whoami\n}\nexample.org:1053 {\n whoami\n}\n"
    )
    out = run_cli("-conf", conf, "-validate")
    assert out.returncode == 1
    assert "cannot serve dns://example.org.:1053 - it is already defined" in out.stderr
    assert f"{conf}:4:" in out.stderr and f"{conf}:1" in out.stderr


def test_once_per_block_plugins(tmp_path: Path) -> None:
    conf = write(tmp_path / "Corefile", ".:1053 {\n whoami\n whoami\n}\n")
    out = run_cli("-conf", conf, "-validate")
    assert out.returncode == 1
    assert (
        f"{conf}:3:2 - plugin/whoami: this plugin can only be used once per Server Block"
        in out.stderr
    )


def test_extra_arguments_are_fatal() -> None:
    out = run_cli("-version", "surplus")
    assert out.returncode == 1
    assert "extra command line arguments" in out.stderr


def test_conf_stdin_and_banner(tmp_path: Path) -> None:
    port = free_port()
    text = f".:{port} {{\n    bind 127.0.0.1\n    whoami\n}}\n"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pycorefile", "-conf", "stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(text)
        proc.stdin.close()
        first = proc.stdout.readline().strip()
        assert first == f".:{port} on 127.0.0.1"
        assert proc.stdout.readline().strip() == f"pycorefile-{__version__}"
        assert ask(port, "example.org").additional[0][0].address == "127.0.0.1"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()  # type: ignore[union-attr]


def test_default_corefile_when_none_is_found(tmp_path: Path) -> None:
    port = free_port("0.0.0.0")
    with ServerProcess(["-dns.port", str(port)], cwd=str(tmp_path)) as srv:
        srv.wait_for(f".:{port}")
        reply = ask(port, "who.example")
        assert reply.additional[0][0].address == "127.0.0.1"  # whoami
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


def test_quiet_pidfile_and_sigterm(tmp_path: Path) -> None:
    port = free_port()
    conf = write(tmp_path / "Corefile", f".:{port} {{\n bind 127.0.0.1\n whoami\n}}\n")
    pidfile = tmp_path / "pycorefile.pid"
    with ServerProcess(["-conf", conf, "-quiet", "-pidfile", str(pidfile)]) as srv:
        # Written (whole, by a rename) once the listeners are up.
        written = srv.wait_for_file(pidfile)
        assert srv.proc is not None
        assert written == f"{srv.proc.pid}\n"
        assert ask(port, "example.org", tcp=True).rcode() == dns.rcode.NOERROR
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
        output = srv.read_to_end()
        assert not any(line.startswith("pycorefile-") or line.startswith(".:") for line in output)
        assert any("SIGTERM: Shutting down servers then terminating" in line for line in output)
    assert not pidfile.exists()


def test_sigint_exits_0(tmp_path: Path) -> None:
    port = free_port()
    conf = write(tmp_path / "Corefile", f".:{port} {{\n bind 127.0.0.1\n whoami\n}}\n")
    with ServerProcess(["-conf", conf]) as srv:
        srv.wait_for(f".:{port}")
        srv.signal(signal.SIGINT)
        assert srv.wait() == 0


def test_sigusr1_reload_good_then_broken_and_sighup_ignored(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "Corefile"
    write(path, f"example.org:{port} {{\n bind 127.0.0.1\n whoami\n}}\n")
    with ServerProcess(["-conf", str(path)]) as srv:
        srv.wait_for("pycorefile-")
        assert ask(port, "example.org").rcode() == dns.rcode.NOERROR
        assert ask(port, "example.net").rcode() == dns.rcode.REFUSED

        write(path, f"example.net:{port} {{\n bind 127.0.0.1\n whoami\n}}\n")
        srv.signal(signal.SIGUSR1)
        srv.wait_for("Reloading complete")
        assert ask(port, "example.net").rcode() == dns.rcode.NOERROR
        assert ask(port, "example.org").rcode() == dns.rcode.REFUSED

        write(path, f"example.com:{port} {{\n bind 127.0.0.1\n nosuch\n}}\n")
        srv.signal(signal.SIGUSR1)
        line = srv.wait_for("[ERROR] SIGUSR1:")
        assert "Unknown directive 'nosuch'" in line
        assert ask(port, "example.net").rcode() == dns.rcode.NOERROR  # old config serving

        srv.signal(signal.SIGHUP)
        time.sleep(0.3)
        assert srv.proc is not None and srv.proc.poll() is None
        assert ask(port, "example.net", tcp=True).rcode() == dns.rcode.NOERROR
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


def test_port_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        conf = write(tmp_path / "Corefile", f".:{port} {{\n bind 127.0.0.1\n whoami\n}}\n")
        out = run_cli("-conf", conf)
    assert out.returncode == 1
    assert out.stderr.startswith("cannot start: ")
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_failure_while_serving_is_not_called_a_failed_start(tmp_path: Path) -> None:
    """Two blocks forwarding to each other: a loop found once serving (CoreDNS's loop)."""
    one, two = free_port(), free_port()
    conf = write(
        tmp_path / "Corefile",
        f".:{one} {{\n bind 127.0.0.1\n loop\n forward . 127.0.0.1:{two}\n}}\n"
        f".:{two} {{\n bind 127.0.0.1\n loop\n forward . 127.0.0.1:{one}\n}}\n",
    )
    out = run_cli("-conf", conf, "-quiet", timeout=60)
    assert out.returncode == 1
    assert "stopped while serving: plugin/loop: Loop" in out.stderr, out.stderr
    assert "cannot start" not in out.stderr
    assert "Traceback" not in out.stderr


def test_limit_flags(tmp_path: Path) -> None:
    bad = run_cli("-max-connections", "0")
    assert bad.returncode == 2
    assert "-max-connections: needs a whole number of 1 or more, not '0'" in bad.stderr
    # A budget of 4 connections keeps one for HTTP: 3 for DNS over TCP.
    port = free_port()
    conf = write(tmp_path / "Corefile", f".:{port} {{\n bind 127.0.0.1\n whoami\n}}\n")
    with ServerProcess(["-conf", conf, "-quiet", "-max-connections", "4"]) as srv:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                ask(port, "example.org")
                break
            except (dns.exception.Timeout, OSError):
                time.sleep(0.1)
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
        try:
            for sock in held:
                sock.sendall(tcp_query("example.org"))
            answered = [reply_or_eof(sock) for sock in held]
            assert answered == [True, True, True, False]
        finally:
            for sock in held:
                sock.close()
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


def tcp_query(name: str) -> bytes:
    wire = dns.message.make_query(name, "A").to_wire()
    return len(wire).to_bytes(2, "big") + wire


def reply_or_eof(sock: socket.socket) -> bool:
    """True when a reply comes, False when the server closes the connection."""
    try:
        return len(sock.recv(65535)) > 0
    except ConnectionResetError:
        return False


def test_python_dash_m_and_console_script_agree() -> None:
    import shutil

    script = shutil.which("pycorefile")
    assert script is not None, "the console script is installed with the package"
    out = subprocess.run([script, "-version"], capture_output=True, text=True, timeout=30)
    assert out.stdout == run_cli("-version").stdout
    assert os.path.basename(script) == "pycorefile"


def test_the_server_runs_with_a_short_thread_switch_interval(tmp_path: Path) -> None:
    """While a worker thread computes (a mesh table, a configuration), the event loop gets
    the GIL back after each socket call within the switch interval; Python's default of
    5 ms stalled answers for seconds. Checked in a process of its own: the serving loop
    is replaced by one that reports the interval in force."""
    conf = write(tmp_path / "Corefile", ".:0 {\n  bind 127.0.0.1\n  whoami\n}\n")
    program = (
        "import sys, trio\n"
        "from pycorefile import cli\n"
        "trio.run = lambda *args, **kwargs: print(sys.getswitchinterval())\n"
        f"sys.exit(cli.main(['-conf', {conf!r}, '-quiet']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    interval = float(done.stdout.split()[-1])
    assert interval == 0.0005 < sys.getswitchinterval()
