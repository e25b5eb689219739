"""What the local broker needs before it runs: a JDK 17+, the Kafka jars, free ports."""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.3.1"
KAFKA_DIR = Path(__file__).resolve().parent
REPO_ROOT = KAFKA_DIR.parents[1]
LIB_DIR = KAFKA_DIR / "lib"
POM = KAFKA_DIR / "pom.xml"
JARS_STAMP = LIB_DIR / ".complete"  # written once Maven has copied every jar
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"
#: The heap, unless KAFKA_HEAP_OPTS says otherwise (Kafka's start script's variable): 512 MB
#: instead of its 1 GB, plenty on a laptop or CI.
BROKER_HEAP_OPTS = "-Xms512m -Xmx512m"
#: The collector and JVM settings, unless KAFKA_JVM_PERFORMANCE_OPTS says otherwise (as
#: Kafka's start script reads it): its own G1 flags, headless.
BROKER_PERFORMANCE_OPTS = (
    "-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true"
)
#: The quick compiler only (C1), added to the defaults of a node of a cluster. On 2 cores
#: several JVMs compiling Kafka with the optimizing compiler (C2) took more CPU than serving
#: the saga a minute into a bench: three brokers' compiler threads took 0.8 of a core at 20
#: orders/s, and the 3-broker shape completed 1.4-2.2 x as many orders a second without it
#: (window 6; 1.5 x in window 13). A lone broker compiles the code once and keeps both
#: compilers: six minutes at 482 orders/s had p99 143 ms with C2 against 287-374 ms with C1
#: only, at the price of a lower max in its first minute, while C2 compiles
#: (docs/performance.md, window 13).
QUICK_COMPILER_FLAG = "-XX:TieredStopAtLevel=1"
# The storage tool runs for seconds: the quick compiler alone and a small collector start it
# sooner, and three of them format a cluster's nodes side by side on 2 cores.
TOOL_JVM_OPTS = [QUICK_COMPILER_FLAG, "-XX:+UseSerialGC"]


class KafkaRuntimeError(RuntimeError):
    """The broker could not be fetched, formatted, started or stopped; the message says why."""


class PortInUseError(KafkaRuntimeError):
    """A port the broker needs is held by another process."""


@functools.cache  # once a JDK passed, later starts (e.g. each node of a cluster) skip the check
def check_java() -> None:
    """Fail with what to install unless a JDK 17 or newer is on the PATH."""
    if shutil.which("java") is None:
        raise KafkaRuntimeError("java not found: install a JDK 17 or newer (Kafka runs on it)")
    settings = ["java", "-XshowSettings:properties", "-version"]
    out = subprocess.run(settings, capture_output=True, text=True).stderr
    found = re.search(r"^\s*java\.specification\.version = (\S+)", out, re.MULTILINE)
    spec = found.group(1) if found else "unknown"
    if not found or int(spec.split(".")[0]) < 17:
        raise KafkaRuntimeError(f"Java {spec} found: Kafka 4 needs a JDK 17 or newer")


def jars_present() -> bool:
    return JARS_STAMP.exists() and JARS_STAMP.stat().st_mtime >= POM.stat().st_mtime


def ensure_jars() -> bool:
    """Fetch the Kafka jars into deploy/kafka/lib with Maven unless present; True if fetched."""
    if jars_present():
        return False
    if shutil.which("mvn") is None:
        raise KafkaRuntimeError("mvn not found: install Apache Maven (it fetches the Kafka jars)")
    log.info("fetching Apache Kafka %s jars into %s", KAFKA_VERSION, LIB_DIR)
    shutil.rmtree(LIB_DIR, ignore_errors=True)  # a changed pom must not leave stale jars behind
    if subprocess.run(["mvn", "-B", "-f", str(POM), "package"]).returncode != 0:
        raise KafkaRuntimeError(f"mvn could not fetch the Kafka jars (see its output above; {POM})")
    JARS_STAMP.touch()
    return True


def java_command(
    main: str, *args: str, log_file: Path, broker: bool = False, cluster_nodes: int = 1
) -> list[str]:
    """The java command line running a Kafka main class with our jars and log4j2 config.

    A broker's JVM flags are KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS and KAFKA_OPTS, as
    Kafka's own start scripts read them, each defaulting to ours (the last to none); ours
    depend on whether the broker runs alone or as one of `cluster_nodes`.
    """
    return [
        "java",
        *(broker_jvm_opts(os.environ, cluster_nodes) if broker else TOOL_JVM_OPTS),
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.log.file={log_file}",
        "-cp",
        f"{LIB_DIR}/*",
        main,
        *args,
    ]


def broker_jvm_opts(env: Mapping[str, str], cluster_nodes: int = 1) -> list[str]:
    """A broker's JVM flags: `env`'s KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS and
    KAFKA_OPTS where set (and not blank), ours otherwise: G1 with both compilers for a lone
    broker, the quick compiler only for a node of a cluster."""
    performance = BROKER_PERFORMANCE_OPTS
    if cluster_nodes > 1:
        performance += f" {QUICK_COMPILER_FLAG}"
    defaults = {
        "KAFKA_HEAP_OPTS": BROKER_HEAP_OPTS,
        "KAFKA_JVM_PERFORMANCE_OPTS": performance,
        "KAFKA_OPTS": "",
    }
    flags: list[str] = []
    for name, default in defaults.items():
        value = env.get(name, "").strip() or default
        try:
            flags += shlex.split(value)
        except ValueError as exc:
            raise KafkaRuntimeError(f"{name}={value!r} cannot be read as flags: {exc}") from exc
    return flags


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something already listens on host:port (bound like Java does, SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False
