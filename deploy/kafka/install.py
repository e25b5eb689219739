"""What the local broker needs before it runs: a JDK 17+, the Kafka jars, free ports."""

from __future__ import annotations

import errno
import functools
import logging
import re
import shutil
import socket
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.3.1"
KAFKA_DIR = Path(__file__).resolve().parent
REPO_ROOT = KAFKA_DIR.parents[1]
LIB_DIR = KAFKA_DIR / "lib"
POM = KAFKA_DIR / "pom.xml"
JARS_STAMP = LIB_DIR / ".complete"  # written once Maven has copied every jar
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"
# Kafka's start script flags, with a 512 MB heap instead of 1 GB: plenty on a laptop or CI.
BROKER_JVM_OPTS = [
    "-Xms512m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]
# The storage tool runs for seconds: the quick compiler alone and a small collector start it
# sooner, and three of them format a cluster's nodes side by side on 2 cores.
TOOL_JVM_OPTS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]


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


def java_command(main: str, *args: str, log_file: Path, broker: bool = False) -> list[str]:
    """The java command line running a Kafka main class with our jars and log4j2 config."""
    return [
        "java",
        *(BROKER_JVM_OPTS if broker else TOOL_JVM_OPTS),
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.log.file={log_file}",
        "-cp",
        f"{LIB_DIR}/*",
        main,
        *args,
    ]


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
